"""What the production stages may not import, handed to their commands by the composition root.

``contract``, ``features``, ``training`` and ``serving`` never import the simulator (nor
``experiments``, which judges them); tests/nba/test_layering.py holds them to it. Where one of
their commands needs a simulated world anyway (a benchmark without ``--data-dir``, the serving
sandbox) or a judge with known truth (`nba evaluate`, `nba tune`'s ``objective: simulator``),
``nba.cli`` passes these in through ``<stage>.cli.register(app, bench_app, **wiring)``. Each
imports what it needs only when called, so `nba --help` stays instant.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any


def simulate_dataset(out: str | Path, *, hcps: int, days: int, seed: int, start_date: dt.date | None = None, progress: bool = False) -> dict[str, Any]:
    """Write a simulated contract dataset (with its ground truth) to ``out``; return its manifest."""
    from nba.configuration import load_config
    from simulator.config import SimulatorConfig
    from simulator.generate import simulate

    overrides: dict[str, Any] = {"hcps": hcps, "days": days, "seed": seed, "out": str(out)}
    if start_date is not None:
        overrides["start_date"] = start_date.isoformat()
    return simulate(load_config(SimulatorConfig, "simulator", None, overrides=overrides), progress=progress)


def simulator_judge() -> Any:
    """The simulator as ``training.evaluation.PolicyJudge`` (experiments.sim_judge)."""
    from experiments.sim_judge import SIMULATOR_JUDGE

    return SIMULATOR_JUDGE


def stage_wiring(stage: str) -> dict[str, Any]:
    """Keyword arguments for ``<stage>.cli.register`` beyond (app, bench_app)."""
    wiring: dict[str, dict[str, Any]] = {
        "features": {"simulate": simulate_dataset},
        "training": {"judge": simulator_judge},
        "serving": {"simulate": simulate_dataset},
    }
    return wiring.get(stage, {})
