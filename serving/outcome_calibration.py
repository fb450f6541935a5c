"""Expected responses kept honest by what served suggestions realised: a logit shift refit from outcomes.

Training calibrates the response head on logged rows and corrects it for the model choosing its own
maximum (``training.calibration.chosen_action_calibration``), but what a served suggestion realises
depends on the world it is served in: the reps' capacity, the rules, a campaign, a season. Measured
across simulated worlds, the served model's mean expected response missed its mean realised one by
up to 0.09, in either direction. The outcomes of the suggestions themselves say by how much.

The correction is one number per model version, a shift on the logit scale,
``p' = sigmoid(logit(p) + shift)``: monotone, so the ranking is untouched, and estimable from a few
hundred outcomes. Each refit looks only at suggestions served under the current shift (since the
last refit), finds the extra shift that would have matched their mean realised response, shrinks it
by its evidence (rows / (rows + prior_rows)) and adds it: a stochastic-approximation update that
settles where expected equals realised, and never mixes rows served under different shifts.

Outcomes come from the audit trail: a model suggestion with a channel outcome (``delivered``,
``opened``, ``attended``) fed back realised a positive response when it was opened or attended.
Shifts are stored append-only in ``nba_meta`` (key ``outcome_shift/<time-ordered id>``, the model
version in the value) so every replica reads the same one and a restart keeps it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

CHANNEL_OUTCOMES = ("delivered", "opened", "attended")
POSITIVE_OUTCOMES = ("opened", "attended")
KEY_PREFIX = "outcome_shift/"
# The lock a refit holds (serving.hcp_locks, keyed like an HCP id no CRM issues).
LOCK_ID = "__nba_outcome_shift_refit__"
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(q / (1 - q))


def apply_shift(p: np.ndarray, shift: float) -> np.ndarray:
    """``sigmoid(logit(p) + shift)``; probabilities of exactly 0 stay 0 (nothing to shift)."""
    p = np.asarray(p, dtype=np.float64)
    if shift == 0.0:
        return p
    out = 1.0 / (1.0 + np.exp(-(_logit(p) + shift)))
    return np.where(p > 0, out, p)


def matching_shift(expected: np.ndarray, realised: np.ndarray, lo: float = -4.0, hi: float = 4.0) -> float:
    """The logit shift that makes the mean of ``expected`` equal the mean of ``realised`` (bisection; bounded)."""
    e, target = np.asarray(expected, dtype=np.float64), float(np.mean(realised))
    if not len(e):
        return 0.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if apply_shift(e, mid).mean() < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class OutcomeShift:
    """The current logit shift of one model version and the evidence behind its last update."""

    model_version: str | None
    shift: float = 0.0
    rows: int = 0  # outcomes the last update rested on
    mean_expected: float = float("nan")  # of those rows, as served
    mean_realised: float = float("nan")
    fitted_at: datetime | None = None

    def apply(self, p: np.ndarray) -> np.ndarray:
        """Expected responses under this shift."""
        return apply_shift(p, self.shift)

    def update(self, expected: np.ndarray, realised: np.ndarray, *, prior_rows: float, min_rows: int, max_abs_shift: float, now: datetime) -> OutcomeShift:
        """The next shift from outcomes of suggestions served under this one (``expected`` as reported); unchanged below ``min_rows``."""
        e, r = np.asarray(expected, dtype=np.float64), np.asarray(realised, dtype=np.float64)
        ok = np.isfinite(e) & np.isfinite(r)
        e, r = e[ok], r[ok]
        n = len(e)
        if n < min_rows:
            return self
        delta = matching_shift(e, r) * n / (n + prior_rows)
        shift = float(np.clip(self.shift + delta, -max_abs_shift, max_abs_shift))
        return OutcomeShift(self.model_version, shift, n, float(e.mean()), float(r.mean()), now)

    def to_json(self) -> str:
        """The stored form (``nba_meta`` value)."""
        return json.dumps(
            {
                "model_version": self.model_version,
                "shift": self.shift,
                "rows": self.rows,
                "mean_expected": None if math.isnan(self.mean_expected) else self.mean_expected,
                "mean_realised": None if math.isnan(self.mean_realised) else self.mean_realised,
                "fitted_at": self.fitted_at.isoformat() if self.fitted_at else None,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> OutcomeShift:
        """Read the stored form back."""
        d = json.loads(text)
        nan = float("nan")
        return cls(
            d.get("model_version"),
            float(d.get("shift", 0.0)),
            int(d.get("rows", 0)),
            nan if d.get("mean_expected") is None else float(d["mean_expected"]),
            nan if d.get("mean_realised") is None else float(d["mean_realised"]),
            datetime.fromisoformat(d["fitted_at"]) if d.get("fitted_at") else None,
        )


def served_outcomes(engine: Any, model_version: str, since: datetime | None) -> tuple[np.ndarray, np.ndarray]:
    """(expected as reported, realised 0/1) of the model's suggestions created after ``since`` that have a channel outcome."""
    import sqlalchemy as sa

    from serving.audit import feedback, suggestions

    s, f = suggestions, feedback
    positive = sa.func.max(sa.case((f.c.outcome.in_(POSITIVE_OUTCOMES), 1), else_=0))
    q = (
        sa.select(s.c.expected_response, positive.label("realised"))
        .select_from(s.join(f, f.c.suggestion_id == s.c.suggestion_id))
        .where(s.c.model_version == model_version, s.c.policy == "model", f.c.outcome.in_(CHANNEL_OUTCOMES), s.c.expected_response.is_not(None))
        .group_by(s.c.suggestion_id, s.c.expected_response)
    )
    if since is not None:
        q = q.where(s.c.created_at > since)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    if not rows:
        return np.zeros(0), np.zeros(0)
    arr = np.asarray(rows, dtype=np.float64)
    return arr[:, 0], arr[:, 1]


def load_shift(engine: Any, model_version: str | None) -> OutcomeShift:
    """The newest stored shift of ``model_version`` (a fresh one of 0 when none is stored)."""
    import sqlalchemy as sa

    from serving.audit import nba_meta

    if model_version is None:
        return OutcomeShift(None)
    q = sa.select(nba_meta.c.value).where(nba_meta.c.key.like(KEY_PREFIX + "%")).order_by(nba_meta.c.created_at.desc(), nba_meta.c.key.desc())
    with engine.connect() as conn:
        for (value,) in conn.execute(q):
            shift = OutcomeShift.from_json(value)
            if shift.model_version == model_version:
                return shift
    return OutcomeShift(model_version)


def store_shift(engine: Any, shift: OutcomeShift) -> None:
    """Append ``shift`` to ``nba_meta`` (never updated in place: the audit trail is append-only)."""
    import sqlalchemy as sa

    from serving.audit import nba_meta
    from serving.ids import uuid7_hex

    at = shift.fitted_at or datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.insert(nba_meta).values(key=f"{KEY_PREFIX}{uuid7_hex(1)[0]}", value=shift.to_json(), created_at=at))


def refit(engine: Any, current: OutcomeShift, *, prior_rows: float, min_rows: int, max_abs_shift: float, now: datetime | None = None) -> OutcomeShift:
    """Update ``current`` from the outcomes served under it, store the update, and return it (``current`` when too few)."""
    now = now or datetime.now(UTC)
    if current.model_version is None:
        return current
    expected, realised = served_outcomes(engine, current.model_version, current.fitted_at)
    nxt = current.update(expected, realised, prior_rows=prior_rows, min_rows=min_rows, max_abs_shift=max_abs_shift, now=now)
    if nxt is not current:
        store_shift(engine, nxt)
    return nxt


__all__ = ["OutcomeShift", "apply_shift", "load_shift", "matching_shift", "refit", "served_outcomes", "store_shift"]
