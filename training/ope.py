"""Off-policy estimates of a target policy's value from logs alone, with bootstrap intervals.

Inputs per logged row: reward r, logged propensity p of the logged action, the target policy's
probability pi of that same action (0/1 for a deterministic policy), the reward model's
prediction q_logged for the logged action and q_target, its expected prediction under the
target policy. IPS = mean(pi/p r); SNIPS divides by mean(pi/p); DR = mean(q_target +
pi/p (r - q_logged)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile bootstrap interval and the effective sample size."""

    value: float
    ci_low: float
    ci_high: float
    n: int
    ess: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict of the figures."""
        return asdict(self)


def _check(reward: np.ndarray, propensity: np.ndarray, target_prob: np.ndarray) -> None:
    if not (len(reward) == len(propensity) == len(target_prob)):
        raise ValueError(f"ope: reward, propensity, target_prob lengths differ ({len(reward)}, {len(propensity)}, {len(target_prob)})")
    bad = ~np.isfinite(propensity) | (propensity <= 0) | (propensity > 1)
    if bad.any():
        raise ValueError(f"ope: propensity must be in (0, 1]; row {int(np.flatnonzero(bad)[0])} has {propensity[bad][0]!r} ({int(bad.sum())} bad rows); drop rows without a logged propensity first")


def _bootstrap_sums(columns: list[np.ndarray], n_boot: int, seed: int) -> list[np.ndarray]:
    """Per column, the [n_boot] sums over rows resampled with replacement (same rows for all columns).

    Resamples in chunks so memory stays near 4M indices whatever the log size.
    """
    n = len(columns[0])
    rng = np.random.default_rng(seed)
    out = [np.empty(n_boot) for _ in columns]
    chunk = max(1, min(n_boot, 4_000_000 // max(n, 1)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        for col, dest in zip(columns, out):
            dest[start:stop] = col[idx].sum(1)
    return out


def _interval(point: float, boot: np.ndarray, n: int, ess: float, alpha: float) -> Estimate:
    finite = boot[np.isfinite(boot)]
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2]) if len(finite) else (np.nan, np.nan)
    return Estimate(float(point), float(lo), float(hi), n, float(ess))


def _ess(w: np.ndarray) -> float:
    s2 = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


def ips(reward, propensity, target_prob, *, clip: float | None = None, n_boot: int = 500, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """Inverse propensity scoring (optionally with clipped weights)."""
    r, p, pi = (np.asarray(x, dtype=np.float64) for x in (reward, propensity, target_prob))
    _check(r, p, pi)
    w = pi / p if clip is None else np.minimum(pi / p, clip)
    terms = w * r
    (sums,) = _bootstrap_sums([terms], n_boot, seed)
    return _interval(terms.mean(), sums / len(r), len(r), _ess(w), alpha)


def snips(reward, propensity, target_prob, *, n_boot: int = 500, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """Self-normalised IPS: sum(w r) / sum(w)."""
    r, p, pi = (np.asarray(x, dtype=np.float64) for x in (reward, propensity, target_prob))
    _check(r, p, pi)
    w = pi / p
    num, den = _bootstrap_sums([w * r, w], n_boot, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = num / den
        point = (w * r).sum() / w.sum() if w.sum() > 0 else np.nan
    return _interval(point, boot, len(r), _ess(w), alpha)


def doubly_robust(reward, propensity, target_prob, q_logged, q_target, *, clip: float | None = None, n_boot: int = 500, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """Doubly robust: reward model under the target policy plus the IPS-weighted residual."""
    r, p, pi, ql, qt = (np.asarray(x, dtype=np.float64) for x in (reward, propensity, target_prob, q_logged, q_target))
    _check(r, p, pi)
    w = pi / p if clip is None else np.minimum(pi / p, clip)
    terms = qt + w * (r - ql)
    (sums,) = _bootstrap_sums([terms], n_boot, seed)
    return _interval(terms.mean(), sums / len(r), len(r), _ess(w), alpha)


def direct_method(q_target, *, n_boot: int = 500, alpha: float = 0.05, seed: int = 0) -> Estimate:
    """The reward model's mean prediction under the target policy (biased if the model is)."""
    qt = np.asarray(q_target, dtype=np.float64)
    (sums,) = _bootstrap_sums([qt], n_boot, seed)
    return _interval(qt.mean(), sums / len(qt), len(qt), float(len(qt)), alpha)
