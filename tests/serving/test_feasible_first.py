"""Feasible first: over random HCP states no served first choice breaks a rule, and ``window: today`` plans one local day.

Each check recomputes the rules from the raw feature frame in plain Python (consent, weekly caps,
cool-downs, window rules on channels and items, lifecycle blocks, approved content, working
hours), independently of the masks the engine builds.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS, LIFECYCLES, REP_TIME_CHANNELS
from serving.config import ServingConfig
from serving.engine import CONTENT_CHANNELS, Recommender, RequestError
from serving.reference import ReferenceData

C = len(CHANNELS)
AS_OF = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)  # Monday 08:00 in Shanghai
ITEMS = [f"C{i:02d}" for i in range(12)]
TOPICS = ["guideline", "clinical_data", "case_study"]
WORK_DAYPARTS = {"07": "morning", "11": "midday", "14": "afternoon"}


def reference(n: int, zones: tuple[str, ...] = ("Asia/Shanghai", "Asia/Urumqi")) -> ReferenceData:
    """HCPs in two time zones; content C00-C09 approved, C10-C11 expired (but still in HCPs' histories)."""
    hcps = pd.DataFrame(
        {
            "hcp_id": [f"h{i}" for i in range(n)],
            "rep_id": "r1",
            "region": "east",
            "timezone": [zones[i % len(zones)] for i in range(n)],
            "main_product_id": "P1",
            "segment": "A",
            "lifecycle": "growth",
        }
    ).set_index("hcp_id")
    reps = pd.DataFrame({"rep_id": ["r1"], "visit_capacity_per_day": [6], "message_capacity_per_day": [30]}).set_index("rep_id")
    until = [AS_OF + timedelta(days=365)] * 10 + [AS_OF - timedelta(days=1)] * 2
    content = pd.DataFrame(
        {
            "content_id": ITEMS,
            "product_id": "P1",
            "topic": [TOPICS[i % 3] for i in range(12)],
            "approved_from": [AS_OF - timedelta(days=100 + i) for i in range(12)],
            "approved_until": until,
        }
    ).set_index("content_id")
    return ReferenceData(hcps, reps, content)


def random_frame(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """Online features of ``n`` HCPs in random guardrail states (consent, caps, streaks, recent channels and items)."""
    cols: dict = {"hcp_id": [f"h{i}" for i in range(n)]}
    for ch in CHANNELS:
        for w in ("7d", "30d", "90d"):
            sent = rng.integers(0, 4, n)
            cols[f"{ch}_sent_{w}"] = sent
            cols[f"{ch}_opened_{w}"] = rng.integers(0, sent + 1)
            cols[f"{ch}_forwarded_{w}"] = rng.integers(0, 2, n)
        cols[f"consent_{ch}"] = rng.random(n) < 0.6
        cols[f"days_since_last_{ch}"] = rng.choice([1.0, 5.0, 10.0, 15.0, 25.0, 45.0, 70.0, 365.0], n)
    cols["favourited_30d"] = rng.integers(0, 2, n)
    cols["wecom_1to1_replied_30d"] = rng.integers(0, 2, n)
    cols["consecutive_unopened_pushes"] = rng.integers(0, 5, n)
    cols["lifecycle"] = rng.integers(0, len(LIFECYCLES), n)
    cols["potential_boxes_month"] = rng.uniform(0, 100, n)
    lengths = rng.integers(0, 9, n)
    cols["seq_len"] = lengths
    cols["seq_channel"] = [rng.integers(0, C, k) for k in lengths]
    cols["seq_content_id"] = [np.where(rng.random(k) < 0.8, rng.choice(ITEMS, k), "").astype(object) for k in lengths]
    cols["seq_response"] = [rng.integers(0, 4, k) for k in lengths]
    cols["seq_gap_days"] = [rng.uniform(0, 15, k).astype(np.float32) for k in lengths]
    cols["seq_weekday"] = [rng.integers(0, 7, k) for k in lengths]
    cols["seq_daypart"] = [rng.integers(0, 4, k) for k in lengths]
    cols["days_since_last_touch"] = rng.uniform(0, 10, n).astype(np.float32)
    return pd.DataFrame(cols)


def recent_items(frame: pd.DataFrame, i: int, days: float) -> set[str]:
    """Items row ``i``'s HCP received within ``days`` days, from the sequence (plain Python)."""
    gaps = [float(g) for g in frame["seq_gap_days"].iloc[i]]
    ids = list(frame["seq_content_id"].iloc[i])
    age, out = float(frame["days_since_last_touch"].iloc[i]), set()
    for j in range(len(ids) - 1, -1, -1):
        if ids[j] and age < days:
            out.add(ids[j])
        age += gaps[j]
    return out


def channel_ages(frame: pd.DataFrame, i: int, channel: str) -> list[float]:
    """Ages of row ``i``'s touches on ``channel`` in the sequence (plain Python)."""
    gaps = [float(g) for g in frame["seq_gap_days"].iloc[i]]
    chans = list(frame["seq_channel"].iloc[i])
    age, out = float(frame["days_since_last_touch"].iloc[i]), []
    for j in range(len(chans) - 1, -1, -1):
        if CHANNELS[int(chans[j])] == channel:
            out.append(age)
        age += gaps[j]
    return out


def violations(rec: Recommender, frame: pd.DataFrame, served: pd.DataFrame, approved: set[str]) -> list[str]:
    """Every rule a served first choice breaks, recomputed from the frame."""
    g = rec.cfg.guardrails
    out = []
    row_of = {h: i for i, h in enumerate(frame["hcp_id"])}
    for s in served.itertuples():
        i, ch = row_of[s.hcp_id], s.channel
        f = frame.iloc[i]
        content = None if pd.isna(s.content_id) else s.content_id
        why = []
        if not f[f"consent_{ch}"]:
            why.append("consent")
        if f[f"{ch}_sent_7d"] >= g.weekly_caps.get(ch, 10**9):
            why.append("frequency")
        streak = f["consecutive_unopened_pushes"] if ch == "wechat_push" else (0 if f[f"{ch}_opened_30d"] > 0 else f[f"{ch}_sent_30d"])
        if streak >= g.cooldown_after_unanswered and f[f"days_since_last_{ch}"] < g.cooldown_days:
            why.append("cooldown")
        for r in g.window_rules:
            if r.scope == "channel" and r.channel == ch:
                n_recent = max(sum(a < r.days for a in channel_ages(frame, i, ch)), int(f[f"days_since_last_{ch}"] < r.days))
                if n_recent >= r.max:
                    why.append(f"window {r.label()}")
            if r.scope == "item" and content is not None and content in recent_items(frame, i, r.days):
                why.append(f"window {r.label()}")
        lifecycle = LIFECYCLES[int(f["lifecycle"])]
        if g.lifecycle_weights.get(lifecycle, {}).get(ch, 1.0) <= 0:
            why.append("lifecycle")
        if content is not None and content not in approved:
            why.append("content not approved")
        if content is None and CONTENT_CHANNELS[CHANNELS.index(ch)]:
            why.append("content channel without content")
        local = datetime.fromisoformat(s.window_start_local)
        if ch in REP_TIME_CHANNELS and (local.weekday() >= 5 or local.strftime("%H") not in WORK_DAYPARTS):
            why.append("outside working hours")
        out += [f"{s.hcp_id} {ch} {content}: {w}" for w in why]
    return out


def _cfg(**update) -> ServingConfig:
    cfg = ServingConfig(require_model=False, audit_url="sqlite:///:memory:")
    guard = cfg.guardrails.model_copy(update={"lifecycle_weights": {"post_vbp": {"conference": 0.0, "visit": 0.6}, "launch": {"email": 0.0}}})
    return cfg.model_copy(update={"guardrails": guard, **update})


@pytest.mark.parametrize("seed", range(5))
def test_no_infeasible_action_ranks_first_on_the_rule_policy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    frame = random_frame(rng, 150)
    rec = Recommender(_cfg(), reference=reference(150))
    as_of = AS_OF + timedelta(hours=int(rng.integers(0, 24 * 7)))
    res = rec.recommend(list(frame["hcp_id"]), k=3, as_of=as_of, record=False, features=frame)
    f = res.frame
    approved = set(rec.reference.approved_content(as_of, rec.cfg.content_valid_days))
    # Every suggestion, not only the first, is an action that can be taken.
    assert violations(rec, frame, f, approved) == []
    assert res.feasibility["first_choice_overridden"] == 0 and res.feasibility["decisions"] == 150
    # Random states make the rules' own first choice infeasible often: the masks did real work.
    assert res.feasibility["unmasked_first_infeasible"] > 0
    assert set(res.feasibility["unmasked_first_infeasible_by_rule"]) <= {"consent", "content", "frequency", "cooldown", "window", "lifecycle"}
    hit = f[(f["rank"] == 1) & f["first_choice_blocked_by"].notna()]
    assert len(hit) and hit["reasons"].map(lambda rs: any(r.startswith("A higher-ranked option was ruled out") for r in rs)).all()


def test_window_rule_reasons_name_the_rule_and_the_days() -> None:
    rng = np.random.default_rng(7)
    frame = random_frame(rng, 40)
    for ch in CHANNELS:
        frame[f"consent_{ch}"] = ch == "conference" or ch == "visit"
        frame[f"days_since_last_{ch}"] = 365.0
        frame[f"{ch}_sent_7d"] = 0
        frame[f"{ch}_forwarded_30d"] = 0
    frame["favourited_30d"], frame["wecom_1to1_replied_30d"] = 0, 0  # the preference rule: push, without consent here
    frame["consecutive_unopened_pushes"] = 0
    frame["lifecycle"] = LIFECYCLES.index("growth")
    frame["conference_opened_90d"], frame["conference_sent_90d"] = 9, 9  # the rules' best channel by open rate
    frame["days_since_last_conference"] = 23.0
    frame["seq_channel"] = [np.full(len(c), CHANNELS.index("email")) for c in frame["seq_channel"]]  # no other conference on record
    rec = Recommender(_cfg(), reference=reference(40))
    f = rec.recommend(list(frame["hcp_id"]), k=2, as_of=AS_OF, record=False, features=frame).frame
    assert "conference" not in set(f["channel"])
    first = f[f["rank"] == 1]
    reasons = [r for rs in first["reasons"] for r in rs if r.startswith("A higher-ranked option")]
    # The rep reads the rule and its days, not the channel it removed (reasons name the suggested channel only).
    assert reasons and all(r == "A higher-ranked option was ruled out (minimum interval): last used 23 days ago, at most 1 in 60 days." for r in reasons)
    assert first["rules_applied"].map(lambda r: "window" in r).all()


def test_window_today_plans_the_local_day_within_working_hours() -> None:
    rng = np.random.default_rng(3)
    frame = random_frame(rng, 80)
    rec = Recommender(_cfg(), reference=reference(80))
    ids = list(frame["hcp_id"])
    # 08:00 in Shanghai, 06:00 in Urumqi: the morning is still open in both.
    f = rec.recommend(ids, k=3, as_of=AS_OF, record=False, features=frame, window="today").frame
    assert len(f)
    starts = f["window_start_local"].map(datetime.fromisoformat)
    assert (starts.map(lambda t: t.date()) == date(2026, 11, 23)).all()
    assert (f["window_end"] > pd.Timestamp(AS_OF)).all(), "only dayparts not yet over"
    in_person = f["channel"].isin(REP_TIME_CHANNELS)
    assert in_person.any() and starts[in_person].map(lambda t: t.strftime("%H") in WORK_DAYPARTS).all()
    assert violations(rec, frame, f, set(rec.reference.approved_content(AS_OF, 7))) == []
    # 20:00 in Shanghai: only the evening is left, so no visit, meeting or call there today.
    late = rec.recommend(ids, k=3, as_of=AS_OF + timedelta(hours=12), record=False, features=frame, window="today").frame
    sh = late["timezone"] == "Asia/Shanghai"
    assert sh.any() and not late.loc[sh, "channel"].isin(REP_TIME_CHANNELS).any()
    assert (late.loc[sh, "window_start_local"].str.slice(0, 16) == "2026-11-23T18:00").all()
    # The default stays the week: the same request without a window may use later days.
    week = rec.recommend(ids, k=3, as_of=AS_OF + timedelta(hours=12), record=False, features=frame).frame
    assert (week["window_start_local"].str.slice(0, 10) > "2026-11-23").any()


def test_decision_date_plans_that_local_day_and_is_validated() -> None:
    rng = np.random.default_rng(4)
    frame = random_frame(rng, 60)
    rec = Recommender(_cfg(), reference=reference(60))
    ids = list(frame["hcp_id"])
    saturday = date(2026, 11, 28)
    f = rec.recommend(ids, k=3, as_of=AS_OF, record=False, features=frame, decision_date=saturday).frame
    assert len(f) and (f["window_start_local"].str.slice(0, 10) == "2026-11-28").all()
    assert not f["channel"].isin(REP_TIME_CHANNELS).any(), "no visits, meetings or calls on a Saturday"
    wed = rec.recommend(ids, k=1, as_of=AS_OF, record=False, features=frame, decision_date=date(2026, 11, 25)).frame
    assert (wed["window_start_local"].str.slice(0, 13) == "2026-11-25T07").all() or (wed["window_start_local"].str.slice(0, 10) == "2026-11-25").all()
    with pytest.raises(RequestError, match="decision_date: 2026-11-22 is before today"):
        rec.recommend(ids[:1], as_of=AS_OF, record=False, features=frame.iloc[:1], decision_date=date(2026, 11, 22))
    with pytest.raises(RequestError, match="decision_date: 2026-12-07 is more than 6 days"):
        rec.recommend(ids[:1], as_of=AS_OF, record=False, features=frame.iloc[:1], decision_date=date(2026, 12, 7))
    with pytest.raises(RequestError, match="window: must be one of"):
        rec.recommend(ids[:1], as_of=AS_OF, record=False, features=frame.iloc[:1], window="month")
    with pytest.raises(RequestError, match="decision_date: give either"):
        rec.recommend(ids[:1], as_of=AS_OF, record=False, features=frame.iloc[:1], window="today", decision_date=date(2026, 11, 23))


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"decision_date": "3000-01-01"}, "decision_date", "outside the supported range"),
        ({"decision_date": "1600-05-01"}, "decision_date", "outside the supported range"),
        ({"decision_date": "2026-02-30"}, "decision_date", "valid date"),
        ({"decision_date": "tomorrow"}, "decision_date", "valid date"),
        ({"as_of": "2300-01-01T00:00:00+00:00"}, "as_of", "outside the supported range"),
        ({"window": "month"}, "window", "'today' or 'week'"),
    ],
)
def test_request_schema_rejects_bad_dates_naming_the_field(body, field, message) -> None:
    from pydantic import ValidationError

    from serving.schemas import RecommendRequest

    with pytest.raises(ValidationError) as err:
        RecommendRequest.model_validate({"hcp_ids": ["h1"], **body})
    e = err.value.errors()[0]
    assert e["loc"] == (field,) and message in e["msg"]
    ok = RecommendRequest.model_validate({"hcp_ids": ["h1"], "decision_date": "2026-11-24"})
    assert ok.decision_date == date(2026, 11, 24) and ok.window is None
    schema = RecommendRequest.model_json_schema()["properties"]
    assert "local time zone" in schema["decision_date"]["description"] and "today" in str(schema["window"])


@pytest.mark.slow
def test_no_infeasible_action_ranks_first_with_the_champion(serving_cfg, world) -> None:
    from features import get_online_features
    from serving.sandbox import AS_OF as WORLD_AS_OF

    base = Recommender.from_config(serving_cfg.model_copy(update={"exploration": serving_cfg.exploration.model_copy(update={"holdout_share": 0.3})}))
    real = get_online_features(base.store, world.hcp_ids)
    approved = sorted(base.reference.approved_content(WORLD_AS_OF, serving_cfg.content_valid_days))
    shares = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        frame = real.copy()
        n = len(frame)
        for ch in CHANNELS:
            frame[f"consent_{ch}"] = rng.random(n) < 0.6
            frame[f"{ch}_sent_7d"] = rng.integers(0, 3, n)
            frame[f"days_since_last_{ch}"] = rng.choice([2.0, 10.0, 19.0, 40.0, 90.0], n).astype(np.float32)
        frame["lifecycle"] = rng.integers(0, len(LIFECYCLES), n)
        # Recent touches carry approved items the model likes, so the item rule has something to block.
        frame["seq_content_id"] = [np.where(rng.random(len(c)) < 0.7, rng.choice(approved, len(c)), c).astype(object) for c in frame["seq_content_id"]]
        rec = Recommender(
            serving_cfg.model_copy(
                update={
                    "guardrails": serving_cfg.guardrails.model_copy(update={"lifecycle_weights": {"post_vbp": {"conference": 0.0}, "launch": {"email": 0.0}}})
                }
            ),
            features_cfg=base.features_cfg,
            store=base.store,
            model=base.model,
            reference=base.reference,
        )
        res = rec.recommend(world.hcp_ids, k=3, as_of=WORLD_AS_OF, record=False, features=frame)
        f = res.frame
        assert {"model", "holdout"} <= set(f["policy"])
        assert violations(rec, frame, f, set(approved)) == []
        assert res.feasibility["first_choice_overridden"] == 0
        shares.append(res.feasibility["unmasked_first_infeasible"] / res.feasibility["decisions"])
        model_first = f[(f["rank"] == 1) & f["policy"].isin(["model", "explore"]) & f["first_choice_blocked_by"].notna()]
        assert model_first["reasons"].map(lambda rs: any(r.startswith("A higher-ranked option was ruled out") for r in rs)).all()
    assert max(shares) > 0, "random consent and caps must make some unmasked first choices infeasible"


@pytest.mark.slow
def test_model_content_avoids_blocked_items(serving_cfg, world) -> None:
    from features import get_online_features
    from serving.sandbox import AS_OF as WORLD_AS_OF
    from serving.scoring import score_channels

    rec = Recommender.from_config(serving_cfg)
    frame = get_online_features(rec.store, world.hcp_ids[:30])
    approved = rec.reference.approved_content(WORLD_AS_OF, serving_cfg.content_valid_days)
    free = score_channels(rec.model.bundle, frame, approved)
    # Block, for every row, each channel's favourite item: the next best must be chosen instead.
    rows, cols = np.nonzero(pd.notna(free.content_id))
    blocked = (rows, free.content_id[rows, cols])
    allowed = np.ones((30, C), dtype=bool)
    allowed[:, CHANNELS.index("visit")] = False
    got = score_channels(rec.model.bundle, frame, approved, blocked_items=blocked, channel_allowed=allowed, batch_size=8)
    banned = set(zip(rows.tolist(), blocked[1].tolist()))
    assert not any((i, got.content_id[i, j]) in banned for i in range(30) for j in range(C))
    assert set(got.content_id.ravel()) - {None} <= set(approved)
    assert (got.raw_content_id == free.content_id).all() and np.allclose(got.raw_prob, free.prob)
    assert not got.allowed[:, CHANNELS.index("visit")].any() and (got.prob[:, CHANNELS.index("visit")] == 0).all()
    # A one-day horizon: only Wednesday's afternoon slots.
    day = np.zeros((1, C, 28), dtype=bool)
    day[:, :, 2 * 4 + 2] = True
    wed = score_channels(rec.model.bundle, frame, approved, slot_allowed=day)
    assert ((wed.weekday == 2) & (wed.daypart == 2))[wed.allowed].all()
    rec.audit.close()
