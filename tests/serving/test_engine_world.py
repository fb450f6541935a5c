"""The engine in-process against a real Feast store and a real champion from the MLflow registry."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS, LIFECYCLES
from serving.sandbox import AS_OF

pytestmark = pytest.mark.slow


@pytest.fixture()
def engine(serving_cfg):
    from serving.engine import Recommender

    rec = Recommender.from_config(serving_cfg)
    yield rec
    rec.audit.close()


def test_champion_scores_and_every_suggestion_is_audited(engine, world) -> None:
    ids = world.hcp_ids[:20]
    res = engine.recommend(ids, k=3, as_of=AS_OF)
    f = res.frame
    assert engine.ready and res.model_version == f"nba-next-best-action/{world.model_version}"
    assert set(f["policy"]) <= {"model", "explore", "holdout"} and "model" in set(f["policy"])
    assert f.groupby("hcp_id").size().max() <= 3 and f["suggestion_id"].is_unique
    assert ((f["propensity"] > 0) & (f["propensity"] <= 1)).all()
    model_rows = f[f["policy"] == "model"]
    assert model_rows["expected_response"].between(0, 1).all()
    from serving.messages import channel_name, with_article

    # The first reason is the likelihood band of a response to the suggested channel, never a percentage.
    assert all(
        rs[0].endswith(f"likelihood of a response to {with_article(channel_name(ch, 'en'))}.") for ch, rs in zip(model_rows["channel"], model_rows["reasons"])
    )
    # Only approved, unexpired content is suggested.
    approved = set(engine.reference.approved_content(AS_OF, engine.cfg.content_valid_days))
    assert set(f["content_id"].dropna()) <= approved
    audit = engine.audit.read("suggestions")
    assert len(audit) == len(f) and set(audit["model_version"]) == {res.model_version}
    row = engine.audit.suggestion(f["suggestion_id"].iloc[0])
    assert row["features"]["consent_visit"] in (True, False) and "consecutive_unopened_pushes" in row["features"]
    assert row["reasons"] == f["reasons"].iloc[0]
    # The k rows of a slate share one feature document; reads resolve it to the same values.
    second = f[(f["hcp_id"] == f["hcp_id"].iloc[0]) & (f["rank"] == 2)]["suggestion_id"]
    if len(second):
        assert engine.audit.suggestion(second.iloc[0])["features"] == row["features"]
    assert not audit["features_json"].str.startswith('{"same_as"').any()
    # The service encodes the payload without re-validating it: it must still match the schema.
    import json

    from serving.schemas import RecommendResponse
    from serving.service_io import recommend_json, recommend_payload

    body = RecommendResponse.model_validate_json(recommend_json(res, ids))
    assert body.model_dump(mode="json") == RecommendResponse.model_validate(recommend_payload(res, ids)).model_dump(mode="json")
    assert [r["hcp_id"] for r in json.loads(recommend_json(res, ids))["results"]] == ids


def test_guardrails_override_the_model_and_say_so(serving_cfg, busy_rep) -> None:
    from serving.engine import Recommender

    only_email = {ch: 0 for ch in CHANNELS if ch != "email"}
    cfg = serving_cfg.model_copy(update={"guardrails": serving_cfg.guardrails.model_copy(update={"weekly_caps": only_email})})
    cfg = cfg.model_copy(update={"exploration": cfg.exploration.model_copy(update={"holdout_share": 0.0})})
    rec = Recommender.from_config(cfg)
    f = rec.recommend(rec.reference.rep_hcps(busy_rep)[:15], k=3, as_of=AS_OF).frame
    consented = f["channel"] == "email"
    assert consented.all(), "every channel but email is capped"
    assert (f["rank"] == 1).all(), "one channel left: one suggestion each"
    overridden = f["reasons"].map(lambda rs: any(r.startswith("A higher-ranked option was ruled out (weekly limit)") for r in rs))
    assert overridden.any()
    assert f.loc[overridden, "rules_applied"].map(lambda r: "frequency" in r).all()


def test_lifecycle_block_and_request_channels(engine, world) -> None:
    from serving.engine import Recommender, RequestError

    no_conf = {lc: {"conference": 0.0} for lc in LIFECYCLES}
    cfg = engine.cfg.model_copy(update={"guardrails": engine.cfg.guardrails.model_copy(update={"lifecycle_weights": no_conf})})
    f = (
        Recommender(cfg, features_cfg=engine.features_cfg, store=engine.store, model=engine.model, reference=engine.reference)
        .recommend(world.hcp_ids, k=3, as_of=AS_OF, record=False)
        .frame
    )
    assert "conference" not in set(f["channel"])
    g = engine.recommend(world.hcp_ids[:10], k=2, channels=["email", "visit"], as_of=AS_OF, record=False).frame
    assert set(g["channel"]) <= {"email", "visit"}
    with pytest.raises(RequestError, match="channels"):
        engine.recommend(world.hcp_ids[:1], channels=["fax"])
    with pytest.raises(RequestError, match="k: must be between"):
        engine.recommend(world.hcp_ids[:1], k=9)


def test_holdout_and_missing_model_use_the_rules(engine, world) -> None:
    from serving.engine import Recommender

    cfg = engine.cfg.model_copy(update={"exploration": engine.cfg.exploration.model_copy(update={"holdout_share": 0.99})})
    rec = Recommender(cfg, features_cfg=engine.features_cfg, store=engine.store, model=engine.model, reference=engine.reference)
    f = rec.recommend(world.hcp_ids, as_of=AS_OF, record=False).frame
    held = f["policy"] == "holdout"
    assert held.mean() > 0.9 and np.allclose(f.loc[held, "propensity"], 1.0) and not f.loc[held, "degraded"].any()
    no_model = Recommender(
        engine.cfg, features_cfg=engine.features_cfg, store=engine.store, model=None, model_error="none registered", reference=engine.reference
    )
    res = no_model.recommend(world.hcp_ids[:10], as_of=AS_OF, record=False)
    assert not no_model.ready and res.model_version is None
    assert set(res.frame["policy"]) <= {"fallback", "holdout"} and res.frame.loc[res.frame["policy"] == "fallback", "degraded"].all()
    assert any("model unavailable: none registered" in n for n in res.notes)


def test_feature_store_outage_degrades_to_consent_safe_rules(engine, world) -> None:
    from serving.engine import Recommender

    class Broken:
        def __getattr__(self, name):
            raise ConnectionError("online store down")

    rec = Recommender(engine.cfg, features_cfg=engine.features_cfg, store=Broken(), model=engine.model, reference=engine.reference)
    res = rec.recommend(world.hcp_ids[:5], as_of=AS_OF, record=False)
    assert res.degraded_features and res.frame["degraded"].all()
    assert set(res.frame["channel"]) == {"visit"}  # the configured degraded_channels
    assert all(any(r.startswith("Customer data is unavailable right now") and "check consent" in r for r in rs) for rs in res.frame["reasons"])


def test_feedback_is_idempotent_and_reaches_the_online_store(engine, world) -> None:
    from features import get_online_features
    from serving.audit import FeedbackConflict

    hcp = world.hcp_ids[7]
    sid = engine.recommend([hcp], k=1, as_of=AS_OF).frame["suggestion_id"].iloc[0]
    before = int(get_online_features(engine.store, [hcp])["suggestions_done_90d"].iloc[0])
    item = {"feedback_id": "fb-1", "suggestion_id": sid, "outcome": "done", "reason": None, "ts": AS_OF + timedelta(hours=2)}
    first = engine.feedback(item)
    assert first["created"] and first["pushed_online"], first
    assert int(get_online_features(engine.store, [hcp])["suggestions_done_90d"].iloc[0]) == before + 1
    again = engine.feedback(item)
    assert not again["created"] and len(engine.audit.read("feedback")) == 1
    with pytest.raises(FeedbackConflict):
        engine.feedback({**item, "outcome": "dismissed"})
    # A second outcome on the same HCP adds to the first instead of replacing it (the contract
    # dataset has neither yet: both come from the audit trail).
    sid2 = engine.recommend([hcp], k=1, as_of=AS_OF + timedelta(hours=3)).frame["suggestion_id"].iloc[0]
    assert engine.feedback({**item, "feedback_id": "fb-2", "suggestion_id": sid2, "ts": AS_OF + timedelta(hours=4)})["pushed_online"]
    assert int(get_online_features(engine.store, [hcp])["suggestions_done_90d"].iloc[0]) == before + 2
    # The channel's own outcome (opened) reaches the engagement features without undoing the decisions.
    opened_before = int(get_online_features(engine.store, [hcp])["email_opened_90d"].iloc[0])
    email = engine.recommend([hcp], k=1, channels=["email"], as_of=AS_OF + timedelta(hours=5)).frame
    if len(email):
        out = engine.feedback(
            {"feedback_id": "fb-3", "suggestion_id": email["suggestion_id"].iloc[0], "outcome": "opened", "reason": None, "ts": AS_OF + timedelta(hours=6)}
        )
        assert out["pushed_online"], out
        after = get_online_features(engine.store, [hcp])
        assert int(after["email_opened_90d"].iloc[0]) == opened_before + 1
        assert int(after["suggestions_done_90d"].iloc[0]) == before + 2
    # The next recommendation sees the feedback: its audit row recorded the updated counts.
    nxt = engine.recommend([hcp], k=1, as_of=AS_OF + timedelta(hours=7)).frame["suggestion_id"].iloc[0]
    assert engine.audit.suggestion(nxt)["features"]["suggestions_done_90d"] == before + 2


def test_plan_packs_capacity_by_expected_value(engine, busy_rep) -> None:
    from serving.engine import RequestError
    from serving.planning import plan_day

    plan, res, v_cap, m_cap, deferred = plan_day(engine, busy_rep, AS_OF.date(), visit_capacity=1, message_capacity=2)
    assert (v_cap, m_cap) == (1, 2)
    rep_time = plan["channel"].isin(["visit", "department_meeting", "phone"])
    assert rep_time.sum() <= 1 and (~rep_time).sum() <= 2
    assert plan["expected_value"].is_monotonic_decreasing and deferred == len(res.frame) - len(plan)
    assert plan["not_yet_target"].dtype == bool
    with pytest.raises(RequestError, match="rep_id"):
        plan_day(engine, "no-such-rep", AS_OF.date())


def test_nightly_batch_writes_crm_records(engine, world, tmp_path) -> None:
    from serving.batch import CRM_COLUMNS, recommend_all

    out = tmp_path / "crm.csv"
    summary = recommend_all(engine, out, k=2, as_of=AS_OF, progress=False)
    df = pd.read_csv(out)
    assert tuple(df.columns) == CRM_COLUMNS
    assert summary["hcps"] == len(world.hcp_ids) and len(df) == summary["suggestions"] <= 2 * len(world.hcp_ids)
    assert df["priority"].between(1, 5).all() and df["suggestion_id"].is_unique
    assert (pd.to_datetime(df["expiry_utc"]) <= pd.Timestamp(AS_OF) + timedelta(days=engine.cfg.suggestion_ttl_days)).all()
    # The batch takes the API's feasible-first path: no rule overrides a first choice after masking.
    feas = summary["feasibility"]
    assert feas["decisions"] == len(world.hcp_ids) and feas["first_choice_overridden"] == 0 and feas["first_choice_overridden_share"] == 0.0
    assert 0.0 <= feas["unmasked_first_infeasible_share"] <= 1.0
    today = recommend_all(engine, tmp_path / "today.parquet", k=1, as_of=AS_OF, progress=False, window="today", record=False)
    days = pd.read_parquet(tmp_path / "today.parquet")["window_start_utc"]
    assert today["suggestions"] > 0 and (days.dt.tz_convert("Asia/Shanghai").dt.date == AS_OF.date()).all()
    with pytest.raises(ValueError, match="parquet or .csv"):
        recommend_all(engine, tmp_path / "crm.xlsx")
