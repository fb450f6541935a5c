"""What may be done in a week: eligible content, working hours, frequency caps, rep capacity."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contract.schema import CHANNELS
from simulator.actions import Actions
from simulator.catalogue import suitability
from simulator.config import ConstraintsConfig
from simulator.world import CH, CONTENTLESS_MASK, REP_TIME_MASK, WORKDAY_ONLY_MASK, PublicWorld

_DAY_US = 86_400 * 1_000_000
WORK_WEEKDAYS = 5  # Monday..Friday
WORK_DAYPARTS = 3  # morning, midday, afternoon
VIOLATION_KINDS = ("no_consent", "content_not_eligible", "too_soon", "outside_working_hours", "frequency_cap", "rep_capacity")


@dataclass
class Eligibility:
    """Everything a policy needs to stay within the rules in one week (all public information)."""

    # (products, channels, content) bool: approved for the whole week, suited to the channel.
    content: np.ndarray
    # (n_hcps, channels) bool: consented, something eligible to send (or a contentless channel),
    # and the channel's minimum gap since the last touch has passed.
    channel: np.ndarray
    # (n_hcps, channels) bool: the minimum gap since the HCP's last touch on the channel has passed.
    gap_ok: np.ndarray
    rep_time_capacity: np.ndarray  # (reps,) visits + meetings + calls per week
    message_capacity: np.ndarray  # (reps,) 1:1 messages per week
    channel_cap: int
    max_touches: int
    # (n_hcps,) bool: onboarded this week (a population shift holds a cohort back); None = all.
    active: np.ndarray | None = None
    # (channels,) bool: channels whose touches carry no content in this world (content -1).
    contentless: np.ndarray = field(default_factory=lambda: CONTENTLESS_MASK.copy())

    def content_for(self, product: int, channel: int) -> np.ndarray:
        """Indices of content eligible for a product on a channel this week (sorted)."""
        return np.flatnonzero(self.content[product, channel])


def eligible_content(public: PublicWorld, week: int, contentless: np.ndarray | None = None) -> np.ndarray:
    """(products, channels, content) mask of content approved for every day of ``week`` and suited to the channel
    (``contentless``: the world's contentless channels, default phone)."""
    start = public.week_start_us(week)
    # A local week starts up to 8 h before UTC Monday; a day of margin either side covers it.
    approved = (public.content_from_us <= start - _DAY_US) & (public.content_until_us >= start + 8 * _DAY_US)
    per_channel = suitability(contentless)[public.content_type] & approved[:, None]  # (K, C)
    same_product = public.content_product[None, :] == np.arange(len(public.product_ids))[:, None]  # (P, K)
    out = same_product[:, None, :] & per_channel.T[None, :, :]
    return out


def eligibility(
    public: PublicWorld,
    week: int,
    cfg: ConstraintsConfig,
    last_week: np.ndarray | None = None,
    active: np.ndarray | None = None,
    contentless: np.ndarray | None = None,
) -> Eligibility:
    """The week's eligibility masks and capacities; ``last_week`` (n, C) is each HCP's last outbound week per channel (-1 never);
    ``active`` (n,) marks onboarded HCPs (None: all); ``contentless`` the world's contentless channels (None: phone)."""
    contentless = CONTENTLESS_MASK if contentless is None else np.asarray(contentless, dtype=bool)
    content = eligible_content(public, week, contentless)
    has_content = content.any(axis=2)  # (P, C)
    gap = np.array([cfg.min_weeks_between.get(c, 0) for c in CHANNELS])
    if last_week is None:
        gap_ok = np.ones((public.n_hcps, len(CHANNELS)), dtype=bool)
    else:
        gap_ok = (last_week < 0) | (week - last_week >= np.maximum(gap, 1)[None, :]) | (gap[None, :] == 0)
    channel_ok = (has_content | contentless[None, :])[public.hcp_product] & public.consent & gap_ok
    if active is not None:
        channel_ok &= active[:, None]
    return Eligibility(
        content=content,
        channel=channel_ok,
        gap_ok=gap_ok,
        rep_time_capacity=public.rep_visit_cap_day * WORK_WEEKDAYS,
        message_capacity=public.rep_msg_cap_day * WORK_WEEKDAYS,
        channel_cap=cfg.channel_cap_per_week,
        max_touches=cfg.max_touches_per_week,
        active=active,
        contentless=contentless.copy(),
    )


def _rank_within(keys: np.ndarray) -> np.ndarray:
    """0-based occurrence number of each row among rows with the same key, in row order."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    start = np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]
    group_first = np.maximum.accumulate(np.where(start, np.arange(len(keys)), 0))
    rank = np.empty(len(keys), dtype=np.int64)
    rank[order] = np.arange(len(keys)) - group_first
    return rank


def enforce(public: PublicWorld, elig: Eligibility, actions: Actions) -> tuple[np.ndarray, dict[str, int]]:
    """Mask of actions that may be executed, and counts of those dropped per violated rule.

    Rows are judged in order: where a cap is hit, earlier rows win, so a policy lists its
    priorities first. Malformed rows (unknown indices) are an error, not a violation.
    """
    n, n_ch = public.n_hcps, len(CHANNELS)
    a = actions
    checks = {
        "hcp": (a.hcp >= 0) & (a.hcp < n),
        "channel": (a.channel >= 0) & (a.channel < n_ch),
        "content": (a.content >= -1) & (a.content < len(public.content_ids)),
        "weekday": (a.weekday >= 0) & (a.weekday <= 6),
        "daypart": (a.daypart >= 0) & (a.daypart <= 3),
    }
    for name, ok in checks.items():
        if not ok.all():
            row = int(np.flatnonzero(~ok)[0])
            raise ValueError(f"actions row {row}: {name} {int(getattr(a, name)[row])} out of range")
    keep = np.ones(len(a), dtype=bool)
    violations = dict.fromkeys(VIOLATION_KINDS, 0)

    def drop(kind: str, bad: np.ndarray) -> None:
        bad = bad & keep
        violations[kind] += int(bad.sum())
        keep[bad] = False

    consented = public.consent[a.hcp, a.channel]
    if elig.active is not None:
        consented = consented & elig.active[a.hcp]  # not yet onboarded: no consent on file
    drop("no_consent", ~consented)
    product = public.hcp_product[a.hcp]
    has = a.content >= 0
    content_ok = np.where(
        elig.contentless[a.channel],
        ~has,
        has & elig.content[product, a.channel, np.where(has, a.content, 0)],
    )
    drop("content_not_eligible", ~content_ok)
    drop("too_soon", ~elig.gap_ok[a.hcp, a.channel])
    workday = WORKDAY_ONLY_MASK[a.channel]
    drop("outside_working_hours", workday & ((a.weekday >= WORK_WEEKDAYS) | (a.daypart >= WORK_DAYPARTS)))
    idx = np.flatnonzero(keep)
    over = np.zeros(len(a), dtype=bool)
    over[idx] = _rank_within(a.hcp[idx] * n_ch + a.channel[idx]) >= elig.channel_cap
    drop("frequency_cap", over)
    idx = np.flatnonzero(keep)
    over[:] = False
    over[idx] = _rank_within(a.hcp[idx]) >= elig.max_touches
    drop("frequency_cap", over)
    rep = public.hcp_rep[a.hcp]
    for mask, cap in ((REP_TIME_MASK[a.channel], elig.rep_time_capacity), (a.channel == CH["wecom_1to1"], elig.message_capacity)):
        idx = np.flatnonzero(keep & mask)
        over[:] = False
        over[idx] = _rank_within(rep[idx]) >= cap[rep[idx]]
        drop("rep_capacity", over)
    return keep, violations


def fit_rep_capacity(public: PublicWorld, elig: Eligibility, actions: Actions, priority: np.ndarray) -> np.ndarray:
    """Mask keeping, per rep, the highest-priority rep-time and 1:1 actions that fit capacity."""
    keep = np.ones(len(actions), dtype=bool)
    rep = public.hcp_rep[actions.hcp]
    for mask, cap in ((REP_TIME_MASK[actions.channel], elig.rep_time_capacity), (actions.channel == CH["wecom_1to1"], elig.message_capacity)):
        idx = np.flatnonzero(mask)
        if not len(idx):
            continue
        order = idx[np.lexsort((-priority[idx], rep[idx]))]
        rank = _rank_within(rep[order])
        keep[order[rank >= cap[rep[order]]]] = False
    return keep
