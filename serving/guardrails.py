"""Business rules applied after the model: what may never be suggested, whatever it scores.

Pure and vectorised over HCPs × candidate actions. Each rule yields a mask of the candidates it
blocks, so a suggestion's reasons can say which rule overrode the model ("visit blocked:
frequency cap 2/week reached"). Rules, in the order they are checked:

1. consent     — the HCP has not consented to the channel (or opted out).
2. content     — the content is not approved, or its approval window does not cover the
                 suggested time.
3. frequency   — the channel's weekly cap for this HCP is used up.
4. cooldown    — the last N touches on the channel went unanswered: rest it for D days.
5. lifecycle   — the product's lifecycle stage excludes the channel (e.g. no conferences
                 for a post-VBP product); softer preferences re-weight scores instead.
6. capacity    — applied when planning a rep's day (see ``pack_capacity``), not per HCP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from contract.schema import CHANNELS

RULES: tuple[str, ...] = ("consent", "content", "frequency", "cooldown", "lifecycle")


@dataclass(frozen=True)
class GuardrailPolicy:
    """The configured limits (see ``serving.config.GuardrailConfig`` for the YAML side)."""

    weekly_caps: Mapping[str, int]  # channel -> max touches in the last 7 days before another
    cooldown_after_unanswered: int = 3
    cooldown_days: float = 14.0
    # lifecycle -> channel -> weight; 0 blocks the channel, 0 < w < 1 demotes it.
    lifecycle_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def cap_vector(self) -> np.ndarray:
        """Weekly caps in CHANNELS order (no cap = a very large number)."""
        return np.array([self.weekly_caps.get(ch, 10**9) for ch in CHANNELS], dtype=np.int64)

    def lifecycle_matrix(self, lifecycles: Sequence[str]) -> np.ndarray:
        """[N, C] channel weights for each HCP's product lifecycle (1 where unconfigured)."""
        out = np.ones((len(lifecycles), len(CHANNELS)))
        for name, weights in self.lifecycle_weights.items():
            rows = np.asarray(lifecycles) == name
            for ch, w in weights.items():
                out[rows, CHANNELS.index(ch)] = w
        return out


@dataclass(frozen=True)
class ContactState:
    """What the rules need to know about each HCP, in CHANNELS column order. Shapes [N, C]."""

    consent: np.ndarray  # bool
    sent_7d: np.ndarray  # int: touches on the channel in the last 7 days
    unanswered_streak: np.ndarray  # int: consecutive most-recent touches without a response
    days_since_last: np.ndarray  # float: days since the last touch on the channel (inf if none)
    lifecycle: np.ndarray  # [N] str: lifecycle of the HCP's main product


@dataclass(frozen=True)
class GuardrailResult:
    """Per-candidate outcome: allowed mask, blocking masks per rule, and adjusted scores."""

    allowed: np.ndarray  # [N, A] bool
    blocked_by: dict[str, np.ndarray]  # rule -> [N, A] bool (first rule that blocked only)
    weight: np.ndarray  # [N, A] lifecycle weight applied to the score (1 = untouched)


def apply_guardrails(
    state: ContactState,
    action_channel: np.ndarray,
    action_content_ok: np.ndarray,
    policy: GuardrailPolicy,
) -> GuardrailResult:
    """Evaluate every rule for N HCPs × A candidate actions.

    action_channel: [A] channel index of each candidate action.
    action_content_ok: [A] or [N, A] bool, content approved for the suggested window
        (candidates without content pass).
    """
    n = state.consent.shape[0]
    ch = np.asarray(action_channel)
    a = ch.shape[0]
    checks: dict[str, np.ndarray] = {}
    checks["consent"] = ~state.consent[:, ch]
    checks["content"] = np.broadcast_to(~np.asarray(action_content_ok, dtype=bool), (n, a))
    checks["frequency"] = state.sent_7d[:, ch] >= policy.cap_vector()[ch][None, :]
    cooling = (state.unanswered_streak >= policy.cooldown_after_unanswered) & (state.days_since_last < policy.cooldown_days)
    checks["cooldown"] = cooling[:, ch]
    weights = policy.lifecycle_matrix(state.lifecycle)[:, ch]
    checks["lifecycle"] = weights <= 0.0

    blocked_by: dict[str, np.ndarray] = {}
    already = np.zeros((n, a), dtype=bool)
    for rule in RULES:
        first = checks[rule] & ~already
        blocked_by[rule] = first
        already |= checks[rule]
    return GuardrailResult(allowed=~already, blocked_by=blocked_by, weight=np.where(already, 0.0, weights))


def explain_block(rule: str, channel: str, state_row: Mapping[str, float], policy: GuardrailPolicy) -> str:
    """A sentence a rep can read for why the model's choice on ``channel`` was overridden."""
    if rule == "consent":
        return f"{channel} not allowed: no consent on record for this channel"
    if rule == "content":
        return f"{channel} suggestion dropped: its content is not approved for the suggested window"
    if rule == "frequency":
        cap = policy.weekly_caps.get(channel)
        return f"{channel} blocked: weekly cap reached ({int(state_row.get('sent_7d', 0))}/{cap} in the last 7 days)"
    if rule == "cooldown":
        return (
            f"{channel} resting: last {int(state_row.get('unanswered_streak', 0))} {channel} touches unanswered, "
            f"cool-down {policy.cooldown_days:g} days"
        )
    if rule == "lifecycle":
        return f"{channel} not used for products in {state_row.get('lifecycle', '?')} stage"
    raise KeyError(rule)


def pack_capacity(priority: np.ndarray, uses_visit: np.ndarray, visit_capacity: int, message_capacity: int) -> np.ndarray:
    """Greedy by priority: keep actions while the rep's visit and message budgets last.

    priority: [K] expected value of each candidate contact; uses_visit: [K] bool (rep-time
    channel) — everything else spends message capacity. Returns [K] bool of kept contacts.
    """
    order = np.argsort(-priority, kind="stable")
    keep = np.zeros(priority.shape[0], dtype=bool)
    visits = messages = 0
    for i in order:
        if uses_visit[i]:
            if visits < visit_capacity:
                keep[i] = True
                visits += 1
        elif messages < message_capacity:
            keep[i] = True
            messages += 1
    return keep
