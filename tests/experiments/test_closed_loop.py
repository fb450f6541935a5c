"""The served system against the simulator: audit trail, feedback, outcomes, kept-apart truth, and the lift agreeing with it."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from experiments.closed_loop import TRUTH_FILE, feedback_items, run_closed_loop, true_lift
from experiments.lift_config import ClosedLoopConfig

pytestmark = pytest.mark.slow
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A simulated dataset (150 HCPs, 20 logged weeks) with its ground truth."""
    from lift_fixtures import simulate_world

    return simulate_world(tmp_path_factory.mktemp("lift-world") / "data")


@pytest.fixture(scope="module")
def champion_store(world, tmp_path_factory):
    """A small GRU trained on the world's logs, crowned champion in a real MLflow registry (~30 s): (model, tracking root)."""
    from lift_fixtures import train_champion

    root = tmp_path_factory.mktemp("lift-model")
    return train_champion(world, root)[0], root


@pytest.fixture(scope="module")
def champion(champion_store):
    """The loaded champion."""
    return champion_store[0]


@pytest.fixture(scope="module")
def served(world, champion, tmp_path_factory):
    """Eight served weeks with the champion, 40% holdout, counterfactual worlds for the truth."""
    out = tmp_path_factory.mktemp("lift-served")
    summary = run_closed_loop(world, out, ClosedLoopConfig(weeks=8, seed=3, holdout_share=0.4), model=champion, progress=False)
    return out, summary


def _truth(out) -> pd.DataFrame:
    return pd.read_parquet(out / "_ground_truth" / TRUTH_FILE)


def test_rules_only_loop_is_deterministic_with_no_true_lift(world, tmp_path) -> None:
    cfg = ClosedLoopConfig(weeks=3, seed=2, holdout_share=0.3)
    a = run_closed_loop(world, tmp_path / "a", cfg, progress=False)
    b = run_closed_loop(world, tmp_path / "b", cfg, progress=False)
    pd.testing.assert_frame_equal(_truth(tmp_path / "a"), _truth(tmp_path / "b"))
    assert a["counts"] == b["counts"] and a["counts"]["observed"]["simulator_violations"] == 0
    # Without a model the served arm gets the rules too: the counterfactual worlds coincide.
    assert all(v == 0.0 for k, v in a["true_lift"].items() if k.endswith(":ate"))
    with pytest.raises(ValueError, match="already holds suggestions"):
        run_closed_loop(world, tmp_path / "a", cfg, progress=False)
    other = run_closed_loop(world, tmp_path / "c", cfg.model_copy(update={"seed": 9}), progress=False)
    assert other["counts"] != a["counts"], "another seed re-randomises reps and outcomes"


def test_audit_trail_feedback_and_crm_data_tell_the_same_story(served) -> None:
    from contract.importer import validate_dataset
    from contract.io import read_frame
    from serving.audit import AuditTrail

    out, summary = served
    audit = AuditTrail(summary["audit_url"])
    s, fb = audit.read("suggestions"), audit.read("feedback")
    assert set(s["policy"]) >= {"model", "holdout"} and s["propensity"].between(0, 1, inclusive="right").all()
    assert s["as_of"].nunique() == 8 and s.groupby(["hcp_id", "as_of"]).size().max() <= 2
    arm = s.groupby("hcp_id")["policy"].apply(lambda p: set(p) == {"holdout"})
    assert 0.25 < arm.mean() < 0.55 and s.groupby("hcp_id")["policy"].apply(lambda p: "holdout" in set(p) and set(p) != {"holdout"}).sum() == 0
    # Every touch the loop executed names a served suggestion; each opened one got its feedback.
    tp = read_frame(out / "data", "touchpoints")
    served_tp = tp[tp["suggestion_id"].isin(set(s["suggestion_id"]))]
    assert len(served_tp) == summary["counts"]["observed"]["suggestions_executed"] > 0
    positive = fb[fb["outcome"].isin(["opened", "attended"])]
    assert set(positive["suggestion_id"]) == set(served_tp.loc[served_tp["opened"], "suggestion_id"])
    assert fb["feedback_id"].is_unique and len(fb) == summary["feedback_created"]
    # Replaying the service's feedback is a no-op: idempotent by feedback id.
    first = fb.iloc[0].to_dict()
    assert not audit.record_feedback({k: first[k] for k in ("feedback_id", "suggestion_id", "outcome", "reason", "ts")}).created
    audit.close()
    issues, _ = validate_dataset(out / "data")
    assert not [i for i in issues if i.severity == "error"], issues[:3]
    truth = _truth(out)
    assert set(truth["world"]) == {"observed", "all_served", "all_holdout"} and len(truth) == 3 * 8 * 150
    obs = truth[truth["world"] == "observed"]
    assert obs["responses"].sum() == len(positive)


def test_measured_lift_agrees_with_the_true_lift(served) -> None:
    from experiments.lift import lift_job

    out, summary = served
    res = lift_job(summary["audit_url"], summary["data_dir"], n_boot=1000, seed=0)
    truth = true_lift(_truth(out), res["per_hcp"].index)
    f = res["figures"]
    for measured, col in (("responses_per_hcp_week", "expected_responses"), ("prescriptions_per_hcp_week_adjusted", "expected_prescriptions")):
        ate = truth[f"{col}:all:ate"]
        assert f[f"{measured}_ci_low"] <= ate <= f[f"{measured}_ci_high"], (measured, ate, f[f"{measured}_ci_low"], f[f"{measured}_ci_high"])
    # The model changes what is served, so the true effect on responses is not nil here.
    assert truth["expected_responses:all:ate"] != 0.0
    assert 0.0 < f["acceptance_rate"] < 1.0 and np.isfinite(f["acceptance_rate_tier_A"])


def test_feedback_items_follow_the_reps_decisions(world, tmp_path) -> None:
    """Dismissed rep suggestions get a reason; marketing-sent ones get no rep decision."""
    from serving.audit import AuditTrail

    summary = run_closed_loop(world, tmp_path, ClosedLoopConfig(weeks=2, seed=4, counterfactual=False), progress=False)
    audit = AuditTrail(summary["audit_url"])
    s, fb = audit.read("suggestions"), audit.read("feedback")
    audit.close()
    m = fb.merge(s[["suggestion_id", "channel"]], on="suggestion_id")
    decisions = m[m["outcome"].isin(["accepted", "dismissed", "done"])]
    assert set(decisions["channel"]) <= {"visit", "department_meeting", "phone", "wecom_1to1"}
    assert m.loc[m["outcome"] == "dismissed", "reason"].notna().all()
    assert feedback_items.__doc__


@pytest.mark.postgres
def test_closed_loop_records_to_postgres(world, tmp_path, postgres_db) -> None:
    from experiments.lift import lift_job

    summary = run_closed_loop(world, tmp_path, ClosedLoopConfig(weeks=2, seed=5, counterfactual=False), audit_url=postgres_db, progress=False)
    res = lift_job(postgres_db, summary["data_dir"], n_boot=200)
    assert res["figures"]["weeks"] == 2 and res["figures"]["hcps_served"] + res["figures"]["hcps_holdout"] == 150


def test_drift_is_injected_from_the_first_served_week(world, tmp_path) -> None:
    base = ClosedLoopConfig(weeks=2, seed=6, counterfactual=False)
    run_closed_loop(world, tmp_path / "calm", base, progress=False)
    drift = {"events": [{"week": 0, "channel": ch, "delta_logit": -4.0} for ch in ("visit", "wechat_push", "email", "phone", "wecom_1to1")]}
    run_closed_loop(world, tmp_path / "hit", base.model_copy(update={"drift": drift}), progress=False)
    e_calm = _truth(tmp_path / "calm")["expected_responses"].sum()
    e_hit = _truth(tmp_path / "hit")["expected_responses"].sum()
    assert e_hit < 0.5 * e_calm


def test_rep_capacity_is_split_between_the_arms_in_proportion(world) -> None:
    from experiments.closed_loop import arm_capacities
    from simulator.environment import Environment

    env = Environment.from_data_dir(world, start="end")
    elig = env.eligibility()
    hcp = np.arange(env.public.n_hcps)
    holdout = np.arange(len(hcp)) % 4 == 0
    shares = []
    for seed in range(200):
        (held, rows_h), (served, rows_s) = arm_capacities(env.public, elig, hcp, holdout, np.random.default_rng(seed))
        assert (rows_h == holdout).all() and (rows_s == ~holdout).all()
        assert (held.rep_time_capacity + served.rep_time_capacity == elig.rep_time_capacity).all()
        assert (held.message_capacity + served.message_capacity == elig.message_capacity).all()
        shares.append(held.rep_time_capacity.sum() / elig.rep_time_capacity.sum())
    rep = env.public.hcp_rep
    expected = (
        np.bincount(rep[holdout], minlength=len(env.public.rep_ids)) / np.bincount(rep, minlength=len(env.public.rep_ids)) * elig.rep_time_capacity
    ).sum() / elig.rep_time_capacity.sum()
    assert abs(np.mean(shares) - expected) < 0.01


def test_monitor_flags_a_content_campaign_the_champion_cannot_suggest(world, champion_store, tmp_path) -> None:
    """A campaign approved after training: `nba monitor` reads the served model from the audit trail,
    its content vocabulary from the registry, the catalogue from the served data, and says retrain."""
    import datetime as dt

    import yaml

    from experiments.config import load_experiments_config
    from experiments.monitor import monitor_job

    model, root = champion_store
    base = ClosedLoopConfig(weeks=4, seed=8, counterfactual=False, holdout_share=0.2)
    campaign = {"content": [{"week": 2, "topic": "guideline", "items_per_product": 3, "quality": 1.5}]}
    verdicts = {}
    for name, drift in (("calm", {}), ("campaign", campaign)):
        out = tmp_path / name
        summary = run_closed_loop(world, out, base.model_copy(update={"drift": drift}), model=model, progress=False)
        (out / "training.yaml").write_text(
            yaml.safe_dump(
                {
                    "tracking": {
                        "uri": f"sqlite:///{root / 'mlflow' / 'mlflow.db'}",
                        "artifact_location": str(root / "mlflow" / "artifacts"),
                        "experiment": "lift-test",
                    }
                }
            )
        )
        (out / "serving.yaml").write_text(yaml.safe_dump({"data_dir": summary["data_dir"], "audit_url": summary["audit_url"]}))
        (out / "experiments.yaml").write_text(
            yaml.safe_dump(
                {
                    "training_config": str(out / "training.yaml"),
                    "serving_config": str(out / "serving.yaml"),
                    "monitor": {"out_dir": str(out / "monitor"), "html": False, "log_to_mlflow": False},
                }
            )
        )
        start = dt.date.fromisoformat(summary["first_week_start"])
        week = lambda k, start=start: (start + dt.timedelta(weeks=k)).isoformat()  # noqa: E731
        verdicts[name] = monitor_job(load_experiments_config(out / "experiments.yaml"), f"{week(0)}..{week(2)}", f"{week(2)}..{week(4)}", progress=False)
    calm, hit = verdicts["calm"]["catalogue"], verdicts["campaign"]["catalogue"]
    assert calm["model"] == hit["model"] == model.label
    # Without the campaign every approved item is in the champion's vocabulary (trained on this catalogue).
    assert calm["current"]["unknown_items"] == 0 and not verdicts["calm"]["catalogue_drift"]
    # The campaign's items (3 per product) are approved from week 2: unknown to the champion, all on the guideline topic.
    assert hit["reference"]["unknown_items"] == 0 and hit["current"]["unknown_items"] > 0
    assert set(hit["current"]["unknown_by_topic"]) == {"guideline"} and hit["unknown_share_rise"] > 0.05
    assert verdicts["campaign"]["catalogue_drift"] and verdicts["campaign"]["drift_detected"]
    assert any("content vocabulary" in step for step in verdicts["campaign"]["next_steps"])
