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


# --- hand-computed values on four rows ------------------------------------------------------------
# w = pi/p = [2, 2, 0, 0.5]
R = np.array([1.0, 0.0, 1.0, 0.0])
P = np.array([0.5, 0.25, 0.5, 1.0])
PI = np.array([1.0, 0.5, 0.0, 0.5])
QL = np.array([0.6, 0.2, 0.4, 0.1])
QT = np.array([0.5, 0.3, 0.2, 0.4])


def _tiny_rows() -> dict[str, np.ndarray]:
    return {"reward": R, "propensity": P, "pi_logged": PI, "q_logged": QL, "q_target": QT}


def test_every_estimator_matches_hand_computed_values() -> None:
    ess = 4.5**2 / (4 + 4 + 0 + 0.25)
    assert ope.ips(R, P, PI, n_boot=5).value == pytest.approx(2 / 4)
    assert ope.ips(R, P, PI, n_boot=5).ess == pytest.approx(ess)
    assert ope.ips(R, P, PI, clip=1.5, n_boot=5).value == pytest.approx(1.5 / 4)  # w -> [1.5, 1.5, 0, 0.5]
    assert ope.snips(R, P, PI, n_boot=5).value == pytest.approx(2 / 4.5)
    assert ope.direct_method(QT, n_boot=5).value == pytest.approx(1.4 / 4)
    # DR terms: 0.5 + 2(0.4), 0.3 + 2(-0.2), 0.2 + 0, 0.4 + 0.5(-0.1)
    assert ope.doubly_robust(R, P, PI, QL, QT, n_boot=5).value == pytest.approx((1.3 - 0.1 + 0.2 + 0.35) / 4)
    # tau = 1 drops the residual of the two rows with w = 2: 0.5, 0.3, 0.2, 0.35
    sw = ope.switch_dr(R, P, PI, QL, QT, tau=1.0, n_boot=5)
    assert sw.value == pytest.approx((0.5 + 0.3 + 0.2 + 0.35) / 4)
    assert sw.ess == pytest.approx(0.5**2 / 0.25)  # only the w = 0.5 row keeps a weight
    # tau = 2 keeps every row (w <= tau): plain DR
    assert ope.switch_dr(R, P, PI, QL, QT, tau=2.0, n_boot=5).value == pytest.approx(ope.doubly_robust(R, P, PI, QL, QT, n_boot=5).value)
    # lam = 4: w_hat = 4w/(w^2+4) = [1, 1, 0, 2/4.25]; terms 0.5+0.4, 0.3-0.2, 0.2, 0.4-0.1*2/4.25
    os_ = ope.dr_shrinkage(R, P, PI, QL, QT, lam=4.0, n_boot=5)
    assert os_.value == pytest.approx((0.9 + 0.1 + 0.2 + 0.4 - 0.1 * 2 / 4.25) / 4)
    assert ope.dr_shrinkage(R, P, PI, QL, QT, lam=np.inf, n_boot=5).value == pytest.approx(ope.doubly_robust(R, P, PI, QL, QT, n_boot=5).value)
    assert ope.dr_shrinkage(R, P, PI, QL, QT, lam=0.0, n_boot=5).value == pytest.approx(1.4 / 4)  # lam 0: the direct method


def test_estimate_all_gives_the_single_estimators_on_shared_resamples() -> None:
    b = _bandit(600, 11)
    rng = np.random.default_rng(0)
    rows = {"reward": b["r"], "propensity": b["p"], "pi_logged": b["pi"], "q_logged": rng.random(600), "q_target": rng.random(600)}
    groups = rng.integers(0, 80, 600)
    kw = dict(groups=groups, n_boot=200, seed=4)
    every = ope.estimate_all(rows, tau=3.0, lam=9.0, **kw)
    assert set(every) == {"ips", "snips", "dm", "dr", "switch_dr", "dr_os", "dm_rc", "switch_dr_ba", "switch_dr_bb"}
    args = (b["r"], b["p"], b["pi"], rows["q_logged"], rows["q_target"])
    singles = {
        "ips": ope.ips(*args[:3], **kw),
        "snips": ope.snips(*args[:3], **kw),
        "dm": ope.direct_method(rows["q_target"], **kw),
        "dr": ope.doubly_robust(*args, **kw),
        "switch_dr": ope.switch_dr(*args, tau=3.0, **kw),
        "dr_os": ope.dr_shrinkage(*args, lam=9.0, **kw),
    }
    for name, est in singles.items():
        got = every[name]
        assert (got.value, got.ci_low, got.ci_high, got.ess) == pytest.approx((est.value, est.ci_low, est.ci_high, est.ess), rel=1e-12), name
        assert got.n == 600 and got.n_clusters == len(np.unique(groups))
    with pytest.raises(ValueError, match="'q_target'"):
        ope.estimate_all({k: v for k, v in rows.items() if k != "q_target"})


def test_matches_open_bandit_pipeline_reference_formulas() -> None:
    """OBP's estimators written out from its source (one position; action_dist [n, K, 1]), not from ours."""
    rng = np.random.default_rng(3)
    n = 1500
    b = _bandit(n, 3)
    logits = rng.normal(size=(n, K)) * 2
    action_dist = (np.exp(logits) / np.exp(logits).sum(1, keepdims=True))[:, :, None]
    q_hat = np.clip(b["means"] + rng.normal(0, 0.1, size=(n, K)), 0, 1)[:, :, None]
    action, reward, pscore, pos = b["a"], b["r"], b["p"], np.zeros(n, dtype=int)
    idx = np.arange(n)
    iw = action_dist[idx, action, pos] / pscore
    q_pos = q_hat[idx, :, pos]
    pi_pos = action_dist[idx, :, pos]
    dm_rounds = np.average(q_pos, weights=pi_pos, axis=1)
    q_factual = q_hat[idx, action, pos]
    tau, lam = 2.0, 5.0
    reference = {
        "ips": (reward * iw).mean(),
        "snips": (reward * iw / iw.mean()).mean(),
        "dm": dm_rounds.mean(),
        "dr": (dm_rounds + iw * (reward - q_factual)).mean(),
        "switch_dr": (dm_rounds + (iw <= tau).astype(int) * iw * (reward - q_factual)).mean(),
        "dr_os": (dm_rounds + (lam * iw) / (iw**2 + lam) * (reward - q_factual)).mean(),
    }
    assert (iw > tau).any() and (iw <= tau).any()  # tau splits the rows
    rows = {
        "reward": reward,
        "propensity": pscore,
        "pi_logged": action_dist[idx, action, 0],
        "q_logged": q_factual,
        "q_target": (action_dist[:, :, 0] * q_hat[:, :, 0]).sum(1),
    }
    ours = ope.estimate_all(rows, n_boot=2, tau=tau, lam=lam)
    for name, ref in reference.items():
        assert abs(ours[name].value - ref) < 1e-12, (name, ours[name].value, ref)


# --- the clustered bootstrap ----------------------------------------------------------------------


def _naive_row_bootstrap(terms: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([terms[rng.choice(len(terms), len(terms))].mean() for _ in range(n_boot)])


def test_one_row_clusters_reproduce_the_row_bootstrap() -> None:
    b = _bandit(2000, 21)
    ids = np.random.default_rng(0).permutation(2000).astype(str)  # one cluster per row, ids in another order
    clustered = ope.ips(b["r"], b["p"], b["pi"], groups=ids, n_boot=2000, seed=1)
    plain = ope.ips(b["r"], b["p"], b["pi"], n_boot=2000, seed=2)
    assert clustered.n_clusters == 2000 and clustered.value == plain.value
    naive = np.quantile(_naive_row_bootstrap(b["pi"] / b["p"] * b["r"], 2000, 3), [0.025, 0.975])
    width = naive[1] - naive[0]
    for est in (clustered, plain):
        assert abs(est.ci_low - naive[0]) < 0.1 * width and abs(est.ci_high - naive[1]) < 0.1 * width
    # and the width is what the normal approximation of a mean gives
    terms = b["pi"] / b["p"] * b["r"]
    assert clustered.ci_high - clustered.ci_low == pytest.approx(2 * 1.96 * terms.std() / np.sqrt(2000), rel=0.1)


def test_perfectly_correlated_clusters_widen_the_interval() -> None:
    """50 HCPs with 20 identical rows each carry the information of 50 rows, not 1000."""
    b = _bandit(50, 8)
    rng = np.random.default_rng(1)
    ql, qt = rng.random(50), rng.random(50)
    rep = lambda x: np.repeat(x, 20)  # noqa: E731
    hcp = rep(np.array([f"hcp{i:03d}" for i in range(50)]))
    for name, f in (
        ("snips", lambda g, x, **kw: ope.snips(x(b["r"]), x(b["p"]), x(b["pi"]), groups=g, **kw)),
        ("dr", lambda g, x, **kw: ope.doubly_robust(x(b["r"]), x(b["p"]), x(b["pi"]), x(ql), x(qt), groups=g, **kw)),
    ):
        rows_only = f(None, rep, n_boot=1000, seed=5)
        clustered = f(hcp, rep, n_boot=1000, seed=5)
        assert clustered.ci_high - clustered.ci_low > 3 * (rows_only.ci_high - rows_only.ci_low), name
        assert clustered.value == pytest.approx(rows_only.value)
        # equal-size clusters of identical rows: the same as a row bootstrap over the 50 distinct rows
        distinct = f(None, lambda x: x, n_boot=1000, seed=5)
        assert (clustered.ci_low, clustered.ci_high) == pytest.approx((distinct.ci_low, distinct.ci_high), rel=1e-9), name


def test_bootstrap_is_deterministic_by_seed() -> None:
    rows = _tiny_rows() | {k: np.tile(v, 30) for k, v in _tiny_rows().items()}
    groups = np.repeat(np.arange(40), 3)
    a = ope.estimate_all(rows, groups=groups, n_boot=300, seed=9)
    assert a == ope.estimate_all(rows, groups=groups, n_boot=300, seed=9)
    other = ope.estimate_all(rows, groups=groups, n_boot=300, seed=10)
    assert any((a[k].ci_low, a[k].ci_high) != (other[k].ci_low, other[k].ci_high) for k in a)


def test_bad_groups_and_parameters_are_named() -> None:
    with pytest.raises(ValueError, match="groups has shape"):
        ope.ips(R, P, PI, groups=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="groups.*row 2"):
        ope.ips(R, P, PI, groups=np.array([1.0, 2.0, np.nan, 3.0]))
    with pytest.raises(ValueError, match="tau"):
        ope.switch_dr(R, P, PI, QL, QT, tau=-1.0)
    with pytest.raises(ValueError, match="lam"):
        ope.dr_shrinkage(R, P, PI, QL, QT, lam=-1.0)
    with pytest.raises(ValueError, match="target_prob.*row 3"):
        ope.ips(R, P, np.array([1.0, 0.5, 0.0, 1.5]))
    with pytest.raises(ValueError, match="q_logged.*row 0"):
        ope.doubly_robust(R, P, PI, np.array([np.nan, 0.2, 0.4, 0.1]), QT)


# --- paired differences ---------------------------------------------------------------------------


def test_paired_difference_of_a_policy_with_itself_is_exactly_zero() -> None:
    b = _bandit(800, 4)
    rng = np.random.default_rng(2)
    rows = {"reward": b["r"], "propensity": b["p"], "pi_logged": b["pi"], "q_logged": rng.random(800), "q_target": rng.random(800)}
    groups = rng.integers(0, 100, 800)
    for est in ope.ESTIMATORS:
        d = ope.paired_difference(rows, dict(rows), est, groups=groups, n_boot=200)
        assert (d.value, d.ci_low, d.ci_high) == (0.0, 0.0, 0.0), est


def test_paired_difference_against_the_logged_policy() -> None:
    b = _bandit(3000, 6)
    noisy_q = np.clip(b["means"] + 0.1, 0, 1)
    idx = np.arange(3000)
    rows = {"reward": b["r"], "propensity": b["p"], "pi_logged": b["pi"], "q_logged": noisy_q[idx, b["a"]], "q_target": noisy_q[idx, b["target"]]}
    groups = np.repeat(np.arange(600), 5)
    logged = ope.logged_rows(b["r"], b["p"])
    for est in ope.ESTIMATORS:  # every estimator gives the logged policy its mean reward
        assert ope.estimate_all(logged, n_boot=2)[est].value == pytest.approx(b["r"].mean())
    dr = ope.doubly_robust(rows["reward"], rows["propensity"], rows["pi_logged"], rows["q_logged"], rows["q_target"], groups=groups, n_boot=500)
    gain = ope.paired_difference(rows, logged, "dr", groups=groups, n_boot=500)
    assert gain.value == pytest.approx(dr.value - b["r"].mean())
    assert gain.ci_low > 0  # the oracle beats the reps
    assert abs(gain.value - (b["truth"] - b["logged"])) < gain.ci_high - gain.ci_low  # within ~4 standard errors of the true gain
    # a slightly different policy: pairing cancels the shared noise, so the interval is narrower than independent ends suggest
    mixed = dict(rows, pi_logged=0.8 * b["pi"] + 0.2 * b["p"], q_target=0.8 * rows["q_target"] + 0.2 * rows["q_logged"])
    d = ope.paired_difference(rows, mixed, "dr", groups=groups, n_boot=500)
    m = ope.estimate_all(mixed, groups=groups, n_boot=500)["dr"]
    assert d.value == pytest.approx(dr.value - m.value)
    assert d.ci_high - d.ci_low < np.hypot(dr.ci_high - dr.ci_low, m.ci_high - m.ci_low)
    with pytest.raises(ValueError, match="'reward' at row 0"):
        ope.paired_difference(rows, dict(rows, reward=1 - rows["reward"]))
    with pytest.raises(ValueError, match="unknown estimator 'nope'"):
        ope.paired_difference(rows, rows, "nope")


# --- diagnostics and verdict ----------------------------------------------------------------------


def test_diagnostics_hand_computed() -> None:
    d = ope.diagnostics(P, PI, groups=np.array(["a", "a", "b", "c"]), support_mass=np.array([1.0, 0.5, 1.0, 0.8]))
    ess = 4.5**2 / 8.25
    assert d["rows"] == 4 and d["n_clusters"] == 3
    assert d["ess"] == pytest.approx(ess) and d["ess_share"] == pytest.approx(ess / 4)
    assert d["share_positive_weight"] == pytest.approx(0.75)
    assert d["max_weight"] == pytest.approx(2.0) and d["mean_weight"] == pytest.approx(4.5 / 4)
    assert d["ess_clusters"] == pytest.approx(4.5**2 / (4**2 + 0 + 0.5**2))  # cluster sums [4, 0, 0.5]
    assert d["support_mass"] == pytest.approx(3.3 / 4)
    plain = ope.diagnostics(P, PI)
    assert plain["n_clusters"] == 4 and np.isnan(plain["support_mass"]) and plain["ess_clusters"] == pytest.approx(ess)
    with pytest.raises(ValueError, match="support_mass has 2 rows"):
        ope.diagnostics(P, PI, support_mass=np.array([1.0, 1.0]))


def test_diagnostics_mean_weight_tracks_support() -> None:
    """Full support and exact propensities: mean weight ~1; a target half off the logging support: ~0.5."""
    b = _bandit(20000, 2)
    full = ope.diagnostics(b["p"], b["p"])
    assert full["mean_weight"] == pytest.approx(1.0) and full["ess_share"] == pytest.approx(1.0)
    half = ope.diagnostics(b["p"], 0.5 * b["p"])  # half the target's mass on actions never logged
    assert half["mean_weight"] == pytest.approx(0.5)


def test_verdict_thresholds_both_ways() -> None:
    good = {"ess": 150.0, "mean_weight": 0.95, "support_mass": 0.93}
    ok, msg = ope.verdict(good)
    assert ok and msg.startswith("enough overlap to trust") and ">= 100" in msg and ">= 0.9" in msg and "[0.8, 1.2]" in msg
    assert ope.verdict(good | {"ess": 100.0})[0]  # the thresholds themselves pass
    for bad, words in (
        ({"ess": 99.0}, "ESS 99.0 < 100"),
        ({"support_mass": 0.054}, "support mass 0.054 < 0.9"),
        ({"mean_weight": 0.05}, "mean weight 0.050 outside [0.8, 1.2]"),
        ({"mean_weight": 1.3}, "outside"),
    ):
        ok, msg = ope.verdict(good | bad)
        assert not ok and msg.startswith("not enough overlap to trust") and words in msg, msg
    # the caller's config moves the thresholds
    assert ope.verdict(good | {"ess": 99.0}, min_ess=50)[0]
    assert not ope.verdict(good, min_support=0.95)[0]
    assert not ope.verdict(good, mean_weight_band=(0.97, 1.03))[0]
    ok, msg = ope.verdict(good | {"support_mass": float("nan")})
    assert ok and "not checked" in msg
    # end to end from diagnostics
    b = _bandit(5000, 1)
    assert ope.verdict(ope.diagnostics(b["p"], b["p"], support_mass=np.ones(5000)))[0]
    assert not ope.verdict(ope.diagnostics(b["p"], 0.05 * b["p"], support_mass=np.full(5000, 0.05)))[0]
    with pytest.raises(ValueError, match="mean_weight_band"):
        ope.verdict(good, mean_weight_band=(1.2, 0.8))
