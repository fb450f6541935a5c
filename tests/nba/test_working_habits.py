"""The project's working habits, held in its files: install labels, test lanes, packaging metadata, lint settings, a private Redis database."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _make_dry_run(target: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    # -B: print every step even when the install stamp is fresh; -n: run nothing.
    out = subprocess.run(["make", "-n", "-B", target], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_install_labels_its_steps_on_stderr() -> None:
    steps = [line for line in _make_dry_run("install").splitlines() if line.startswith('echo "== install')]
    assert len(steps) >= 4 and all(line.endswith(">&2") for line in steps), steps
    assert any("2 to 3 minutes" in line for line in steps)


def test_make_test_runs_the_fast_lane_then_the_rest_once() -> None:
    runs = [line for line in _make_dry_run("test").splitlines() if "-m pytest" in line]
    assert len(runs) == 2, runs
    assert '-m "not slow and not e2e"' in runs[0] and '-m "slow or e2e"' in runs[1]  # complementary: each test runs once
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's command


def test_packaging_metadata_is_spdx_and_self_contained() -> None:
    project = PYPROJECT["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    requires = PYPROJECT["build-system"]["requires"]
    assert any(r.replace(" ", "").startswith("setuptools>=77") for r in requires)  # SPDX strings without the deprecation warning
    assert "stack-notes" not in (ROOT / "pyproject.toml").read_text() and "shared/" not in (ROOT / "pyproject.toml").read_text()
    dev = " ".join(project["optional-dependencies"]["dev"])
    assert "pytest-timeout" in dev and "ruff" in dev


def test_lint_and_pytest_settings() -> None:
    ruff = PYPROJECT["tool"]["ruff"]
    assert ruff["line-length"] == 160
    pytest_cfg = PYPROJECT["tool"]["pytest"]["ini_options"]
    assert int(pytest_cfg["timeout"]) > 0 and "--durations=15" in pytest_cfg["addopts"]
    hooks = (ROOT / ".pre-commit-config.yaml").read_text()
    for hook in ("ruff-check", "ruff-format", "trailing-whitespace", "end-of-file-fixer"):
        assert f"id: {hook}" in hooks, hook


def test_redis_database_is_held_for_the_run(_redis_db: int) -> None:
    """Another test run cannot take this run's Redis database while it holds it."""
    import tempfile

    lock = Path(tempfile.gettempdir()) / f"nba-test-redis-6379-db{_redis_db}.lock"  # tests/conftest.py's lock for this database
    assert lock.exists()
    code = "import fcntl, sys\nh = open(sys.argv[1], 'w')\ntry:\n    fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept OSError:\n    sys.exit(3)\n"
    assert subprocess.run([sys.executable, "-c", code, str(lock)], timeout=30).returncode == 3
