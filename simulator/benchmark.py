"""``nba bench simulate``: wall time, peak memory and throughput of a full simulation."""

from __future__ import annotations

import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from simulator.config import SimulatorConfig


def _peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench_simulate(cfg: SimulatorConfig, repeats: int = 1) -> dict[str, Any]:
    """Simulate ``cfg`` into a temporary directory ``repeats`` times; median figures (units in the keys).

    The baseline ratio compares the whole run with its own Parquet write phase (pure I/O of the
    same tables), measured in the same run.
    """
    from simulator.generate import simulate

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    rss_before = _peak_rss_mb()
    walls: list[float] = []
    phases: list[dict[str, float]] = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="nba-bench-sim-") as tmp:
            out = Path(tmp) / "data"
            t0 = time.perf_counter()
            timing: dict[str, float] = {}
            manifest = simulate(cfg, out=out, progress=True, timings=timing)
            walls.append(time.perf_counter() - t0)
            phases.append(timing)
            size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    wall = statistics.median(walls)
    figures: dict[str, Any] = {
        "hcps": cfg.hcps,
        "days": cfg.days,
        "weeks": cfg.weeks,
        "seed": cfg.seed,
        "repeats": repeats,
        "simulate_wall_s": round(wall, 2),
        **{f"phase_{k}": round(statistics.median(p[k] for p in phases), 2) for k in phases[0]},
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "peak_rss_before_mb": round(rss_before, 1),
        "dataset_mb": round(size / 2**20, 1),
        "hcp_weeks_per_s": round(cfg.hcps * cfg.weeks / wall, 1),
    }
    for name, meta in manifest["tables"].items():
        figures[f"{name}_rows"] = meta["rows"]
    figures["touchpoints_rows_per_s"] = round(manifest["tables"]["touchpoints"]["rows"] / wall, 1)
    figures["outcomes_rows_per_s"] = round(manifest["tables"]["outcomes"]["rows"] / wall, 1)
    write = figures.get("phase_write_s", 0.0)
    figures["wall_ratio_to_parquet_write"] = round(wall / write, 2) if write else None
    return figures
