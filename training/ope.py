"""Off-policy estimates of a target policy's value from logs alone, with (HCP-)clustered bootstrap intervals.

Inputs per logged row: reward r, logged propensity p of the logged action, the target policy's
probability pi of that same action (0/1 for a deterministic policy), the reward model's
prediction q_logged for the logged action and q_target, its expected prediction under the
target policy. With w = pi/p:

- IPS = mean(w r); SNIPS = sum(w r) / sum(w); DM = mean(q_target);
- DR = mean(q_target + w (r - q_logged));
- switch-DR (Wang et al. 2017) = mean(q_target + 1[w <= tau] w (r - q_logged)): the reward model
  alone where the weight is too large to trust;
- DR with optimistic shrinkage (Su et al. 2020) = DR with w replaced by lam w / (w^2 + lam).

These are Open Bandit Pipeline's InverseProbabilityWeighting, SelfNormalizedInverseProbabilityWeighting,
DirectMethod, DoublyRobust, SwitchDoublyRobust and DoublyRobustWithShrinkage for one position.

The reward model's own error. Where the target is nearly deterministic, few logged decisions match
it and switch-DR is in effect the direct method: its bootstrap holds the reward model fixed, so the
model's bias on the target's actions is in neither the estimate nor the interval. Two additions:

- residual-corrected DM ("dm_rc") = mean(q_target) + sum(pi (r - q_logged)) / sum(pi): the reward
  model's mean error on the logged actions the target would also take (weighted by the target's
  probability, not divided by the logging propensity, so hundreds of matched rows count rather than
  the handful that carry the importance weights), added to DM. It is a one-parameter residual
  model refitted on every cluster resample, so its own sampling error is in the interval. It is
  unbiased when the model's error on an action does not depend on how often the reps take it.
- bias-aware switch-DR ("switch_dr_ba"): switch-DR's value, with the hull of switch-DR's and
  dm_rc's percentile intervals (same resamples). Each is valid under a different assumption (the
  reward model is right on the target's actions / its error there is the error on the matched
  logged actions); the hull covers whenever either holds, which is what a reviewer needs when
  neither can be checked from the logs.
- bias-bounded switch-DR ("switch_dr_bb"): switch-DR's value with an honest bias-aware interval
  (Armstrong & Kolesar 2020): value +- se cv(B / se), where se is switch-DR's bootstrap standard
  error, cv(t) the 1 - alpha quantile of |N(t, 1)| (1.96 at t = 0, about t + 1.645 for large t) and
  B a bound on the reward model's bias on the target's actions: the size of dm_rc's correction (the
  model's mean error on the matched logged decisions), and never less than that correction's own
  bootstrap standard error (a correction indistinguishable from 0 does not show the bias is 0). The
  sign of the matched error is not trusted, only its size: the reps take those decisions where they
  expect a response, so the error there is tilted (on the bench its sign was the served policy's in about half the runs),
  while its size tracks how wrong the model is where it is checked.

Every estimator is a sum of ratios of two row sums (a plain mean has a column of ones below), so a
bootstrap replicate needs only per-cluster sums and how often each cluster was drawn: intervals
resample whole clusters (HCPs, whose rows are correlated) with replacement, or rows when no
clusters are given, in memory bounded by a fixed number of drawn indices per chunk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ESTIMATORS = ("ips", "snips", "dm", "dr", "switch_dr", "dr_os", "dm_rc", "switch_dr_ba", "switch_dr_bb")
# Estimators whose interval is the hull of two others' (value: the first; interval: both): see switch_dr_ba.
_HULLS = {"switch_dr_ba": ("switch_dr", "dm_rc")}
# Estimators with the first's value and an interval widened by a bias bound from the second's correction term: see switch_dr_bb.
_BOUNDED = {"switch_dr_bb": ("switch_dr", "dm_rc")}
_COMPOUND = {**_HULLS, **_BOUNDED}
ROW_KEYS = ("reward", "propensity", "pi_logged", "q_logged", "q_target")
# 1000 resamples: at 200 the interval ends moved by ~7% of the width between seeds.
DEFAULT_N_BOOT = 1000
# Switch-DR trusts the IPS correction only where the target is at most 10x as likely as the logging
# policy to take the logged action; beyond that a single row would count for more than ten rows.
DEFAULT_TAU = 10.0
# Shrinkage lam = 100 leaves weights up to ~3 within 10% of themselves and caps any row's weight at
# sqrt(lam)/2 = 5 (reached at w = 10, the switch threshold above), so both robust variants bite at
# the same scale.
DEFAULT_LAM = 100.0
# Drawn indices per bootstrap chunk (int64: 32 MB), whatever the number of rows or clusters.
_CHUNK_CELLS = 4_000_000


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile bootstrap interval and the effective sample size.

    ``n_clusters`` is the number of bootstrap units: clusters (e.g. HCPs), or rows when none were given.
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    ess: float
    n_clusters: int = 0

    def to_dict(self) -> dict[str, float]:
        """Plain dict of the figures."""
        return asdict(self)


# --- validation ---------------------------------------------------------------------------------


def _first_bad(bad: np.ndarray, values: np.ndarray, what: str, rule: str) -> None:
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"ope: {what} must be {rule}; row {i} has {values[i]!r} ({int(bad.sum())} bad rows)")


def _check(reward: np.ndarray, propensity: np.ndarray, target_prob: np.ndarray) -> None:
    if not (len(reward) == len(propensity) == len(target_prob)):
        raise ValueError(f"ope: reward, propensity, target_prob lengths differ ({len(reward)}, {len(propensity)}, {len(target_prob)})")
    if len(reward) == 0:
        raise ValueError("ope: no rows to estimate from (after dropping rows without a logged propensity)")
    bad = ~np.isfinite(propensity) | (propensity <= 0) | (propensity > 1)
    if bad.any():
        raise ValueError(
            f"ope: propensity must be in (0, 1]; row {int(np.flatnonzero(bad)[0])} has {propensity[bad][0]!r} ({int(bad.sum())} bad rows); drop rows without a logged propensity first"
        )
    # float32 softmax outputs may exceed 1 by rounding
    _first_bad(~np.isfinite(target_prob) | (target_prob < 0) | (target_prob > 1 + 1e-6), target_prob, "target_prob", "a probability in [0, 1]")
    _first_bad(~np.isfinite(reward), reward, "reward", "finite")


def _check_models(n: int, q_logged: np.ndarray, q_target: np.ndarray) -> None:
    for name, q in (("q_logged", q_logged), ("q_target", q_target)):
        if len(q) != n:
            raise ValueError(f"ope: {name} has {len(q)} rows, reward has {n}")
        _first_bad(~np.isfinite(q), q, name, "finite")


def _check_boot(n_boot: int, alpha: float) -> None:
    if n_boot < 0:
        raise ValueError(f"ope: n_boot must be >= 0, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"ope: alpha must be in (0, 1), got {alpha}")


def _clusters(groups: Any, n: int) -> tuple[np.ndarray | None, int]:
    """Cluster code per row (0..G-1, in sorted id order) and G; (None, n) when every row is its own unit."""
    if groups is None:
        return None, n
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise ValueError(f"ope: groups has shape {g.shape} for {n} rows; pass one cluster id (e.g. hcp_id) per row")
    if g.dtype.kind == "f":
        _first_bad(~np.isfinite(g), g, "groups", "a finite cluster id")
    try:
        _, codes = np.unique(g, return_inverse=True)
    except TypeError as exc:  # e.g. None mixed with strings
        raise ValueError(f"ope: groups must hold ids of one type (e.g. all hcp_id strings): {exc}") from exc
    codes = codes.reshape(-1)
    return codes, int(codes.max()) + 1


# --- the clustered bootstrap --------------------------------------------------------------------


def _resampled_sums(columns: np.ndarray, codes: np.ndarray | None, n_units: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, k] sums of the [n, k] columns over units (clusters, or rows) drawn with replacement.

    Each replicate draws n_units units; the draw counts times the per-unit sums give the replicate's
    sums, so the columns share their resamples (ratios and paired differences stay consistent).
    With one unit per row in row order this draws exactly what a plain row bootstrap with the same
    seed draws.
    """
    per_unit = columns if codes is None else np.stack([np.bincount(codes, weights=c, minlength=n_units) for c in columns.T], 1)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, columns.shape[1]))
    chunk = max(1, min(n_boot, _CHUNK_CELLS // max(n_units, 1)))
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        m = stop - start
        idx = rng.integers(0, n_units, size=(m, n_units))
        idx += (np.arange(m, dtype=idx.dtype) * n_units)[:, None]
        counts = np.bincount(idx.reshape(-1), minlength=m * n_units).reshape(m, n_units)
        out[start:stop] = counts @ per_unit
    return out


def _ratio(num: Any, den: Any) -> Any:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.divide(num, den)


def _interval(point: float, boot: np.ndarray, n: int, ess: float, alpha: float, n_units: int = 0) -> Estimate:
    finite = boot[np.isfinite(boot)]
    lo, hi = np.quantile(finite, [alpha / 2, 1 - alpha / 2]) if len(finite) else (np.nan, np.nan)
    return Estimate(float(point), float(lo), float(hi), n, float(ess), n_units)


def honest_cv(t: float, alpha: float = 0.05) -> float:
    """The 1 - alpha quantile of |N(t, 1)|: the critical value of a bias-aware interval whose bias is at most t standard errors."""
    from statistics import NormalDist

    if not (t >= 0 and np.isfinite(t)):
        raise ValueError(f"ope: the bias bound in standard errors must be finite and >= 0, got {t}")
    _check_boot(0, alpha)
    z = NormalDist()
    # P(|N(t,1)| <= t) <= 1/2 < 1 - alpha for alpha < 1/2, and P(|N(t,1)| <= hi) > 1 - alpha: the root lies between.
    lo, hi = (float(t) if alpha < 0.5 else 0.0), t + z.inv_cdf(1 - alpha / 2) + 1.0
    for _ in range(80):  # bisection: the coverage P(|N(t,1)| <= c) increases in c
        mid = (lo + hi) / 2
        if z.cdf(mid - t) - z.cdf(-mid - t) < 1 - alpha:
            lo = mid
        else:
            hi = mid
    return hi


def _bounded(point: float, reps: np.ndarray, corr: float, corr_reps: np.ndarray, n: int, ess: float, alpha: float, n_units: int) -> Estimate:
    """``point`` +- se cv(B / se): se the replicates' sd, B = max(|corr|, sd of corr's replicates); see switch_dr_bb."""
    finite = reps[np.isfinite(reps)]
    if len(finite) < 2 or not np.isfinite(point):
        return Estimate(float(point), np.nan, np.nan, n, float(ess), n_units)
    se = float(np.std(finite, ddof=1))
    cf = corr_reps[np.isfinite(corr_reps)]
    bound = max(abs(float(corr)), float(np.std(cf, ddof=1)) if len(cf) > 1 else 0.0)
    half = bound if se == 0 else se * honest_cv(bound / se, alpha)
    return Estimate(float(point), float(point - half), float(point + half), n, float(ess), n_units)


def _ess(w: np.ndarray) -> float:
    s2 = float(np.sum(w * w))
    return float(np.sum(w) ** 2 / s2) if s2 > 0 else 0.0


# --- estimator terms ------------------------------------------------------------------------------


def _shrink(w: np.ndarray, lam: float) -> np.ndarray:
    """Optimistic shrinkage lam w / (w^2 + lam): lam = inf is plain DR, lam = 0 the direct method."""
    if lam < 0 or np.isnan(lam):
        raise ValueError(f"ope: lam must be >= 0 (inf for plain DR), got {lam}")
    if np.isinf(lam):
        return w
    if lam == 0:
        return np.zeros_like(w)
    return lam * w / (w * w + lam)


Parts = list[tuple[np.ndarray, np.ndarray]]


def _terms(
    name: str, r: np.ndarray, p: np.ndarray, pi: np.ndarray, ql: np.ndarray | None, qt: np.ndarray | None, *, clip: float | None, tau: float, lam: float
) -> tuple[Parts, float]:
    """(the estimator's (numerator, denominator) columns, whose ratios of sums add up to it; ESS of the weights used)."""
    ones = np.ones_like(r)
    w = pi / p
    if name == "dm":
        return [(qt, ones)], float(len(r))
    if name == "snips":
        return [(w * r, w)], _ess(w)
    if name in ("ips", "dr"):
        w = w if clip is None else np.minimum(w, clip)
        return [((w * r if name == "ips" else qt + w * (r - ql)), ones)], _ess(w)
    if name == "switch_dr":
        if np.isnan(tau) or tau < 0:
            raise ValueError(f"ope: tau must be >= 0 (inf for plain DR), got {tau}")
        used = np.where(w <= tau, w, 0.0)
        return [(qt + used * (r - ql), ones)], _ess(used)
    if name == "dr_os":
        shrunk = _shrink(w, lam)
        return [(qt + shrunk * (r - ql), ones)], _ess(shrunk)
    if name == "dm_rc":
        # Rows the target could not have taken (pi = 0) say nothing about its actions: 0/0 -> no correction.
        return [(qt, ones), (pi * (r - ql), pi)], _ess(pi)
    raise ValueError(f"ope: unknown estimator {name!r}; known: {', '.join(ESTIMATORS)}")


def _columns(parts: Parts) -> list[np.ndarray]:
    return [c for num, den in parts for c in (num, den)]


def _point(parts: Parts) -> float:
    """The estimate: the first ratio (NaN/inf on a zero denominator, as a plain ratio) plus each correction whose denominator is not 0."""
    num, den = parts[0]
    return float(_ratio(num.sum(), den.sum()) + sum(_ratio(n.sum(), d.sum()) for n, d in parts[1:] if d.sum() != 0))


def _replicates(parts: Parts, boot: np.ndarray) -> np.ndarray:
    """Per replicate the estimator from its columns' resampled sums.

    The first part's ratio is NaN where its denominator is 0 (that replicate is dropped, as a plain
    ratio estimator's is); a correction part with denominator 0 adds nothing.
    """
    out = _ratio(boot[:, 0], boot[:, 1])
    for j in range(1, len(parts)):
        num, den = boot[:, 2 * j], boot[:, 2 * j + 1]
        out = out + np.where(den != 0, _ratio(num, np.where(den != 0, den, 1.0)), 0.0)
    return out


def _correction(parts: Parts, boot: np.ndarray | None = None) -> Any:
    """A two-part estimator's second ratio (dm_rc's residual correction): the point, or per replicate from ``boot``; 0 where its denominator is 0."""
    num, den = parts[1]
    if boot is None:
        return float(_ratio(num.sum(), den.sum())) if den.sum() != 0 else 0.0
    n, d = boot[:, 2], boot[:, 3]
    return np.where(d != 0, _ratio(n, np.where(d != 0, d, 1.0)), 0.0)


def _expand(names: tuple[str, ...]) -> tuple[str, ...]:
    """The plain estimators ``names`` need (a hull or a bounded estimator needs its two sides), in order, once each."""
    out: list[str] = []
    for name in names:
        for plain in _COMPOUND.get(name, (name,)):
            if plain not in out:
                out.append(plain)
    return tuple(out)


def _hull(a: Estimate, b: Estimate) -> Estimate:
    """``a``'s value and ESS with the union of both intervals."""
    return Estimate(a.value, float(min(a.ci_low, b.ci_low)), float(max(a.ci_high, b.ci_high)), a.n, a.ess, a.n_clusters)


def _arrays(*xs: Any) -> list[np.ndarray]:
    return [np.asarray(x, dtype=np.float64).reshape(-1) for x in xs]


def _run(
    names: tuple[str, ...],
    r: np.ndarray,
    p: np.ndarray,
    pi: np.ndarray,
    ql: np.ndarray | None,
    qt: np.ndarray | None,
    *,
    groups: Any,
    n_boot: int,
    alpha: float,
    seed: int,
    clip: float | None = None,
    tau: float = DEFAULT_TAU,
    lam: float = DEFAULT_LAM,
) -> dict[str, Estimate]:
    """Estimates of the named estimators, all from the same cluster resamples."""
    _check_boot(n_boot, alpha)
    codes, n_units = _clusters(groups, len(r))
    plain = _expand(names)
    terms = [_terms(name, r, p, pi, ql, qt, clip=clip, tau=tau, lam=lam) for name in plain]
    columns = np.stack([c for parts, _ in terms for c in _columns(parts)], 1)
    boot = _resampled_sums(columns, codes, n_units, n_boot, seed)
    est: dict[str, Estimate] = {}
    reps: dict[str, np.ndarray] = {}
    corr: dict[str, tuple[float, np.ndarray]] = {}
    at = 0
    for name, (parts, ess) in zip(plain, terms):
        k = 2 * len(parts)
        point = _point(parts) if parts[0][1].sum() != 0 else np.nan
        reps[name] = _replicates(parts, boot[:, at : at + k])
        est[name] = _interval(point, reps[name], len(r), ess, alpha, n_units)
        if len(parts) == 2:
            corr[name] = (_correction(parts), _correction(parts, boot[:, at : at + k]))
        at += k
    return {name: _compound(name, est, reps, corr, alpha) for name in names}


def _compound(name: str, est: dict[str, Estimate], reps: dict[str, np.ndarray], corr: dict[str, tuple[float, np.ndarray]], alpha: float) -> Estimate:
    """``name``'s estimate from its plain sides' (a hull, a bias-bounded interval, or the plain estimate itself)."""
    if name in _HULLS:
        return _hull(*(est[x] for x in _HULLS[name]))
    if name in _BOUNDED:
        base, side = _BOUNDED[name]
        e = est[base]
        return _bounded(e.value, reps[base], *corr[side], e.n, e.ess, alpha, e.n_clusters)
    return est[name]


# --- public estimators ----------------------------------------------------------------------------


def ips(
    reward,
    propensity,
    target_prob,
    *,
    clip: float | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Inverse propensity scoring (optionally with clipped weights)."""
    r, p, pi = _arrays(reward, propensity, target_prob)
    _check(r, p, pi)
    return _run(("ips",), r, p, pi, None, None, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed, clip=clip)["ips"]


def snips(reward, propensity, target_prob, *, n_boot: int = DEFAULT_N_BOOT, alpha: float = 0.05, seed: int = 0, groups: np.ndarray | None = None) -> Estimate:
    """Self-normalised IPS: sum(w r) / sum(w)."""
    r, p, pi = _arrays(reward, propensity, target_prob)
    _check(r, p, pi)
    return _run(("snips",), r, p, pi, None, None, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed)["snips"]


def doubly_robust(
    reward,
    propensity,
    target_prob,
    q_logged,
    q_target,
    *,
    clip: float | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Doubly robust: reward model under the target policy plus the IPS-weighted residual."""
    r, p, pi, ql, qt = _arrays(reward, propensity, target_prob, q_logged, q_target)
    _check(r, p, pi)
    _check_models(len(r), ql, qt)
    return _run(("dr",), r, p, pi, ql, qt, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed, clip=clip)["dr"]


def direct_method(q_target, *, n_boot: int = DEFAULT_N_BOOT, alpha: float = 0.05, seed: int = 0, groups: np.ndarray | None = None) -> Estimate:
    """The reward model's mean prediction under the target policy (biased if the model is)."""
    (qt,) = _arrays(q_target)
    if len(qt) == 0:
        raise ValueError("ope: no rows to estimate from")
    _first_bad(~np.isfinite(qt), qt, "q_target", "finite")
    ones = np.ones_like(qt)
    return _run(("dm",), ones, ones, ones, None, qt, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed)["dm"]


def switch_dr(
    reward,
    propensity,
    target_prob,
    q_logged,
    q_target,
    *,
    tau: float = DEFAULT_TAU,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """Switch-DR: the reward model for every row plus the IPS residual only where w = pi/p <= tau (``ess`` is of those weights)."""
    r, p, pi, ql, qt = _arrays(reward, propensity, target_prob, q_logged, q_target)
    _check(r, p, pi)
    _check_models(len(r), ql, qt)
    return _run(("switch_dr",), r, p, pi, ql, qt, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed, tau=tau)["switch_dr"]


def dr_shrinkage(
    reward,
    propensity,
    target_prob,
    q_logged,
    q_target,
    *,
    lam: float = DEFAULT_LAM,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> Estimate:
    """DR with optimistic shrinkage: weights lam w / (w^2 + lam) (``ess`` is of the shrunk weights)."""
    r, p, pi, ql, qt = _arrays(reward, propensity, target_prob, q_logged, q_target)
    _check(r, p, pi)
    _check_models(len(r), ql, qt)
    return _run(("dr_os",), r, p, pi, ql, qt, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed, lam=lam)["dr_os"]


def _row_arrays(rows: dict[str, np.ndarray], where: str) -> list[np.ndarray]:
    missing = [k for k in ROW_KEYS if k not in rows]
    if missing:
        raise ValueError(f"ope: {where} lack {', '.join(repr(k) for k in missing)} (need {', '.join(ROW_KEYS)})")
    r, p, pi, ql, qt = _arrays(*(rows[k] for k in ROW_KEYS))
    _check(r, p, pi)
    _check_models(len(r), ql, qt)
    return [r, p, pi, ql, qt]


def estimate_all(
    rows: dict[str, np.ndarray],
    *,
    groups: np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    tau: float = DEFAULT_TAU,
    lam: float = DEFAULT_LAM,
    clip: float | None = None,
) -> dict[str, Estimate]:
    """Every estimator of ESTIMATORS (IPS, SNIPS, DM, DR, switch-DR, DR-shrinkage "dr_os", dm_rc and the bias-aware switch-DRs) from the same cluster resamples; ``clip`` applies to IPS and DR."""
    r, p, pi, ql, qt = _row_arrays(rows, "rows")
    return _run(ESTIMATORS, r, p, pi, ql, qt, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed, clip=clip, tau=tau, lam=lam)


def logged_rows(reward, propensity) -> dict[str, np.ndarray]:
    """Rows that make every estimator return the logged policy's mean reward (pi = p, q = the observed reward)."""
    r, p = _arrays(reward, propensity)
    # w = 1 everywhere and a zero residual: IPS/SNIPS/DR variants and DM all reduce to mean(r) exactly.
    return {"reward": r, "propensity": p, "pi_logged": p.copy(), "q_logged": r.copy(), "q_target": r.copy()}


def paired_difference(
    rows_a: dict[str, np.ndarray],
    rows_b: dict[str, np.ndarray],
    estimator: str = "dr",
    *,
    groups: np.ndarray | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    alpha: float = 0.05,
    seed: int = 0,
    tau: float = DEFAULT_TAU,
    lam: float = DEFAULT_LAM,
    clip: float | None = None,
) -> Estimate:
    """Policy A's value minus policy B's on the same logged rows, both from the same cluster resamples.

    For A against the logged policy pass ``logged_rows(reward, propensity)`` as ``rows_b``. ``ess`` is
    the smaller of the two sides'.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"ope: unknown estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")
    _check_boot(n_boot, alpha)
    a = _row_arrays(rows_a, "rows_a")
    b = _row_arrays(rows_b, "rows_b")
    if len(a[0]) != len(b[0]):
        raise ValueError(f"ope: rows_a has {len(a[0])} rows, rows_b {len(b[0])}: a paired difference needs the same logged rows")
    for i, key in ((0, "reward"), (1, "propensity")):
        differ = a[i] != b[i]
        if differ.any():
            j = int(np.flatnonzero(differ)[0])
            raise ValueError(
                f"ope: rows_a and rows_b differ in {key!r} at row {j} ({a[i][j]!r} vs {b[i][j]!r}): a paired difference needs the same logged rows"
            )
    codes, n_units = _clusters(groups, len(a[0]))
    kw = dict(clip=clip, tau=tau, lam=lam)
    out: dict[str, Estimate] = {}
    reps: dict[str, np.ndarray] = {}
    corr: dict[str, tuple[float, np.ndarray]] = {}
    for name in _expand((estimator,)):
        parts_a, ess_a = _terms(name, *a, **kw)
        parts_b, ess_b = _terms(name, *b, **kw)
        boot = _resampled_sums(np.stack(_columns(parts_a) + _columns(parts_b), 1), codes, n_units, n_boot, seed)
        k = 2 * len(parts_a)
        point = _point(parts_a) - _point(parts_b)
        reps[name] = _replicates(parts_a, boot[:, :k]) - _replicates(parts_b, boot[:, k:])
        out[name] = _interval(point, reps[name], len(a[0]), min(ess_a, ess_b), alpha, n_units)
        if len(parts_a) == 2:
            # The difference's bias bound comes from the difference of the two sides' corrections (0 on the logged policy's side).
            corr[name] = (_correction(parts_a) - _correction(parts_b), _correction(parts_a, boot[:, :k]) - _correction(parts_b, boot[:, k:]))
    return _compound(estimator, out, reps, corr, alpha)


# --- overlap diagnostics and the verdict ----------------------------------------------------------


def diagnostics(propensity, target_prob, *, groups: np.ndarray | None = None, support_mass: np.ndarray | None = None) -> dict[str, float]:
    """Overlap figures of the weights w = pi/p: ESS (rows and share), share w > 0, max and mean w, clusters, support mass.

    Under full support and exact propensities the mean weight estimates 1; in general it estimates
    the target's probability on actions the logging policy could take, which ``support_mass`` (per
    row, from the caller, who knows each decision's allowed actions) gives exactly. Without it,
    ``support_mass`` is NaN. ``ess_clusters`` is the ESS of the per-cluster weight sums.
    """
    p, pi = _arrays(propensity, target_prob)
    _check(np.zeros_like(p), p, pi)
    w = pi / p
    n = len(w)
    codes, n_units = _clusters(groups, n)
    per_cluster = w if codes is None else np.bincount(codes, weights=w, minlength=n_units)
    support = np.nan
    if support_mass is not None:
        (s,) = _arrays(support_mass)
        if len(s) != n:
            raise ValueError(f"ope: support_mass has {len(s)} rows, propensity has {n}")
        _first_bad(~np.isfinite(s) | (s < 0) | (s > 1 + 1e-6), s, "support_mass", "a probability in [0, 1]")
        support = float(s.mean())
    ess = _ess(w)
    return {
        "rows": n,
        "ess": ess,
        "ess_share": ess / n,
        "share_positive_weight": float((w > 0).mean()),
        "max_weight": float(w.max()),
        "mean_weight": float(w.mean()),
        "n_clusters": n_units,
        "ess_clusters": _ess(per_cluster),
        "support_mass": support,
    }


# Defaults of the verdict, each overridable from the caller's config:
# - ESS >= 100 rows: the weighted estimates' standard error is about sd(r)/sqrt(ESS), so at 100 a
#   response rate's 95% interval is still ~±0.1 wide; below it a handful of heavy rows decide the
#   figure and percentile bootstrap intervals undercover.
# - support mass >= 0.9: the target's probability on actions the logs never take is invisible to
#   IPS/SNIPS (biased towards 0 by up to that share) and left to the reward model alone in DR; 10% is
#   the most we accept resting on extrapolation.
# - mean weight in [0.8, 1.2]: it should be ~1 (less where support is missing, more where the
#   propensities are too small); its sampling sd is at most 1/sqrt(ESS) = 0.1 at ESS 100, so the
#   band is ~2 sd: noise alone rarely trips it, a wrong propensity model or missing support does.
MIN_ESS = 100.0
MIN_SUPPORT = 0.9
MEAN_WEIGHT_BAND = (0.8, 1.2)


def verdict(
    diag: dict[str, Any], *, min_ess: float = MIN_ESS, min_support: float = MIN_SUPPORT, mean_weight_band: tuple[float, float] = MEAN_WEIGHT_BAND
) -> tuple[bool, str]:
    """Whether the overlap is enough to trust the off-policy estimates, with each check and its threshold.

    A missing or NaN ``support_mass`` is reported as not checked (the mean weight stands in for it).
    """
    lo, hi = mean_weight_band
    if not (min_ess >= 0 and 0 <= min_support <= 1 and lo <= hi):
        raise ValueError(
            f"ope: verdict thresholds need min_ess >= 0, min_support in [0, 1], mean_weight_band lo <= hi; got {min_ess}, {min_support}, {mean_weight_band}"
        )
    ess, mean_w = float(diag.get("ess", np.nan)), float(diag.get("mean_weight", np.nan))
    support = diag.get("support_mass")
    support = np.nan if support is None else float(support)
    failed: list[str] = []
    passed: list[str] = []
    (passed if ess >= min_ess else failed).append(f"ESS {ess:.1f} {'>=' if ess >= min_ess else '<'} {min_ess:g}")
    if np.isfinite(support):
        (passed if support >= min_support else failed).append(f"support mass {support:.3f} {'>=' if support >= min_support else '<'} {min_support:g}")
    else:
        passed.append(f"support mass not given (not checked against {min_support:g})")
    inside = lo <= mean_w <= hi
    (passed if inside else failed).append(f"mean weight {mean_w:.3f} {'in' if inside else 'outside'} [{lo:g}, {hi:g}]")
    ok = not failed
    head = "enough overlap to trust" if ok else "not enough overlap to trust"
    return ok, f"{head}: {'; '.join(failed + passed)}"
