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
        for f in v.features:
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


def build_training_set(cfg: FeaturesConfig, entity_df, *, service: str = HCP_SERVICE, store=None, progress: bool = True,
                       output: str = "pandas", out_path=None):
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


def unpack_rows(data: dict[str, list], views: list[View], n: int):
    """Online-response columns (python lists) -> a DataFrame of named features, catalog order.

    Built as one 2-D block per dtype: constructing a frame column by column costs ~3 ms
    for 200 features, which alone would blow the 10 ms single-HCP read budget.
    """
    import pandas as pd

    presence = next((v for v in views if v.name == _PRESENCE[v.entity]), None)
    blocks: dict[str, list] = {}
    names: list[str] = []
    frames = []
    for v in views:
        if v.packed:
            col = data[v.vector_name]
            valid = np.fromiter((x is not None for x in col), dtype=bool, count=n)
            mat = np.tile(v.defaults_vector, (n, 1))
            if valid.any():
                mat[valid] = np.asarray([x for x in col if x is not None], dtype=np.float32)
            for j, f in enumerate(v.features):
                blocks.setdefault(f.kind, []).append((f.name, mat[:, j]))
            names += v.feature_names
        else:
            cols = {}
            for f in v.features:
                raw = data[f.name]
                if f.kind.startswith("array_"):
                    dt = NUMPY_DTYPES.get(_LIST_ITEM[f.kind], object) if _LIST_ITEM[f.kind] != "string" else object
                    empty = np.array([], dtype=dt)
                    cells = np.empty(n, dtype=object)
                    cells[:] = [empty if x is None else np.asarray(x, dtype=dt) for x in raw]
                    cols[f.name] = cells
                else:
                    cols[f.name] = pd.array([f.default if x is None else x for x in raw]).astype(NUMPY_DTYPES[f.kind])
            frames.append(pd.DataFrame(cols))
            names += v.feature_names
    for kind, items in blocks.items():
        mat = np.column_stack([a for _, a in items]).astype(NUMPY_DTYPES[kind])
        frames.append(pd.DataFrame(mat, columns=[nm for nm, _ in items]))
    out = pd.concat(frames, axis=1)[names] if frames else pd.DataFrame(index=range(n))
    if presence is not None:
        probe = data[presence.vector_name if presence.packed else presence.features[0].name]
        out[MISSING_FLAG] = np.fromiter((x is None for x in probe), dtype=bool, count=n)
    else:
        out[MISSING_FLAG] = False
    return out


def get_online_features(cfg_or_store: Any, ids, *, service: str = HCP_SERVICE):
    """Latest online features for ``ids`` (one row each, in order); unknown ids get defaults and ``is_missing``."""
    store = _store(cfg_or_store)
    views = _views_for(store, service)
    key = "content_id" if views[0].entity == "content" else "hcp_id"
    ids = [str(i) for i in ids]
    if ids:
        data = store.get_online_features(features=_feature_service(store, service), entity_rows={key: ids}).to_dict()
    else:
        data = {n: [] for v in views for n, _ in v.stored_features}
    out = unpack_rows(data, views, len(ids))
    out.insert(0, key, ids)
    return out
