"""Each HCP's most recently delivered distinct items before each snapshot, as Arrow list arrays.

Per (HCP, snapshot T) row: up to ``items`` distinct content items delivered (outbound) in
[T - days, T), newest first, each with days since it was last delivered and last opened (the cap
when not opened in the window) and how often it was delivered in the last 30/90/365 days. This
is what repetition and habituation are learnt from: the touch sequence keeps only the last N
touches, about five months of an average HCP's contacts.

Cost: one pass over the window's events per snapshot (sort by (HCP, item)), no Python loop over
HCPs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.catalog import ITEM_COUNT_WINDOWS_DAYS, ITEM_HISTORY_ARRAYS, ITEM_HISTORY_PREFIX
from features.events import DAY_S, Prepared


def _one_snapshot(hcp: np.ndarray, t: np.ndarray, content: np.ndarray, opened: np.ndarray, at: int, items: int, days: int, cap: float) -> dict[str, np.ndarray]:
    """Entries (hcp, content, recency, counts) of the newest ``items`` distinct items per HCP before ``at``."""
    sel = np.flatnonzero((t < at) & (t >= at - days * DAY_S))
    if not len(sel):
        z = np.zeros(0)
        return {"hcp": z.astype(np.int64), "content": z.astype(np.int64), "last": z, **{a: z for a in ITEM_HISTORY_ARRAYS}}
    h, c, tt, op = hcp[sel].astype(np.int64), content[sel].astype(np.int64), t[sel], opened[sel]
    order = np.lexsort((tt, c, h))  # by (hcp, item, time)
    h, c, tt, op = h[order], c[order], tt[order], op[order]
    start = np.flatnonzero(np.r_[True, (h[1:] != h[:-1]) | (c[1:] != c[:-1])])
    end = np.r_[start[1:], len(h)] - 1
    last = tt[end]
    last_open = np.maximum.reduceat(np.where(op, tt, np.iinfo(np.int64).min), start)
    out = {
        "hcp": h[start],
        "content": c[start],
        "last": last,
        "days_since_delivered": np.minimum((at - last) / DAY_S, cap),
        "days_since_opened": np.where(last_open > np.iinfo(np.int64).min, np.minimum((at - last_open) / DAY_S, cap), cap),
    }
    for w in ITEM_COUNT_WINDOWS_DAYS:
        out[f"n{w}"] = np.add.reduceat((tt >= at - w * DAY_S).astype(np.float64), start)
    # Newest ``items`` per HCP: order groups by (hcp, -last), keep the first ``items`` of each HCP.
    g = np.lexsort((-last, out["hcp"]))
    gh = out["hcp"][g]
    first = np.r_[True, gh[1:] != gh[:-1]]
    rank = np.arange(len(g)) - np.maximum.accumulate(np.where(first, np.arange(len(g)), 0))
    keep = g[rank < items]
    return {k: v[keep] for k, v in out.items()}


def item_history_arrays(prep: Prepared, times: np.ndarray, items: int, days: int) -> dict[str, pa.Array]:
    """The view's columns for rows HCP-major x ``times`` (row = hcp * len(times) + j), as Arrow lists."""
    ev = prep.events
    mask = ~ev.inbound & ev.delivered & (ev.content > 0)
    hcp, t, content, opened = ev.hcp[mask], ev.t[mask], ev.content[mask], ev.opened[mask]
    times = np.asarray(times, dtype=np.int64)
    n_t = len(times)
    parts = []
    for j, at in enumerate(times.tolist()):
        e = _one_snapshot(hcp, t, content, opened, int(at), items, days, prep.cap)
        e["row"] = e["hcp"] * n_t + j
        parts.append(e)
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    # Rows in order; inside a row the newest item first.
    order = np.lexsort((-cat["last"], cat["row"]))
    n_rows = prep.n_hcps * n_t
    length = np.bincount(cat["row"][order], minlength=n_rows).astype(np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(length)]).astype(np.int32))

    def lst(values: pa.Array) -> pa.Array:
        return pa.ListArray.from_arrays(offsets, values)

    out = {f"{ITEM_HISTORY_PREFIX}content_id": lst(pa.array(prep.content_vocab, pa.string()).take(pa.array(cat["content"][order])))}
    for a in ITEM_HISTORY_ARRAYS:
        out[f"{ITEM_HISTORY_PREFIX}{a}"] = lst(pa.array(cat[a][order].astype(np.float32), pa.float32()))
    out[f"{ITEM_HISTORY_PREFIX}len"] = pa.array(length, pa.int64())
    return out


__all__ = ["item_history_arrays"]
