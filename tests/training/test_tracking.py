"""The MLflow experiment as a reviewer opens it: its kind, the review view's columns, evaluation params and run names."""

from __future__ import annotations

import json

import pytest

from training import tracking as trk
from training.config import TrainingConfig


def _cfg(tmp_path, experiment: str = "nba-training") -> TrainingConfig:
    return TrainingConfig.model_validate(
        {"tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "artifacts"), "experiment": experiment}}
    )


def test_setup_tags_new_and_existing_experiments_once(tmp_path, monkeypatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = _cfg(tmp_path)
    exp_id = trk.setup(cfg.tracking)
    tags = MlflowClient().get_experiment(exp_id).tags
    assert tags[trk.EXPERIMENT_KIND_TAG] == "custom_model_development"  # MLflow UI's "Machine learning" kind
    assert tags[trk.PRIMARY_METRIC_TAG] == trk.EVAL_VALUE_METRIC
    view = json.loads(tags[f"{trk.SHARED_VIEW_PREFIX}{trk.REVIEW_VIEW_KEY}"])
    assert f"metrics.`{trk.EVAL_VALUE_METRIC}`" in view["selectedColumns"] and "params.`model_version`" in view["selectedColumns"]

    # An experiment made before these tags (or by hand) gets them too; a second setup leaves them as they are.
    old = mlflow.create_experiment("made-by-hand", artifact_location=(tmp_path / "a2").as_uri())
    assert trk.EXPERIMENT_KIND_TAG not in MlflowClient().get_experiment(old).tags
    assert trk.setup(_cfg(tmp_path, "made-by-hand").tracking) == old
    once = MlflowClient().get_experiment(old)
    assert {k: once.tags[k] for k in trk.review_tags()} == trk.review_tags()
    assert trk.setup(_cfg(tmp_path, "made-by-hand").tracking) == old
    assert MlflowClient().get_experiment(old).tags == once.tags

    url = trk.review_url("http://127.0.0.1:5000/", exp_id)
    assert url == f"http://127.0.0.1:5000/#/experiments/{exp_id}?workflowType=machine_learning&viewStateShareKey={trk.REVIEW_VIEW_KEY}"


def test_evaluation_runs_carry_params_names_and_the_review_columns(tmp_path, monkeypatch) -> None:
    import datetime as dt

    import mlflow
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    exp_id = trk.setup(_cfg(tmp_path).tracking)
    with mlflow.start_run() as run:
        with pytest.raises(ValueError, match="missing n_boot, test_window"):
            trk.log_evaluation_params(mlflow, model_version=3, evaluation_setting="s", data_fingerprint="ab12", estimator="dr")
        logged = trk.log_evaluation_params(
            mlflow,
            model_version=3,
            evaluation_setting="data=ab12 test=2025-10-06..2025-12-01 dr n_boot=1000",
            data_fingerprint="ab12",
            estimator="dr",
            n_boot=1000,
            test_window=(dt.date(2025, 10, 6), dt.datetime(2025, 12, 1, 13, tzinfo=dt.UTC)),
        )
        figures = trk.log_policy_value(mlflow, 0.54, 0.41, 0.68, vs_champion_ci_low=float("nan"), vs_logged_ci_low=0.012)
    got = MlflowClient().get_run(run.info.run_id)
    assert got.info.run_name == "evaluate v3 (dr, weeks 2025-10-06..2025-12-01)"
    assert got.data.params["test_window"] == "2025-10-06..2025-12-01" and got.data.params["n_boot"] == "1000" == logged["n_boot"]
    assert set(trk.EVALUATION_PARAMS) <= set(got.data.params)
    assert trk.EVAL_VS_CHAMPION_CI_LOW_METRIC not in got.data.metrics and trk.EVAL_VS_CHAMPION_CI_LOW_METRIC not in figures  # NaN: left out
    assert got.data.metrics[trk.EVAL_VALUE_METRIC] == pytest.approx(0.54)
    # Every metric and param the review view shows is one these helpers write (or training/evaluation's AUC).
    view = json.loads(MlflowClient().get_experiment(exp_id).tags[f"{trk.SHARED_VIEW_PREFIX}{trk.REVIEW_VIEW_KEY}"])
    for column in view["selectedColumns"]:
        kind, key = column.split(".", 1)
        key = key.strip("`")
        if kind == "params":
            assert key in got.data.params, column
        elif kind == "metrics" and not key.endswith("response_auc"):
            assert key in {
                trk.EVAL_VALUE_METRIC,
                trk.EVAL_CI_LOW_METRIC,
                trk.EVAL_CI_HIGH_METRIC,
                trk.EVAL_VS_CHAMPION_CI_LOW_METRIC,
                trk.EVAL_VS_LOGGED_CI_LOW_METRIC,
            }, column
