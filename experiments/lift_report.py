"""How `nba lift` shows its figures: rich tables in the terminal and a self-contained HTML report with plots."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import SEGMENTS
from experiments.lift import GROUPS

LABELS = {
    "responses_per_hcp_week": "responses/HCP-wk (feedback)",
    "response_rate_per_suggestion": "responses/suggestion",
    "touches_per_hcp_week": "touches/HCP-wk (CRM)",
    "touch_responses_per_hcp_week": "responses/HCP-wk (CRM)",
    "responses_per_touch": "responses/touch (CRM)",
    "prescriptions_per_hcp_week": "Rx boxes/HCP-wk",
    "prescriptions_per_hcp_week_adjusted": "Rx boxes/HCP-wk adj.",
}
# One colour per series, fixed per metric so that no two series of the report share one
# (matplotlib's tab10, in the metrics' order above).
COLOURS = dict(zip(LABELS, ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2")))
ARM_COLOURS = {"served": "#1f77b4", "holdout": "#7f7f7f"}
# Panels of the lift plot: metrics on one axis share a unit.
PANELS = (
    ("Responses per HCP-week", ("responses_per_hcp_week", "touch_responses_per_hcp_week")),
    ("Responses per suggestion / touch", ("response_rate_per_suggestion", "responses_per_touch")),
    ("Touches per HCP-week", ("touches_per_hcp_week",)),
    ("Prescriptions (boxes) per HCP-week", ("prescriptions_per_hcp_week", "prescriptions_per_hcp_week_adjusted")),
)


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def lift_rows(estimates: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Table rows: metric, group, HCPs, served, holdout, lift, interval, excludes 0?, theta (adjusted rows)."""
    rows = []
    for metric, by in estimates.items():
        for g in ("all", *SEGMENTS):
            e = by.get(g)
            if e is None:
                continue
            sig = "" if not np.isfinite(e.ci_low) else ("yes" if e.ci_low > 0 or e.ci_high < 0 else "no")
            rows.append(
                [
                    LABELS.get(metric, metric),
                    g,
                    f"{e.n_served}/{e.n_holdout}",
                    _fmt(e.served),
                    _fmt(e.holdout),
                    _fmt(e.lift),
                    f"[{_fmt(e.ci_low)}, {_fmt(e.ci_high)}]",
                    sig,
                    "" if e.theta is None else _fmt(e.theta),
                ]
            )
    return rows


HEAD = ["metric", "tier", "HCPs s/h", "served", "holdout", "lift", "interval", "excl. 0", "theta"]


def print_tables(result: dict[str, Any], console: Any = None) -> None:
    """Lift and acceptance tables with rich."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or logged: keep each row on one line
            console = Console(width=130)
    f = result["figures"]
    t = Table(
        title=f"Lift of served suggestions over the randomised holdout, {f['first_week']} to {f['last_week']} ({f['weeks']} weeks, "
        f"{int(f['confidence'] * 100)}% bootstrap intervals over HCPs; tiers: {f['tier_source']})"
    )
    for h in HEAD:
        t.add_column(h, justify="left" if h in ("metric", "group") else "right")
    for r in lift_rows(result["estimates"]):
        t.add_row(*r)
    console.print(t)
    acc = result["acceptance"]
    a = Table(title="Reps' acceptance of rep-executed suggestions (accepted or done / decided)")
    for h in ("group", "served", "holdout", "all"):
        a.add_column(h, justify="left" if h == "group" else "right")
    for key, label in (("by_tier", "segment"), ("by_week", "week")):
        arm = acc[f"{key}_arm"]
        for _, r in acc[key].iterrows():
            g = r[label]
            cell = {}
            for side in ("served", "holdout"):
                m = arm[(arm[label] == g) & (arm["arm"] == side)]
                cell[side] = f"{m['rate'].iloc[0]:.2f} (n={int(m['n'].iloc[0])})" if len(m) else "-"
            name = f"tier {g}" if label == "segment" else f"week {pd.Timestamp(g).date().isoformat()}"
            a.add_row(name, cell["served"], cell["holdout"], f"{r['rate']:.2f} (n={int(r['n'])})")
    console.print(a)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plots(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(title, base64 PNG): lift by tier with intervals per metric, acceptance over time by arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    est = result["estimates"]
    panels = [(title, [m for m in metrics if m in est]) for title, metrics in PANELS]
    panels = [(title, ms) for title, ms in panels if ms]
    groups = list(GROUPS)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.8), squeeze=False)
    for ax, (title, metrics) in zip(axes[0], panels):
        width = 0.8 / len(metrics)
        for j, metric in enumerate(metrics):
            e = [est[metric][g] for g in groups]
            y = np.array([x.lift for x in e])
            err = np.array([[x.lift - x.ci_low for x in e], [x.ci_high - x.lift for x in e]])
            xs = np.arange(len(groups)) + (j - (len(metrics) - 1) / 2) * width
            ax.errorbar(xs, y, yerr=np.nan_to_num(err), fmt="o", capsize=4, color=COLOURS[metric], label=LABELS[metric])
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(groups)), ["all", *[f"tier {s}" for s in SEGMENTS]])
        ax.set_title(title, fontsize=9)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), fontsize=8, frameon=False)  # below the axes, never over a tier
    axes[0][0].set_ylabel("served - holdout")
    fig.tight_layout()
    out.append(("Lift by tier (points: served minus holdout; bars: bootstrap interval over HCPs)", _png(fig)))
    plt.close(fig)
    arm = result["acceptance"]["by_week_arm"]
    if len(arm):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for side, g in arm.groupby("arm"):
            ax.plot(pd.to_datetime(g["week"]), g["rate"], "o-", label=side, color=ARM_COLOURS[side])
        ax.set_ylim(0, 1)
        ax.set_ylabel("acceptance rate")
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
        fig.autofmt_xdate()
        fig.tight_layout()
        out.append(("Reps' acceptance rate per week", _png(fig)))
        plt.close(fig)
    return out


def _acceptance_note(f: dict[str, Any]) -> str:
    r = f.get("acceptance_rate")
    if r is None or not np.isfinite(r):
        return "No rep-executed suggestion has a rep's decision (accepted, done, dismissed or snoozed) yet."
    return f"Overall {r:.3f} of decided rep-executed suggestions."


def _width_note(f: dict[str, Any]) -> str:
    r = f.get("prescriptions_adjusted_ci_width_ratio")
    if r is None or not np.isfinite(r):
        return ""
    return f"The adjusted interval is {r:.2f} times the width of the raw one (theta {f.get('prescriptions_per_hcp_week_adjusted_theta', float('nan')):.3f})."


def write_html(result: dict[str, Any], path: str | Path, title: str = "nba lift") -> Path:
    """A self-contained HTML report (tables and inline PNG plots), written atomically."""
    path = Path(path)
    f = result["figures"]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in lift_rows(result["estimates"]))
    acc = result["acceptance"]["by_tier_arm"]
    acc_rows = "".join(
        f"<tr><td>tier {html.escape(str(r['segment']))}</td><td>{r['arm']}</td><td>{r['rate']:.3f}</td><td>{int(r['n'])}</td></tr>" for _, r in acc.iterrows()
    )
    imgs = "".join(f"<h3>{html.escape(t)}</h3><img src='data:image/png;base64,{b}'/>" for t, b in plots(result))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}</style></head><body>
<h1>Lift of served suggestions over the randomised holdout</h1>
<p>Window {f["first_week"]} to {f["last_week"]} ({f["weeks"]} weeks); {f["hcps_served"]} served and {f["hcps_holdout"]} holdout HCPs;
{f["suggestions"]} suggestions. Audit trail {html.escape(str(f.get("audit_url")))}; contract dataset {html.escape(str(f.get("data_dir")))}.
The holdout assignment is the one recorded in the audit trail; tiers from {html.escape(str(f.get("tier_source")))}.</p>
<p>Intervals: {int(f["confidence"] * 100)}% percentile bootstrap over HCPs ({f["n_boot"]} replicates), stratified by arm: the HCP is the
unit of randomisation, so each HCP's weeks are resampled together. Each figure is a mean per HCP-week from the HCP's first
suggestion in the window. Adjusted prescriptions subtract theta &times; (baseline &minus; mean baseline), the baseline being the HCP's
mean weekly boxes over the {f.get("baseline_weeks")} weeks before its first suggestion ({f.get("baseline_weeks_covered")} of them delivered;
{f.get("hcps_without_baseline")} HCPs without any get the mean); theta = cov(Rx, baseline) / var(baseline) over both arms, re-fitted in every replicate.
{_width_note(f)}</p>
<table><tr>{"".join(f"<th>{h}</th>" for h in HEAD)}</tr>{rows}</table>
<h2>Reps' acceptance</h2><p>{_acceptance_note(f)}</p>
<table><tr><th>tier</th><th>arm</th><th>rate</th><th>n</th></tr>{acc_rows}</table>
{imgs}</body></html>"""
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(doc)
    tmp.replace(path)
    return path
