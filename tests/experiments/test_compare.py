"""`nba compare` on a real MLflow store: runs, champion vs challenger, and the promotion verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monitor_fixtures import write_configs
from typer.testing import CliRunner

from experiments.compare import compare_runs, format_metric
from experiments.config import load_experiments_config, training_config
from nba.cli import app

runner = CliRunner()
METRICS = ["sim/model_share_of_oracle_gain", "ope/dr_value", "val/content_ndcg_at_10", "val/response_ece"]


def _store(root: Path, champion_value: float, challenger_value: float | None) -> Path:
    """Two trained versions (v1 champion, v2 challenger), each with a training and an evaluation run."""
    import mlflow
    from mlflow import MlflowClient

    from training import tracking

    cfg_path = write_configs(root, f"sqlite:///{root / 'audit.db'}")
    tcfg = training_config(load_experiments_config(cfg_path))
    tracking.setup(tcfg.tracking)
    client = MlflowClient()
    name = tcfg.tracking.registered_model
    client.create_registered_model(name)
    for version, (encoder, ndcg, value, share) in enumerate((("gru", 0.31, champion_value, 0.20), ("transformer", 0.35, challenger_value, 0.26)), start=1):
        with mlflow.start_run(run_name=f"train-{encoder}") as run:
            mlflow.log_params({"model.encoder": encoder, "loss.objective": "dr"})
            for epoch, m in enumerate((ndcg - 0.05, ndcg)):
                mlflow.log_metrics({"val/content_ndcg_at_10": m, "val/response_ece": 0.04 / (epoch + 1)}, step=epoch)
        tags = {"run_id": run.info.run_id}
        if value is not None:
            tags.update(policy_value=repr(value), share_of_oracle_gain=repr(share))
        mv = client.create_model_version(name, source=str(root / f"bundle{version}"), run_id=run.info.run_id, tags=tags)
        with mlflow.start_run(run_name=f"evaluate-v{mv.version}"):
            mlflow.set_tags({"stage": "evaluation", "model_version": str(mv.version)})
            mlflow.log_metrics({"sim/model_share_of_oracle_gain": share, "ope/dr_value": 0.3 + version / 100, "ope/dr_ci_low": 0.28, "ope/dr_ci_high": 0.34})
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "challenger", "2")
    return cfg_path


def test_champion_vs_challenger_and_the_promotion_rule(tmp_path: Path) -> None:
    cfg_path = _store(tmp_path, champion_value=0.40, challenger_value=0.45)
    cfg = load_experiments_config(cfg_path)
    res = compare_runs(training_config(cfg).tracking, max_runs=10, params=["model.encoder"], metrics=METRICS)
    assert len(res["runs"]) == 4
    train = [r for r in res["runs"] if r["params"]["model.encoder"] == "transformer"][0]
    assert train["metrics"]["val/content_ndcg_at_10"] == pytest.approx(0.35)  # the last epoch's value
    assert res["champion"]["version"] == 1 and res["challenger"]["version"] == 2
    ch = res["challenger"]
    assert ch["params"] == {"model.encoder": "transformer"} and ch["policy_value"] == pytest.approx(0.45)
    assert ch["metrics"]["sim/model_share_of_oracle_gain"] == pytest.approx(0.26) and ch["intervals"]["ope/dr_value"] == [0.28, 0.34]
    assert res["promotion"]["would_promote"] is True and "0.4500" in res["promotion"]["why"]
    assert format_metric({"ope/dr_value": 0.32, "ope/dr_ci_low": 0.28, "ope/dr_ci_high": 0.34}, "ope/dr_value") == "0.32 [0.28, 0.34]"
    assert format_metric({}, "val/response_ece") == "—"


def test_worse_challenger_keeps_the_champion_and_cli_json(tmp_path: Path) -> None:
    cfg_path = _store(tmp_path, champion_value=0.40, challenger_value=0.35)
    out = runner.invoke(app, ["compare", "--json", "-c", str(cfg_path)])
    assert out.exit_code == 0, out.output
    res = json.loads(out.output.strip().splitlines()[-1])
    assert res["promotion"]["would_promote"] is False and "does not beat" in res["promotion"]["why"]
    table = runner.invoke(app, ["compare", "-c", str(cfg_path), "--set", "compare.metrics=[ope/dr_value]"])
    assert table.exit_code == 0 and "champion vs challenger" in table.output and "[0.28, 0.34]" in table.output
    assert "the champion stays" in table.output


def test_unevaluated_challenger_and_bad_run_id(tmp_path: Path) -> None:
    cfg_path = _store(tmp_path, champion_value=0.40, challenger_value=None)
    cfg = load_experiments_config(cfg_path)
    res = compare_runs(training_config(cfg).tracking, metrics=METRICS)
    assert res["promotion"]["would_promote"] is False and "nba evaluate" in res["promotion"]["why"]
    out = runner.invoke(app, ["compare", "--runs", "f" * 32, "-c", str(cfg_path)])
    assert out.exit_code == 2 and "--runs" in out.output
    out = runner.invoke(app, ["compare", "--experiment", "nope", "-c", str(cfg_path)])
    assert out.exit_code == 2 and "'nope' does not exist" in out.output
