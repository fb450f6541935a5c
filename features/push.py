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
    cols = set(df.columns)
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
    """The stored contract tables restricted to ``hcp_ids`` (dimension tables whole)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from contract.io import table_path
    from features.build import read_contract

    tables = read_contract(cfg.data_dir, with_ids=True)
    ids = pa.array(hcp_ids, pa.string())
    out = {}
    for name, t in tables.items():
        out[name] = t.filter(pc.is_in(t.column("hcp_id"), value_set=ids)) if "hcp_id" in t.column_names else t
    if "feedback" not in out and not table_path(cfg.data_dir, "feedback").exists():
        out["feedback"] = None
    return out


def push_events(cfg: FeaturesConfig, events, *, store=None, history: dict[str, Any] | None = None, as_of=None, dry_run: bool = False) -> dict[str, Any]:
    """Recompute and push the online features of the HCPs in ``events`` (touchpoints or feedback rows, or a list of both).

    ``history`` (contract tables) defaults to the dataset at ``cfg.data_dir``; ``as_of`` defaults
    to one second after the newest event, so the pushed rows include every event given.
    ``dry_run``: compute the rows as a push would and return them (``"rows"``: view -> DataFrame) without pushing.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    from feast.data_source import PushMode

    from contract.io import to_arrow
    from contract.schema import TABLES
    from features.events import TOUCH_COLUMNS, as_arrow, epoch_seconds, prepare
    from features.repo import open_store
    from features.snapshots import array_feature_names, hcp_tables, to_epoch_seconds

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
            old = old.select(cols).cast(new_sel.schema)
            # Idempotent: an event already in history is not counted twice.
            seen = pc.is_in(new_sel.column(key), value_set=old.column(key).combine_chunks())
            new_sel = pa.concat_tables([old, new_sel.filter(pc.invert(seen))])
        hist[kind] = new_sel
    t_new = max(int(epoch_seconds(new.column("ts")).max()) for _, new in batches) + 1
    t = max(t_new, to_epoch_seconds(as_of)) if as_of is not None else t_new
    store = store or open_store(cfg)
    views = [v for v in hcp_views(cfg) if v.pushable]
    stored = stored_event_times(store, [v.name for v in views], "hcp_id", hcp_ids)
    if stored is not None:
        # Redis keeps a row only if it is stamped after the stored one, so an event older than the
        # last push would be dropped (0 -> 1 -> 1 where SQLite gives 0 -> 1 -> 2). Recompute as of
        # the stored row's time at least (its state plus the late event) and stamp just after it.
        newest_s = max((int(a.max()) for a in stored.values()), default=0)
        t = max(t, newest_s // 1_000_000_000)
    prep = prepare(hist, cfg.days_since_cap)
    pushed = 0
    tables = hcp_tables(prep, cfg, np.array([t]), as_source=False)
    rows: dict[str, Any] = {}
    for v in views:
        df = tables[v.name].to_pandas()
        for c in array_feature_names(v):
            if c in df.columns:
                df[c] = [np.asarray(x) for x in df[c]]
        if stored is not None:
            df["event_timestamp"] = _stamps_after(df, stored[v.name], hcp_ids, t)
        if dry_run:
            rows[v.name] = df
            continue
        store.push(v.push_name, df, to=PushMode.ONLINE)
        pushed += len(df)
    return {
        "hcps": len(hcp_ids),
        "views": [v.name for v in views],
        "rows_pushed": pushed,
        "as_of": pd.Timestamp(t, unit="s", tz="UTC").isoformat(),
        **({"rows": rows} if dry_run else {}),
    }
