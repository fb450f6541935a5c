"""Business rules applied after the model: what may never be suggested, whatever it scores.

Pure and vectorised over HCPs × candidate actions. Each rule yields a mask of the candidates it
blocks, so a suggestion's reasons can say which rule overrode the model ("visit blocked:
frequency cap 2/week reached"). Rules, in the order they are checked:

1. consent     — the HCP has not consented to the channel (or opted out).
2. content     — the content is not approved, or its approval window does not cover the
                 suggested time.
3. frequency   — the channel's weekly cap for this HCP is used up.
4. cooldown    — the last N touches on the channel went unanswered: rest it for D days.
5. window      — a rule with a window in days: at most ``max`` touches on a channel (or of the
                 same item, or the same topic) within ``days`` days ("no conference within 60
                 days of the last", "the same item at most once in 30 days").
6. lifecycle   — the product's lifecycle stage excludes the channel (e.g. no conferences
                 for a post-VBP product); softer preferences re-weight scores instead.
7. capacity    — not per HCP: across a request's HCPs, the rep-time and 1:1 entries past their
                 rep's capacity rank last (``serving.capacity``), and a rep's day is packed
                 into it (``pack_capacity``).

The engine turns these masks into constraints before ranking (feasible first): the model's
per-channel content is chosen among items no rule blocks, and only allowed channels are
ranked, so the rules explain what they removed rather than override the served choice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from contract.schema import CHANNELS
from features.contact_history import RecentContacts, channel_counts_within, days_since_channel

RULES: tuple[str, ...] = ("consent", "content", "frequency", "cooldown", "window", "lifecycle")
WINDOW_SCOPES: tuple[str, ...] = ("channel", "item", "topic")


@dataclass(frozen=True)
class WindowRule:
    """At most ``max`` touches within ``days`` days: on ``channel`` (scope channel), of one item (scope item) or of one topic (scope topic)."""

    name: str
    days: float
    max: int = 1
    scope: str = "channel"
    channel: str | None = None

    def describe(self) -> str:
        """The rule as a rep reads it ("rule conference_60d: at most 1 conference in 60 days")."""
        what = {"channel": str(self.channel), "item": "of the same item", "topic": "per topic"}[self.scope]
        return f"rule {self.name}: at most {self.max} {what} in {self.days:g} days"


@dataclass(frozen=True)
class GuardrailPolicy:
    """The configured limits (see ``serving.config.GuardrailConfig`` for the YAML side)."""

    weekly_caps: Mapping[str, int]  # channel -> max touches in the last 7 days before another
    cooldown_after_unanswered: int = 3
    cooldown_days: float = 14.0
    # lifecycle -> channel -> weight; 0 blocks the channel, 0 < w < 1 demotes it.
    lifecycle_weights: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    window_rules: tuple[WindowRule, ...] = ()

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
    window: WindowState | None = None  # what the window rules found (None: no history, nothing blocked)


@dataclass(frozen=True)
class WindowState:
    """What the window rules block per HCP: channels [N, C], and (HCP row, content id) pairs.

    Channel side: the first channel rule that blocks (index into ``policy.window_rules``, -1 none),
    the touches it counted and days since the channel's last touch. Item side (item and topic
    scopes): flat arrays of blocked pairs, each with the rule, its count and the item's age.
    """

    channel_rule: np.ndarray  # [N, C] int
    channel_count: np.ndarray  # [N, C] int
    channel_days: np.ndarray  # [N, C] float
    item_row: np.ndarray  # [M] int
    item_id: np.ndarray  # [M] object content id
    item_rule: np.ndarray  # [M] int
    item_count: np.ndarray  # [M] int
    item_age: np.ndarray  # [M] float: days since the item (or its topic) last reached the HCP

    @property
    def channel_blocked(self) -> np.ndarray:
        """[N, C] bool."""
        return self.channel_rule >= 0

    def item_entry(self, row: int, content_id: str) -> int:
        """Position of the blocked pair (``row``, ``content_id``) in the item arrays, -1 when the item is not blocked."""
        hit = np.flatnonzero((self.item_row == row) & (self.item_id == content_id))
        return int(hit[0]) if len(hit) else -1

    @cached_property
    def _keys(self) -> tuple[dict, int, np.ndarray, np.ndarray]:
        # Pairs as integer keys row * M + code over the blocked ids: a sorted search, no Python loop
        # over rows. The id codes are a dict (first appearance order): a pandas Index cost ~0.1 ms a
        # request whatever the size, most of a single-HCP lookup.
        index: dict = {}
        codes = np.fromiter((index.setdefault(i, len(index)) for i in self.item_id.tolist()), dtype=np.int64, count=len(self.item_id))
        m = len(index) + 1
        keys = self.item_row.astype(np.int64) * m + codes
        order = np.argsort(keys, kind="stable")
        return index, m, keys[order], order

    def item_lookup(self, content_ids: np.ndarray) -> np.ndarray:
        """[N, K] position into the blocked pairs of item ``content_ids[i, k]`` for row i (-1: not blocked)."""
        ids = np.asarray(content_ids, dtype=object)
        ids = ids[:, None] if ids.ndim == 1 else ids
        out = np.full(ids.shape, -1, dtype=np.int64)
        if not len(self.item_row) or not ids.size:
            return out
        index, m, skeys, order = self._keys
        get = index.get
        # A missing id (None, NaN) is never a blocked item: -1 like an unknown one.
        code = np.fromiter((-1 if x is None or x != x else get(x, -1) for x in ids.ravel().tolist()), dtype=np.int64, count=ids.size)
        q = np.repeat(np.arange(ids.shape[0]), ids.shape[1]) * m + code
        at = np.minimum(np.searchsorted(skeys, q), len(skeys) - 1)
        hit = (code >= 0) & (skeys[at] == q)
        out.ravel()[hit] = order[at[hit]]
        return out


def window_state(
    contacts: RecentContacts,
    policy: GuardrailPolicy,
    *,
    channel_counts: Mapping[float, np.ndarray] | None = None,
    days_since: np.ndarray | None = None,
    content_topics: Mapping[str, str] | None = None,
    candidates: Sequence[str] = (),
) -> WindowState:
    """Evaluate the window rules on each HCP's recent contacts (``features.contact_history.RecentContacts``).

    channel_counts: window days -> [N, C] exact touches per channel from aggregate features; the
        count a rule uses is the largest of these (windows no longer than the rule's), the touch
        sequence's count and 1 when ``days_since`` [N, C] says the channel was used in the window.
        The sequence holds only the last few touches, so aggregates fill in what it dropped.
    content_topics / candidates: content id -> topic, and the items that may be suggested; a
        topic rule blocks every candidate of a topic the HCP has had ``max`` times.
    """
    n, c = contacts.n, len(CHANNELS)
    seen = days_since_channel(contacts)
    if days_since is not None:
        seen = np.minimum(seen, np.asarray(days_since, dtype=np.float64))
    ch_rule = np.full((n, c), -1, dtype=np.int64)
    ch_count = np.zeros((n, c), dtype=np.int64)
    pairs: list[tuple[np.ndarray, ...]] = []
    has_content = contacts.content_id != ""
    for r, rule in enumerate(policy.window_rules):
        if rule.scope == "channel":
            j = CHANNELS.index(rule.channel)
            count = channel_counts_within(contacts, rule.days)[:, j]
            for w, counts in (channel_counts or {}).items():
                if w <= rule.days:
                    count = np.maximum(count, np.asarray(counts)[:, j].astype(np.int64))
            count = np.maximum(count, (seen[:, j] < rule.days).astype(np.int64))
            new = (count >= rule.max) & (ch_rule[:, j] < 0)
            ch_rule[new, j] = r
            ch_count[new, j] = count[new]
            continue
        sel = has_content & (contacts.age_days < rule.days)
        if not sel.any():
            continue
        rows, ids, age, in_seq = contacts.row[sel], contacts.content_id[sel], contacts.age_days[sel], contacts.channel[sel] >= 0
        if rule.scope == "topic":
            topic = np.array([(content_topics or {}).get(i) for i in ids.tolist()], dtype=object).reshape(-1)
            known = pd.notna(topic)
            rows, ids, age, in_seq, key = rows[known], ids[known], age[known], in_seq[known], topic[known]
        else:
            key = ids
        if not len(rows):
            continue
        # Touches per (row, key): the sequence counts each delivery; the year-long item history
        # knows only each item's last one, so it counts distinct items (for a topic) or 1 (an item).
        # Codes in order of first appearance (pandas' factorize), built with a dict: a few entries per
        # HCP, where pandas' per-call overhead was most of a single-HCP request's rule time.
        first: dict = {}
        codes = np.fromiter((first.setdefault(k, len(first)) for k in key.tolist()), dtype=np.int64, count=len(key))
        uniq = list(first)
        pair = rows.astype(np.int64) * len(uniq) + codes
        pk, inv = np.unique(pair, return_inverse=True)
        seq_n = np.bincount(inv, weights=in_seq, minlength=len(pk))
        hist_n = np.zeros(len(pk))
        if (~in_seq).any():  # distinct items per (row, key) among the item-history entries
            for g, item in set(zip(inv[~in_seq].tolist(), ids[~in_seq].tolist())):
                hist_n[g] += item is not None and item == item  # nunique: a missing id is no item
        count = np.maximum(seq_n, hist_n).astype(np.int64)
        youngest = np.full(len(pk), np.inf)
        np.minimum.at(youngest, inv, age)
        hit = count >= rule.max
        if not hit.any():
            continue
        p_row, p_key = pk[hit] // len(uniq), np.asarray(uniq, dtype=object)[pk[hit] % len(uniq)]
        if rule.scope == "topic":
            by_topic: dict = {}
            for item in candidates:  # each topic's candidates, in candidate order
                t = (content_topics or {}).get(item)
                if t is not None and t == t:
                    by_topic.setdefault(t, []).append(item)
            blocked_items = [by_topic.get(t, []) for t in p_key.tolist()]
            reps = np.fromiter(map(len, blocked_items), dtype=np.int64, count=len(blocked_items))
            pairs.append(
                (
                    np.repeat(p_row, reps),
                    np.asarray([i for b in blocked_items for i in b], dtype=object),
                    np.full(int(reps.sum()), r),
                    np.repeat(count[hit], reps),
                    np.repeat(youngest[hit], reps),
                )
            )
        else:
            pairs.append((p_row, p_key, np.full(len(p_row), r), count[hit], youngest[hit]))
    if pairs:
        cols = [np.concatenate([p[i] for p in pairs]) for i in range(5)]
        # One entry per (row, item): the first rule in config order wins, as for channels.
        first_of: dict = {}
        for k, pair in enumerate(zip(cols[0].tolist(), cols[1].tolist())):
            first_of.setdefault(pair, k)
        keep = np.zeros(len(cols[0]), dtype=bool)
        keep[list(first_of.values())] = True
        cols = [col[keep] for col in cols]
    else:
        cols = [np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0)]
    return WindowState(
        ch_rule,
        ch_count,
        seen,
        cols[0].astype(np.int64),
        cols[1].astype(object),
        cols[2].astype(np.int64),
        cols[3].astype(np.int64),
        cols[4].astype(np.float64),
    )


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
    action_content: np.ndarray | None = None,
) -> GuardrailResult:
    """Evaluate every rule for N HCPs × A candidate actions.

    action_channel: [A] channel index of each candidate action.
    action_content_ok: [A] or [N, A] bool, content approved for the suggested window
        (candidates without content pass).
    action_content: optional [N, A] content ids, checked against the item and topic window rules.
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
    checks["window"] = np.zeros((n, a), dtype=bool)
    if state.window is not None:
        checks["window"] = state.window.channel_blocked[:, ch]
        if action_content is not None:
            checks["window"] = checks["window"] | (state.window.item_lookup(action_content) >= 0)
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
        return f"{channel} resting: last {int(state_row.get('unanswered_streak', 0))} {channel} touches unanswered, cool-down {policy.cooldown_days:g} days"
    if rule == "window":
        return explain_window(channel, state_row, policy)
    if rule == "lifecycle":
        return f"{channel} not used for products in {state_row.get('lifecycle', '?')} stage"
    raise KeyError(rule)


def explain_window(channel: str, state_row: Mapping[str, object], policy: GuardrailPolicy) -> str:
    """Why a window rule blocked ``channel`` (keys: window_rule, window_count, window_days; content_id for items)."""
    rule = policy.window_rules[int(state_row["window_rule"])]
    count, days = int(state_row.get("window_count", 0)), float(state_row.get("window_days", np.inf))
    if rule.scope == "channel":
        if rule.max == 1 and np.isfinite(days):
            seen = f"last {channel} {days:.0f} days ago"
        else:
            seen = f"{count} {channel} touches in the last {rule.days:g} days"
        return f"{channel} blocked: {seen}, {rule.describe()}"
    what = f"item {state_row.get('content_id')}" if rule.scope == "item" else f"the topic of item {state_row.get('content_id')}"
    times = "once" if count <= 1 else f"{count} times"
    return f"{channel} with {what} blocked: reached this HCP {times} in the last {rule.days:g} days (last {days:.0f} days ago), {rule.describe()}"


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
