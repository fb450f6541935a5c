"""`nba tune --workers 2`: two processes run the trials of one study in the real PostgreSQL."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nba.cli import app
from training.synthetic import synthetic_training_frame


@pytest.mark.slow
@pytest.mark.postgres
def test_two_tuning_workers_share_one_postgres_study(tmp_path, monkeypatch, postgres_db) -> None:
    import optuna
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    synthetic_training_frame(n_hcps=32, n_weeks=8, n_content=6, max_hist=8, seed=4).to_parquet(tmp_path / "ts.parquet")
    sets = {
        "epochs": 1,
        "val_weeks": 2,
        "test_weeks": 2,
        "batch_size": 128,
        "tune.startup_trials": 1,
        "tracking.uri": f"sqlite:///{tmp_path}/mlflow.db",
        "tracking.artifact_location": f"{tmp_path}/artifacts",
        "output_dir": f"{tmp_path}/models",
    }
    args = ["tune", "--workers", "2", "--trials", "4", "--storage", postgres_db, "--training-set", str(tmp_path / "ts.parquet")]
    result = CliRunner().invoke(app, [*args, *(x for k, v in sets.items() for x in ("--set", f"{k}={v}"))])
    assert result.exit_code == 0, result.output[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["workers"] == 2 and out["trials_total"] == 4

    study = optuna.load_study(study_name="nba-tune", storage=postgres_db)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
    assert trials[0].params["model.encoder"] == "transformer" and trials[0].params["lr"] == pytest.approx(3e-3)  # the enqueued default
    pids = {t.user_attrs["pid"] for t in trials if "pid" in t.user_attrs}
    assert len(pids) == 2, pids  # both processes ran trials (2 each: the split is fixed)

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("nba-training")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{out['tune_run_id']}'")
    assert len(children) == 4  # the spawned worker's trials are children of the tuning run too
    assert str(client.get_model_version_by_alias("nba-next-best-action", "challenger").version) == out["model_version"]
