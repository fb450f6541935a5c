"""Window rules (guardrails with a window in days): they block, say why, and validate at load."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS
from features.contact_history import recent_contacts
from nba.configuration import ConfigError, load_config
from serving.config import ServingConfig
from serving.engine import block_context, contact_state
from serving.guardrails import ContactState, GuardrailPolicy, WindowRule, apply_guardrails, explain_block, window_state

C = len(CHANNELS)
VISIT, DEPT, PUSH, EMAIL, CONF = (CHANNELS.index(c) for c in ("visit", "department_meeting", "wechat_push", "email", "conference"))
RULES = (
    WindowRule("conference_60d", 60, 1, "channel", "conference"),
    WindowRule("department_meeting_21d", 21, 1, "channel", "department_meeting"),
    WindowRule("visits_2_in_30d", 30, 2, "channel", "visit"),
    WindowRule("same_item_30d", 30, 1, "item"),
)
POLICY = GuardrailPolicy(weekly_caps={}, window_rules=RULES)


def _history(rows: list[list[tuple[str, str, float]]], last: list[float] | None = None) -> pd.DataFrame:
    """A frame of touch sequences: per HCP a list of (channel, content id, gap days before the next touch or the feature time)."""
    seq_channel, seq_content, seq_gap, seq_resp = [], [], [], []
    for touches in rows:
        # seq_gap_days[j] is the gap before touch j; the last touch's age is days_since_last_touch.
        seq_channel.append(np.array([CHANNELS.index(ch) for ch, _, _ in touches], dtype=np.int64))
        seq_content.append(np.array([cid for _, cid, _ in touches], dtype=object))
        seq_gap.append(np.array([g for *_, g in touches], dtype=np.float32))
        seq_resp.append(np.zeros(len(touches), dtype=np.int64))
    return pd.DataFrame(
        {
            "hcp_id": [f"h{i}" for i in range(len(rows))],
            "seq_channel": seq_channel,
            "seq_content_id": seq_content,
            "seq_gap_days": seq_gap,
            "seq_response": seq_resp,
            "days_since_last_touch": np.asarray(last if last is not None else [0.0] * len(rows), dtype=np.float32),
        }
    )


def _state(frame: pd.DataFrame, **kw) -> ContactState:
    n = len(frame)
    w = window_state(recent_contacts(frame), POLICY, **kw)
    return ContactState(
        consent=np.ones((n, C), bool),
        sent_7d=np.zeros((n, C), np.int64),
        unanswered_streak=np.zeros((n, C), np.int64),
        days_since_last=np.full((n, C), np.inf),
        lifecycle=np.array(["growth"] * n, dtype=object),
        window=w,
    )


def test_channel_window_blocks_and_explains_with_the_days() -> None:
    # Ages: the last touch is 2 days old, earlier ones add the gaps after them.
    frame = _history(
        [
            [("conference", "", 0.0), ("email", "C1", 21.0)],  # conference 23 days ago
            [("conference", "", 0.0), ("email", "C1", 70.0)],  # conference 72 days ago: allowed again
            [("department_meeting", "", 0.0), ("email", "C2", 23.0)],  # meeting 25 days ago: the 21-day rule passes
            [("department_meeting", "", 0.0), ("email", "C2", 10.0)],  # meeting 12 days ago
        ],
        last=[2.0, 2.0, 2.0, 2.0],
    )
    state = _state(frame)
    r = apply_guardrails(state, np.arange(C), np.ones(C, bool), POLICY)
    assert r.blocked_by["window"][:, CONF].tolist() == [True, False, False, False]
    assert r.blocked_by["window"][:, DEPT].tolist() == [False, False, False, True]
    assert not r.blocked_by["window"][:, [VISIT, PUSH, EMAIL]].any()
    text = explain_block("window", "conference", block_context(state, 0, CONF), POLICY)
    assert text == "conference blocked: last conference 23 days ago, rule conference_60d: at most 1 conference in 60 days"
    assert "last department_meeting 12 days ago" in explain_block("window", "department_meeting", block_context(state, 3, DEPT), POLICY)


def test_counting_rules_use_aggregates_the_short_sequence_dropped() -> None:
    frame = _history([[("visit", "", 0.0)], [("visit", "", 0.0)], []], last=[5.0, 5.0, 0.0])
    counts = np.zeros((3, C))
    counts[0, VISIT] = 2  # two visits in the last 21 days although the sequence keeps one
    counts[2, CONF] = 1
    since = np.full((3, C), np.inf)
    since[2, DEPT] = 3.0  # a meeting 3 days ago known only from the aggregate
    state = _state(frame, channel_counts={21: counts, 90: np.full((3, C), 9)}, days_since=since)
    blocked = state.window.channel_blocked
    assert blocked[0, VISIT] and not blocked[1, VISIT], "2 in 30 days reached only with the aggregate count"
    assert blocked[2, CONF] and blocked[2, DEPT]
    assert state.window.channel_count[0, VISIT] == 2
    assert "2 visit touches in the last 30 days" in explain_block("window", "visit", block_context(state, 0, VISIT), POLICY)


def test_item_window_blocks_the_item_on_any_channel_and_explains() -> None:
    frame = _history(
        [
            [("wechat_push", "C1", 0.0), ("email", "C2", 5.0)],  # C1 pushed 17 days ago, C2 emailed 12 days ago
            [("wechat_push", "C1", 0.0), ("email", "C2", 40.0)],  # C1 41 days ago: allowed
        ],
        last=[12.0, 1.0],
    )
    state = _state(frame)
    w = state.window
    assert set(zip(w.item_row.tolist(), w.item_id.tolist())) == {(0, "C1"), (0, "C2"), (1, "C2")}
    content = np.full((2, C), "C1", dtype=object)
    content[:, VISIT] = None
    r = apply_guardrails(state, np.arange(C), np.ones(C, bool), POLICY, action_content=content)
    assert r.blocked_by["window"][0, PUSH] and r.blocked_by["window"][0, EMAIL], "the same item on another channel"
    assert not r.blocked_by["window"][1].any() and not r.blocked_by["window"][0, VISIT]
    text = explain_block("window", "email", block_context(state, 0, EMAIL, "C2"), POLICY)
    assert text.startswith("email with item C2 blocked: reached this HCP once in the last 30 days (last 12 days ago)")
    assert text.endswith("rule same_item_30d: at most 1 of the same item in 30 days")


def test_item_history_beyond_the_sequence_and_topic_rules() -> None:
    frame = _history([[("email", "C1", 0.0)], []], last=[50.0, 0.0])
    frame["item_hist_content_id"] = [np.array(["C3", "C4"], dtype=object), np.array(["C3"], dtype=object)]
    frame["item_hist_days_since_delivered"] = [np.array([10.0, 200.0]), np.array([29.0])]
    frame["item_hist_days_since_opened"] = [np.array([10.0, np.inf]), np.array([np.inf])]
    policy = GuardrailPolicy(weekly_caps={}, window_rules=(WindowRule("same_item_30d", 30, 1, "item"), WindowRule("topic_14d", 14, 1, "topic")))
    topics = {"C1": "guideline", "C3": "clinical_data", "C4": "clinical_data", "C5": "clinical_data", "C6": "guideline"}
    w = window_state(recent_contacts(frame), policy, content_topics=topics, candidates=["C3", "C5", "C6"])
    pairs = dict(zip(zip(w.item_row.tolist(), w.item_id.tolist()), w.item_rule.tolist()))
    # C3 from the year-long item history (10 and 29 days); C5 shares C3's topic within 14 days.
    assert pairs == {(0, "C3"): 0, (1, "C3"): 0, (0, "C5"): 1}
    found = w.item_lookup(np.array([["C5", "C6"], ["C5", None]], dtype=object))
    assert found[0, 0] >= 0 and (found[0, 1], found[1, 0], found[1, 1]) == (-1, -1, -1)


def test_contact_state_reads_the_window_rules_from_online_columns() -> None:
    frame = _history([[("email", "C1", 0.0)], [("email", "C2", 0.0)]], last=[3.0, 3.0])
    frame["cr_conference_sent_60d"] = [1, 0]
    frame["conference_sent_90d"] = [1, 1]  # longer than the rule's window: not used
    frame["days_since_last_department_meeting"] = [30.0, 7.0]
    s = contact_state(frame, np.array(["growth", "growth"], dtype=object), history=frame, policy=POLICY)
    assert s.window.channel_blocked[:, CONF].tolist() == [True, False]
    assert s.window.channel_blocked[:, DEPT].tolist() == [False, True]
    assert contact_state(frame, np.array(["growth", "growth"], dtype=object)).window is None


def test_stock_config_ships_the_default_window_rules() -> None:
    rules = {r.name: r for r in load_config(ServingConfig, "serving").guardrails.policy().window_rules}
    assert (rules["conference_60d"].channel, rules["conference_60d"].days, rules["conference_60d"].max) == ("conference", 60, 1)
    assert (rules["department_meeting_21d"].channel, rules["department_meeting_21d"].days) == ("department_meeting", 21)
    assert (rules["same_item_30d"].scope, rules["same_item_30d"].days) == ("item", 30)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"channel": "fax", "days": 30}], "window_rules.0.channel"),
        ([{"channel": "visit", "days": 0}], "window_rules.0.days"),
        ([{"channel": "visit", "days": 7, "max": 0}], "window_rules.0.max"),
        ([{"scope": "channel", "days": 7}], "channel-scope rule needs a channel"),
        ([{"scope": "item", "channel": "email", "days": 7}], "leave channel out"),
        ([{"scope": "brand", "days": 7}], "window_rules.0.scope"),
        ([{"name": "a", "channel": "visit", "days": 7}, {"name": "a", "scope": "item", "days": 7}], "repeated: a"),
    ],
)
def test_invalid_window_rules_name_the_key(rules, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ServingConfig, "serving", overrides={"guardrails.window_rules": rules})
