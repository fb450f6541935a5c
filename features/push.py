"""The push path: fresh touchpoints or rep feedback -> recomputed online features, minutes later.

For the affected HCPs only, the stored history (contract dataset) plus the new events are run
through the same pure transforms as the batch build, as of just after the newest event, and
the rows are pushed to the online store through each pushable view's Feast PushSource.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from features.catalog import hcp_views
from features.config import FeaturesConfig
from features.online import stored_event_times


def _kind(df) -> str:
    cols = set(df.column_names if hasattr(df, "column_names") else df.columns)
    if {"channel", "ts", "delivered"} <= cols:
        return "touchpoints"
    if {"decision", "suggestion_id", "ts"} <= cols:
        return "feedback"
    raise ValueError(
        f"push_events: expected touchpoints (channel, ts, delivered, ...) or feedback (decision, suggestion_id, ts, ...) rows; got columns {sorted(cols)}"
    )


def _stamps_after(df, stored_ns: np.ndarray, hcp_ids: list[str], t: int):
    """Each row's event time: ``t`` seconds, or 1 us after the row already stored for its HCP when that is later."""
    import pandas as pd

    prev = dict(zip(hcp_ids, stored_ns.tolist()))
    ns = np.maximum(t * 1_000_000_000, np.array([prev.get(h, 0) for h in df["hcp_id"]], dtype=np.int64) + 1_000)
    return pd.to_datetime(ns, unit="ns", utc=True)


def history_for(cfg: FeaturesConfig, hcp_ids: list[str]) -> dict[str, Any]:
    """The stored contract tables restricted to ``hcp_ids`` (dimension tables whole), read through the per-HCP index (``contract.by_hcp``), not a scan."""
    from contract.by_hcp import rows_of, whole_table
    from contract.io import read_manifest, table_path

    manifest = read_manifest(cfg.data_dir)
    out: dict[str, Any] = rows_of(cfg.data_dir, list(hcp_ids), manifest=manifest)
    for name in ("hcps", "touchpoints", "outcomes"):
        if out.get(name) is None:
            raise FileNotFoundError(f"contract dataset {cfg.data_dir} has no table {name!r} ({name}.parquet), which features need")
    if out.get("hcp_profile_history") is None:
        out.pop("hcp_profile_history", None)
    for name in ("products", "content"):
        out[name] = whole_table(cfg.data_dir, name, manifest)
        if out[name] is None:
            raise FileNotFoundError(f"contract dataset {cfg.data_dir} has no table {name!r} ({name}.parquet), which features need")
    if out.get("feedback") is None and not table_path(cfg.data_dir, "feedback").exists():
        out["feedback"] = None
    return out


_VIEWS: dict[int, tuple[Any, list]] = {}  # id(cfg) -> (cfg, its pushable views)


def pushable_views(cfg: FeaturesConfig) -> list:
    """The HCP views a push writes (``View.pushable``), built once per config object: the catalog is rebuilt on every call otherwise."""
    hit = _VIEWS.get(id(cfg))
    if hit is not None and hit[0] is cfg:
        return hit[1]
    views = [v for v in hcp_views(cfg) if v.pushable]
    _VIEWS[id(cfg)] = (cfg, views)
    return views


# store id -> (monotonic time resolved, push source name -> its feature views, or None: use store.push).
_PUSH_TARGETS: dict[int, tuple[float, Any, dict[str, Any] | None]] = {}


def _push_targets(store) -> dict[str, Any] | None:
    """Push source -> the plain feature views it feeds, resolved once per registry cache period (None when a view or service needs Feast's own push).

    ``FeatureStore.push`` deserialises every view and service of the registry on each call (20 ms
    a push of one HCP, most of the time a feedback item takes); the views change only on ``nba
    features apply``, which the registry cache period already lets a running store miss.
    """
    import time

    from feast import FeatureView
    from feast.data_source import PushSource

    now = time.monotonic()
    hit = _PUSH_TARGETS.get(id(store))
    ttl = float(getattr(store.config.registry, "cache_ttl_seconds", 60) or 60)
    if hit is not None and hit[1] is store and now - hit[0] < ttl:
        return hit[2]
    targets: dict[str, Any] | None = {}
    fvs = list(store.list_feature_views(allow_cache=True))
    plain = all(type(fv) is FeatureView for fv in fvs) and not store.list_stream_feature_views(allow_cache=True)
    odfv_writes = any(getattr(v, "write_to_online_store", False) for v in store.list_on_demand_feature_views(allow_cache=True))
    precompute = any(getattr(svc, "precompute_online", False) for svc in store.list_feature_services())
    if not plain or odfv_writes or precompute:
        targets = None
    else:
        for fv in fvs:
            if isinstance(fv.stream_source, PushSource):
                targets.setdefault(fv.stream_source.name, []).append(fv)
    _PUSH_TARGETS[id(store)] = (now, store, targets)
    return targets


_RELAXED: set[int] = set()


def _relax_sqlite(provider, store) -> None:
    """SQLite online store: write-ahead log, no fsync per commit (a push writes one commit per view; each fsync cost 2-3 ms).

    The online store is derived state: the audit trail (fsync'd at commit) holds every outcome,
    and a machine crash that lost a push is repaired by the next push of the HCP or the nightly
    build. Redis, the production store, does not fsync a write either.
    """
    if store.config.online_store.type != "sqlite":
        return
    conn = provider.online_store._get_conn(store.config)
    if id(conn) in _RELAXED:
        return
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    _RELAXED.add(id(conn))


def _naive_utc_times(batch, column: str) -> list:
    """A timestamp column as naive UTC datetimes: what Feast's converter makes of it through ``pd.to_datetime``."""
    import pyarrow as pa

    col = batch.column(column)
    if col.type.tz is not None:
        col = col.cast(pa.timestamp(col.type.unit))  # the same instants, as UTC wall times
    # Nanoseconds truncated to microseconds, as pandas' to_pydatetime does (datetime holds no finer).
    return col.cast(pa.timestamp("us"), safe=False).to_pylist()


def arrow_to_proto(table, fv, join_keys: dict[str, Any]) -> list:
    """``feast.utils._convert_arrow_fv_to_proto`` (plain views, pinned Feast 0.67) with the event times read straight from Arrow.

    Feast's converter turns each time column into pandas timestamps and back, a third of a
    one-row view's write; the rows (entity keys, values, naive UTC times) are the same.
    """
    from feast.utils import _build_entity_keys, _columns_to_proto_values, _validate_vector_field_lengths

    _validate_vector_field_lengths(table, fv)
    batch = table.to_batches()[0] if hasattr(table, "to_batches") else table  # as Feast: one batch
    if fv.batch_source is None:
        raise ValueError(f"Feature view '{fv.name}' has no batch_source and cannot be converted to proto.")
    columns = [(f.name, f.dtype.to_value_type()) for f in fv.features] + list(join_keys.items())
    values = _columns_to_proto_values(batch, columns, allow_missing=False)
    keys = _build_entity_keys(batch.num_rows, join_keys, values)
    names = [f.name for f in fv.features]
    features = [dict(zip(names, row)) for row in zip(*(values[n] for n in names))]
    events = _naive_utc_times(batch, fv.batch_source.timestamp_field)
    created_col = fv.batch_source.created_timestamp_column
    created = _naive_utc_times(batch, created_col) if created_col else [None] * batch.num_rows
    return list(zip(keys, features, events, created))


def write_arrow(store, fvs: list, table) -> None:
    """Write an Arrow table of feature rows to the online rows of ``fvs`` (plain views): what ``provider.ingest_df`` does after its pandas -> Arrow step."""
    from feast.utils import _run_pyarrow_field_mapping

    if not table.num_rows:
        return
    provider = store._get_provider()
    _relax_sqlite(provider, store)
    for fv in fvs:
        t = table
        if fv.batch_source is not None and fv.batch_source.field_mapping:
            t = _run_pyarrow_field_mapping(t, fv.batch_source.field_mapping)
        join_keys = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
        provider.online_write_batch(provider.repo_config, fv, arrow_to_proto(t, fv, join_keys), progress=None)


def push_online(store, push_name: str, df) -> None:
    """Write ``df`` to the online rows of every view push source ``push_name`` feeds: ``store.push(..., to=ONLINE)`` without its per-call registry reads."""
    from feast.data_source import PushMode

    targets = _push_targets(store)
    if targets is None or push_name not in targets:
        store.push(push_name, df, to=PushMode.ONLINE)  # anything but plain views, or an unknown source (Feast names it)
        return
    if df.empty:
        return
    provider = store._get_provider()  # what write_to_online_store hands each view to
    _relax_sqlite(provider, store)
    for fv in targets[push_name]:
        provider.ingest_df(fv, df)


def _already_stored(kind: str, new, old):
    """Rows of ``new`` the history ``old`` holds already under another id: the same suggestion's touch, or the same decision on a suggestion.

    A CRM export's touch that carries the suggestion_id of a fed-back outcome is that outcome's
    touch; a rep's decision counts once per suggestion. None when either side lacks suggestion ids.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if "suggestion_id" not in new.column_names or "suggestion_id" not in old.column_names:
        return None

    def keys(t):
        sid = t.column("suggestion_id").cast(pa.string())
        return sid if kind == "touchpoints" else pc.binary_join_element_wise(sid, t.column("decision").cast(pa.string()), "\x1f")

    stored = keys(old).combine_chunks().drop_null()
    return pc.fill_null(pc.is_in(keys(new), value_set=stored), False)


def push_events(cfg: FeaturesConfig, events, *, store=None, history: dict[str, Any] | None = None, as_of=None, dry_run: bool = False) -> dict[str, Any]:
    """Recompute and push the online features of the HCPs in ``events`` (touchpoints or feedback rows, or a list of both).

    Events are DataFrames or Arrow tables (cast to the contract schema). ``history`` (contract
    tables) defaults to the dataset at ``cfg.data_dir``; ``as_of`` defaults to one second after
    the newest event, so the pushed rows include every event given. Only the pushable views are
    computed: the others (profile, outcomes) are never written by a push.
    ``dry_run``: compute the rows as a push would and return them (``"rows"``: view -> DataFrame) without pushing.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from contract.io import to_arrow
    from contract.schema import TABLES
    from features.events import TOUCH_COLUMNS, as_arrow, epoch_seconds, prepare
    from features.repo import open_store
    from features.snapshots import array_feature_names, to_epoch_seconds, view_table

    batches = [(kind, to_arrow(TABLES[kind], ev)) for ev in (events if isinstance(events, (list, tuple)) else [events]) for kind in [_kind(ev)]]
    batches = [(kind, new) for kind, new in batches if new.num_rows]
    if not batches:
        return {"hcps": 0, "rows_pushed": 0}
    hcp_ids = sorted({h for _, new in batches for h in new.column("hcp_id").to_pylist()})
    hist = dict(history) if history is not None else history_for(cfg, hcp_ids)
    known = set(as_arrow(hist["hcps"]).column("hcp_id").to_pylist())
    for kind, new in batches:
        unknown = sorted({h for h in new.column("hcp_id").to_pylist() if h not in known})
        if unknown:
            raise ValueError(f"push_events: {kind} rows name hcp_id(s) not in table 'hcps': {unknown[:5]}")
        key = "event_id" if kind == "touchpoints" else "feedback_id"
        cols = [*TOUCH_COLUMNS, key] if kind == "touchpoints" else ["hcp_id", "ts", "decision", key]
        new_sel = new.select(cols)
        old = hist.get(kind)
        if old is not None:
            old = as_arrow(old)
            missing = [c for c in cols if c not in old.column_names]
            if missing:
                raise ValueError(f"push_events: history table {kind!r} lacks columns {missing}")
            same = _already_stored(kind, new, old)
            old = old.select(cols).cast(new_sel.schema)
            # Idempotent: an event already in history is not counted twice, by its id or its suggestion.
            seen = pc.is_in(new_sel.column(key), value_set=old.column(key).combine_chunks())
            if same is not None:
                seen = pc.or_(seen, same)
            new_sel = pa.concat_tables([old, new_sel.filter(pc.invert(seen))])
        hist[kind] = new_sel
    t_new = max(int(epoch_seconds(new.column("ts")).max()) for _, new in batches) + 1
    t = max(t_new, to_epoch_seconds(as_of)) if as_of is not None else t_new
    store = store or open_store(cfg)
    views = pushable_views(cfg)
    stored = stored_event_times(store, [v.name for v in views], "hcp_id", hcp_ids)
    if stored is not None:
        # Redis keeps a row only if it is stamped after the stored one, so an event older than the
        # last push would be dropped (0 -> 1 -> 1 where SQLite gives 0 -> 1 -> 2). Recompute as of
        # the stored row's time at least (its state plus the late event) and stamp just after it.
        newest_s = max((int(a.max()) for a in stored.values()), default=0)
        t = max(t, newest_s // 1_000_000_000)
    prep = prepare(hist, cfg.days_since_cap)
    pushed = 0
    times = np.array([t])
    tables = {v.name: view_table(prep, cfg, v, times, as_source=False) for v in views}
    rows: dict[str, Any] = {}
    targets = None if dry_run else _push_targets(store)
    for v in views:
        if targets is not None and v.push_name in targets:
            # Straight from Arrow, as materialisation writes: no DataFrame round trip (half of a one-HCP push).
            table = tables[v.name]
            if stored is not None:
                stamps = _stamps_after(table.select(["hcp_id"]).to_pandas(), stored[v.name], hcp_ids, t)
                i = table.schema.get_field_index("event_timestamp")
                table = table.set_column(i, "event_timestamp", pa.array(stamps, type=table.schema.field(i).type))
            write_arrow(store, targets[v.push_name], table)
            pushed += table.num_rows
            continue
        df = tables[v.name].to_pandas()
        for c in array_feature_names(v):
            if c in df.columns:
                df[c] = [np.asarray(x) for x in df[c]]
        if stored is not None:
            df["event_timestamp"] = _stamps_after(df, stored[v.name], hcp_ids, t)
        if dry_run:
            rows[v.name] = df
            continue
        push_online(store, v.push_name, df)
        pushed += len(df)
    return {
        "hcps": len(hcp_ids),
        "views": [v.name for v in views],
        "rows_pushed": pushed,
        "as_of": pd.Timestamp(t, unit="s", tz="UTC").isoformat(),
        **({"rows": rows} if dry_run else {}),
    }
