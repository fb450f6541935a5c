"""Keeping the terminal for our own output: known third-party warnings dropped, no ANSI codes off a terminal.

The stack (Feast with ibis, MLflow with SQLAlchemy, BentoML, setuptools) prints deprecation
warnings and colour codes on every run that say nothing about this project's use of it and bury
the progress lines and results. Light: the standard library only, so `nba --help` stays instant.
"""

from __future__ import annotations

import os
import sys
import warnings

# Warnings the stack emits on every run that say nothing about this project's use of it: ibis
# inside Feast, SQLAlchemy inside MLflow, MLflow's own, setuptools/pkg_resources at import. Dropped
# when a third-party module (under site-packages) raised them; a deprecation our own code triggers
# is attributed to our file (stacklevel) and still shows.
KNOWN_WARNING_CATEGORIES: tuple[type[Warning], ...] = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)
KNOWN_NOISY_PACKAGES = (
    "ibis",
    "feast",
    "mlflow",
    "sqlalchemy",
    "alembic",
    "setuptools",
    "pkg_resources",
    "pydantic",
    "bentoml",
    "optuna",
    "evidently",
    "torch",
    "pandas",
    "duckdb",
    "google",
    "opentelemetry",
    "sklearn",
)


def known_noise(category: type[Warning], filename: str) -> bool:
    """Whether a warning is third-party chatter: a deprecation raised inside an installed package, or a
    UserWarning from one of the stack's known packages."""
    parts = filename.replace("\\", "/").split("/")
    if "site-packages" not in parts:
        return False
    package = parts[parts.index("site-packages") + 1] if parts[-1] != "site-packages" else ""
    if issubclass(category, KNOWN_WARNING_CATEGORIES):
        return True
    return issubclass(category, UserWarning) and package.split(".")[0] in KNOWN_NOISY_PACKAGES


def drop_known_warnings() -> None:
    """Ignore the known third-party warnings (``known_noise``), whatever filters the stack installs later.

    Filters alone do not hold: Feast calls ``warnings.simplefilter("once", DeprecationWarning)`` when
    imported, ahead of ours; so a display hook drops known noise whatever the filters say.
    """
    if getattr(warnings.showwarning, "_nba_quiet", False):
        return
    for category in KNOWN_WARNING_CATEGORIES:
        warnings.filterwarnings("ignore", category=category)
    show = warnings.showwarning

    def _show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings.showwarning's signature
        if not known_noise(category, str(filename)):
            show(message, category, filename, lineno, file, line)

    _show._nba_quiet = True  # type: ignore[attr-defined]
    warnings.showwarning = _show


def quiet_output() -> None:
    """Keep the terminal for our progress and results: known third-party warnings off, no ANSI codes when not a terminal.

    The servers we start (bentoml serve, mlflow server) inherit PYTHONWARNINGS and MLflow's log level
    (and the service calls ``drop_known_warnings`` itself, since its imports re-enable them).
    """
    drop_known_warnings()
    spec = ",".join(f"ignore::{c.__name__}" for c in KNOWN_WARNING_CATEGORIES)
    if spec not in os.environ.get("PYTHONWARNINGS", ""):
        os.environ["PYTHONWARNINGS"] = ",".join(p for p in (os.environ.get("PYTHONWARNINGS", ""), spec) if p)
    # MLflow logs "Creating initial MLflow database tables..." and the like at INFO on stderr.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    if not sys.stdout.isatty() or not sys.stderr.isatty():
        strip_ansi()


def strip_ansi() -> None:
    """Strip ANSI colour codes from what is written to stdout/stderr when either is not a terminal.

    Feast prints colorama colour codes unconditionally; NO_COLOR tells rich, typer and others, and
    colorama's wrapper removes what is written anyway (it keeps ``isatty`` and the rest of the stream).
    """
    os.environ.setdefault("NO_COLOR", "1")
    try:
        import colorama
    except ImportError:  # colorama comes with feast and click; without them nothing prints colour codes unasked
        return
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if not stream.isatty() and not isinstance(stream, colorama.ansitowin32.StreamWrapper):
            setattr(sys, name, colorama.AnsiToWin32(stream, convert=False, strip=True).stream)
