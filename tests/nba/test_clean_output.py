"""What the `nba` command prints around its work: no third-party warnings, no ANSI codes off a terminal, one line for expected errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nba.quiet import known_noise

SITE = "/venv/lib/python3.11/site-packages"


def _run(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize(
    ("category", "filename", "noise"),
    [
        (DeprecationWarning, f"{SITE}/ibis/backends/duckdb/__init__.py", True),
        (FutureWarning, f"{SITE}/mlflow/store/tracking/sqlalchemy_store.py", True),
        (UserWarning, f"{SITE}/sqlalchemy/orm/mapper.py", True),
        (UserWarning, f"{SITE}/somepkg/x.py", False),  # an unknown package's UserWarning may matter
        (DeprecationWarning, "/work/main/training/jobs.py", False),  # our own deprecations stay visible
        (RuntimeWarning, f"{SITE}/feast/x.py", False),
    ],
)
def test_known_noise(category, filename, noise) -> None:
    assert known_noise(category, filename) is noise


def test_third_party_warnings_and_ansi_codes_stay_off_the_output() -> None:
    """Feast re-enables DeprecationWarning at import (simplefilter "once") and prints colorama codes: neither reaches a pipe."""
    out = _run(f"""
        import sys, warnings
        from nba.quiet import quiet_output
        quiet_output()
        warnings.simplefilter("once", DeprecationWarning)  # what `import feast` does
        warnings.warn_explicit("fetch_arrow_table() is deprecated", DeprecationWarning, "{SITE}/ibis/backends/duckdb/__init__.py", 332)
        warnings.warn_explicit("The noload loader strategy is deprecated", DeprecationWarning, "{SITE}/mlflow/store/db.py", 3)
        warnings.warn_explicit("ours", RuntimeWarning, "/work/main/training/train.py", 9)
        print("Materializing \\x1b[1m\\x1b[32m1\\x1b[0m feature views")
        print("\\x1b[31mred\\x1b[0m on stderr", file=sys.stderr)
        import os; print(os.environ["PYTHONWARNINGS"], os.environ["MLFLOW_LOGGING_LEVEL"])
    """)
    assert out.returncode == 0, out.stderr
    assert "\x1b[" not in out.stdout and "\x1b[" not in out.stderr
    assert "Materializing 1 feature views" in out.stdout and "red on stderr" in out.stderr
    assert "DeprecationWarning" not in out.stderr and "RuntimeWarning: ours" in out.stderr
    assert "ignore::DeprecationWarning" in out.stdout and "WARNING" in out.stdout  # inherited by the servers we start


@pytest.mark.slow
def test_expected_conditions_print_one_line_without_traceback(tmp_path: Path) -> None:
    """Steps run out of order (no challenger to evaluate, no dataset to train on): one `error:` line, exit 1."""
    main = "import sys; from nba.cli import main; sys.argv[0] = 'nba'; main()"
    for args, words in (
        (["evaluate", "--set", f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"], "nba train"),
        (["train", "--data-dir", str(tmp_path / "nowhere")], "nowhere"),
        (["promote", "--set", f"tracking.uri=sqlite:///{tmp_path}/none.db"], "no MLflow store"),
    ):
        out = subprocess.run([sys.executable, "-c", main, *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
        lines = [line for line in out.stderr.splitlines() if line.strip()]
        assert out.returncode == 1, (args, out.stderr[-2000:])
        assert "Traceback" not in out.stderr and lines[-1].startswith("error: ") and words in lines[-1], (args, out.stderr[-2000:])
        assert not [line for line in lines if "Warning" in line], lines
