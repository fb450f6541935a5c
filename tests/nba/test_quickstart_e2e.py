"""A tiny `nba quickstart`, then the next steps it prints, run exactly as printed: `nba serve`, `curl` gets a 200, `nba ui` answers.

The target of issue 17: a newcomer copies the printed commands and gets suggestions with no editing.
Also checked on the way: timings named by step, the results table, zero third-party warnings and
no ANSI codes on stdout/stderr, and a rerun with another seed rebuilding instead of serving stale
features and the old champion.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NBA = Path(sys.executable).with_name("nba")
STEP_KEYS = (
    "simulate_s",
    "validate_s",
    "features_build_s",
    "feast_apply_s",
    "materialize_s",
    "online_read_s",
    "train_s",
    "evaluate_s",
    "promote_s",
    "serve_ready_s",
    "recommend_s",
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("NBA_CONFIG_DIR", "NBA_API_KEYS", "NBA_API_KEY_HASHES", "PYTHONWARNINGS")}
    # nba promote copies the champion into BentoML's model store: this run's, not the user's ~/bentoml.
    home = str(Path(tempfile.gettempdir()) / f"nba-test-bentoml-{os.getpid()}")
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "BENTOML_DO_NOT_TRACK": "True", "OMP_NUM_THREADS": "1", "BENTOML_HOME": home}


def _quickstart(workdir: Path, seed: int) -> subprocess.CompletedProcess:
    args = [str(NBA), "quickstart", "--hcps", "50", "--days", "56", "--seed", str(seed), "--workdir", str(workdir)]
    return subprocess.run(args, capture_output=True, text=True, env=_env(), cwd=workdir.parent, timeout=600)


def _clean(out: subprocess.CompletedProcess) -> None:
    for name, text in (("stdout", out.stdout), ("stderr", out.stderr)):
        assert "\x1b[" not in text, f"ANSI codes on {name}"
        noisy = [line for line in text.splitlines() if re.search(r"\w*Warning\b", line)]
        assert not noisy, f"warnings on {name}: {noisy[:5]}"


def _wait(url: str, proc: subprocess.Popen, timeout_s: float = 180.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        assert proc.poll() is None, f"{url}: the server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready after {timeout_s:.0f} s")


def _start(command: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(["bash", "-c", command], stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, env=_env())


def _stop(proc: subprocess.Popen) -> None:
    from nba.servers import stop_group

    stop_group(proc, timeout_s=30)


@pytest.mark.skipif(not NBA.exists(), reason=f"no installed `nba` script beside {sys.executable}")
def test_printed_next_steps_work_as_printed(tmp_path: Path) -> None:
    workdir = tmp_path / "qs"
    out = _quickstart(workdir, seed=7)
    assert out.returncode == 0, out.stderr[-3000:]
    _clean(out)
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(isinstance(summary.get(k), float) for k in STEP_KEYS), summary
    assert not [k for k in summary if re.fullmatch(r"step_\d+_s", k)]
    assert summary["promoted"] and summary["champion_version"] == 1 and summary["suggestions"] > 0
    assert (workdir / "api_key").stat().st_mode & 0o077 == 0

    lines = out.stdout.splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("Judged by the simulator")) :]
    for policy in ("oracle", "model", "aggregate", "popularity", "rules", "logged"):
        assert any(line.startswith(policy) for line in table[:10]), policy
    start = next(i for i, line in enumerate(lines) if line.startswith("# Next steps"))
    commands = [line for line in lines[start:-1] if line.strip() and not line.startswith("#")]
    assert len(commands) == 3, commands
    serve_cmd, curl_cmd, ui_cmd = commands
    port = int(re.search(r"http://127\.0\.0\.1:(\d+)/recommend", curl_cmd).group(1))

    serve = _start(serve_cmd, tmp_path / "serve.log")
    try:
        _wait(f"http://127.0.0.1:{port}/readyz", serve)
        asked = subprocess.run(["bash", "-c", curl_cmd], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=_env())
        assert asked.returncode == 0, asked.stdout + asked.stderr  # --fail-with-body: anything but 2xx exits non-zero
        body = json.loads(asked.stdout)
        assert body["model_version"].endswith("/1") and len(body["results"]) == 2
        assert all(r["suggestions"] for r in body["results"])
    finally:
        _stop(serve)
    serve_log = (tmp_path / "serve.log").read_text(errors="replace")
    assert not [line for line in serve_log.splitlines() if re.search(r"\w*Warning\b", line)], serve_log[-2000:]

    ui = _start(ui_cmd, tmp_path / "ui.log")
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None and time.monotonic() < deadline:
            assert ui.poll() is None, (tmp_path / "ui.log").read_text(errors="replace")[-2000:]
            found = re.search(r"MLflow UI at (http://\S+)", (tmp_path / "ui.log").read_text(errors="replace"))
            url = found.group(1) if found else None
            time.sleep(0.5)
        assert url, "nba ui never said where it listens"
        _wait(f"{url}/health", ui)
    finally:
        _stop(ui)

    # Another seed into the same workdir: rebuilt, and the champion served is the new world's model.
    again = _quickstart(workdir, seed=8)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "the world changed (seed 7 -> 8)" in " ".join(again.stderr.split())
    second = json.loads(again.stdout.strip().splitlines()[-1])
    assert second["seed"] == 8 and second["champion_version"] == 1 and second["served_model_version"].endswith("/1")
    assert json.loads((workdir / "quickstart.json").read_text())["world"]["seed"] == 8
