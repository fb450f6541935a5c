"""Feature rows as Arrow tables: weekly snapshots for the sources, one as-of snapshot, or (HCP, time) pairs.

Pure: prepared events in, Arrow tables out. A row stamped T holds aggregates of events strictly
before T. Time-varying views get a row for every entity at every weekly snapshot (see
catalog.View.dense for why dense rows plus a TTL beat change-only rows here); training examples
at the decision grain (``hcp_tables_at``) get one row per (HCP, decision time) instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from features.catalog import DATED_PROFILE, DIMENSION_TS, MISSING_FLAG, PROFILE_KNOWN, View, catalog, dated_profile_view, hcp_views
from features.events import DAY_S, WEEK_S, Prepared, prepare
from features.sequences import interleaved_index, sequence_arrays, sequence_bounds
from features.transforms import view_matrices

_ARROW = {"int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(), "bool": pa.bool_(), "string": pa.string()}
TS_TYPE = pa.timestamp("us", tz="UTC")
# 1970-01-05 was a Monday: snapshot weeks start on Monday 00:00 UTC.
_MONDAY0 = 4 * DAY_S


def week_start(t: np.ndarray) -> np.ndarray:
    """Monday 00:00 UTC at or before each epoch-second ``t``."""
    return (np.floor_divide(np.asarray(t, dtype=np.int64) - _MONDAY0, WEEK_S)) * WEEK_S + _MONDAY0


def day_start(t: np.ndarray) -> np.ndarray:
    """00:00 UTC at or before each epoch-second ``t``."""
    return np.floor_divide(np.asarray(t, dtype=np.int64), DAY_S) * DAY_S


# Training-example grains: a touch is labelled at the start of its UTC week (the feature sources'
# snapshot) or of its UTC day (the nightly decision: every event before that midnight counts).
GRAINS = ("week", "day")


def decision_times(t: np.ndarray, grain: str) -> np.ndarray:
    """The decision time (epoch s) whose state a touch at ``t`` is labelled with: its week's or its day's start."""
    if grain == "week":
        return week_start(t)
    if grain == "day":
        return day_start(t)
    raise ValueError(f"grain must be one of {', '.join(GRAINS)}; got {grain!r}")


def weekly_times(prep: Prepared) -> np.ndarray:
    """Weekly snapshot times covering the data: first event's week to the week after the last."""
    ts = [a for a in (prep.events.t, prep.outcome_t, prep.feedback_t) if len(a)]
    if not ts:
        raise ValueError("dataset has no touchpoints, outcomes or feedback: nothing to build features from")
    lo = min(int(a.min()) for a in ts)
    hi = max(int(a.max()) for a in ts)
    return np.arange(week_start(lo), week_start(hi) + WEEK_S + 1, WEEK_S, dtype=np.int64)


def to_epoch_seconds(when: datetime | str | Any) -> int:
    """A timezone-aware time (or ISO string) as whole epoch seconds; naive times are refused."""
    import pandas as pd

    ts = pd.Timestamp(when)
    if ts.tzinfo is None:
        raise ValueError(f"time {when!r} must be timezone-aware (UTC)")
    return int(np.floor(ts.timestamp()))


def pack(view: View, cols: Mapping[str, Any]) -> pa.Array:
    """A packed view's columns as one list<float32> array, features in catalog order."""
    mat = np.column_stack([np.asarray(cols[f.name], dtype=np.float32) for f in view.features])
    k = mat.shape[1]
    offsets = np.arange(0, mat.size + 1, k, dtype=np.int64)
    typ = pa.int32() if mat.size < 2**31 else pa.int64()
    cls = pa.ListArray if mat.size < 2**31 else pa.LargeListArray
    return cls.from_arrays(pa.array(offsets, typ), pa.array(mat.ravel(), pa.float32()))


def pack_arrays(view: View, cols: Mapping[str, Any]) -> pa.Array:
    """A view's ``packed_arrays`` (equal-length lists per row) as one list<float32> per row.

    Row i holds the arrays one after another: [a_1..a_L, b_1..b_L, ...], L = that row's length.
    """
    import pyarrow.compute as pc

    lists = [cols[n].combine_chunks() if isinstance(cols[n], pa.ChunkedArray) else cols[n] for n in view.packed_arrays]
    length = pc.fill_null(pc.list_value_length(lists[0]), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    k = len(lists)
    per_array, base, step = interleaved_index(length, k)
    flat = np.empty(k * int(per_array[-1]), dtype=np.float32)
    for j, arr in enumerate(lists):
        flat[base + j * step] = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float32)
    offsets = k * per_array
    big = offsets[-1] >= 2**31
    return (pa.LargeListArray if big else pa.ListArray).from_arrays(pa.array(offsets, pa.int64() if big else pa.int32()), pa.array(flat, pa.float32()))


def _table(key: str, ids: np.ndarray, ts: np.ndarray, view: View, cols: Mapping[str, Any], packed: bool = False) -> pa.Table:
    arrays = {key: pa.array(ids, pa.string()), "event_timestamp": pa.array(ts * 1_000_000, pa.int64()).cast(TS_TYPE)}
    if packed and view.packed:
        arrays[view.vector_name] = pack(view, cols)
        return pa.table(arrays)
    if packed and view.packed_arrays:
        arrays[view.arrays_name] = pack_arrays(view, cols)
    for f in view.features:
        if packed and f.name in view.packed_arrays:
            continue
        v = cols[f.name]
        arrays[f.name] = v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v, _ARROW[f.kind])
    return pa.table(arrays)


def dated_profile_rows(prep: Prepared, export_t: int) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(hcp index, valid-from time, columns) of every dated-profile row, sorted by (hcp, time).

    History rows count only before the export stamp; the export (``hcps``) row comes last.
    """
    keep = prep.history_t < export_t
    n = prep.n_hcps
    hcp = np.concatenate([prep.history_hcp[keep], np.arange(n, dtype=np.int32)])
    t = np.concatenate([prep.history_t[keep], np.full(n, export_t, dtype=np.int64)])
    order = np.lexsort((t, hcp))
    cols = {k: np.concatenate([prep.history[k][keep], prep.profile[k]])[order] for k in prep.history}
    cols[PROFILE_KNOWN] = np.ones(len(order), dtype=bool)
    return hcp[order], t[order], cols


def dated_profile_asof(prep: Prepared, t: int, export_t: int) -> dict[str, np.ndarray]:
    """Each HCP's dated profile as known at ``t``: its latest row stamped at or before ``t``, else defaults."""
    hcp, when, cols = dated_profile_rows(prep, export_t)
    seen = np.flatnonzero(when <= t)
    last = seen[np.r_[hcp[seen][1:] != hcp[seen][:-1], True]] if len(seen) else seen
    view = dated_profile_view()
    out = {}
    for f in view.features:
        col = np.full(prep.n_hcps, f.default, dtype=cols[f.name].dtype)
        col[hcp[last]] = cols[f.name][last]
        out[f.name] = col
    return out


def dated_profile_at(prep: Prepared, hcp: np.ndarray, t: np.ndarray, export_t: int) -> dict[str, np.ndarray]:
    """The dated profile of each (HCP index, time) pair: that HCP's latest row stamped at or before the time, else defaults.

    Equal to ``dated_profile_asof`` row by row, for any number of distinct times.
    """
    rows_hcp, when, cols = dated_profile_rows(prep, export_t)
    hcp = np.asarray(hcp, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    lo = min(int(when.min()) if len(when) else 0, int(t.min()) if len(t) else 0)
    span = max(int(when.max()) if len(when) else 0, int(t.max()) if len(t) else 0) - lo + 1
    # (hcp, time) as one sortable key: the rows are sorted by it already.
    pos = np.searchsorted(rows_hcp.astype(np.int64) * span + (when - lo), hcp * span + (t - lo), side="right") - 1
    found = (pos >= 0) & (rows_hcp[np.maximum(pos, 0)] == hcp) if len(rows_hcp) else np.zeros(len(hcp), dtype=bool)
    out = {}
    for f in dated_profile_view().features:
        col = np.full(len(hcp), f.default, dtype=cols[f.name].dtype)
        col[found] = cols[f.name][pos[found]]
        out[f.name] = col
    return out


def hcp_tables_at(prep: Prepared, cfg, hcp: np.ndarray, t: np.ndarray, *, profile_as_of: int) -> dict[str, pa.Table]:
    """Every HCP view's rows for (HCP index, time) pairs: row i holds HCP ``hcp[i]``'s features as of ``t[i]``.

    The same transforms as the snapshots, evaluated on the distinct times and picked per pair
    (profile, dated profile and sequence rows directly per pair); one column per logical
    feature (unpacked). ``profile_as_of``: since when the ``hcps`` table's changing attributes
    hold (the build's last snapshot, as in Feast's sources).
    """
    hcp = np.asarray(hcp, dtype=np.int64)
    t = np.asarray(t, dtype=np.int64)
    times, ti = np.unique(t, return_inverse=True)
    ids = prep.hcp_ids[hcp]
    out = {}
    for view in hcp_views(cfg):
        if view.name == DATED_PROFILE:
            cols = dated_profile_at(prep, hcp, t, int(profile_as_of))
        elif not view.dense:
            cols = {f.name: prep.profile[f.name][hcp] for f in view.features}
        elif view.name == "hcp_touch_sequence":
            hi, length = sequence_bounds(prep, times, cfg.sequence_length)
            cols = sequence_arrays(prep, hi[hcp, ti], length[hcp, ti])
        elif view.name.startswith("hcp_item_history_"):
            cols = _item_history_at(prep, cfg, hcp, ti, times)
        else:
            mats = view_matrices(prep, cfg, view, times)
            cols = {f.name: mats[f.name][hcp, ti] for f in view.features}
        out[view.name] = _table("hcp_id", ids, t, view, cols)
    return out


def _item_history_at(prep: Prepared, cfg, hcp: np.ndarray, ti: np.ndarray, times: np.ndarray) -> dict[str, pa.Array]:
    """The item-history columns of (HCP, ``times[ti]``) pairs: per distinct time, only the HCPs asked at it.

    The dense HCP x time grid would sort a year of every HCP's events once per day, most of it
    for cells no example asks for (six in seven at the day grain).
    """
    from dataclasses import replace

    from features.item_history import item_history_arrays

    ev = prep.events
    parts, where = [], []
    for j in range(len(times)):
        rows = np.flatnonzero(ti == j)
        hs, local = np.unique(hcp[rows], return_inverse=True)
        lo, hi = np.searchsorted(ev.hcp, hs, side="left"), np.searchsorted(ev.hcp, hs, side="right")
        n = hi - lo
        idx = np.repeat(lo, n) + (np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n))
        sub = ev.take(idx)
        sub = replace(sub, hcp=np.repeat(np.arange(len(hs), dtype=np.int32), n))
        got = item_history_arrays(replace(prep, hcp_ids=prep.hcp_ids[hs], events=sub), times[j : j + 1], cfg.item_history_items, cfg.item_history_days)
        take = pa.array(local)
        parts.append({k: v.take(take) for k, v in got.items()})
        where.append(rows)
    back = pa.array(np.argsort(np.concatenate(where), kind="stable"))
    return {k: pa.concat_arrays([p[k] for p in parts]).take(back) for k in parts[0]}


def view_table(prep: Prepared, cfg, view: View, times: np.ndarray, *, as_source: bool, packed: bool = True, profile_as_of: int | None = None) -> pa.Table:
    """One view's rows for entities x ``times``.

    ``as_source``: the layout the Parquet sources store, where a dimension view (not
    ``dense``) has one row per entity stamped DIMENSION_TS. ``packed`` stores packed views as
    their vector (the Feast layout); otherwise one column per logical feature. The dated
    profile is stamped at ``times[-1]`` in the sources, and as of ``times[0]`` otherwise
    treats ``hcps`` as known from ``profile_as_of`` (default: ``times[0]`` itself).
    """
    times = np.asarray(times, dtype=np.int64)
    key = "content_id" if view.entity == "content" else "hcp_id"
    ids = prep.content_ids if view.entity == "content" else prep.hcp_ids
    if view.name == DATED_PROFILE:
        if as_source:
            hcp, when, cols = dated_profile_rows(prep, int(times[-1]))
            return _table(key, ids[hcp], when, view, cols, packed)
        t = int(times[0])
        cols = dated_profile_asof(prep, t, t if profile_as_of is None else int(profile_as_of))
        return _table(key, ids, np.full(len(ids), t, dtype=np.int64), view, cols, packed)
    if not view.dense:
        stamp = np.full(len(ids), to_epoch_seconds(DIMENSION_TS), dtype=np.int64) if as_source else np.repeat(times[:1], len(ids))
        return _table(key, ids, stamp, view, prep.profile, packed)
    if view.name == "hcp_touch_sequence":
        hi, length = sequence_bounds(prep, times, cfg.sequence_length)
        cols = sequence_arrays(prep, hi.ravel(), length.ravel())
    elif view.name.startswith("hcp_item_history_"):
        from features.item_history import item_history_arrays

        cols = item_history_arrays(prep, times, cfg.item_history_items, cfg.item_history_days)
    else:
        mats = view_matrices(prep, cfg, view, times)
        cols = {f.name: mats[f.name].ravel() for f in view.features}
    rows = np.arange(len(ids) * len(times))
    n_t = len(times)
    return _table(key, ids[rows // n_t], times[rows % n_t], view, cols, packed)


def hcp_tables(prep: Prepared, cfg, times: np.ndarray, *, as_source: bool, packed: bool = True, profile_as_of: int | None = None) -> dict[str, pa.Table]:
    """Every HCP view's rows for ``times``."""
    return {v.name: view_table(prep, cfg, v, times, as_source=as_source, packed=packed, profile_as_of=profile_as_of) for v in hcp_views(cfg)}


def compute_features_asof(
    tables: Mapping[str, Any], as_of: datetime | str, cfg=None, *, prepared: Prepared | None = None, profile_as_of: datetime | str | None = None
):
    """The model's features for every HCP as of ``as_of`` (events strictly before it), no Feast.

    ``tables`` are in-memory contract tables (pandas or Arrow). The result has one row per
    HCP in sorted ``hcp_id`` order with the same columns and values Feast's training-set builder
    returns for a snapshot-aligned time, plus ``is_missing`` (always False here).
    ``profile_as_of``: since when the ``hcps`` table's changing attributes (segment,
    completeness, consent) hold. Default: ``as_of``, i.e. the tables describe the world at
    ``as_of`` (the simulator's weekly state). For an export, pass its date (Feast's sources use
    the last weekly snapshot, ``features.build``): before it only ``hcp_profile_history`` counts.
    """
    import pandas as pd

    if cfg is None:
        from features.config import FeaturesConfig

        cfg = FeaturesConfig()
    prep = prepared if prepared is not None else prepare(tables, cfg.days_since_cap)
    t = to_epoch_seconds(as_of)
    stamp = None if profile_as_of is None else to_epoch_seconds(profile_as_of)
    parts = hcp_tables(prep, cfg, np.array([t]), as_source=False, packed=False, profile_as_of=stamp)
    views = {v.name: v for v in hcp_views(cfg)}
    frame = pd.DataFrame({"hcp_id": prep.hcp_ids, "event_timestamp": pd.Timestamp(t, unit="s", tz="UTC")})
    for name, tbl in parts.items():
        df = tbl.drop_columns(["hcp_id", "event_timestamp"]).to_pandas()
        for c in array_feature_names(views[name]):
            df[c] = [np.asarray(x) for x in df[c]]
        frame = pd.concat([frame, df], axis=1)
    frame[MISSING_FLAG] = False
    return frame


def array_feature_names(view: View) -> list[str]:
    """The view's list-valued features (cells become numpy arrays in a pandas frame)."""
    return [f.name for f in view.features if f.kind.startswith("array_")]


def content_table(prep: Prepared, cfg, times: np.ndarray, *, as_source: bool = True) -> pa.Table:
    """The content catalog view's rows for ``times``."""
    return view_table(prep, cfg, catalog(cfg)["content_catalog"], times, as_source=as_source)


def utc(t: int) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(int(t), tz=UTC)
