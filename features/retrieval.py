"""Reading features: the training-set builder (offline) and the online reader.

Both return one row per requested entity row in the caller's order, unpack packed views into
named columns (catalog order and dtypes), fill a missing row with the catalog defaults and
flag it with ``is_missing``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from features.catalog import HCP_SERVICE, MISSING_FLAG, NUMPY_DTYPES, View, service_views
from features.config import FeaturesConfig

_ROW = "__nba_row"
# The profile view has a row for every known HCP, so its absence means "unknown HCP".
_PRESENCE = {"hcp": "hcp_profile", "content": "content_catalog"}
_LIST_ITEM = {"array_int64": "int64", "array_float32": "float32", "array_string": "string"}
_ARROW_KIND = {"int32": "int32", "int64": "int64", "float32": "float32", "bool": "bool_", "string": "string"}


def _present(table, view: View):
    import pyarrow.compute as pc

    probe = view.vector_name if view.packed else view.features[0].name
    return pc.is_valid(table.column(probe)).to_numpy(zero_copy_only=False)


def _unpack_arrays(col, view: View) -> dict:
    """A stored ``<view>_arrays`` column (Arrow) -> one list array per packed array feature (nulls -> empty)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from features.sequences import interleaved_index

    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    k = len(view.packed_arrays)
    length = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64) // k
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False) if len(col) else np.zeros(0, np.float32)
    offsets, base, step = interleaved_index(length, k)
    big = offsets[-1] >= 2**31
    off = pa.array(offsets, pa.int64() if big else pa.int32())
    kinds = {f.name: f.kind for f in view.features}
    out = {}
    for j, name in enumerate(view.packed_arrays):
        values = flat[base + j * step].astype(NUMPY_DTYPES[_LIST_ITEM[kinds[name]]])
        out[name] = (pa.LargeListArray if big else pa.ListArray).from_arrays(off, pa.array(values))
    return out


def unpack(table, views: list[View]):
    """Stored feature columns -> named, typed, default-filled columns plus ``is_missing`` (Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    presence = next((v for v in views if v.name == _PRESENCE[v.entity]), None)
    missing = ~_present(table, presence) if presence is not None else np.zeros(n, dtype=bool)
    cols: dict[str, Any] = {}
    for v in views:
        if v.packed:
            col = table.column(v.vector_name).combine_chunks() if n else pa.array([], pa.list_(pa.float32()))
            valid = pc.is_valid(col).to_numpy(zero_copy_only=False)
            k = len(v.features)
            mat = np.tile(v.defaults_vector, (n, 1))
            if valid.any():
                flat = pc.list_flatten(col.filter(pa.array(valid))).to_numpy(zero_copy_only=False)
                mat[valid] = np.asarray(flat, dtype=np.float32).reshape(-1, k)
            for j, f in enumerate(v.features):
                cols[f.name] = pa.array(mat[:, j].astype(NUMPY_DTYPES[f.kind]))
            continue
        arrays = _unpack_arrays(table.column(v.arrays_name), v) if v.packed_arrays else {}
        for f in v.features:
            if f.name in arrays:
                cols[f.name] = arrays[f.name]
                continue
            col = table.column(f.name)
            if f.kind.startswith("array_"):
                typ = pa.list_(getattr(pa, _LIST_ITEM[f.kind])())
                col = col.cast(typ) if col.type != typ else col
                if col.null_count:
                    col = pc.fill_null(col, pa.scalar([], typ))
            else:
                typ = getattr(pa, _ARROW_KIND[f.kind])()
                col = col.cast(typ) if col.type != typ else col
                if col.null_count:
                    col = pc.fill_null(col, pa.scalar(f.default, typ))
            cols[f.name] = col
    cols[MISSING_FLAG] = pa.array(missing)
    return pa.table(cols)


def _store(cfg_or_store):
    if isinstance(cfg_or_store, FeaturesConfig):
        from features.repo import open_store

        return open_store(cfg_or_store)
    return cfg_or_store


def _cfg_of(store) -> FeaturesConfig:
    cfg = getattr(store, "_nba_cfg", None)
    if cfg is None:
        raise ValueError("pass a FeaturesConfig or a store from features.open_store (it carries the catalog)")
    return cfg


def _feature_service(store, service: str):
    # Feast rebuilds FeatureService objects from protos on every lookup (~80 ms with this
    # many fields); the service is immutable between applies, so keep it on the store.
    cache = store.__dict__.setdefault("_nba_services", {})
    if service not in cache:
        cache[service] = store.get_feature_service(service)
    return cache[service]


def _check_within_snapshots(cfg: FeaturesConfig, ts) -> None:
    """Refuse entity times past the built snapshots: their windowed features would read as zeros."""
    import pandas as pd

    from features.build import read_build_manifest
    from features.catalog import SNAPSHOT_TTL_DAYS

    manifest = read_build_manifest(cfg)
    limit = pd.Timestamp(manifest["last_snapshot_s"], unit="s", tz="UTC") + pd.Timedelta(days=SNAPSHOT_TTL_DAYS)
    late = ts > limit
    if late.any():
        raise ValueError(
            f"entity_df: {int(late.sum())} row(s) have event_timestamp after {limit.isoformat()} (first at row "
            f"{int(np.flatnonzero(late.to_numpy())[0])}), beyond the built feature snapshots; run `nba features build` on newer data"
        )


def build_training_set(cfg: FeaturesConfig, entity_df, *, service: str = HCP_SERVICE, store=None, progress: bool = True, output: str = "pandas", out_path=None):
    """Point-in-time features of ``service`` for (hcp_id, event_timestamp) rows; extra columns pass through.

    Returns every entity row (DuckDB offline store), in the input order, with defaults and
    ``is_missing`` where the HCP had no feature row at or before its timestamp. ``output``:
    "pandas" (sequence cells as numpy arrays) or "arrow" (compact list columns). With
    ``out_path`` the rows stream chunk by chunk into that Parquet file (for sets too big for
    memory: 100k HCPs x 52 weeks is ~10 GB) and the function returns the row count.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from rich.progress import Progress

    if output not in ("pandas", "arrow"):
        raise ValueError(f"output must be 'pandas' or 'arrow', got {output!r}")
    views = service_views(cfg, service)
    key = "content_id" if views[0].entity == "content" else "hcp_id"
    for col in (key, "event_timestamp"):
        if col not in entity_df.columns:
            raise ValueError(f"entity_df: missing column {col!r} (need {key!r} and a tz-aware 'event_timestamp')")
    ts = entity_df["event_timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError("entity_df.event_timestamp must be timezone-aware (UTC) datetimes")
    stored = {n for v in views for n, _ in v.stored_features} | {f for v in views for f in v.feature_names} | {MISSING_FLAG}
    clash = sorted(stored & set(entity_df.columns))
    if clash:
        raise ValueError(f"entity_df: columns {clash[:5]} clash with feature names; rename them")
    if len(entity_df) == 0:
        raise ValueError("entity_df is empty")
    _check_within_snapshots(cfg, ts)
    store = store or _store(cfg)
    fs = _feature_service(store, service)
    df = entity_df.copy()
    df["event_timestamp"] = ts.dt.tz_convert("UTC")
    df[_ROW] = np.arange(len(df), dtype=np.int64)
    chunk = max(1, cfg.training_chunk_rows)
    parts = []
    writer = None
    try:
        with Progress(disable=not progress, transient=True) as bar:
            task = bar.add_task(f"training set ({len(df):,} rows)", total=len(df))
            for a in range(0, len(df), chunk):
                part = df.iloc[a : a + chunk]
                got = store.get_historical_features(entity_df=part, features=fs).to_arrow()
                if got.num_rows != len(part):
                    raise RuntimeError(f"offline store returned {got.num_rows} rows for {len(part)} entity rows")
                # Chunks are contiguous slices, so sorting inside each keeps the input order.
                got = got.take(pc.sort_indices(got.column(_ROW)))
                features = unpack(got, views)
                rows = pa.table({**{c: got.column(c) for c in entity_df.columns}, **{c: features.column(c) for c in features.column_names}})
                if out_path is None:
                    parts.append(rows)
                else:
                    if writer is None:
                        writer = pq.ParquetWriter(out_path, rows.schema, compression="zstd")
                    writer.write_table(rows.cast(writer.schema))
                bar.advance(task, len(part))
    finally:
        if writer is not None:
            writer.close()
    if out_path is not None:
        return len(df)
    result = pa.concat_tables(parts, promote_options="permissive")
    return result if output == "arrow" else result.to_pandas()


def _views_for(store, service: str) -> list[View]:
    cache = store.__dict__.setdefault("_nba_views", {})
    if service not in cache:
        cache[service] = service_views(_cfg_of(store), service)
    return cache[service]


def _split_arrays(col, view: View, n: int) -> dict[str, list]:
    """Online cells of ``<view>_arrays`` (lists or arrays, None when missing) -> a list of cells per array feature."""
    k = len(view.packed_arrays)
    kinds = {f.name: f.kind for f in view.features}
    present = [i for i, cell in enumerate(col) if cell is not None]
    out: dict[str, list] = {name: [None] * n for name in view.packed_arrays}
    if not present:
        return out
    from features.sequences import interleaved_index

    cells = [np.asarray(col[i], dtype=np.float32) for i in present]
    length = np.array([len(c) for c in cells], dtype=np.int64) // k
    flat = np.concatenate(cells)
    edges, base, step = interleaved_index(length, k)
    for j, name in enumerate(view.packed_arrays):
        values = flat[base + j * step].astype(NUMPY_DTYPES[_LIST_ITEM[kinds[name]]])
        target = out[name]
        for i, a, b in zip(present, edges[:-1].tolist(), edges[1:].tolist()):
            target[i] = values[a:b]
    return out


def _packed_matrix(col, view: View, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A packed view's column -> (n, k) float32 matrix with defaults where missing, and the valid mask."""
    if isinstance(col, tuple):  # features.online already decoded it: (valid mask, rows of the valid ids)
        valid, rows = col
    else:
        valid = np.fromiter((x is not None for x in col), dtype=bool, count=n)
        rows = np.asarray([x for x in col if x is not None], dtype=np.float32)
    mat = np.tile(view.defaults_vector, (n, 1))
    if valid.any():
        mat[valid] = rows
    return mat, valid


def unpack_rows(data: dict[str, Any], views: list[View], n: int, leading: dict[str, Any] | None = None):
    """Online-response columns -> a DataFrame: ``leading`` columns, named features in catalog order, ``is_missing``.

    ``data`` holds Feast ``to_dict()`` lists, or (valid, rows) pairs for packed vectors. The frame
    is built by one constructor call from a dict of numpy columns: assembling it from several
    frames, concat and insert cost several ms, most of the single-HCP read budget.
    """
    import pandas as pd

    presence = next((v for v in views if v.name == _PRESENCE[v.entity]), None)
    cols: dict[str, Any] = dict(leading or {})
    missing = np.zeros(n, dtype=bool)
    for v in views:
        if v.packed:
            mat, valid = _packed_matrix(data[v.vector_name], v, n)
            if v is presence:
                missing = ~valid
            by_kind: dict[str, list[int]] = {}
            for j, f in enumerate(v.features):
                by_kind.setdefault(f.kind, []).append(j)
            typed = {kind: np.ascontiguousarray(mat[:, idx].T, dtype=NUMPY_DTYPES[kind]) for kind, idx in by_kind.items()}
            seen = dict.fromkeys(by_kind, 0)
            for f in v.features:
                cols[f.name] = typed[f.kind][seen[f.kind]]
                seen[f.kind] += 1
            continue
        if v.packed_arrays:
            data = {**data, **_split_arrays(data[v.arrays_name], v, n)}
        for f in v.features:
            raw = data[f.name]
            if v is presence and f is v.features[0]:
                missing = np.fromiter((x is None for x in raw), dtype=bool, count=n)
            if f.kind.startswith("array_"):
                dt = NUMPY_DTYPES.get(_LIST_ITEM[f.kind], object) if _LIST_ITEM[f.kind] != "string" else object
                empty = np.array([], dtype=dt)
                cells = np.empty(n, dtype=object)
                cells[:] = [empty if x is None else np.asarray(x, dtype=dt) for x in raw]
                cols[f.name] = cells
            else:
                cols[f.name] = pd.array([f.default if x is None else x for x in raw]).astype(NUMPY_DTYPES[f.kind])
    cols[MISSING_FLAG] = missing
    return frame_from_columns(cols, n)


def frame_from_columns(cols: dict[str, Any], n: int):
    """A DataFrame of 1-D numpy columns, built as one block per dtype (as pyarrow's to_pandas does).

    ``pd.DataFrame(dict)`` makes one block per column: ~3 ms for 250 columns, a third of the
    single-HCP read budget. Falls back to it if pandas' block API is unavailable.
    """
    import pandas as pd

    names = list(cols)
    arrays = [np.asarray(cols[c]) for c in names]
    try:
        from pandas.core.internals import BlockManager
        from pandas.core.internals.api import make_block

        groups: dict[np.dtype, list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.dtype, []).append(i)
        blocks = []
        for dtype, locs in groups.items():
            values = np.empty((len(locs), n), dtype=dtype)
            for r, i in enumerate(locs):
                values[r] = arrays[i]
            blocks.append(make_block(values, placement=np.asarray(locs)))
        mgr = BlockManager(blocks, [pd.Index(names), pd.RangeIndex(n)])
        return pd.DataFrame._from_mgr(mgr, axes=mgr.axes)
    except (ImportError, AttributeError, TypeError):  # pragma: no cover - a pandas without the block API
        return pd.DataFrame(dict(zip(names, arrays)), index=pd.RangeIndex(n), copy=False)


def get_online_features(cfg_or_store: Any, ids, *, service: str = HCP_SERVICE, via: str = "direct"):
    """Latest online features for ``ids`` (one row each, in order); unknown ids get defaults and ``is_missing``.

    ``via="direct"`` reads the online store view by view and decodes in bulk (features.online);
    ``via="feast"`` goes through ``FeatureStore.get_online_features`` (same frame, ~10x slower
    for 1,000 ids), kept as the reference the direct path is tested against.
    """
    if via not in ("direct", "feast"):
        raise ValueError(f"via must be 'direct' or 'feast', got {via!r}")
    store = _store(cfg_or_store)
    views = _views_for(store, service)
    key = "content_id" if views[0].entity == "content" else "hcp_id"
    ids = [str(i) for i in ids]
    if not ids:
        data = {n: [] for v in views for n, _ in v.stored_features}
    elif via == "direct":
        from features.online import read_online

        data = read_online(store, views, key, ids)
    else:
        data = store.get_online_features(features=_feature_service(store, service), entity_rows={key: ids}).to_dict()
    return unpack_rows(data, views, len(ids), leading={key: np.array(ids, dtype=object)})
