"""Helpers of the simulator tests (a unique module name, importable from any test file)."""

from __future__ import annotations

from pathlib import Path

from nba.configuration import load_config
from simulator.config import SimulatorConfig
from simulator.generate import simulate


def make_config(**overrides) -> SimulatorConfig:
    """The stock config with dotted overrides (the same path the CLI takes)."""
    return load_config(SimulatorConfig, "simulator", overrides=overrides)


def build(path: Path, **overrides) -> Path:
    """Simulate into ``path`` and return it."""
    simulate(make_config(**overrides), out=path, progress=False)
    return path


def build_world(path: Path, name: str, **overrides) -> Path:
    """Simulate world preset ``name`` (configs/worlds/NAME.yaml) with dotted overrides into ``path``."""
    from simulator.worlds import world_config

    simulate(world_config(name, **overrides), out=path, progress=False)
    return path
