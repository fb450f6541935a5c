"""Guardrails: each rule blocks exactly what it should, and says so."""

from __future__ import annotations

import numpy as np

from contract.schema import CHANNELS
from serving.guardrails import ContactState, GuardrailPolicy, apply_guardrails, explain_block, pack_capacity

C = len(CHANNELS)
VISIT, PUSH, EMAIL, CONF = (CHANNELS.index(c) for c in ("visit", "wechat_push", "email", "conference"))
POLICY = GuardrailPolicy(
    weekly_caps={"visit": 1, "wechat_push": 2},
    cooldown_after_unanswered=3,
    cooldown_days=14,
    lifecycle_weights={"post_vbp": {"conference": 0.0, "visit": 0.5}},
)


def _state(n: int = 1, **over) -> ContactState:
    base = dict(
        consent=np.ones((n, C), dtype=bool),
        sent_7d=np.zeros((n, C), dtype=np.int64),
        unanswered_streak=np.zeros((n, C), dtype=np.int64),
        days_since_last=np.full((n, C), np.inf),
        lifecycle=np.array(["growth"] * n),
    )
    base.update(over)
    return ContactState(**base)


ACTIONS = np.array([VISIT, PUSH, EMAIL, CONF])


def test_clean_state_allows_everything() -> None:
    r = apply_guardrails(_state(), ACTIONS, np.ones(4, bool), POLICY)
    assert r.allowed.all() and (r.weight == 1).all()


def test_each_rule_blocks_its_case() -> None:
    consent = np.ones((5, C), bool)
    consent[0, EMAIL] = False
    sent = np.zeros((5, C), np.int64)
    sent[1, VISIT] = 1
    streak = np.zeros((5, C), np.int64)
    streak[2, PUSH] = 3
    days = np.full((5, C), np.inf)
    days[2, PUSH] = 3.0
    streak[3, PUSH] = 3
    days[3, PUSH] = 20.0  # cool-down over
    life = np.array(["growth", "growth", "growth", "growth", "post_vbp"])
    state = _state(5, consent=consent, sent_7d=sent, unanswered_streak=streak, days_since_last=days, lifecycle=life)
    content_ok = np.array([True, True, False, True])[None, :].repeat(5, 0)
    content_ok[:, 2] = True
    content_ok[4, 1] = False
    r = apply_guardrails(state, ACTIONS, content_ok, POLICY)
    expected_blocks = {("consent", 0, 2), ("frequency", 1, 0), ("cooldown", 2, 1), ("content", 4, 1), ("lifecycle", 4, 3)}
    got = {(rule, i, j) for rule, m in r.blocked_by.items() for i, j in zip(*np.nonzero(m))}
    assert got == expected_blocks
    assert r.allowed[3].all(), "an expired cool-down must not block"
    assert r.weight[4, 0] == 0.5 and r.weight[4, 3] == 0.0 and r.weight[0, 0] == 1.0


def test_first_blocking_rule_is_the_one_reported() -> None:
    consent = np.ones((1, C), bool)
    consent[0, VISIT] = False
    sent = np.zeros((1, C), np.int64)
    sent[0, VISIT] = 5
    r = apply_guardrails(_state(consent=consent, sent_7d=sent), ACTIONS, np.ones(4, bool), POLICY)
    assert r.blocked_by["consent"][0, 0] and not r.blocked_by["frequency"][0, 0]


def test_explanations_name_the_numbers() -> None:
    assert "1/1" in explain_block("frequency", "visit", {"sent_7d": 1}, POLICY)
    assert "last 3 wechat_push touches unanswered" in explain_block("cooldown", "wechat_push", {"unanswered_streak": 3}, POLICY)
    assert "post_vbp" in explain_block("lifecycle", "conference", {"lifecycle": "post_vbp"}, POLICY)


def test_pack_capacity_keeps_highest_value_within_budgets() -> None:
    priority = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    uses_visit = np.array([True, True, False, True, False])
    keep = pack_capacity(priority, uses_visit, visit_capacity=2, message_capacity=1)
    assert keep.tolist() == [True, True, True, False, False]
