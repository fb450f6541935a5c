"""Typed config of ``nba bench worlds``: which worlds and seeds select, which report, and how big."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from nba.configuration import StageConfig


class WorldSplit(StageConfig):
    """Worlds (presets in configs/worlds/) crossed with simulator seeds."""

    worlds: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)

    @field_validator("worlds")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        from simulator.worlds import world_names

        known = world_names()
        unknown = [w for w in v if w not in known]
        if unknown:
            raise ValueError(f"unknown world(s) {unknown}; known: {', '.join(known)}")
        return v

    def pairs(self) -> list[tuple[str, int]]:
        """Every (world, seed) of the split, worlds outermost."""
        return [(w, s) for w in self.worlds for s in self.seeds]


class WorldsBenchConfig(StageConfig):
    """`nba bench worlds`: train on each world's logs, serve it for ``weeks`` weeks, judge against the oracle.

    ``select`` is what defaults and tuning may look at; ``report`` is what figures are quoted on.
    Their seeds must not overlap, so a reported figure never comes from a world a choice was made on.
    """

    hcps: int = Field(2000, ge=50, le=100_000)
    days: int = Field(365, ge=84, le=1100)
    weeks: int = Field(8, ge=1, le=52)  # served weeks after the logged period
    k: int = Field(2, ge=1, le=7)  # touches per HCP and week, as the oracle (served: a slate of k + 1, the best k executable done)
    epochs: int = Field(3, ge=1, le=50)
    # Training config keys set for every world (dotted, e.g. {"model.candidates": false}); the
    # training config is otherwise configs/training.yaml, the same for every world.
    training: dict[str, Any] = Field(default_factory=dict)
    select: WorldSplit = Field(default_factory=lambda: WorldSplit(worlds=["default", "habituating", "timing_strong", "other_reps"], seeds=[11, 12]))
    report: WorldSplit = Field(
        default_factory=lambda: WorldSplit(
            worlds=["default", "habituating", "warmup_saturating", "timing_weak", "other_reps", "combined"], seeds=[101, 102, 103]
        )
    )
    workdir: Path = Path(".nba/bench-worlds")

    @model_validator(mode="after")
    def _disjoint(self) -> WorldsBenchConfig:
        shared = sorted(set(self.select.seeds) & set(self.report.seeds))
        if shared:
            raise ValueError(f"report.seeds and select.seeds overlap ({shared}): a reported world must never have been used for selection")
        return self

    def split(self, name: str) -> WorldSplit:
        """The named split (select | report)."""
        if name not in ("select", "report"):
            raise ValueError(f"split: must be 'select' or 'report', got {name!r}")
        return self.select if name == "select" else self.report


def load_worlds_bench_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> WorldsBenchConfig:
    """Load configs/worlds_bench.yaml (or ``path``) with dotted overrides; an invalid value fails naming the key."""
    from nba.configuration import load_config

    return load_config(WorldsBenchConfig, "worlds_bench", path, overrides=overrides)


class OpeBenchConfig(WorldsBenchConfig):
    """`nba bench ope`: per world and seed, train, then estimate the served policy's value on the test weeks and judge the interval."""

    hcps: int = Field(800, ge=50, le=100_000)
    epochs: int = Field(2, ge=1, le=50)
    n_boot: int = Field(1000, ge=50, le=100_000)
    estimator: Literal["ips", "snips", "dm", "dr", "switch_dr", "dr_os", "dm_rc", "switch_dr_ba", "switch_dr_bb"] = "switch_dr_bb"
    workdir: Path = Path(".nba/bench-ope")


def load_ope_bench_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> OpeBenchConfig:
    """Load configs/ope_bench.yaml (or ``path``) with dotted overrides; an invalid value fails naming the key."""
    from nba.configuration import load_config

    return load_config(OpeBenchConfig, "ope_bench", path, overrides=overrides)


__all__ = ["OpeBenchConfig", "WorldSplit", "WorldsBenchConfig", "load_ope_bench_config", "load_worlds_bench_config"]
