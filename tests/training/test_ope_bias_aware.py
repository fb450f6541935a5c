"""The reward model's own error in the interval: residual-corrected DM and bias-aware switch-DR."""

from __future__ import annotations

import numpy as np
import pytest

from training import ope

# Four rows (as in test_ope): residuals r - q_logged = [0.4, -0.2, 0.6, -0.1], pi = [1, 0.5, 0, 0.5].
R = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.5, 0.25, 0.5, 1.0])
PI = np.array([1.0, 0.5, 0.0, 0.5])
QL = np.array([0.6, 0.2, 0.4, 0.1])
QT = np.array([0.5, 0.3, 0.2, 0.4])
TINY = {"reward": R, "propensity": P, "pi_logged": PI, "q_logged": QL, "q_target": QT}


def test_residual_corrected_dm_hand_computed() -> None:
    est = ope.estimate_all(TINY, n_boot=5, tau=1.0)
    # DM 1.4/4 plus the pi-weighted residual (0.4 - 0.1 + 0 - 0.05) / 2
    assert est["dm_rc"].value == pytest.approx(0.35 + 0.25 / 2)
    assert est["dm_rc"].ess == pytest.approx(2**2 / (1 + 0.25 + 0.25))
    # the bias-aware switch-DR keeps switch-DR's value and ESS; its interval holds both intervals
    sw, ba, rc = est["switch_dr"], est["switch_dr_ba"], est["dm_rc"]
    assert (ba.value, ba.ess) == (sw.value, sw.ess)
    assert (ba.ci_low, ba.ci_high) == (min(sw.ci_low, rc.ci_low), max(sw.ci_high, rc.ci_high))


def test_no_matched_row_means_no_correction() -> None:
    rows = dict(TINY, pi_logged=np.zeros(4))
    est = ope.estimate_all(rows, n_boot=50)
    assert est["dm_rc"].value == pytest.approx(0.35)
    assert np.isfinite(est["dm_rc"].ci_low) and np.isfinite(est["dm_rc"].ci_high)


def _biased_world(seed: int, n_hcp: int = 400, per_hcp: int = 8, k: int = 30, bias: float = 0.12):
    """A near-deterministic target over k actions the reps spread evenly; the reward model over-predicts every action by ``bias``."""
    rng = np.random.default_rng(seed)
    n = n_hcp * per_hcp
    hcp = np.repeat(np.arange(n_hcp), per_hcp)
    base = rng.uniform(0.2, 0.6, size=n_hcp)[hcp]
    means = np.clip(base[:, None] + rng.normal(0, 0.08, size=(n, k)), 0.01, 0.99)  # [n, k]
    a = rng.integers(0, k, n)  # logged: uniform, p = 1/k
    r = (rng.random(n) < means[np.arange(n), a]).astype(float)
    best = means.argmax(1)
    eps = 0.05
    pi_all = np.full((n, k), eps / (k - 1))
    pi_all[np.arange(n), best] = 1 - eps
    q = np.clip(means + bias, 0, 1)
    truth = float((pi_all * means).sum(1).mean())
    rows = {
        "reward": r,
        "propensity": np.full(n, 1 / k),
        "pi_logged": pi_all[np.arange(n), a],
        "q_logged": q[np.arange(n), a],
        "q_target": (pi_all * q).sum(1),
    }
    return rows, hcp, truth


def test_bias_aware_interval_covers_where_switch_dr_does_not() -> None:
    """With a reward model that over-predicts by 0.12, switch-DR (every matched weight ~29 > tau) is DM and misses the truth; the hull covers."""
    sw_cover, ba_cover, rc_err = [], [], []
    for seed in range(12):
        rows, hcp, truth = _biased_world(seed)
        est = ope.estimate_all(rows, groups=hcp, n_boot=300, seed=seed, tau=10.0)
        sw, ba = est["switch_dr"], est["switch_dr_ba"]
        sw_cover.append(sw.ci_low <= truth <= sw.ci_high)
        ba_cover.append(ba.ci_low <= truth <= ba.ci_high)
        rc_err.append(est["dm_rc"].value - truth)
    assert np.mean(sw_cover) == 0.0
    assert np.mean(ba_cover) >= 10 / 12
    assert abs(np.mean(rc_err)) < 0.02  # the residual correction removes the 0.12 bias


def test_bias_aware_interval_is_switch_dr_where_the_model_is_right() -> None:
    rows, hcp, truth = _biased_world(3, bias=0.0)
    est = ope.estimate_all(rows, groups=hcp, n_boot=300, seed=1, tau=10.0)
    sw, ba = est["switch_dr"], est["switch_dr_ba"]
    assert ba.ci_low <= truth <= ba.ci_high
    # the price of checking the model: the correction's own sampling error (~100 matched rows, se ~0.05) widens the interval
    assert sw.ci_high - sw.ci_low < ba.ci_high - ba.ci_low < 0.3


def test_paired_difference_of_the_bias_aware_estimator() -> None:
    rows, hcp, _ = _biased_world(5)
    logged = ope.logged_rows(rows["reward"], rows["propensity"])
    kw = dict(groups=hcp, n_boot=300, seed=2, tau=10.0)
    ba = ope.paired_difference(rows, logged, "switch_dr_ba", **kw)
    sw = ope.paired_difference(rows, logged, "switch_dr", **kw)
    rc = ope.paired_difference(rows, logged, "dm_rc", **kw)
    assert ba.value == sw.value
    assert (ba.ci_low, ba.ci_high) == (min(sw.ci_low, rc.ci_low), max(sw.ci_high, rc.ci_high))
    # against itself every estimator gives exactly 0
    same = ope.paired_difference(rows, dict(rows), "switch_dr_ba", **kw)
    assert (same.value, same.ci_low, same.ci_high) == (0.0, 0.0, 0.0)
