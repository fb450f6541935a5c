"""Response calibration: isotonic knots as plain arrays, ECE drops out of sample, bundle scoring is calibrated."""

from __future__ import annotations

import numpy as np
import pytest

from training.calibration import Calibrator, fit_and_check
from training.metrics import expected_calibration_error


def _miscalibrated(n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true_p = rng.uniform(0.02, 0.6, n)
    labels = (rng.random(n) < true_p).astype(float)
    raw = np.clip(true_p**0.5, 0, 1)  # overconfident, but monotone in the truth
    return raw, labels, rng.integers(0, 500, n).astype(str)


def test_isotonic_calibration_lowers_ece_out_of_sample() -> None:
    raw, labels, groups = _miscalibrated()
    cal, fig = fit_and_check(raw, labels, groups)
    assert fig["ece_before"] > 0.1
    assert fig["ece_after"] < 0.02 < fig["ece_before"] / 5
    assert abs(fig["mean_predicted_after"] - fig["observed_rate"]) < 0.01
    assert expected_calibration_error(cal(raw), labels) < 0.02


def test_calibrator_is_monotone_and_roundtrips_as_plain_lists() -> None:
    raw, labels, _ = _miscalibrated(5000, seed=1)
    cal = Calibrator.fit(raw, labels, max_knots=50)
    assert len(cal.x) <= 50
    grid = np.linspace(-0.5, 1.5, 201)
    assert np.all(np.diff(cal(grid)) >= 0) and cal(grid).min() >= 0 and cal(grid).max() <= 1
    data = cal.to_dict()
    assert all(isinstance(v, float) for v in data["x"] + data["y"])
    assert Calibrator.from_dict(data) == cal


def test_torch_and_numpy_calibration_agree() -> None:
    import torch

    raw, labels, _ = _miscalibrated(5000, seed=2)
    cal = Calibrator.fit(raw, labels)
    p = np.random.default_rng(3).uniform(0, 1, (7, 9))
    np.testing.assert_allclose(cal.torch(torch.from_numpy(p)).numpy(), cal(p), atol=1e-9)


def test_bad_knots_fail_naming_the_key() -> None:
    with pytest.raises(ValueError, match="calibration.x"):
        Calibrator.from_dict({"x": "nope", "y": [0.1]})
    with pytest.raises(ValueError, match="non-decreasing"):
        Calibrator((0.1, 0.2), (0.5, 0.4))


def test_bundle_with_calibration_reloads_weights_only_and_scores_calibrated(encoded, tmp_path) -> None:
    import torch

    from training.artifacts import ModelBundle, load_bundle, save_bundle
    from training.model import ModelConfig, NextBestActionModel
    from training.policy import recommend

    data, vocab, scaler = encoded
    torch.manual_seed(0)
    model = NextBestActionModel(ModelConfig(8, len(vocab), len(scaler.columns), "gru", 16, 1, 2, 0.0, 8, history=True)).eval()
    cal = Calibrator((0.0, 1.0), (0.0, 0.5))  # halves every probability
    path = save_bundle(ModelBundle(model, vocab, scaler, {}, cal), tmp_path / "b")
    back = load_bundle(path)
    assert back.calibrator == cal
    batch = next(data.batches(16))
    raw = recommend(back.model, batch)["expected_response"]
    calibrated = recommend(back.model, batch, calibrator=back.calibrator)["expected_response"]
    torch.testing.assert_close(calibrated, raw / 2)
