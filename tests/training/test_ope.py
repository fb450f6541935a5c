"""Off-policy estimators on a synthetic bandit whose true policy values are known."""

from __future__ import annotations

import numpy as np
import pytest

from training import ope

K = 5


def _bandit(n: int, seed: int):
    """Contexts with known reward means, a softmax logging policy, and a deterministic target."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    means = 1 / (1 + np.exp(-(np.outer(x, np.linspace(-1, 1, K)) + np.linspace(-0.5, 0.5, K))))  # [n, K]
    logits = np.outer(-x, np.ones(K)) * np.arange(K) * 0.5
    behaviour = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    a = (rng.random(n)[:, None] > np.cumsum(behaviour, 1)).sum(1)
    r = (rng.random(n) < means[np.arange(n), a]).astype(float)
    target = np.argmax(means, 1)  # the oracle policy
    truth = means[np.arange(n), target].mean()
    logged_value = means[np.arange(n), a].mean()
    return dict(a=a, r=r, p=behaviour[np.arange(n), a], pi=(a == target).astype(float), means=means, target=target, truth=truth, logged=logged_value)


def test_estimators_are_unbiased_over_replications() -> None:
    ips_v, snips_v, dr_v, truths = [], [], [], []
    for seed in range(40):
        b = _bandit(2000, seed)
        noisy_q = np.clip(b["means"] + 0.15, 0, 1)  # a biased reward model: DR must still be unbiased
        ql, qt = noisy_q[np.arange(2000), b["a"]], noisy_q[np.arange(2000), b["target"]]
        ips_v.append(ope.ips(b["r"], b["p"], b["pi"], n_boot=10).value)
        snips_v.append(ope.snips(b["r"], b["p"], b["pi"], n_boot=10).value)
        dr_v.append(ope.doubly_robust(b["r"], b["p"], b["pi"], ql, qt, n_boot=10).value)
        truths.append(b["truth"])
    truth = np.mean(truths)
    for name, vals in (("ips", ips_v), ("snips", snips_v), ("dr", dr_v)):
        se = np.std(vals) / np.sqrt(len(vals))
        assert abs(np.mean(vals) - truth) < 4 * se + 0.005, (name, np.mean(vals), truth)
    # the direct method with the biased model is off by about the bias: DR corrects it
    assert abs(np.mean(dr_v) - truth) < 0.05


def test_bootstrap_interval_covers_truth_and_is_seeded() -> None:
    b = _bandit(5000, 123)
    est = ope.snips(b["r"], b["p"], b["pi"], n_boot=300, seed=7)
    assert est.ci_low <= b["truth"] <= est.ci_high
    assert est.ci_low < est.value < est.ci_high
    assert est.n == 5000 and 0 < est.ess <= 5000
    again = ope.snips(b["r"], b["p"], b["pi"], n_boot=300, seed=7)
    assert again == est
    # the oracle beats what the reps did, and the estimate sees it
    assert est.ci_low > b["logged"]


def test_logging_policy_evaluates_to_the_mean_reward() -> None:
    b = _bandit(3000, 5)
    est = ope.ips(b["r"], b["p"], b["p"])  # target = behaviour: weights all 1
    assert est.value == pytest.approx(b["r"].mean())
    assert est.ess == pytest.approx(3000)


def test_bad_propensity_is_named() -> None:
    with pytest.raises(ValueError, match="row 1"):
        ope.ips(np.array([1.0, 0.0]), np.array([0.5, 0.0]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="lengths differ"):
        ope.snips(np.array([1.0]), np.array([0.5, 0.5]), np.array([1.0, 1.0]))
