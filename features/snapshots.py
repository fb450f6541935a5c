"""Feature rows as Arrow tables: weekly snapshots for the sources, or one as-of snapshot.

Pure: prepared events in, Arrow tables out. A row stamped T holds aggregates of events strictly
before T. Time-varying views get a row for every entity at every weekly snapshot (see
catalog.View.dense for why dense rows plus a TTL beat change-only rows here).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa

from features.catalog import DIMENSION_TS, MISSING_FLAG, View, catalog, hcp_views
from features.events import DAY_S, WEEK_S, Prepared, prepare
from features.sequences import sequence_arrays, sequence_bounds
from features.transforms import view_matrices

_ARROW = {"int32": pa.int32(), "int64": pa.int64(), "float32": pa.float32(), "bool": pa.bool_(), "string": pa.string()}
TS_TYPE = pa.timestamp("us", tz="UTC")
# 1970-01-05 was a Monday: snapshot weeks start on Monday 00:00 UTC.
_MONDAY0 = 4 * DAY_S


def week_start(t: np.ndarray) -> np.ndarray:
    """Monday 00:00 UTC at or before each epoch-second ``t``."""
    return (np.floor_divide(np.asarray(t, dtype=np.int64) - _MONDAY0, WEEK_S)) * WEEK_S + _MONDAY0


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


def _table(key: str, ids: np.ndarray, ts: np.ndarray, view: View, cols: Mapping[str, Any], packed: bool = False) -> pa.Table:
    arrays = {key: pa.array(ids, pa.string()), "event_timestamp": pa.array(ts * 1_000_000, pa.int64()).cast(TS_TYPE)}
    if packed and view.packed:
        arrays[view.vector_name] = pack(view, cols)
        return pa.table(arrays)
    for f in view.features:
        v = cols[f.name]
        arrays[f.name] = v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v, _ARROW[f.kind])
    return pa.table(arrays)


def view_table(prep: Prepared, cfg, view: View, times: np.ndarray, *, as_source: bool, packed: bool = True) -> pa.Table:
    """One view's rows for entities x ``times``.

    ``as_source``: the layout the Parquet sources store, where a dimension view (not
    ``dense``) has one row per entity stamped DIMENSION_TS. ``packed`` stores packed views as
    their vector (the Feast layout); otherwise one column per logical feature.
    """
    times = np.asarray(times, dtype=np.int64)
    key = "content_id" if view.entity == "content" else "hcp_id"
    ids = prep.content_ids if view.entity == "content" else prep.hcp_ids
    if not view.dense:
        stamp = np.full(len(ids), to_epoch_seconds(DIMENSION_TS), dtype=np.int64) if as_source else np.repeat(times[:1], len(ids))
        return _table(key, ids, stamp, view, prep.profile, packed)
    if view.name == "hcp_touch_sequence":
        hi, length = sequence_bounds(prep, times, cfg.sequence_length)
        cols = sequence_arrays(prep, hi.ravel(), length.ravel())
    else:
        mats = view_matrices(prep, cfg, view, times)
        cols = {f.name: mats[f.name].ravel() for f in view.features}
    rows = np.arange(len(ids) * len(times))
    n_t = len(times)
    return _table(key, ids[rows // n_t], times[rows % n_t], view, cols, packed)


def hcp_tables(prep: Prepared, cfg, times: np.ndarray, *, as_source: bool, packed: bool = True) -> dict[str, pa.Table]:
    """Every HCP view's rows for ``times``."""
    return {v.name: view_table(prep, cfg, v, times, as_source=as_source, packed=packed) for v in hcp_views(cfg)}


def compute_features_asof(tables: Mapping[str, Any], as_of: datetime | str, cfg=None, *, prepared: Prepared | None = None):
    """The model's features for every HCP as of ``as_of`` (events strictly before it), no Feast.

    ``tables`` are in-memory contract tables (pandas or Arrow). The result has one row per
    HCP in sorted ``hcp_id`` order with the same columns and values Feast's training-set builder
    returns for a snapshot-aligned time, plus ``is_missing`` (always False here).
    """
    import pandas as pd

    if cfg is None:
        from features.config import FeaturesConfig

        cfg = FeaturesConfig()
    prep = prepared if prepared is not None else prepare(tables, cfg.days_since_cap)
    t = to_epoch_seconds(as_of)
    parts = hcp_tables(prep, cfg, np.array([t]), as_source=False, packed=False)
    frame = pd.DataFrame({"hcp_id": prep.hcp_ids, "event_timestamp": pd.Timestamp(t, unit="s", tz="UTC")})
    for name, tbl in parts.items():
        df = tbl.drop_columns(["hcp_id", "event_timestamp"]).to_pandas()
        if name == "hcp_touch_sequence":
            for c in df.columns:
                if c.startswith("seq_") and c != "seq_len":
                    df[c] = [np.asarray(x) for x in df[c]]
        frame = pd.concat([frame, df], axis=1)
    frame[MISSING_FLAG] = False
    return frame


def content_table(prep: Prepared, cfg, times: np.ndarray, *, as_source: bool = True) -> pa.Table:
    """The content catalog view's rows for ``times``."""
    return view_table(prep, cfg, catalog(cfg)["content_catalog"], times, as_source=as_source)


def utc(t: int) -> datetime:
    """Epoch seconds as an aware UTC datetime."""
    return datetime.fromtimestamp(int(t), tz=timezone.utc)
