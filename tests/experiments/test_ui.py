"""`nba ui`: a real MLflow server on 127.0.0.1 against the project's store starts, answers, stops."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from monitor_fixtures import write_configs

from experiments.config import load_experiments_config, training_config
from experiments.ui import start_ui, stop_ui, ui_command, ui_env, wait_ready


def test_command_pins_the_store_and_disables_jobs(tmp_path: Path) -> None:
    tracking = training_config(load_experiments_config(write_configs(tmp_path, "sqlite://"))).tracking
    cmd = ui_command(tracking, "127.0.0.1", 5123)
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"
    assert cmd[cmd.index("--default-artifact-root") + 1] == (tmp_path / "artifacts").resolve().as_uri()
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5123"
    env = ui_env()
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and env["MLFLOW_DISABLE_TELEMETRY"] == "true"


@pytest.mark.e2e
@pytest.mark.slow
def test_ui_starts_answers_and_stops(tmp_path: Path) -> None:
    import mlflow

    from training import tracking as trk

    tracking = training_config(load_experiments_config(write_configs(tmp_path, "sqlite://"))).tracking
    trk.setup(tracking)
    with mlflow.start_run(run_name="seen-by-the-ui"):
        mlflow.log_metric("val/response_auc", 0.7)
    proc, url = start_ui(tracking, "127.0.0.1", 0, log_path=tmp_path / "ui.log")
    try:
        wait_ready(url, proc, timeout_s=120)
        q = urllib.parse.urlencode({"experiment_name": tracking.experiment})
        with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{q}", timeout=10) as resp:
            exp = json.loads(resp.read())["experiment"]
        body = json.dumps({"experiment_ids": [exp["experiment_id"]], "max_results": 10}).encode()
        req = urllib.request.Request(f"{url}/api/2.0/mlflow/runs/search", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            runs = json.loads(resp.read())["runs"]
        assert [r["info"]["run_name"] for r in runs] == ["seen-by-the-ui"]
        with urllib.request.urlopen(f"{url}/", timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read(2000).lower()
    finally:
        stop_ui(proc)
    assert proc.poll() is not None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)
