"""The evaluation's plots: one distinct colour per policy, error bars where an interval is known, legends outside the axes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer

from training.evaluation_plots import calibration_plot, channel_mix_plot, policy_colours, policy_value_plot, value_by_tier_plot

# The simulator judge's policies: 14 of them, two oracles among them (the orange pair).
POLICIES = [
    "logged",
    "model",
    "model_imitation",
    "popularity",
    "aggregate",
    "rules",
    "population",
    "population_timing",
    "oracle",
    "oracle_no_fatigue",
    "oracle_no_timing",
    "oracle_no_content",
    "oracle_from_logs",
    "champion",
]
TIERS = ["A", "B", "C", "D"]


def _drawn(fig):
    fig.draw_without_rendering()  # runs the layout, so extents are final
    return fig


def _outside(fig, ax) -> None:
    """The axes' legend does not overlap the axes and stays inside the figure (nothing clipped)."""
    legend = ax.get_legend()
    assert legend is not None
    lb, ab, fb = legend.get_window_extent(), ax.get_window_extent(), fig.bbox
    assert not lb.overlaps(ab), (lb, ab)
    assert lb.x1 <= fb.x1 + 1 and lb.y0 >= fb.y0 - 1


def test_palette_is_distinct_and_stable() -> None:
    colours = policy_colours(POLICIES)
    assert len({to_hex(c) for c in colours.values()}) == len(POLICIES) == 14
    assert colours["oracle"] != colours["oracle_no_fatigue"]
    assert policy_colours(["oracle", "model"])["oracle"] == colours["oracle"]  # a policy keeps its colour across plots
    many = policy_colours([f"p{i}" for i in range(40)])  # beyond the palette: still no repeats
    assert len({to_hex(c) for c in many.values()}) == 40


def test_value_by_tier_gives_each_of_14_policies_its_colour_and_keeps_the_legend_off_the_bars() -> None:
    rng = np.random.default_rng(0)
    tiers = {p: {t: float(rng.uniform(0.1, 0.6)) for t in TIERS} for p in POLICIES}
    fig = _drawn(value_by_tier_plot(tiers, TIERS))
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert len(bars) == 14 and all(len(b.patches) == 4 for b in bars)
    per_policy = [{to_hex(p.get_facecolor()) for p in b.patches} for b in bars]
    assert all(len(s) == 1 for s in per_policy) and len(set().union(*per_policy)) == 14
    assert [b.patches[3].get_height() for b in bars] == pytest.approx([tiers[p]["D"] for p in POLICIES])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == POLICIES
    _outside(fig, ax)


def test_policy_value_has_error_bars_for_known_intervals_only() -> None:
    values = {
        "model": (0.542, 0.414, 0.679),
        "champion": (0.50, 0.40, 0.61),
        "logged": (0.475, 0.46, 0.49),
        "rules": (0.44, 0.40, 0.48),
        "oracle": (0.70, math.nan, math.nan),
    }
    fig = _drawn(policy_value_plot(values, "policy value on weeks 2025-10-06..2025-12-01 (dr)"))
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 5
    with_x = [c for c in bars if c.has_xerr]
    assert len(with_x) == 4  # the oracle's value is known exactly: no interval drawn
    model = with_x[0]
    (segment,) = model.lines[2][0].get_segments()
    assert segment[:, 0] == pytest.approx([0.414, 0.679])  # the interval's ends, as given
    colours = [to_hex(c.lines[0].get_color()) for c in bars]
    assert len(set(colours)) == 5
    assert [t.get_text() for t in ax.get_yticklabels()] == list(reversed(values))
    assert "model: 0.5420 [0.4140, 0.6790]" in [t.get_text() for t in ax.get_legend().get_texts()]
    _outside(fig, ax)


def test_channel_mix_shares_and_calibration_curves() -> None:
    mix = {"logged": {"email": 30, "visit": 10}, "model": {"email": 5, "visit": 15, "phone": 20}}
    fig = _drawn(channel_mix_plot(mix, ["visit", "email", "phone"]))
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [p.get_height() for p in bars[0].patches] == pytest.approx([0.25, 0.75, 0.0])
    assert [p.get_height() for p in bars[1].patches] == pytest.approx([0.375, 0.125, 0.5])
    assert to_hex(bars[0].patches[0].get_facecolor()) != to_hex(bars[1].patches[0].get_facecolor())
    _outside(fig, ax)

    rng = np.random.default_rng(1)
    p = rng.uniform(size=400)
    curves = {"raw": (p, (rng.uniform(size=400) < p**2).astype(float)), "calibrated": (p, (rng.uniform(size=400) < p).astype(float))}
    fig = _drawn(calibration_plot(curves))
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert {"raw", "calibrated", "perfect calibration"} <= set(lines)
    assert to_hex(lines["raw"].get_color()) != to_hex(lines["calibrated"].get_color())
    _outside(fig, ax)


def test_calibration_plot_is_logged_to_mlflow_through_jobs(tmp_path, monkeypatch) -> None:
    import mlflow
    from mlflow import MlflowClient

    from training import tracking
    from training.config import TrainingConfig
    from training.jobs import _calibration_plot

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    cfg = TrainingConfig.model_validate({"tracking": {"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_location": str(tmp_path / "artifacts")}})
    tracking.setup(cfg.tracking)
    p = np.linspace(0.01, 0.99, 50)
    with mlflow.start_run() as run:
        _calibration_plot(mlflow, {"raw": (p, (p > 0.5).astype(float))}, "plots/calibration.png")
    (art,) = MlflowClient().list_artifacts(run.info.run_id, "plots")
    assert art.path == "plots/calibration.png" and art.file_size > 1000
