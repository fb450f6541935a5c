"""``nba bench sync``: one day's CRM export for N HCPs, from the export files to the online store.

A simulated world (or ``--data-dir``) is split at the start of its last day: everything before
is the dataset the features were built and materialised from (set-up, timed apart), the last
day's touches and feedback plus every dimension table are the nightly export. The timed part is
``nba sync`` of that export (import, read, compute, online write), then the same export again
(the no-op every retry must be).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any


def _say(text: str) -> None:
    print(f"bench sync: {text}", file=sys.stderr, flush=True)


def split_last_day(tables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(dataset before the export day, that day's export, the day's start) from contract tables (Arrow).

    The export day is the last weekday with touches (a Sunday export would be nearly empty);
    anything after it is dropped. Dimension tables go whole into both, as a nightly export does.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    day = pc.max(tables["touchpoints"].column("ts")).as_py().replace(hour=0, minute=0, second=0, microsecond=0)
    while day.weekday() >= 5:
        day -= timedelta(days=1)
    ts = pa.timestamp("us", tz="UTC")
    lo, hi = pa.scalar(day, type=ts), pa.scalar(day + timedelta(days=1), type=ts)
    base, export = {}, {}
    dated = {"touchpoints": "ts", "feedback": "ts", "hcp_profile_history": "valid_from"}
    for name, t in tables.items():
        if name in dated or name == "outcomes":
            if name == "outcomes":
                # A week's outcomes are known once it is over: those ending on the export day come with it.
                col = pc.add(t.column("week_start").cast(pa.timestamp("s")).cast(pa.int64()), 7 * 86_400)
                col = col.cast(pa.timestamp("s")).cast(pa.timestamp("us")).cast(ts)
                before, upto = pc.less_equal(col, lo), pc.less_equal(col, hi)
            else:
                col = t.column(dated[name]).cast(ts)
                before, upto = pc.less(col, lo), pc.less(col, hi)
            base[name], export[name] = t.filter(before), t.filter(pc.and_(upto, pc.invert(before)))
        else:
            base[name] = export[name] = t
    return base, export, day


def run_sync_bench(*, hcps: int, days: int, seed: int, fmt: str, data_dir: Path | None, workdir: Path | None) -> dict[str, Any]:
    """Set up, sync one day's export, sync it again; the figures (seconds per step)."""
    from contract.bench import write_export
    from contract.io import read_manifest, read_table, write_tables
    from contract.schema import TABLES
    from features import apply, build_sources, materialize
    from features.config import FeaturesConfig
    from nba.sync import run_sync

    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="nba-bench-sync-")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"hcps": hcps, "days": days, "format": fmt}
    try:
        t0 = time.perf_counter()
        if data_dir is None:
            from nba.wiring import simulate_dataset

            _say(f"simulate {hcps:,} HCPs x {days + 1} days")
            data_dir = work / "world"
            if data_dir.exists():
                shutil.rmtree(data_dir)
            simulate_dataset(data_dir, hcps=hcps, days=days + 1, seed=seed, progress=True)
            figures["setup_simulate_s"] = round(time.perf_counter() - t0, 2)
        names = [n for n in TABLES if n in read_manifest(data_dir)["tables"]]
        base, export, cut = split_last_day({n: read_table(data_dir, n) for n in names})
        figures["hcps"] = base["hcps"].num_rows
        figures["export_touchpoints"] = export["touchpoints"].num_rows
        figures["export_feedback"] = export.get("feedback").num_rows if "feedback" in export else 0
        figures["export_hcps_touched"] = len(set(export["touchpoints"].column("hcp_id").to_pylist()))
        figures["export_day"] = cut.date().isoformat()
        for d in ("data", "features", "export"):
            shutil.rmtree(work / d, ignore_errors=True)
        write_tables(work / "data", base, source="bench sync")
        write_export({n: t.to_pandas() for n, t in export.items()}, work / "export", fmt)
        cfg = FeaturesConfig(data_dir=work / "data", workspace_dir=work / "features").resolved()
        _say("set-up: build, apply, materialise the day before")
        t1 = time.perf_counter()
        build_sources(cfg)
        figures["setup_build_s"] = round(time.perf_counter() - t1, 2)
        apply(cfg)
        t2 = time.perf_counter()
        materialize(cfg)
        figures["setup_materialize_s"] = round(time.perf_counter() - t2, 2)

        now = cut + timedelta(days=2)
        _say(f"sync the export of {cut.date()} ({figures['export_touchpoints']:,} touchpoints)")
        first = run_sync(work / "export", cfg, now=now)
        for k in ("import_s", "read_s", "compute_s", "online_write_s", "total_s"):
            figures[f"sync_{k}"] = first[k]
        figures.update(
            sync_status=first["status"],
            sync_hcps_affected=first["hcps_affected"],
            sync_rows_written=first["rows_written"],
            sync_rows_inserted=first["rows_inserted"],
        )
        _say("the same export again (must be a no-op)")
        second = run_sync(work / "export", cfg, now=now)
        figures.update(resync_status=second["status"], resync_total_s=second["total_s"])
        figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
        return figures
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
