"""Calibrating the response head: an isotonic map from raw to calibrated P(response), kept as plain arrays.

The network's raw probabilities rank well but need not be calibrated (IPS weighting, class
balance and early stopping all shift them). ``Calibrator.fit`` fits isotonic regression on
validation weeks; the result is its knots (``x`` raw, ``y`` calibrated), applied by linear
interpolation and clipped at the ends. It travels in the bundle's ``model.json`` as two lists of
floats, so loading a model stays ``weights_only`` and pickle-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Calibrator:
    """Monotone piecewise-linear map raw P -> calibrated P through the knots (x, y)."""

    x: tuple[float, ...]
    y: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y) or len(self.x) < 1:
            raise ValueError(f"calibration: x and y must be equally long and non-empty, got {len(self.x)} and {len(self.y)}")
        if np.any(np.diff(self.x) < 0) or np.any(np.diff(self.y) < 0):
            raise ValueError("calibration: knots must be non-decreasing in x and y")
        if min(self.y) < 0 or max(self.y) > 1:
            raise ValueError("calibration: y must lie in [0, 1]")

    @classmethod
    def fit(cls, probs: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None, max_knots: int = 200) -> Calibrator:
        """Isotonic regression of ``labels`` (0/1) on raw ``probs``; at most ``max_knots`` knots."""
        from sklearn.isotonic import IsotonicRegression

        p = np.asarray(probs, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if len(p) != len(y) or not len(p):
            raise ValueError(f"calibration: need equally many probabilities and labels (> 0), got {len(p)} and {len(y)}")
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y, sample_weight=weights)
        kx, ky = np.asarray(iso.X_thresholds_, np.float64), np.asarray(iso.y_thresholds_, np.float64)
        if len(kx) > max_knots:  # thin evenly; the map stays monotone
            keep = np.unique(np.linspace(0, len(kx) - 1, max_knots).round().astype(int))
            kx, ky = kx[keep], ky[keep]
        return cls(tuple(kx.tolist()), tuple(np.clip(ky, 0.0, 1.0).tolist()))

    def __call__(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (numpy)."""
        return np.interp(np.asarray(probs, dtype=np.float64), self.x, self.y)

    def torch(self, probs: Any) -> Any:
        """Calibrated probabilities for a tensor of any shape (same device and dtype)."""
        import torch

        x = torch.tensor(self.x, dtype=probs.dtype, device=probs.device)
        y = torch.tensor(self.y, dtype=probs.dtype, device=probs.device)
        if len(self.x) == 1:
            return torch.full_like(probs, float(self.y[0]))
        p = probs.clamp(x[0], x[-1])
        hi = torch.searchsorted(x, p.contiguous(), right=False).clamp(1, len(self.x) - 1)
        x0, x1, y0, y1 = x[hi - 1], x[hi], y[hi - 1], y[hi]
        t = torch.where(x1 > x0, (p - x0) / (x1 - x0).clamp_min(1e-12), torch.zeros_like(p))
        return y0 + t * (y1 - y0)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-able knots."""
        return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        """Inverse of ``to_dict``; a bad entry is an error naming the key."""
        for key in ("x", "y"):
            if not isinstance(data.get(key), list):
                raise ValueError(f"calibration.{key}: expected a list of floats, got {type(data.get(key)).__name__}")
        return cls(tuple(float(v) for v in data["x"]), tuple(float(v) for v in data["y"]))


def fit_and_check(probs: np.ndarray, labels: np.ndarray, groups: np.ndarray, n_bins: int = 10) -> tuple[Calibrator, dict[str, float]]:
    """Calibrator fitted on all rows, with ECE before/after measured honestly by two-fold cross-fitting over ``groups`` (e.g. HCP ids).

    Each half of the groups is scored by a calibrator fitted on the other half, so the "after"
    figure is out of sample.
    """
    from training.metrics import expected_calibration_error

    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    fold = (codes * 2654435761 % 2**32) % 2 == 0  # a fixed hash of the group, same split every run
    out = p.copy()
    for part in (fold, ~fold):
        if part.any() and (~part).any():
            out[part] = Calibrator.fit(p[~part], y[~part])(p[part])
    figures = {
        "ece_before": expected_calibration_error(p, y, n_bins),
        "ece_after": expected_calibration_error(out, y, n_bins),
        "mean_predicted_before": float(p.mean()) if len(p) else float("nan"),
        "mean_predicted_after": float(out.mean()) if len(p) else float("nan"),
        "observed_rate": float(y.mean()) if len(y) else float("nan"),
    }
    return Calibrator.fit(p, y), figures


def chosen_action_calibration(
    base: Calibrator,
    chosen_raw: np.ndarray,
    matched: np.ndarray,
    labels: np.ndarray,
    propensity: np.ndarray,
    groups: np.ndarray,
    *,
    clip: float = 20.0,
    prior_rows: float = 100.0,
) -> tuple[Calibrator, dict[str, float]]:
    """Correct ``base`` for selection: calibrate on the actions the model itself would choose.

    The served probability is the maximum of many noisy estimates, so it is biased upwards (the
    winner's curse), even when logged rows are calibrated. On validation rows the outcome of the
    model's choice is seen where the logged action matches that choice (``matched``: the caller
    says on what, e.g. the channel); weighting those rows by 1 / logged propensity (clipped; 1
    where unknown) makes them stand for every row where the model would choose so. An isotonic
    map of outcome on ``base(chosen_raw)`` over them is shrunk towards ``base`` by its effective
    size (n_eff / (n_eff + prior_rows)): few matches, little correction. Returns the composed calibrator and figures measured by two-fold
    cross-fitting over ``groups`` (HCPs).
    """
    p = base(np.asarray(chosen_raw, dtype=np.float64))
    y = np.asarray(labels, dtype=np.float64)
    m = np.asarray(matched, dtype=bool)
    prop = np.asarray(propensity, dtype=np.float64)
    w = np.where(np.isfinite(prop) & (prop > 0), np.minimum(1.0 / np.where(prop > 0, prop, 1.0), clip), 1.0)

    def fit(rows: np.ndarray) -> Any:
        sel = rows & m
        if sel.sum() < 20 or len(np.unique(y[sel])) < 2:
            return lambda q: q, 0.0
        ww = w[sel]
        n_eff = ww.sum() ** 2 / (ww**2).sum()
        a = n_eff / (n_eff + prior_rows)
        iso = Calibrator.fit(p[sel], y[sel], weights=ww, max_knots=50)
        return (lambda q: a * iso(q) + (1 - a) * q), float(a)

    codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)[1]
    fold = (codes * 2654435761 % 2**32) % 2 == 0
    out = p.copy()
    for part in (fold, ~fold):
        if part.any() and (~part).any():
            out[part] = fit(~part)[0](p[part])

    def snips(values: np.ndarray) -> float:
        return float((w[m] * values[m]).sum() / w[m].sum()) if m.any() else float("nan")

    final, a = fit(np.ones(len(p), dtype=bool))
    grid = np.unique(np.r_[np.asarray(base.x), np.linspace(0.0, 1.0, 101)])
    composed = Calibrator(tuple(grid.tolist()), tuple(np.clip(np.maximum.accumulate(final(base(grid))), 0.0, 1.0).tolist()))
    figures = {
        "chosen_rows": float(m.sum()),
        "chosen_share": float(m.mean()) if len(m) else float("nan"),
        "chosen_mean_predicted_before": snips(p),
        "chosen_mean_realised": snips(y),
        "chosen_mean_predicted_after": snips(out),
        "chosen_shrink_weight": a,
    }
    return composed, figures
