"""A rep's capacity shared across the HCPs of one request: rep-time channels go where they gain most.

Each HCP's slate is chosen on its own, so without this step a territory's slates ask for more
visits, meetings and calls (and more 1:1 messages) than its rep can make in the period: the
rep drops some, and the HCPs who lose their in-person touch get nothing in its place. With the
rep's budget known (``reps.visit_capacity_per_day`` and ``message_capacity_per_day`` of the
contract, times the working days of the horizon), the engine masks the rep-time entries that do
not fit before the slate is drawn, so those HCPs get their next-best channel instead (feasible
first, like every other rule).

Which entries keep the budget: the ones whose loss would cost most, i.e. the largest margin of
the channel's score over the score of the channel that would move up into the acted-on part of
the slate (``ranks``: how many of each HCP's suggestions a rep is expected to act on). A request
that holds only part of a rep's book gets the matching share of the budget, rounded up, so a
single-HCP call is never starved by it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from contract.schema import CHANNELS, REP_TIME_CHANNELS

REP_TIME = np.array([c in REP_TIME_CHANNELS for c in CHANNELS])
MESSAGE = np.array([c == "wecom_1to1" for c in CHANNELS])


def request_budget(
    rep_of: np.ndarray, per_day: Mapping[str, tuple[int, int]], book_size: Mapping[str, int], days: int, utilisation: float, floor: int = 0
) -> dict[str, tuple[int, int]]:
    """Per rep in the request: (rep-time, message) budget for ``days`` working days, scaled to the request's share of the rep's book.

    ``floor``: the least budget of a rep (a request for one or two HCPs says nothing about the rest of the book).
    """
    out: dict[str, tuple[int, int]] = {}
    reps, counts = np.unique(np.asarray([r for r in rep_of if isinstance(r, str)], dtype=object), return_counts=True)
    for rep, n in zip(reps.tolist(), counts.tolist()):
        if rep not in per_day:
            continue  # an unknown rep's capacity is unknown: no budget applied
        share = min(1.0, n / max(int(book_size.get(rep, n)), n))
        visits, messages = per_day[rep]
        out[rep] = tuple(max(floor, int(math.ceil(utilisation * cap * days * share))) for cap in (visits, messages))  # type: ignore[assignment]
    return out


def _over_budget(score: np.ndarray, rep_of: np.ndarray, budget: Mapping[str, tuple[int, int]], ranks: int) -> np.ndarray:
    """[N, C] entries among each row's top ``ranks`` that do not fit their rep's budget (smallest margins dropped first)."""
    n, c = score.shape
    order = np.argsort(-score, axis=1, kind="stable")
    m = min(ranks, c)
    top = order[:, :m]
    top_score = np.take_along_axis(score, top, 1)
    # The score that moves into the acted-on ranks when one entry leaves: the row's (m+1)-th best.
    nxt = np.take_along_axis(score, order[:, m : m + 1], 1)[:, 0] if m < c else np.full(n, -np.inf)
    nxt = np.where(np.isfinite(nxt), nxt, 0.0)
    over = np.zeros_like(score, dtype=bool)
    rows = np.repeat(np.arange(n), m)
    chans = top.reshape(-1)
    vals = top_score.reshape(-1)
    margin = vals - nxt[rows]
    reps = rep_of[rows]
    live = np.isfinite(vals)
    for kind, mask in ((0, REP_TIME), (1, MESSAGE)):
        sel = np.flatnonzero(live & mask[chans])
        if not len(sel):
            continue
        for rep in np.unique(reps[sel].astype(str)).tolist():
            if rep not in budget:
                continue
            mine = sel[reps[sel] == rep]
            cap = budget[rep][kind]
            if len(mine) <= cap:
                continue
            ranked = mine[np.argsort(-margin[mine], kind="stable")]
            drop = ranked[cap:]
            over[rows[drop], chans[drop]] = True
    return over


def fit_budget(score: np.ndarray, rep_of: np.ndarray, budget: Mapping[str, tuple[int, int]], ranks: int, rounds: int = 8) -> np.ndarray:
    """[N, C] bool of the rep-time and 1:1 entries masked for capacity; ``score`` [N, C] has -inf where not allowed.

    Repeats until every rep's acted-on entries fit (a row that lost a visit may move another
    rep-time channel up), at most ``rounds`` times. A row is never emptied: an HCP whose every
    allowed channel is over budget keeps them (the rep decides; nothing would replace them).
    """
    blocked = np.zeros(score.shape, dtype=bool)
    rep_of = np.asarray(rep_of, dtype=object)
    # Only reps with more acted-on entries possible than a budget can be over it: a request for one
    # or a few HCPs (the floor) skips the ranking altogether.
    reps, counts = np.unique(np.asarray([r for r in rep_of if isinstance(r, str)], dtype=object), return_counts=True)
    budget = {r: budget[r] for r, n in zip(reps.tolist(), counts.tolist()) if r in budget and n * min(ranks, score.shape[1]) > min(budget[r])}
    if not budget:
        return blocked
    for _ in range(rounds):
        s = np.where(blocked, -np.inf, score)
        over = _over_budget(s, rep_of, budget, ranks)
        if not over.any():
            break
        blocked |= over
    emptied = np.isfinite(score).any(1) & ~(np.isfinite(score) & ~blocked).any(1)
    blocked[emptied] = False
    return blocked


__all__ = ["fit_budget", "request_budget"]
