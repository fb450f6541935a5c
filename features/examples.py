"""Training examples at any decision time: features for (hcp_id, event_timestamp) rows straight from the contract tables.

The Feast path (``features.build_training_set``) joins label rows to the weekly snapshot sources,
so a mid-week decision would read the Monday state. This builder computes each row's state as
of its own ``event_timestamp`` with the transforms the online pushes run (``features.push``,
``materialize_hcps``), so a day-grain training row equals what serving reads at that midnight
(tests/features/test_features_grain_equivalence.py), and what ``nba sync`` writes online, stamped at the
end of the imported day (tests/features/test_sync.py). Work is cut into HCP chunks of at most
``examples.chunk_cells`` HCP x distinct-time cells, which bounds the peak memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from features.catalog import MISSING_FLAG, hcp_views
from features.config import FeaturesConfig


def build_examples(cfg: FeaturesConfig, labels, *, tables: dict[str, Any] | None = None, progress: bool = True):
    """Point-in-time HCP features for every (hcp_id, event_timestamp) row of ``labels``, in input order; extra columns pass through.

    The frame has ``build_training_set``'s columns: the input's, then every feature of the model's
    service, then ``is_missing`` (False: every HCP must be in table ``hcps``). ``tables``: the
    contract tables (default: read from ``cfg.data_dir``).
    """
    import pandas as pd
    import pyarrow as pa
    from rich.progress import Progress

    from features.build import read_contract
    from features.events import prepare
    from features.repo import day_after
    from features.snapshots import hcp_tables_at

    for col in ("hcp_id", "event_timestamp"):
        if col not in labels.columns:
            raise ValueError(f"labels: missing column {col!r} (need 'hcp_id' and a tz-aware 'event_timestamp')")
    ts = labels["event_timestamp"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        raise ValueError("labels.event_timestamp must be timezone-aware (UTC) datetimes")
    views = hcp_views(cfg)
    clash = sorted(({f for v in views for f in v.feature_names} | {MISSING_FLAG}) & set(labels.columns))
    if clash:
        raise ValueError(f"labels: columns {clash[:5]} clash with feature names; rename them")
    if len(labels) == 0:
        raise ValueError("labels is empty")
    tables = tables if tables is not None else read_contract(cfg.data_dir)
    prep = prepare(tables, cfg.days_since_cap)
    hcp = pd.Index(prep.hcp_ids).get_indexer(labels["hcp_id"].astype(str))
    if (hcp < 0).any():
        row = int(np.flatnonzero(hcp < 0)[0])
        raise ValueError(f"labels: row {row}: hcp_id {labels['hcp_id'].iloc[row]!r} is not in table 'hcps'")
    # Whole seconds whatever the unit (a frame built from datetime objects is in microseconds, not ns).
    t = ts.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").astype("int64").to_numpy() // 1_000_000_000
    # The hcps table's changing attributes hold from the end of the newest imported day, the
    # time `nba sync` stamps them online (features.repo.day_after), so a row at that midnight
    # equals the sync's. Every label row is keyed before it (a touch's own day start), where
    # only hcp_profile_history counts, as in the weekly sources (features.build).
    export_t = day_after(tables)
    order = np.argsort(hcp, kind="stable")
    per_chunk = max(1, cfg.examples.chunk_cells // max(1, len(np.unique(t))))
    bounds = np.searchsorted(hcp[order], np.arange(0, prep.n_hcps + per_chunk, per_chunk))
    parts = []
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"training examples ({len(labels):,} rows, {prep.n_hcps:,} HCPs)", total=len(labels))
        for c in range(len(bounds) - 1):
            rows = order[bounds[c] : bounds[c + 1]]
            if not len(rows):
                continue
            first = c * per_chunk
            part = prep.hcp_slice(first, min(first + per_chunk, prep.n_hcps))
            got = hcp_tables_at(part, cfg, hcp[rows] - first, t[rows], profile_as_of=export_t)
            cols = {"__row": pa.array(rows, pa.int64())}
            for tbl in got.values():
                cols.update({n: tbl.column(n) for n in tbl.column_names if n not in ("hcp_id", "event_timestamp")})
            parts.append(pa.table(cols))
            bar.advance(task, len(rows))
    features = pa.concat_tables(parts, promote_options="permissive")
    features = features.take(np.argsort(features.column("__row").to_numpy(), kind="stable")).drop_columns(["__row"])
    entity = pa.Table.from_pandas(labels.reset_index(drop=True), preserve_index=False)
    out = {**{c: entity.column(c) for c in entity.column_names}, **{c: features.column(c) for c in features.column_names}}
    out[MISSING_FLAG] = pa.array(np.zeros(len(labels), dtype=bool))
    return pa.table(out).to_pandas()
