"""``nba quickstart``: the main job end to end on the embedded default.

Simulate a small world, check it against the data contract, build, register and materialise the
feature store, then read features back online for a few HCPs. Each step calls the stage's own
public function, so the quickstart exercises exactly what the CLI commands do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console


def _step(console: Console, title: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    console.rule(f"[bold]{title}")
    t0 = time.perf_counter()
    out = fn()
    timings[title] = round(time.perf_counter() - t0, 2)
    console.print(f"[green]done[/green] in {timings[title]:.1f} s")
    return out


def run_quickstart(workdir: Path, hcps: int, days: int, seed: int, sample: int = 3) -> dict[str, Any]:
    """Run every stage that exists on a fresh simulated world under ``workdir``; return a summary."""
    from contract.importer import validate_dataset
    from features import apply, build_sources, get_online_features, load_features_config, materialize
    from nba.configuration import load_config
    from simulator.config import SimulatorConfig
    from simulator.generate import simulate

    console = Console(stderr=True)
    workdir = workdir.resolve()
    data_dir = workdir / "data"
    timings: dict[str, float] = {}

    sim_cfg = load_config(SimulatorConfig, "simulator", overrides={"hcps": hcps, "days": days, "seed": seed, "out": str(data_dir)})
    manifest = _step(console, f"simulate {hcps} HCPs x {days} days (seed {seed})", lambda: simulate(sim_cfg, progress=True), timings)

    def _validate() -> None:
        issues, _rows = validate_dataset(data_dir)
        errors = [i for i in issues if getattr(i, "severity", "error") == "error"]
        if errors:
            raise RuntimeError(f"simulated data breaks the contract: {errors[0]}")

    _step(console, "validate against the data contract", _validate, timings)

    feat_cfg = load_features_config(overrides={"data_dir": str(data_dir), "workspace_dir": str(workdir / "features")})
    _step(console, "build feature sources", lambda: build_sources(feat_cfg), timings)
    _step(console, "feast apply", lambda: apply(feat_cfg), timings)
    _step(console, "materialise to the online store", lambda: materialize(feat_cfg), timings)

    ids = [f"{i}" for i in _sample_hcps(data_dir, sample)] + ["H-UNKNOWN"]
    online = _step(console, f"online features for {len(ids)} HCPs", lambda: get_online_features(feat_cfg, ids), timings)
    shown = [c for c in ("hcp_id", "is_missing", "segment", "seq_len") if c in online.columns]
    console.print(online[shown].to_string(index=False))

    return {
        "workdir": str(workdir),
        "hcps": hcps,
        "days": days,
        "seed": seed,
        "touchpoints_rows": manifest["tables"]["touchpoints"]["rows"],
        "online_rows": int(len(online)),
        "online_missing": int(online["is_missing"].sum()) if "is_missing" in online.columns else None,
        **{f"step_{i}_s": v for i, v in enumerate(timings.values(), start=1)},
        "total_s": round(sum(timings.values()), 2),
    }


def _sample_hcps(data_dir: Path, n: int) -> list[str]:
    from contract.io import read_table

    ids = read_table(data_dir, "hcps", columns=["hcp_id"]).column("hcp_id").to_pylist()
    return sorted(ids)[:n]


def print_summary(summary: dict[str, Any]) -> None:
    """The last stdout line: the run's figures as one JSON object."""
    print(json.dumps(summary))
