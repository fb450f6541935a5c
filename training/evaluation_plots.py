"""The evaluation's plots as matplotlib figures: policy value with intervals, value by tier, channel mix, calibration.

Pure: each function takes figures and returns a ``matplotlib.figure.Figure`` (no pyplot, no global
state); ``log_figure`` is the one that writes (to MLflow). Every policy gets its own colour, the same
in every plot of a run, and legends sit outside the axes so they never cover bars.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# Fixed colours for the policies every evaluation shows, so a reader learns them once.
KNOWN_COLOURS: dict[str, str] = {
    "model": "#1f77b4",  # blue
    "champion": "#9467bd",  # purple
    "logged": "#7f7f7f",  # grey
    "rules": "#8c564b",  # brown
    "oracle": "#ff7f0e",  # orange
}
# Then, in order, the rest: tab10's other hues, then colours chosen to stay apart from those (no two alike).
_PALETTE: tuple[str, ...] = (
    "#2ca02c",
    "#d62728",
    "#e377c2",
    "#bcbd22",
    "#17becf",  # green, red, pink, olive, cyan
    "#000000",
    "#393b79",
    "#aec7e8",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#1b9e77",
    "#e6ab02",
    "#ffbb78",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
    "#d95f02",
    "#7570b3",
    "#e7298a",
    "#66a61e",
    "#a6761d",
    "#666666",
)


def policy_colours(names: Sequence[str]) -> dict[str, Any]:
    """One distinct colour per name: the fixed one for known policies, the next unused palette colour for the rest."""
    from matplotlib.colors import to_hex

    out: dict[str, Any] = {}
    used = {KNOWN_COLOURS[n] for n in names if n in KNOWN_COLOURS}
    spare = iter([c for c in _PALETTE if c not in used])
    for name in names:
        if name in out:
            continue
        colour = KNOWN_COLOURS.get(name)
        if colour is None:
            colour = next(spare, None)
        if colour is None:  # more policies than the palette: evenly spaced hues, still all different
            import matplotlib

            extra = len(names)
            colour = to_hex(matplotlib.colormaps["hsv"](len(out) / extra))
        out[name] = colour
    if len({to_hex(c) for c in out.values()}) != len(out):
        raise AssertionError(f"policy colours repeat: {out}")
    return out


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    # Constrained layout makes room for the legends placed outside the axes.
    return Figure(figsize=(width, height), layout="constrained")


def _legend_outside(ax: Any, ncol: int = 1) -> Any:
    """The axes' legend to the right of the axes, outside them."""
    return ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, ncol=ncol, frameon=False)


def policy_value_plot(values: dict[str, tuple[float, float, float]], title: str, *, xlabel: str = "estimated policy value") -> Any:
    """One point per policy (value, interval low, interval high; NaN ends: no error bar) with its interval, labelled outside the axes."""
    names = list(values)
    colours = policy_colours(names)
    fig = _figure(8.0, 1.2 + 0.45 * max(len(names), 1))
    ax = fig.add_subplot()
    for i, name in enumerate(names):
        value, low, high = (float(x) for x in values[name])
        y = len(names) - 1 - i  # first policy on top
        if math.isfinite(low) and math.isfinite(high):
            xerr = np.array([[max(value - low, 0.0)], [max(high - value, 0.0)]])
            label = f"{name}: {value:.4f} [{low:.4f}, {high:.4f}]"
        else:
            xerr = None
            label = f"{name}: {value:.4f}"
        ax.errorbar([value], [y], xerr=xerr, fmt="o", color=colours[name], ecolor=colours[name], capsize=5, markersize=7, lw=2, label=label)
    ax.set_yticks(range(len(names)), list(reversed(names)))
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    _legend_outside(ax)
    return fig


def value_by_tier_plot(
    tiers: dict[str, dict[str, float]], order: Sequence[str] | None = None, *, ylabel: str = "expected positive responses per HCP-week"
) -> Any:
    """Grouped bars: one group per tier (``order``, default the first policy's), one colour per policy, legend outside."""
    names = list(tiers)
    groups = list(order) if order is not None else list(next(iter(tiers.values()), {}))
    colours = policy_colours(names)
    fig = _figure(9.0 + 0.1 * len(names), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        ax.bar(x + i * width, [tiers[name].get(g, np.nan) for g in groups], width, color=colours[name], label=name)
    ax.set_xticks(x + 0.4 - width / 2, groups)
    ax.set_xlabel("tier")
    ax.set_ylabel(ylabel)
    _legend_outside(ax, ncol=1 if len(names) <= 16 else 2)
    return fig


def channel_mix_plot(mix: dict[str, dict[str, int]], channels: Sequence[str] | None = None) -> Any:
    """Share of touches per channel, one colour per policy, legend outside."""
    if channels is None:
        from contract.schema import CHANNELS

        channels = CHANNELS
    names = list(mix)
    colours = policy_colours(names)
    fig = _figure(9.0, 4.0)
    ax = fig.add_subplot()
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(channels))
    for i, name in enumerate(names):
        total = max(sum(mix[name].values()), 1)
        ax.bar(x + i * width, [mix[name].get(c, 0) / total for c in channels], width, color=colours[name], label=name)
    ax.set_xticks(x + 0.4 - width / 2, list(channels), rotation=30, ha="right")
    ax.set_ylabel("share of touches")
    _legend_outside(ax)
    return fig


def calibration_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], bins: int = 10) -> Any:
    """Reliability diagram of each (probabilities, labels) pair against the diagonal, legend outside."""
    from training.metrics import calibration_curve

    colours = policy_colours(list(curves))
    fig = _figure(7.0, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    for label, (probs, y) in curves.items():
        mean_p, rate, count = calibration_curve(np.asarray(probs, dtype=np.float64), np.asarray(y, dtype=np.float64), bins)
        ok = count > 0
        ax.plot(mean_p[ok], rate[ok], "o-", color=colours[label], label=label)
    ax.set_xlabel("predicted P(response)")
    ax.set_ylabel("observed response rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    _legend_outside(ax)
    return fig


def log_figure(mlflow: Any, fig: Any, name: str) -> None:
    """Write ``fig`` to the active MLflow run as ``name`` (legends outside the axes included)."""
    mlflow.log_figure(fig, name, save_kwargs={"bbox_inches": "tight", "dpi": 110})
