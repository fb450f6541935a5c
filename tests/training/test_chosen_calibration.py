"""Calibration on chosen actions: the winner's curse of an argmax over noisy scores is corrected, and only with evidence."""

from __future__ import annotations

import numpy as np

from training.calibration import Calibrator, chosen_action_calibration


def _world(n: int = 40_000, seed: int = 0):
    # Each row: 20 candidate actions of true rate 0.2; the model's scores are truth + noise, the
    # model chooses its argmax, so its chosen score is biased upwards. Logged actions are uniform.
    rng = np.random.default_rng(seed)
    k = 20
    noisy = np.clip(0.2 + rng.normal(0, 0.12, (n, k)), 0.01, 0.99)
    choice = noisy.argmax(1)
    logged = rng.integers(0, k, n)
    labels = (rng.random(n) < 0.2).astype(float)
    return noisy[np.arange(n), choice], logged == choice, labels, np.full(n, 1 / k), np.arange(n) % 500


def test_chosen_action_calibration_removes_the_winners_curse() -> None:
    chosen_raw, matched, labels, prop, groups = _world()
    identity = Calibrator((0.0, 1.0), (0.0, 1.0))
    cal, figures = chosen_action_calibration(identity, chosen_raw, matched, labels, prop, groups)
    assert figures["chosen_mean_predicted_before"] > 0.35  # the curse: ~0.4 predicted where 0.2 happens
    assert abs(figures["chosen_mean_realised"] - 0.2) < 0.03
    assert abs(figures["chosen_mean_predicted_after"] - figures["chosen_mean_realised"]) < 0.04  # cross-fitted
    assert abs(cal(chosen_raw).mean() - 0.2) < 0.05
    assert np.all(np.diff(cal.y) >= 0)


def test_without_matches_nothing_changes() -> None:
    chosen_raw, matched, labels, prop, groups = _world(2_000)
    identity = Calibrator((0.0, 1.0), (0.0, 1.0))
    cal, figures = chosen_action_calibration(identity, chosen_raw, np.zeros_like(matched), labels, prop, groups)
    np.testing.assert_allclose(cal(chosen_raw), chosen_raw, atol=1e-9)
    assert figures["chosen_rows"] == 0 and figures["chosen_shrink_weight"] == 0.0


def test_few_matches_correct_little() -> None:
    chosen_raw, matched, labels, prop, groups = _world(4_000, seed=1)
    identity = Calibrator((0.0, 1.0), (0.0, 1.0))
    few = matched & (np.arange(len(matched)) < 1_500)
    _, small = chosen_action_calibration(identity, chosen_raw, few, labels, prop, groups)
    _, large = chosen_action_calibration(identity, *_world(40_000, seed=1)[:2], *_world(40_000, seed=1)[2:])
    assert 0 < small["chosen_shrink_weight"] < large["chosen_shrink_weight"] < 1
