"""The rule policy (features.rules), slate choice with exploration, contact state and local windows."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS
from features.rules import RuleThresholds, rule_based_actions
from serving.engine import choose_slate, contact_state
from serving.windows import next_windows

V, P = CHANNELS.index("visit"), CHANNELS.index("wechat_push")


def _frame(n: int = 3) -> pd.DataFrame:
    cols: dict = {"hcp_id": [f"h{i}" for i in range(n)]}
    for ch in CHANNELS:
        for w in ("7d", "30d", "90d"):
            cols[f"{ch}_sent_{w}"] = np.zeros(n, dtype=np.int32)
            cols[f"{ch}_opened_{w}"] = np.zeros(n, dtype=np.int32)
            cols[f"{ch}_forwarded_{w}"] = np.zeros(n, dtype=np.int32)
        cols[f"consent_{ch}"] = np.ones(n, dtype=bool)
        cols[f"days_since_last_{ch}"] = np.full(n, 365.0, dtype=np.float32)
    cols["favourited_30d"] = np.zeros(n, dtype=np.int32)
    cols["consecutive_unopened_pushes"] = np.zeros(n, dtype=np.int32)
    cols["seq_len"] = np.zeros(n, dtype=np.int64)
    for c in ("seq_content_id", "seq_response", "seq_weekday", "seq_daypart"):
        cols[c] = [np.array([], dtype=object if c == "seq_content_id" else np.int64) for _ in range(n)]
    return pd.DataFrame(cols)


def test_each_rule_fires_with_its_reason() -> None:
    f = _frame(3)
    f.loc[0, "consecutive_unopened_pushes"] = 4
    f.loc[1, "wechat_push_forwarded_30d"] = 2
    f.loc[1, "favourited_30d"] = 1
    f.at[1, "seq_content_id"] = np.array(["c1", "c1", "c2"], dtype=object)
    f.at[1, "seq_response"] = np.array([2, 3, 1])  # opened, engaged, delivered only (not a response)
    f.at[1, "seq_weekday"] = np.array([3, 3, 0])
    f.at[1, "seq_daypart"] = np.array([2, 2, 0])
    f.loc[1, "seq_len"] = 3
    out = rule_based_actions(f, {"c1": "clinical_data", "c2": "guideline"})
    assert list(out.rule) == ["unopened_pushes", "strong_interest", "preference"]
    assert out.ranked[0, 0] == V and out.ranked[1, 0] == V and out.ranked[2, 0] == P
    assert out.reason[0, V].startswith("4 WeChat pushes in a row unopened → follow up with a visit")
    assert "2 forwards, 1 favourites" in out.reason[1, V] and "clinical-data" in out.reason[1, V]
    assert out.reason[2, P].startswith("push ")
    assert out.history_reason[1] == "engaged with 2 clinical-data items in the last 3 touches"
    # Responded touches decide the preferred time (on every channel here: the touches name none).
    assert (out.weekday[1] == 3).all() and (out.daypart[1] == 2).all()
    assert (out.weekday[2] == 1).all() and (out.daypart[2] == 0).all()  # no history: the default slot


def test_thresholds_and_consent_change_the_choice() -> None:
    f = _frame(2)
    f["consecutive_unopened_pushes"] = [2, 5]
    assert list(rule_based_actions(f).rule) == ["preference", "unopened_pushes"]
    assert list(rule_based_actions(f, thresholds=RuleThresholds(unopened_pushes=2)).rule) == ["unopened_pushes", "unopened_pushes"]
    f["consent_visit"] = False
    out = rule_based_actions(f)
    assert np.isneginf(out.score[:, V]).all()
    assert (out.ranked[:, -1] == V).all()  # a channel without consent ranks last, never first


def test_rules_reject_a_frame_without_engagement_columns() -> None:
    with pytest.raises(ValueError, match="visit_sent_30d"):
        rule_based_actions(pd.DataFrame({"hcp_id": ["h1"]}))


def test_slate_explores_only_allowed_channels_with_exact_propensities() -> None:
    n = 4000
    score = np.tile(np.linspace(0.9, 0.2, len(CHANNELS)), (n, 1))
    score[:, 1] = -np.inf  # channel 1 blocked by a guardrail
    u = np.random.default_rng(0).random(n)
    slate, prop, valid = choose_slate(score, 2, np.full(n, 0.3), 3, u)
    assert valid.all() and not (slate == 1).any()
    first = slate[:, 0]
    # Greedy first pick (channel 0) has probability 1 - eps + eps/3; measured share agrees.
    assert abs((first == 0).mean() - (0.7 + 0.1)) < 0.03
    assert np.allclose(prop[first == 0, 0], 1.0)  # channel 0 is always in a 2-slate
    greedy = choose_slate(score, 2, np.zeros(n), 3, u)
    assert (greedy[0][:, 0] == 0).all() and np.allclose(greedy[1], 1.0)


def test_slate_marks_rows_with_too_few_allowed_channels() -> None:
    score = np.full((2, len(CHANNELS)), -np.inf)
    score[0, 3] = 0.5
    slate, prop, valid = choose_slate(score, 3, np.array([0.2, 0.2]), 3, np.array([0.01, 0.5]))
    assert valid.tolist() == [[True, False, False], [False, False, False]]
    assert slate[0, 0] == 3 and prop[0, 0] == 1.0


def test_contact_state_reads_streaks_and_caps_from_features() -> None:
    f = _frame(2)
    f["consecutive_unopened_pushes"] = [5, 0]
    f.loc[0, "email_sent_30d"] = 3
    f.loc[1, "email_sent_30d"], f.loc[1, "email_opened_30d"] = 3, 1
    f.loc[0, "visit_sent_7d"] = 2
    s = contact_state(f, np.array(["growth", "post_vbp"], dtype=object))
    e = CHANNELS.index("email")
    assert s.unanswered_streak[:, P].tolist() == [5, 0]
    assert s.unanswered_streak[:, e].tolist() == [3, 0]
    assert s.sent_7d[0, V] == 2 and s.consent.all()


def test_windows_are_the_next_local_slot_not_yet_over() -> None:
    monday_noon_utc = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai
    start, end, s_iso, e_iso = next_windows(monday_noon_utc, np.array(["Asia/Shanghai"] * 3 + ["Asia/Urumqi"]), np.array([0, 0, 2, 0]), np.array([0, 1, 2, 0]))
    assert s_iso[0] == "2026-11-30T07:00:00+08:00"  # Monday morning is over: next week
    assert s_iso[1] == "2026-11-23T11:00:00+08:00" and e_iso[1] == "2026-11-23T14:00:00+08:00"  # midday still running
    assert s_iso[2] == "2026-11-25T14:00:00+08:00"
    assert s_iso[3] == "2026-11-23T07:00:00+06:00"  # 10:00 in Urumqi: morning not over
    assert str(start.iloc[1]) == "2026-11-23 03:00:00+00:00"


def _engine_world(n: int, seed: int):
    """A rules-only Recommender over a random feature frame (touch sequences with content) and its reference data."""
    from serving.config import ServingConfig
    from serving.engine import Recommender
    from serving.reference import ReferenceData

    rng = np.random.default_rng(seed)
    f = _frame(n)
    for ch in CHANNELS:
        f[f"consent_{ch}"] = rng.random(n) < 0.7
        f[f"{ch}_sent_90d"], f[f"{ch}_opened_90d"] = rng.integers(2, 6, n), rng.integers(0, 3, n)
    f["consecutive_unopened_pushes"] = rng.integers(0, 5, n)
    lengths = rng.integers(0, 15, n)
    seq = {c: [] for c in ("seq_channel", "seq_content_id", "seq_response", "seq_weekday", "seq_daypart", "seq_gap_days")}
    for m in lengths:
        seq["seq_channel"].append(rng.integers(0, len(CHANNELS), m))
        seq["seq_content_id"].append(np.array([f"c{i}" for i in rng.integers(0, 8, m)], dtype=object))
        seq["seq_response"].append(rng.integers(0, 4, m))
        seq["seq_weekday"].append(rng.integers(0, 7, m))  # weekends and evenings in the history too
        seq["seq_daypart"].append(rng.integers(0, 4, m))
        seq["seq_gap_days"].append((rng.random(m) * 6).astype(np.float32))
    for c, v in seq.items():
        f[c] = pd.Series(v, index=f.index, dtype=object)
    f["seq_len"], f["days_since_last_touch"] = lengths, rng.random(n) * 3
    hcps = pd.DataFrame(
        {"hcp_id": f["hcp_id"], "rep_id": "r1", "region": "east", "timezone": "Asia/Shanghai", "main_product_id": "P1", "segment": "A", "lifecycle": "growth"}
    ).set_index("hcp_id")
    reps = pd.DataFrame({"rep_id": ["r1"], "visit_capacity_per_day": [8], "message_capacity_per_day": [30]}).set_index("rep_id")
    topics = ["clinical_data", "guideline", "case_study", "disease_info"] * 2
    content = pd.DataFrame(
        {
            "content_id": [f"c{i}" for i in range(8)],
            "product_id": ["P1"] * 4 + ["P2"] * 4,
            "topic": topics,
            "approved_from": pd.Timestamp("2026-01-01", tz="UTC"),
            "approved_until": pd.Timestamp("2027-01-01", tz="UTC"),
        }
    ).set_index("content_id")
    cfg = ServingConfig(require_model=False)
    cfg = cfg.model_copy(update={"exploration": cfg.exploration.model_copy(update={"holdout_share": 0.5})})
    return Recommender(cfg, reference=ReferenceData(hcps, reps, content)), f


def test_served_rule_suggestions_keep_working_hours_fresh_content_and_their_reasons() -> None:
    from contract.schema import REP_TIME_CHANNELS
    from features.contact_history import delivered_within, recent_contacts
    from features.rules import CHANNEL_LABELS

    rec, f = _engine_world(60, seed=4)
    res = rec.recommend(list(f["hcp_id"]), k=3, as_of=datetime(2026, 11, 23, 4, tzinfo=UTC), features=f, record=False)
    fr = res.frame
    assert set(fr["policy"]) == {"holdout", "fallback"}
    start = pd.to_datetime(fr["window_start_local"].str.slice(0, 19))
    in_person = fr["channel"].isin(REP_TIME_CHANNELS).to_numpy()
    assert in_person.any() and (start[in_person].dt.weekday < 5).all() and (start[in_person].dt.hour < 18).all()
    # Content: nothing the HCP received in the last 30 days while an unsent approved item exists (8 items here).
    row = f.index[pd.Index(f["hcp_id"]).get_indexer(fr["hcp_id"])]
    rc = recent_contacts(f)
    recent = delivered_within(rc, np.array([f"c{i}" for i in range(8)] * len(f), dtype=object).reshape(len(f), 8), 30)
    has_fresh = ~recent.all(1)
    served = fr["content_id"].to_numpy(dtype=object)
    carries = pd.notna(served)
    assert carries.any()
    item = np.where(carries, pd.Index([f"c{i}" for i in range(8)]).get_indexer(np.where(carries, served, "c0")), 0)
    assert not (carries & has_fresh[row] & recent[row, item]).any()
    # The first suggestion's reason is about the channel actually served.
    first = fr[fr["rank"] == 1]
    for ch, reasons in zip(first["channel"], first["reasons"]):
        assert ("push" if ch == "wechat_push" else CHANNEL_LABELS[ch]) in reasons[0], (ch, reasons[0])


def test_no_repeat_window_is_configured_and_checked() -> None:
    from pydantic import ValidationError

    from serving.config import ServingConfig

    assert ServingConfig().rules.no_repeat_days == 30
    with pytest.raises(ValidationError, match="no_repeat_days"):
        ServingConfig(rules={"no_repeat_days": -1})
