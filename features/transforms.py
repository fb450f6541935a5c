"""Pure, vectorised feature transforms: prepared events -> (HCP x snapshot) feature matrices.

A snapshot at time T aggregates events STRICTLY BEFORE T. Every windowed figure is two
binary searches into events sorted by (group, time) plus a cumulative sum, so the cost is
O((groups x snapshots) log events) with no Python loop over HCPs.
"""

from __future__ import annotations

import numpy as np

from contract.schema import CHANNELS, MEETING_CHANNELS
from features.catalog import View
from features.events import DAY_S, WEEK_S, Prepared

_CH = {name: i for i, name in enumerate(CHANNELS)}


class Grid:
    """Binary-search index of events by (group, time) for asking 'before T' questions."""

    def __init__(self, group: np.ndarray, t: np.ndarray, n_groups: int, times: np.ndarray, max_window_s: int = 0):
        self.n_groups = n_groups
        self.times = np.asarray(times, dtype=np.int64)
        lo_t = min(int(t.min()) if len(t) else 0, int(self.times.min()) - max_window_s) - 1
        hi_t = max(int(t.max()) if len(t) else 0, int(self.times.max())) + 1
        self.base, self.span = lo_t, hi_t - lo_t + 1
        self.keys = group.astype(np.int64) * self.span + (t - self.base)
        if len(self.keys) > 1 and np.any(self.keys[1:] < self.keys[:-1]):
            raise ValueError("events must be sorted by (group, time)")
        g = np.arange(n_groups, dtype=np.int64)[:, None] * self.span
        self._q = g + (self.times - self.base)[None, :]
        # Indices of the first event of each group and of the first event at/after each T.
        self.start = np.searchsorted(self.keys, g[:, 0], side="left")[:, None]
        self.hi = np.searchsorted(self.keys, self._q, side="left")

    def lo(self, window_s: int | None) -> np.ndarray:
        """Index of the first event inside [T - window, T) (group start when no window)."""
        if window_s is None:
            return np.broadcast_to(self.start, self.hi.shape)
        return np.searchsorted(self.keys, self._q - window_s, side="left")

    def count(self, window_s: int | None) -> np.ndarray:
        """Events in [T - window, T) per (group, T)."""
        return (self.hi - self.lo(window_s)).astype(np.int32)

    def total(self, values: np.ndarray, window_s: int | None) -> np.ndarray:
        """Sum of ``values`` over events in [T - window, T)."""
        c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
        return c[self.hi] - c[self.lo(window_s)]

    def last_index(self) -> tuple[np.ndarray, np.ndarray]:
        """Position of each group's last event before T, and whether there is one."""
        has = self.hi > self.start
        return np.where(has, self.hi - 1, 0), has


def _rate(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.maximum(den, 1), 0.0).astype(np.float32)


def _days_since(prep_t: np.ndarray, grid: Grid, cap: float) -> np.ndarray:
    idx, has = grid.last_index()
    last = prep_t[idx] if len(prep_t) else np.zeros_like(idx)
    days = (grid.times[None, :] - last) / DAY_S
    return np.where(has, np.minimum(days, cap), cap).astype(np.float32)


# Up to this many (subset x HCP x snapshot) cells, all subsets share one Grid (a push of a few
# HCPs: ~70 tiny Grids cost more than their numbers); above it, one Grid per subset, as the batch
# build has always done (bounded memory, no sort of the events). Both give the same numbers.
STACK_MAX_CELLS = 1 << 16


class Subsets:
    """Windowed figures of many event subsets at once, as (subset, HCP, snapshot) arrays equal to one ``Grid`` per subset.

    ``blocks``: (code per event, number of codes); subset ``offset + c`` holds the events whose
    code is ``c`` (-1: none), the offset counting the codes of the blocks before. An event may
    sit in one subset per block. Above ``STACK_MAX_CELLS`` the subsets are done one ``Grid`` at
    a time, as the batch build always did (one Grid in memory, no sort of the events).
    """

    def __init__(self, hcp: np.ndarray, t: np.ndarray, n_hcps: int, blocks: list[tuple[np.ndarray, int]], times: np.ndarray, max_w: int):
        self.hcp, self.t, self.n_hcps, self.times, self.max_w = hcp, t, n_hcps, times, max_w
        self.blocks = [(code, c) for code, n in blocks for c in range(n)]
        self.k = len(self.blocks)
        self.shape = (self.k, n_hcps, len(times))
        self.stacked = self.k * n_hcps * len(times) <= STACK_MAX_CELLS
        self._sums: dict[int, tuple] = {}
        if not self.stacked:
            return
        parts, offset = [], 0
        for code, n in blocks:
            keep = np.flatnonzero(code >= 0)
            parts.append((keep, (code[keep].astype(np.int64) + offset) * n_hcps + hcp[keep]))
            offset += n
        keep = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        group = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        # Stable: events are sorted by (hcp, time), so each (subset, hcp) group stays in time order.
        order = np.argsort(group, kind="stable")
        self.idx, group = keep[order], group[order]
        self.grid = Grid(group, t[self.idx], self.k * n_hcps, times, max_w)
        self.bounds = np.searchsorted(group, np.arange(self.k + 1, dtype=np.int64) * n_hcps)

    def _subset(self, i: int) -> tuple[Grid, np.ndarray]:
        code, c = self.blocks[i]
        idx = np.flatnonzero(code == c)
        return Grid(self.hcp[idx], self.t[idx], self.n_hcps, self.times, self.max_w), idx

    def figures(self, asks: list[tuple]) -> list[np.ndarray]:
        """One (subset, HCP, T) array per ask: ("count", window_s), ("total", values per event, window_s, dtype) or ("days_since", cap).

        A count is of events in [T - window, T); a total sums ``values`` over them; days since is
        to each group's last event before T, capped (``cap`` when none).
        """
        if self.stacked:
            return [self._stacked(a) for a in asks]
        out: list = [None] * len(asks)
        for i in range(self.k):
            g, idx = self._subset(i)
            for j, a in enumerate(asks):
                if a[0] == "count":
                    r = g.count(a[1])
                elif a[0] == "total":
                    r = g.total(a[1][idx], a[2]).astype(a[3])
                else:
                    r = _days_since(self.t[idx], g, a[1])
                if out[j] is None:
                    out[j] = np.empty(self.shape, dtype=r.dtype)
                out[j][i] = r
        return out

    def _stacked(self, ask: tuple) -> np.ndarray:
        g = self.grid
        if ask[0] == "count":
            return g.count(ask[1]).reshape(self.shape)
        if ask[0] == "days_since":
            return _days_since(self.t[self.idx], g, ask[1]).reshape(self.shape)
        _, values, window_s, dtype = ask
        hi, lo = g.hi, g.lo(window_s)
        c, shift = self._running_sum(values)
        if shift is None:
            return (c[hi] - c[lo]).astype(dtype).reshape(self.shape)
        return (c[hi + shift] - c[lo + shift]).astype(dtype).reshape(self.shape)

    def _running_sum(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Running sums of ``values`` in grid order (built once per values array, for every window), and each group's offset into them."""
        hit = self._sums.get(id(values))
        if hit is not None and hit[0] is values:
            return hit[1], hit[2]
        v = values[self.idx]
        if v.dtype.kind in "biu":  # integer sums are exact: one running sum serves every subset
            c, shift = np.concatenate([[0.0], np.cumsum(v, dtype=np.float64)]), None
        else:
            # Floats: one running sum per subset, as a Grid per subset adds them (the same rounding).
            # Subset i's sum starts at position bounds[i] + i of ``c``.
            b = self.bounds
            c = np.concatenate([x for i in range(self.k) for x in ([0.0], np.cumsum(v[b[i] : b[i + 1]], dtype=np.float64))])
            shift = np.repeat(np.arange(self.k, dtype=np.int64), self.n_hcps)[:, None]
        self._sums[id(values)] = (values, c, shift)  # holds ``values``: its id cannot be reused meanwhile
        return c, shift

    def last_in(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Subset ``i``'s event indices (by HCP, time), the position among them of each (HCP, T)'s last event before T, and whether there is one."""
        if not self.stacked:
            g, idx = self._subset(i)
            last, has = g.last_index()
            return idx, last, has
        last, has = self.grid.last_index()
        h = self.n_hcps
        last, has = last[i * h : (i + 1) * h], has[i * h : (i + 1) * h]
        a = self.bounds[i]
        return self.idx[a : self.bounds[i + 1]], np.where(has, last - a, 0), has


def engagement(prep: Prepared, times: np.ndarray, windows_days: list[int]) -> dict[str, np.ndarray]:
    """Per-channel engagement counts and rates over each window (matrices HCP x T)."""
    ev = prep.events
    max_w = max(windows_days) * DAY_S
    out: dict[str, np.ndarray] = {}
    subs = Subsets(ev.hcp, ev.t, prep.n_hcps, [(np.where(ev.inbound, -1, ev.channel), len(_CH))], times, max_w)
    names = ("sent", "opened", "read_seconds", "forwarded", "replied", "attended")
    asks = []
    for w in windows_days:
        ws = w * DAY_S
        asks += [("count", ws), ("total", ev.opened, ws, np.int32), ("total", ev.read_seconds, ws, np.float32)]
        asks += [("total", ev.forwarded, ws, np.int32), ("total", ev.replied, ws, np.int32), ("total", ev.attended, ws, np.int32)]
    got = iter(subs.figures(asks))
    per_w = {w: dict(zip(names, [next(got) for _ in names])) for w in windows_days}
    for ch, ci in _CH.items():
        for w in windows_days:
            m = per_w[w]
            out[f"{ch}_sent_{w}d"] = m["sent"][ci]
            out[f"{ch}_opened_{w}d"] = m["opened"][ci]
            out[f"{ch}_open_rate_{w}d"] = _rate(m["opened"][ci], m["sent"][ci])
            out[f"{ch}_read_seconds_{w}d"] = m["read_seconds"][ci]
            out[f"{ch}_forwarded_{w}d"] = m["forwarded"][ci]
            out[f"{ch}_replied_{w}d"] = m["replied"][ci]
            if ch in MEETING_CHANNELS:
                out[f"{ch}_attended_{w}d"] = m["attended"][ci]
    grid_all = Grid(ev.hcp, ev.t, prep.n_hcps, times, max_w)
    for w in windows_days:
        ws, sfx = w * DAY_S, f"{w}d"
        out[f"touches_{sfx}"] = grid_all.count(ws)
        out[f"inbound_{sfx}"] = grid_all.total(ev.inbound, ws).astype(np.int32)
        out[f"favourited_{sfx}"] = grid_all.total(ev.favourited, ws).astype(np.int32)
        out[f"engaged_{sfx}"] = grid_all.total(ev.engaged, ws).astype(np.int32)
    return out


def recency(prep: Prepared, times: np.ndarray) -> dict[str, np.ndarray]:
    """Days since last touch (any, per channel, last open), unopened-push streak, total touches."""
    from features.events import run_lengths

    ev, cap = prep.events, prep.cap
    grid = Grid(ev.hcp, ev.t, prep.n_hcps, times)
    out = {"days_since_last_touch": _days_since(ev.t, grid, cap)}
    push = (ev.channel == _CH["wechat_push"]) & ~ev.inbound
    blocks = [(ev.channel, len(_CH)), (np.where(ev.opened, 0, -1), 1), (np.where(push, 0, -1), 1)]
    subs = Subsets(ev.hcp, ev.t, prep.n_hcps, blocks, times, 0)
    (days,) = subs.figures([("days_since", cap)])
    for ch, ci in _CH.items():
        out[f"days_since_last_{ch}"] = days[ci]
    out["days_since_last_open"] = days[len(_CH)]
    idx, last, has = subs.last_in(len(_CH) + 1)
    runs = run_lengths(~ev.opened[idx], ev.hcp[idx])
    out["consecutive_unopened_pushes"] = np.where(has, runs[last] if len(runs) else 0, 0).astype(np.int32)
    out["touches_total"] = grid.count(None)
    return out


def visits(prep: Prepared, times: np.ndarray, window_days: int) -> dict[str, np.ndarray]:
    """Visits, meetings, calls and rep feedback on suggestions over the window."""
    from contract.schema import FEEDBACK_DECISIONS

    ev, ws, sfx = prep.events, window_days * DAY_S, f"{window_days}d"
    out = {}
    named = (("visits", "visit"), ("department_meetings", "department_meeting"), ("phone_calls", "phone"))
    which = np.full(len(_CH), -1, dtype=np.int64)
    which[[_CH[ch] for _, ch in named]] = np.arange(len(named))
    meeting = np.isin(ev.channel, [_CH[c] for c in MEETING_CHANNELS]) & ev.attended
    code = np.where(ev.channel >= 0, which[np.maximum(ev.channel, 0)], -1)  # -1: a channel missing from the row
    subs = Subsets(ev.hcp, ev.t, prep.n_hcps, [(code, len(named)), (np.where(meeting, 0, -1), 1)], times, ws)
    (counts,) = subs.figures([("count", ws)])
    for i, (name, _) in enumerate(named):
        out[f"{name}_{sfx}"] = counts[i]
    out[f"meetings_attended_{sfx}"] = counts[len(named)]
    total = np.zeros((prep.n_hcps, len(times)), dtype=np.int32)
    (fb,) = Subsets(prep.feedback_hcp, prep.feedback_t, prep.n_hcps, [(prep.feedback_decision, len(FEEDBACK_DECISIONS))], times, ws).figures([("count", ws)])
    for di, d in enumerate(FEEDBACK_DECISIONS):
        out[f"suggestions_{d}_{sfx}"] = fb[di]
        total += out[f"suggestions_{d}_{sfx}"]
    good = out[f"suggestions_accepted_{sfx}"] + out[f"suggestions_done_{sfx}"]
    out[f"suggestion_acceptance_rate_{sfx}"] = _rate(good, total)
    return out


def outcomes(prep: Prepared, times: np.ndarray, windows_weeks: list[int]) -> dict[str, np.ndarray]:
    """Prescriptions, market and share over the last k completed weeks; short-vs-long trend."""
    kmax = max(windows_weeks)
    g = Grid(prep.outcome_hcp, prep.outcome_t, prep.n_hcps, times, kmax * WEEK_S)
    out = {}
    for k in windows_weeks:
        rx = g.total(prep.outcome_rx, k * WEEK_S)
        mk = g.total(prep.outcome_market, k * WEEK_S)
        out[f"rx_{k}w"] = rx.astype(np.int32)
        out[f"market_{k}w"] = mk.astype(np.int32)
        out[f"share_{k}w"] = _rate(rx, mk)
    kmin = min(windows_weeks)
    out["rx_trend_per_week"] = (out[f"rx_{kmin}w"] / kmin - out[f"rx_{kmax}w"] / kmax).astype(np.float32)
    out[f"weeks_with_rx_{kmax}w"] = g.total(prep.outcome_rx > 0, kmax * WEEK_S).astype(np.int32)
    return out


def profile(prep: Prepared, times: np.ndarray) -> dict[str, np.ndarray]:
    """Profile columns (static dimension) broadcast to every snapshot."""
    return {k: np.repeat(v[:, None], len(times), axis=1) for k, v in prep.profile.items()}


def content_features(prep: Prepared, times: np.ndarray, popularity_days: int) -> dict[str, np.ndarray]:
    """Per content: tags, approval relative to T, and popularity over the window (content x T)."""
    a, cap, ws, sfx = prep.content_attrs, prep.cap, popularity_days * DAY_S, f"{popularity_days}d"
    n, T = len(prep.content_ids), np.asarray(times, dtype=np.int64)[None, :]
    out = {k: np.repeat(a[k][:, None], len(times), axis=1) for k in ("topic", "content_type", "form", "product_id")}
    frm, until = a["approved_from"][:, None], a["approved_until"][:, None]
    out["is_approved"] = (frm <= T) & (T < until)
    out["approval_days_left"] = np.clip((until - T) / DAY_S, -cap, cap).astype(np.float32)
    out["days_since_approval"] = np.clip((T - frm) / DAY_S, -cap, cap).astype(np.float32)
    ev = prep.events
    m = (ev.content > 0) & ~ev.inbound
    c = ev.content[m] - 1
    order = np.lexsort((ev.t[m], c))
    g = Grid(c[order], ev.t[m][order], n, times, ws)
    sent = g.count(ws)
    opened = g.total(ev.opened[m][order], ws)
    out[f"sent_{sfx}"] = sent
    out[f"opened_{sfx}"] = opened.astype(np.int32)
    out[f"open_rate_{sfx}"] = _rate(opened, sent)
    out[f"mean_read_seconds_{sfx}"] = _rate(g.total(ev.read_seconds[m][order], ws), sent)
    return out


def response_history(prep: Prepared, times: np.ndarray, days: int) -> dict[str, np.ndarray]:
    """Delivered outbound touches and positive responses over ``days`` per channel, local weekday,
    daypart and topic (matrices HCP x T; names from catalog.response_history_names)."""
    from features.catalog import RESPONSE_HISTORY_BLOCKS, response_history_name
    from features.events import POSITIVE_RESPONSE_CODE

    ev, ws = prep.events, days * DAY_S
    topic_of = np.concatenate([[-1], np.asarray(prep.content_attrs["topic"], dtype=np.int64)])
    keys = {"channel": ev.channel, "weekday": ev.weekday, "daypart": ev.daypart, "topic": topic_of[ev.content]}
    delivered = ev.delivered & ~ev.inbound
    # 0/1 as bool: the same exact integer sums as float 0/1, and one running sum for every subset.
    positive = ev.response >= POSITIVE_RESPONSE_CODE
    blocks = [(np.where(delivered, keys[kind], -1), len(values)) for kind, values in RESPONSE_HISTORY_BLOCKS]
    subs = Subsets(ev.hcp, ev.t, prep.n_hcps, blocks, times, ws)
    sent, opened = subs.figures([("count", ws), ("total", positive, ws, np.int32)])
    out: dict[str, np.ndarray] = {}
    i = 0
    for kind, values in RESPONSE_HISTORY_BLOCKS:
        for value in values:
            out[response_history_name(kind, value, "sent", days)] = sent[i]
            out[response_history_name(kind, value, "opened", days)] = opened[i]
            i += 1
    return out


def contact_recency(prep: Prepared, times: np.ndarray, windows_days: list[int]) -> dict[str, np.ndarray]:
    """Per channel days since the last outbound touch and outbound touches per window; per topic and
    content type days since the last delivered item; days since any touch (matrices HCP x T)."""
    from contract.schema import CONTENT_TYPES, TOPICS
    from features.catalog import CONTACT_PREFIX

    ev, cap = prep.events, prep.cap
    max_w = max(windows_days) * DAY_S
    out: dict[str, np.ndarray] = {}
    outbound = ~ev.inbound
    subs = Subsets(ev.hcp, ev.t, prep.n_hcps, [(np.where(outbound, ev.channel, -1), len(_CH))], times, max_w)
    days, *counts = subs.figures([("days_since", cap), *[("count", w * DAY_S) for w in windows_days]])
    sent = dict(zip(windows_days, counts))
    for ch, ci in _CH.items():
        out[f"{CONTACT_PREFIX}{ch}_days_since"] = days[ci]
        for w in windows_days:
            out[f"{CONTACT_PREFIX}{ch}_sent_{w}d"] = sent[w][ci]
    delivered = outbound & ev.delivered & (ev.content > 0)
    attrs = (("topic", TOPICS, "topic"), ("content_type", CONTENT_TYPES, "type"))
    blocks = []
    for attr, values, _ in attrs:
        code_of = np.concatenate([[-1], np.asarray(prep.content_attrs[attr], dtype=np.int64)])[ev.content]
        blocks.append((np.where(delivered, code_of, -1), len(values)))
    (days,) = Subsets(ev.hcp, ev.t, prep.n_hcps, blocks, times, 0).figures([("days_since", cap)])
    i = 0
    for _, values, kind in attrs:
        for value in values:
            out[f"{CONTACT_PREFIX}{kind}_{value}_days_since"] = days[i]
            i += 1
    out[f"{CONTACT_PREFIX}days_since_any"] = _days_since(ev.t, Grid(ev.hcp, ev.t, prep.n_hcps, times), cap)
    return out


def view_matrices(prep: Prepared, cfg, view: View, times: np.ndarray) -> dict:
    """Matrices (entity x snapshot) of one non-sequence view's features."""
    name = view.name
    if name == "hcp_profile":
        return profile(prep, times)
    if name.startswith("hcp_engagement_"):
        return {**engagement(prep, times, cfg.engagement_windows_days), **recency(prep, times)}
    if name.startswith("hcp_visits_"):
        return visits(prep, times, cfg.visits_window_days)
    if name.startswith("hcp_outcomes_"):
        return outcomes(prep, times, cfg.outcome_windows_weeks)
    if name.startswith("hcp_contact_recency_"):
        return contact_recency(prep, times, cfg.contact_windows_days)
    if name.startswith("hcp_response_history_"):
        return response_history(prep, times, cfg.response_history_days)
    if name == "content_catalog":
        return content_features(prep, times, cfg.content_popularity_days)
    raise KeyError(f"no transform for view {name!r}")


__all__ = ["Grid", "contact_recency", "content_features", "engagement", "outcomes", "profile", "recency", "response_history", "view_matrices", "visits"]
