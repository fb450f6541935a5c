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


def _subset_grid(prep: Prepared, mask: np.ndarray, times: np.ndarray, max_w: int) -> tuple[Grid, np.ndarray]:
    ev = prep.events
    idx = np.flatnonzero(mask)
    return Grid(ev.hcp[idx], ev.t[idx], prep.n_hcps, times, max_w), idx


def engagement(prep: Prepared, times: np.ndarray, windows_days: list[int]) -> dict[str, np.ndarray]:
    """Per-channel engagement counts and rates over each window (matrices HCP x T)."""
    ev = prep.events
    max_w = max(windows_days) * DAY_S
    out: dict[str, np.ndarray] = {}
    for ch, ci in _CH.items():
        grid, idx = _subset_grid(prep, (ev.channel == ci) & ~ev.inbound, times, max_w)
        for w in windows_days:
            ws, sfx = w * DAY_S, f"{w}d"
            sent = grid.count(ws)
            opened = grid.total(ev.opened[idx], ws).astype(np.int32)
            out[f"{ch}_sent_{sfx}"] = sent
            out[f"{ch}_opened_{sfx}"] = opened
            out[f"{ch}_open_rate_{sfx}"] = _rate(opened, sent)
            out[f"{ch}_read_seconds_{sfx}"] = grid.total(ev.read_seconds[idx], ws).astype(np.float32)
            out[f"{ch}_forwarded_{sfx}"] = grid.total(ev.forwarded[idx], ws).astype(np.int32)
            out[f"{ch}_replied_{sfx}"] = grid.total(ev.replied[idx], ws).astype(np.int32)
            if ch in MEETING_CHANNELS:
                out[f"{ch}_attended_{sfx}"] = grid.total(ev.attended[idx], ws).astype(np.int32)
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
    for ch, ci in _CH.items():
        g, idx = _subset_grid(prep, ev.channel == ci, times, 0)
        out[f"days_since_last_{ch}"] = _days_since(ev.t[idx], g, cap)
    g, idx = _subset_grid(prep, ev.opened, times, 0)
    out["days_since_last_open"] = _days_since(ev.t[idx], g, cap)
    g, idx = _subset_grid(prep, (ev.channel == _CH["wechat_push"]) & ~ev.inbound, times, 0)
    runs = run_lengths(~ev.opened[idx], ev.hcp[idx])
    last, has = g.last_index()
    out["consecutive_unopened_pushes"] = np.where(has, runs[last] if len(runs) else 0, 0).astype(np.int32)
    out["touches_total"] = grid.count(None)
    return out


def visits(prep: Prepared, times: np.ndarray, window_days: int) -> dict[str, np.ndarray]:
    """Visits, meetings, calls and rep feedback on suggestions over the window."""
    from contract.schema import FEEDBACK_DECISIONS

    ev, ws, sfx = prep.events, window_days * DAY_S, f"{window_days}d"
    out = {}
    for name, ch in (("visits", "visit"), ("department_meetings", "department_meeting"), ("phone_calls", "phone")):
        g, _ = _subset_grid(prep, ev.channel == _CH[ch], times, ws)
        out[f"{name}_{sfx}"] = g.count(ws)
    meeting = np.isin(ev.channel, [_CH[c] for c in MEETING_CHANNELS]) & ev.attended
    g, _ = _subset_grid(prep, meeting, times, ws)
    out[f"meetings_attended_{sfx}"] = g.count(ws)
    total = np.zeros((prep.n_hcps, len(times)), dtype=np.int32)
    for di, d in enumerate(FEEDBACK_DECISIONS):
        m = prep.feedback_decision == di
        g = Grid(prep.feedback_hcp[m], prep.feedback_t[m], prep.n_hcps, times, ws)
        out[f"suggestions_{d}_{sfx}"] = g.count(ws)
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
    positive = (ev.response >= POSITIVE_RESPONSE_CODE).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for kind, values in RESPONSE_HISTORY_BLOCKS:
        for vi, value in enumerate(values):
            grid, idx = _subset_grid(prep, delivered & (keys[kind] == vi), times, ws)
            out[response_history_name(kind, value, "sent", days)] = grid.count(ws)
            out[response_history_name(kind, value, "opened", days)] = grid.total(positive[idx], ws).astype(np.int32)
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
    for ch, ci in _CH.items():
        grid, _ = _subset_grid(prep, outbound & (ev.channel == ci), times, max_w)
        out[f"{CONTACT_PREFIX}{ch}_days_since"] = _days_since(ev.t[outbound & (ev.channel == ci)], grid, cap)
        for w in windows_days:
            out[f"{CONTACT_PREFIX}{ch}_sent_{w}d"] = grid.count(w * DAY_S)
    delivered = outbound & ev.delivered & (ev.content > 0)
    for attr, values, kind in (("topic", TOPICS, "topic"), ("content_type", CONTENT_TYPES, "type")):
        code_of = np.concatenate([[-1], np.asarray(prep.content_attrs[attr], dtype=np.int64)])[ev.content]
        for vi, value in enumerate(values):
            mask = delivered & (code_of == vi)
            grid, _ = _subset_grid(prep, mask, times, 0)
            out[f"{CONTACT_PREFIX}{kind}_{value}_days_since"] = _days_since(ev.t[mask], grid, cap)
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
