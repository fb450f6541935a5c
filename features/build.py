"""`nba features build`: contract dataset -> one Parquet source file per feature view.

I/O at the edges around the pure transforms: read the contract tables, compute weekly
snapshots in HCP chunks (bounded memory, progress bar), write every view's file into a
staging directory that replaces the sources atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from features.catalog import catalog, expected_schema
from features.config import FeaturesConfig
from features.events import TOUCH_COLUMNS, prepare

BUILD_MANIFEST = "_build.json"
NEEDED = {
    "hcps": None,
    "products": None,
    "content": None,
    "touchpoints": TOUCH_COLUMNS,
    "outcomes": ["hcp_id", "week_start", "prescriptions", "market_boxes"],
}


def read_contract(data_dir: str | Path, *, with_ids: bool = False) -> dict[str, Any]:
    """The contract tables features need, as Arrow; a clear error names any missing table.

    ``with_ids`` adds event/feedback ids (the push path de-duplicates by them).
    """
    from contract.io import read_manifest, read_table, table_path

    data_dir = Path(data_dir)
    read_manifest(data_dir)
    tables = {}
    for name, cols in NEEDED.items():
        if not table_path(data_dir, name).exists():
            raise FileNotFoundError(f"contract dataset {data_dir} has no table {name!r} ({name}.parquet), which features need")
        if with_ids and name == "touchpoints":
            cols = [*cols, "event_id"]
        tables[name] = read_table(data_dir, name, columns=cols)
    if table_path(data_dir, "feedback").exists():
        cols = ["hcp_id", "ts", "decision"] + (["feedback_id"] if with_ids else [])
        tables["feedback"] = read_table(data_dir, "feedback", columns=cols)
    if table_path(data_dir, "hcp_profile_history").exists():
        tables["hcp_profile_history"] = read_table(data_dir, "hcp_profile_history")
    return tables


def read_build_manifest(cfg: FeaturesConfig) -> dict[str, Any]:
    """What the last build wrote, or a clear error saying to run `nba features build`."""
    path = Path(cfg.sources_dir) / BUILD_MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path.parent}: no feature sources built; run `nba features build` first")
    return json.loads(path.read_text())


def build_sources(cfg: FeaturesConfig, *, tables: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Compute every view's weekly snapshot rows and write them as Parquet; return the manifest."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from rich.progress import Progress

    from contract.io import dataset_fingerprint, staged_dir
    from features.snapshots import content_table, hcp_tables, weekly_times

    cfg = cfg.resolved()
    fingerprint = None
    if tables is None:
        tables = read_contract(cfg.data_dir)
        fingerprint = dataset_fingerprint(cfg.data_dir)
    prep = prepare(tables, cfg.days_since_cap)
    times = weekly_times(prep)
    views = catalog(cfg)
    rows = dict.fromkeys(views, 0)
    chunk = cfg.build_chunk_hcps
    with staged_dir(cfg.sources_dir) as stage, Progress(disable=not progress, transient=True) as bar:
        writers: dict[str, Any] = {}
        task = bar.add_task(f"building features ({prep.n_hcps:,} HCPs x {len(times)} weeks)", total=prep.n_hcps)

        def write(name: str, table) -> None:
            if name not in writers:
                writers[name] = pq.ParquetWriter(Path(stage) / f"{name}.parquet", table.schema, compression="zstd")
            # Time-major row groups let materialisation's time filter skip old snapshots.
            table = table.take(pc.sort_indices(table, sort_keys=[("event_timestamp", "ascending")]))
            writers[name].write_table(table, row_group_size=1 << 17)
            rows[name] += table.num_rows

        try:
            for a in range(0, max(prep.n_hcps, 1), chunk):
                part = prep.hcp_slice(a, min(a + chunk, prep.n_hcps))
                for name, table in hcp_tables(part, cfg, times, as_source=True).items():
                    write(name, table)
                bar.advance(task, part.n_hcps)
            write("content_catalog", content_table(prep, cfg, times, as_source=True))
        finally:
            for w in writers.values():
                w.close()
        manifest = {
            "data_dir": str(cfg.data_dir),
            "dataset_fingerprint": fingerprint,
            "hcps": int(prep.n_hcps),
            "content": int(len(prep.content_ids)),
            "first_snapshot_s": int(times[0]),
            "last_snapshot_s": int(times[-1]),
            "snapshots": int(len(times)),
            "rows": rows,
            "schema": expected_schema(cfg),
        }
        (Path(stage) / BUILD_MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def snapshot_times(manifest: dict[str, Any]) -> np.ndarray:
    """The weekly snapshot times (epoch seconds) a build covered."""
    return np.arange(manifest["first_snapshot_s"], manifest["last_snapshot_s"] + 1, 7 * 86_400, dtype=np.int64)
