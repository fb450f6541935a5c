"""`nba train` and `nba promote` against a real local MLflow store (SQLite + file artifacts)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nba.cli import app
from training.synthetic import synthetic_training_frame

runner = CliRunner()


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """A scratch folder holding a small Parquet training set; MLflow and models live beside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    synthetic_training_frame(n_hcps=48, n_weeks=10, n_content=8, max_hist=12, seed=2).to_parquet(tmp_path / "ts.parquet")
    return tmp_path


def _args(tmp_path, *extra: str) -> list[str]:
    return [
        "--training-set",
        str(tmp_path / "ts.parquet"),
        "--epochs",
        "2",
        "--set",
        "val_weeks=3",
        "--set",
        "test_weeks=2",
        "--set",
        "model.d_model=16",
        "--set",
        "model.n_heads=2",
        "--set",
        "model.n_layers=1",
        "--set",
        "batch_size=128",
        "--set",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "--set",
        f"tracking.artifact_location={tmp_path}/artifacts",
        "--set",
        f"output_dir={tmp_path}/models",
        *extra,
    ]


def _last_json(result) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_logs_everything_and_registers_challenger(workdir) -> None:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    result = runner.invoke(app, ["train", *_args(workdir, "--encoder", "gru", "--seed", "5")])
    assert result.exit_code == 0, result.output
    figures = _last_json(result)
    assert 0.0 <= figures["val_content_ndcg_at_10"] <= 1.0 and figures["model_version"] == "1"
    client = MlflowClient(tracking_uri=f"sqlite:///{workdir}/mlflow.db")
    run = client.get_run(figures["run_id"])
    assert run.data.params["model.encoder"] == "gru" and run.data.params["seed"] == "5"
    assert len(run.data.tags["data_fingerprint"]) == 16
    history = client.get_metric_history(figures["run_id"], "val/content_ndcg_at_10")
    assert sorted(m.step for m in history) == [0, 1]
    assert all("@" not in k for k in run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(figures["run_id"], "config")}
    assert {"config/training.json", "config/features.json"} <= artifacts
    mv = client.get_model_version_by_alias("nba-next-best-action", "challenger")
    assert str(mv.version) == "1"
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    model = mlflow.pyfunc.load_model("models:/nba-next-best-action@challenger")
    assert model.metadata.signature is not None
    # The training set carries the response-history counts, so the network reads them.
    assert model.unwrap_python_model().bundle.model.config.long_history == (8, 7, 4, 6)
    rows = (
        pd.read_parquet(workdir / "ts.parquet")
        .tail(5)
        .drop(
            columns=[
                "label_channel",
                "label_content_id",
                "label_day_offset",
                "label_daypart",
                "label_response",
                "label_propensity",
                "label_ts",
                "event_timestamp",
                "seq_len",
            ]
        )
    )
    for ch in ("visit", "department_meeting", "wechat_push", "wecom_1to1", "email", "webinar", "conference", "phone"):
        rows[f"consent_{ch}"] = ch == "email"  # consent only to email: the guardrail must hold
    rows["is_kol"] = rows["is_kol"].astype(float)
    rows = rows.astype({c: "float64" for c in rows.columns if c.startswith("affinity_")})
    out = model.predict(rows)
    assert list(out["channel"]) == ["email"] * 5
    assert out["expected_response"].between(0, 1).all()


@pytest.mark.slow
def test_same_seed_same_metrics(workdir) -> None:
    a = _last_json(runner.invoke(app, ["train", *_args(workdir, "--seed", "3")]))
    b = _last_json(runner.invoke(app, ["train", *_args(workdir, "--seed", "3")]))
    keys = [k for k in a if k.startswith("val_")]
    assert keys and all(a[k] == b[k] for k in keys)
    assert a["model_version"] == "1" and b["model_version"] == "2"


@pytest.mark.slow
def test_promote_requires_a_better_evaluated_challenger(workdir) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{workdir}/mlflow.db"
    sets = ["--set", f"tracking.uri={uri}", "--set", f"tracking.artifact_location={workdir}/artifacts"]
    assert runner.invoke(app, ["train", *_args(workdir)]).exit_code == 0
    client = MlflowClient(tracking_uri=uri)
    name = "nba-next-best-action"
    res = runner.invoke(app, ["promote", *sets])
    assert res.exit_code == 1 and "nba evaluate" in res.stderr and "Traceback" not in res.output
    client.set_model_version_tag(name, "1", "policy_value", "0.30")
    first = _last_json(runner.invoke(app, ["promote", *sets]))
    assert first["promoted"] and first["champion_version"] == 1  # no champion yet: the first one wins
    assert runner.invoke(app, ["train", *_args(workdir)]).exit_code == 0
    client.set_model_version_tag(name, "2", "policy_value", "0.25")
    worse = _last_json(runner.invoke(app, ["promote", *sets]))
    assert not worse["promoted"] and str(client.get_model_version_by_alias(name, "champion").version) == "1"
    client.set_model_version_tag(name, "2", "policy_value", "0.35")
    client.set_model_version_tag(name, "1", "policy_value_setting", "data=x start=end weeks=8")
    client.set_model_version_tag(name, "2", "policy_value_setting", "data=x start=beginning weeks=8")
    apart = _last_json(runner.invoke(app, ["promote", *sets]))
    assert not apart["promoted"] and "not comparable" in apart["reason"]  # a higher value measured another way proves nothing
    client.set_model_version_tag(name, "2", "policy_value_setting", "data=x start=end weeks=8")
    better = _last_json(runner.invoke(app, ["promote", *sets]))
    assert better["promoted"] and str(client.get_model_version_by_alias(name, "champion").version) == "2"
