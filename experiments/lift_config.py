"""Typed config of `nba lift` and of the closed-loop served simulation (the ``lift:`` section of ``configs/experiments.yaml``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from contract.schema import SEGMENTS
from nba.configuration import StageConfig


class ClosedLoopConfig(StageConfig):
    """The served system run against the simulator for some weeks (see ``experiments.closed_loop``)."""

    weeks: int = Field(12, ge=1, le=520)
    seed: int = 0
    # Suggestions served per HCP per week (the slate the CRM shows).
    k: int = Field(2, ge=1, le=8)
    holdout_share: float = Field(0.2, gt=0.0, lt=1.0)
    epsilon: float = Field(0.05, ge=0.0, le=1.0)
    # Salt of the holdout/exploration hashes; default "closed-loop-<seed>" so seeds re-randomise.
    salt: str | None = None
    # P(the rep accepts a rep-executed suggestion: visit, meeting, phone, 1:1 message) per tier.
    acceptance: dict[str, float] = Field(default_factory=lambda: {"A": 0.85, "B": 0.8, "C": 0.7, "D": 0.6})
    # Reps' weekly capacity is split between the arms in proportion to their HCPs (the planner
    # reserves the holdout's share). Shared, the arms compete for the same rep time and the
    # holdout comparison is biased (interference); false reproduces that bias.
    capacity_by_arm: bool = True
    # Also run the world with everyone served and everyone held out: the true average lift.
    counterfactual: bool = True
    # Drift injected into the simulator, in ``simulator.config.DriftConfig`` form with each
    # event's ``week`` counted from the first served week (0 = from the start).
    drift: dict[str, Any] = Field(default_factory=dict)

    @field_validator("acceptance")
    @classmethod
    def _tiers(cls, v: dict[str, float]) -> dict[str, float]:
        for tier, p in v.items():
            if tier not in SEGMENTS:
                raise ValueError(f"unknown tier {tier!r}; known: {', '.join(SEGMENTS)}")
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"acceptance of tier {tier}: must be in [0, 1], got {p}")
        missing = [s for s in SEGMENTS if s not in v]
        if missing:
            raise ValueError(f"acceptance: missing tier(s) {missing}")
        return v

    @property
    def holdout_salt(self) -> str:
        """The salt the served system randomises with."""
        return self.salt if self.salt is not None else f"closed-loop-{self.seed}"


class LiftConfig(StageConfig):
    """`nba lift`: where the audit trail and outcomes are, and how the intervals are computed."""

    audit_url: str | None = None  # default: the serving config's audit_url
    # Contract dataset (`nba import` target) holding the weekly outcomes (prescriptions, required),
    # the HCPs' tiers (hcp_profile_history / hcps) and touchpoints; default: the serving config's
    # data_dir, else its features config's.
    data_dir: str | None = None
    n_boot: int = Field(1000, ge=100, le=100_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0
    # Weeks of outcomes before each HCP's first suggestion in the audit trail used as its baseline
    # (CUPED variance reduction of the prescription lift); 0 = off.
    baseline_weeks: int = Field(12, ge=0, le=104)
    html: str | None = None  # report path; default <audit dir or cwd>/lift_report.html
    closed_loop: ClosedLoopConfig = ClosedLoopConfig()
