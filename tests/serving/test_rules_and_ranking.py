"""The rule policy (features.rules), slate choice with exploration, contact state and local windows."""

from __future__ import annotations

from datetime import datetime, timezone

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
    f.at[1, "seq_response"] = np.array([1, 1, 0])
    f.at[1, "seq_weekday"] = np.array([3, 3, 0])
    f.at[1, "seq_daypart"] = np.array([2, 2, 0])
    f.loc[1, "seq_len"] = 3
    out = rule_based_actions(f, {"c1": "clinical_data", "c2": "guideline"})
    assert list(out.rule) == ["unopened_pushes", "strong_interest", "preference"]
    assert out.ranked[0, 0] == V and out.ranked[1, 0] == V and out.ranked[2, 0] == P
    assert out.reason[0].startswith("4 WeChat pushes in a row unopened")
    assert "2 forwards, 1 favourites" in out.reason[1] and "clinical-data" in out.reason[1]
    assert out.history_reason[1] == "engaged with 2 clinical-data items in the last 3 touches"
    assert (out.weekday[1], out.daypart[1]) == (3, 2)  # responded touches decide the preferred time
    assert (out.weekday[2], out.daypart[2]) == (1, 0)  # no history: the default slot


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
    monday_noon_utc = datetime(2026, 11, 23, 4, 0, tzinfo=timezone.utc)  # 12:00 in Shanghai
    start, end, s_iso, e_iso = next_windows(monday_noon_utc, np.array(["Asia/Shanghai"] * 3 + ["Asia/Urumqi"]), np.array([0, 0, 2, 0]), np.array([0, 1, 2, 0]))
    assert s_iso[0] == "2026-11-30T07:00:00+08:00"  # Monday morning is over: next week
    assert s_iso[1] == "2026-11-23T11:00:00+08:00" and e_iso[1] == "2026-11-23T14:00:00+08:00"  # midday still running
    assert s_iso[2] == "2026-11-25T14:00:00+08:00"
    assert s_iso[3] == "2026-11-23T07:00:00+06:00"  # 10:00 in Urumqi: morning not over
    assert str(start.iloc[1]) == "2026-11-23 03:00:00+00:00"
