"""Contract tables for tests and sandboxes, drawn from the simulator (one generator, not three).

A thin wrapper kept for callers that want in-memory tables (serving's sandbox): it runs
``simulator.generate.simulate`` into a temporary directory and reads the tables back.
New code should call the simulator directly.
"""

from __future__ import annotations

import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

TABLES = ("products", "reps", "hcps", "content", "touchpoints", "outcomes", "feedback")


def synthetic_tables(n_hcps: int = 1000, days: int = 120, touches_per_week: float | None = None, seed: int = 0,
                     start: datetime = datetime(2025, 1, 6, tzinfo=timezone.utc), n_content: int | None = None) -> dict[str, pd.DataFrame]:
    """Simulated contract tables for ``n_hcps`` HCPs over ``days`` days from ``start`` (a Monday).

    ``touches_per_week`` and ``n_content`` are accepted for old callers and ignored: the
    simulator's configured world decides contact volume and the content catalogue.
    """
    from contract.io import read_frame
    from nba.configuration import load_config
    from simulator.config import SimulatorConfig
    from simulator.generate import simulate

    with tempfile.TemporaryDirectory(prefix="nba-synthetic-") as tmp:
        out = Path(tmp) / "data"
        cfg = load_config(SimulatorConfig, "simulator", None, overrides={
            "hcps": n_hcps, "days": days, "seed": seed, "start_date": start.date().isoformat(), "out": str(out)})
        simulate(cfg, progress=False)
        return {name: read_frame(out, name) for name in TABLES}
