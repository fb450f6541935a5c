"""`nba evaluate` end to end on a tiny simulated world: real simulator, real Feast, real MLflow.

The simulated figures come from ``experiments.sim_judge``, which the composition root hands to
``training.evaluation.evaluate_job``; without a judge, evaluation reads the logs alone.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nba.cli import app

runner = CliRunner()


def _ok(result) -> dict:
    assert result.exit_code == 0, result.output[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A 10-week simulated dataset, its Feast feature store, and one trained challenger."""
    root = tmp_path_factory.mktemp("world")
    mp = pytest.MonkeyPatch()
    mp.chdir(root)
    mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    _ok(runner.invoke(app, ["simulate", "--hcps", "80", "--days", "70", "--out", str(root / "data")]))
    assert runner.invoke(app, ["features", "build", "--data-dir", str(root / "data")]).exit_code == 0
    assert runner.invoke(app, ["features", "apply"]).exit_code == 0
    sets = [
        "--set",
        f"tracking.uri=sqlite:///{root}/mlflow.db",
        "--set",
        f"tracking.artifact_location={root}/artifacts",
        "--set",
        f"output_dir={root}/models",
        "--set",
        "val_weeks=3",
        "--set",
        "test_weeks=2",
        "--set",
        "ope.n_boot=100",
    ]
    small = ["--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.n_layers=1", "--set", "batch_size=256"]
    trained = _ok(runner.invoke(app, ["train", "--data-dir", str(root / "data"), "--epochs", "1", *sets, *small]))
    yield root, sets, trained
    mp.undo()


@pytest.mark.slow
def test_evaluate_measures_model_and_every_baseline(world) -> None:
    from mlflow import MlflowClient

    root, sets, trained = world
    figures = _ok(runner.invoke(app, ["evaluate", "--data-dir", str(root / "data"), "--weeks", "3", "--imitation", *sets]))
    for who in ("logged", "oracle", "rules", "popularity", "aggregate", "model", "imitation"):
        assert figures[f"sim_{who}_responses_per_hcp_week"] >= 0
    assert figures["sim_oracle_responses_per_hcp_week"] > figures["sim_logged_responses_per_hcp_week"]
    assert figures["sim_model_violations"] == 0 == figures["sim_imitation_violations"]  # guardrails: consent, approved content, working hours, capacity
    assert figures["sim_aggregate_violations"] == 0 and figures["sim_popularity_violations"] == 0
    for key in (
        "offline_model_content_ndcg_at_10",
        "offline_aggregate_response_auc",
        "offline_popularity_channel_accuracy",
        "ope_dr_value",
        "ope_logged_value",
        "ope_dm_value",
    ):
        assert figures[key] is None or 0.0 <= figures[key] <= 1.0, key
    assert figures["ope_vs_logged_ci_low"] <= figures["ope_vs_logged"] <= figures["ope_vs_logged_ci_high"]
    # Reported on the test weeks, which nothing selected on.
    assert figures["evaluation_split"] == "test" and figures["split_overlaps_selection"] is False
    # OPE of the policy as served, checked against the simulator's truth on the same rows.
    assert 0.0 < figures["ope_true_response_rate"] < 1.0 and 0.0 <= figures["ope_support_mass"] <= 1.0
    assert 0.5 < figures["ope_truth_probability_mass_covered"] <= 1.0 + 1e-9
    assert all(isinstance(figures[f"ope_{e}_ci_covers_truth"], bool) for e in ("ips", "snips", "dr", "switch_dr", "dr_os"))
    assert isinstance(figures["ope_verdict_trusted"], bool) and "overlap" in figures["ope_verdict"]
    # The oracle-gap decomposition: partial oracles sit below the oracle.
    for who in ("population", "population_channel", "population_topic", "population_timing", "oracle_no_timing", "oracle_no_fatigue"):
        assert figures[f"sim_{who}_share_of_oracle_gain"] < 1.05, who
    assert "gap_worth_timing_share" in figures and "gap_model_minus_population_oracle_share" in figures
    # By default every policy continues after the logged weeks, and the oracle believing each HCP's
    # posterior from its logs (the ceiling of learning from them) is measured beside the others.
    assert figures["sim_start_week"] == 10
    assert figures["sim_oracle_from_logs_share_of_oracle_gain"] < 1.05 and figures["sim_oracle_timing_from_logs_share_of_oracle_gain"] < 1.05
    assert figures["gap_model_minus_oracle_from_logs_share"] == pytest.approx(
        figures["sim_model_share_of_oracle_gain"] - figures["sim_oracle_from_logs_share_of_oracle_gain"]
    )
    assert 0.0 <= figures["offline_model_response_ece_calibrated"] <= 1.0
    # The policy as served (the serving engine's guardrails and window rules) and the per-world checks.
    assert figures["served_checks_total"] == 4 and 0 <= figures["served_checks_passed"] <= 4
    assert figures["served_checks_passed"] == sum(
        figures[f"served_check_{c}"] for c in ("repeat_le_logged", "override_le_2pct", "calibration_gap_le_0_03", "rules_ge_logged")
    )
    assert figures["served_check_override_le_2pct"] == (figures["served_model_override_share"] <= 0.02)
    assert 0.0 <= figures["served_model_repeat_share_30d"] <= 1.0 and figures["served_model_touches"] > 0
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    plots = {a.path for a in client.list_artifacts(figures["evaluation_run_id"], "plots")}
    assert plots == {"plots/policy_value.png", "plots/calibration.png", "plots/channel_mix.png", "plots/value_by_tier.png"}
    mv = client.get_model_version("nba-next-best-action", trained["model_version"])
    assert float(mv.tags["policy_value"]) == pytest.approx(figures["sim_model_responses_per_hcp_week"])
    assert float(mv.tags["ope_value"]) == pytest.approx(figures["ope_value"]) and mv.tags["ope_verdict"] in ("trusted", "untrusted")
    run = client.get_run(figures["evaluation_run_id"])
    assert run.data.params["model_version"] == str(trained["model_version"]) and run.data.params["estimator"] == "switch_dr_bb"
    assert run.info.run_name.startswith(f"evaluate v{trained['model_version']} (switch_dr_bb, weeks ")
    promoted = _ok(runner.invoke(app, ["promote", *sets]))
    assert promoted["promoted"] and promoted["champion_version"] == int(trained["model_version"])


@pytest.mark.slow
def test_evaluate_can_replay_from_the_first_week(world) -> None:
    root, sets, _ = world
    figures = _ok(runner.invoke(app, ["evaluate", "--data-dir", str(root / "data"), "--weeks", "2", "--start", "beginning", *sets]))
    assert figures["sim_start_week"] == 0
    assert "sim_oracle_from_logs_share_of_oracle_gain" not in figures  # no logs yet to learn from
    bad = runner.invoke(app, ["evaluate", "--data-dir", str(root / "data"), "--start", "middle", *sets])
    assert bad.exit_code != 0 and "sim_start" in bad.output + str(bad.exception)


def test_feature_policies_see_the_logged_history_after_the_logs(world) -> None:
    """Continuing after the logs, a policy's features count the HCP's logged touches; without them it would start blind."""
    from experiments.sim_judge import _FeaturePolicy, logged_history
    from features.config import load_features_config
    from simulator.environment import Environment
    from training.dataset import ContentVocab

    root, _, _ = world
    data = str(root / "data")
    env = Environment.from_data_dir(data, start="end")
    obs = env.observe()
    fcfg = load_features_config(None, overrides={"data_dir": data})
    with_logs = _FeaturePolicy(fcfg, 2, ContentVocab(()), logged_history(data, "end")).features(obs)
    blind = _FeaturePolicy(fcfg, 2, ContentVocab(())).features(obs)
    assert (blind["touches_total"] == 0).all()
    from contract.io import read_frame

    per_hcp = read_frame(data, "touchpoints").groupby("hcp_id").size()
    assert with_logs.set_index("hcp_id")["touches_total"].to_dict() == {h: per_hcp.get(h, 0) for h in with_logs["hcp_id"]}
    with pytest.raises(ValueError, match="sim_start"):
        logged_history(data, "middle")


def test_without_a_judge_evaluation_reads_the_logs_alone(world) -> None:
    """Training's own evaluation (no simulator): offline and OPE figures, no true values, no policy-value tag to promote on."""
    from mlflow import MlflowClient

    from nba.configuration import load_config, parse_override
    from training.config import TrainingConfig
    from training.evaluation import evaluate_job

    root, sets, trained = world
    overrides = dict(parse_override(v) for v in sets[1::2])
    cfg = load_config(TrainingConfig, "training", overrides={**overrides, "data_dir": str(root / "data")})
    client = MlflowClient(tracking_uri=f"sqlite:///{root}/mlflow.db")
    before = client.get_model_version("nba-next-best-action", trained["model_version"]).tags.get("policy_value")
    figures = evaluate_job(cfg, trained["model_version"], progress=False)
    assert not any(k.startswith(("sim_", "gap_")) for k in figures) and "ope_true_response_rate" not in figures
    assert figures["ope_rows"] > 0 and "ope_dr_value" in figures and "offline_model_response_auc" in figures
    plots = {a.path for a in client.list_artifacts(figures["evaluation_run_id"], "plots")}
    assert plots == {"plots/policy_value.png", "plots/calibration.png"}
    assert client.get_model_version("nba-next-best-action", trained["model_version"]).tags.get("policy_value") == before


def test_judge_gives_tuning_the_model_policy_true_value(world) -> None:
    """`nba tune`'s ``objective: simulator``: the judge's value of one trained bundle, from the same start as evaluation."""
    import math

    from experiments.sim_judge import SIMULATOR_JUDGE
    from training.artifacts import load_bundle

    root, _, trained = world
    bundle = load_bundle(root / "models" / trained["run_id"])
    value = SIMULATOR_JUDGE.policy_value(bundle, str(root / "data"), None, weeks=1, start="end")
    assert set(value) == {"responses_per_hcp_week", "share_of_oracle_gain"}
    assert value["responses_per_hcp_week"] >= 0 and math.isfinite(value["share_of_oracle_gain"])


def test_day_grain_rows_are_judged_in_their_weeks_state() -> None:
    """OPE truth matched Monday rows only: a day-grain row (any weekday, naive UTC as training stores it) maps to its week's Monday."""
    import datetime as dt

    import numpy as np

    from experiments.sim_judge import week_mondays

    times = np.array(["2025-03-03T00:00", "2025-03-05T00:00", "2025-03-09T00:00", "2025-03-10T00:00"], dtype="datetime64[ns]")
    monday, next_monday = dt.date(2025, 3, 3), dt.date(2025, 3, 10)
    assert week_mondays(times) == [monday, monday, monday, next_monday]
