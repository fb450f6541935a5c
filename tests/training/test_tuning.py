"""`nba tune`: Optuna TPE + median pruning into SQLite or the real PostgreSQL, trials as nested MLflow runs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nba.cli import app
from training.synthetic import synthetic_training_frame

runner = CliRunner()


def _tune(tmp_path, storage: str, trials: int = 3) -> dict:
    synthetic_training_frame(n_hcps=32, n_weeks=8, n_content=6, max_hist=8, seed=4).to_parquet(tmp_path / "ts.parquet")
    result = runner.invoke(
        app,
        [
            "tune",
            "--trials",
            str(trials),
            "--storage",
            storage,
            "--training-set",
            str(tmp_path / "ts.parquet"),
            "--set",
            "epochs=2",
            "--set",
            "val_weeks=2",
            "--set",
            "test_weeks=2",
            "--set",
            "batch_size=128",
            "--set",
            "tune.startup_trials=1",
            "--set",
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            "--set",
            f"tracking.artifact_location={tmp_path}/artifacts",
            "--set",
            f"output_dir={tmp_path}/models",
        ],
    )
    assert result.exit_code == 0, result.output[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check(tmp_path, storage: str, out: dict) -> None:
    import optuna
    from mlflow import MlflowClient

    study = optuna.load_study(study_name="nba-tune", storage=storage)
    assert len(study.trials) == out["trials_total"] == 3
    first = study.trials[0].params  # a new study tries the configured model first
    assert first["model.encoder"] == "transformer" and first["model.d_model"] == 32 and first["lr"] == pytest.approx(3e-3)
    assert first["loss.objective"] == "dr" and first["loss.response_weighting"] == "none"
    assert out["trials_complete"] + out["trials_pruned"] == 3
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("nba-training")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{out['tune_run_id']}'")
    assert len(children) == 3 and all("optuna_trial" in r.data.tags for r in children)
    assert {r.data.params["loss.objective"] for r in children} <= {"naive", "ips", "dr"}
    assert str(client.get_model_version_by_alias("nba-next-best-action", "challenger").version) == out["model_version"]
    assert out["ranked_by"] == "ope_dr"  # a ready training set without ground truth: ranked by the DR estimate


@pytest.mark.slow
def test_tune_sqlite(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    _check(tmp_path, storage, _tune(tmp_path, storage))


@pytest.mark.slow
@pytest.mark.postgres
def test_tune_postgres(tmp_path, monkeypatch, postgres_db) -> None:
    monkeypatch.chdir(tmp_path)
    _check(tmp_path, postgres_db, _tune(tmp_path, postgres_db))


def test_tune_refuses_the_mlflow_database() -> None:
    from nba.configuration import ConfigError, load_config
    from training.config import TrainingConfig

    with pytest.raises(ConfigError, match="tune.storage must not be the MLflow"):
        load_config(TrainingConfig, "training", overrides={"tune.storage": "sqlite:///x.db", "tracking.uri": "sqlite:///x.db"})


def test_tuning_ranks_by_policy_value_explicitly(tmp_path) -> None:
    from contract.schema import GROUND_TRUTH_DIR
    from training.config import TrainingConfig
    from training.tuning import OBJECTIVE_METRICS, resolve_objective

    cfg = TrainingConfig(data_dir=str(tmp_path))
    assert resolve_objective(cfg) == "ope_dr"  # logs alone: the doubly robust estimate
    with pytest.raises(ValueError, match="no simulator ground truth"):
        resolve_objective(TrainingConfig.model_validate({**cfg.model_dump(), "tune": {**cfg.tune.model_dump(), "objective": "simulator"}}))
    (tmp_path / GROUND_TRUTH_DIR).mkdir()
    (tmp_path / GROUND_TRUTH_DIR / "world.json").write_text("{}")
    assert resolve_objective(cfg) == "simulator"  # a simulator is present: its truth ranks trials
    # Without a judge handed in (training never imports the simulator) the truth cannot be read.
    assert resolve_objective(cfg, judged=False) == "ope_dr"
    with pytest.raises(ValueError, match="no simulator judge"):
        resolve_objective(TrainingConfig.model_validate({**cfg.model_dump(), "tune": {**cfg.tune.model_dump(), "objective": "simulator"}}), judged=False)
    assert OBJECTIVE_METRICS == {"simulator": "sim/share_of_oracle_gain", "ope_dr": "val/policy_value_dr"}


def test_default_params_are_the_configured_model_inside_the_space() -> None:
    from training.config import TrainingConfig
    from training.tuning import default_params

    cfg = TrainingConfig()
    p = default_params(cfg)
    assert p["model.encoder"] == cfg.model.encoder and p["lr"] == cfg.lr and p["model.content_tags"] is cfg.model.content_tags
    odd = TrainingConfig.model_validate({**cfg.model_dump(), "lr": 0.5, "model": {**cfg.model.model_dump(), "d_model": 128, "n_layers": 4}})
    q = default_params(odd)
    assert "lr" not in q and "model.d_model" not in q and "model.n_layers" not in q  # outside the space: left to the sampler
