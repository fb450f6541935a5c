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

LABELS = {
    "responses_per_hcp_week": "responses/HCP-wk",
    "response_rate_per_suggestion": "responses/suggestion",
    "prescriptions_per_hcp_week": "Rx boxes/HCP-wk",
    "prescriptions_per_hcp_week_adjusted": "Rx boxes/HCP-wk adj.",
}


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def lift_rows(estimates: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Table rows: metric, group, served, holdout, lift, interval, significant?"""
    rows = []
    for metric, by in estimates.items():
        for g in ("all", *SEGMENTS):
            e = by.get(g)
            if e is None:
                continue
            sig = "" if not np.isfinite(e.ci_low) else ("yes" if e.ci_low > 0 or e.ci_high < 0 else "no")
            rows.append([LABELS.get(metric, metric), g, f"{e.n_served}/{e.n_holdout}",
                         _fmt(e.served), _fmt(e.holdout), _fmt(e.lift), f"[{_fmt(e.ci_low)}, {_fmt(e.ci_high)}]", sig])
    return rows


HEAD = ["metric", "tier", "HCPs s/h", "served", "holdout", "lift", "interval", "excl. 0"]


def print_tables(result: dict[str, Any], console: Any = None) -> None:
    """Lift and acceptance tables with rich."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # piped or logged: keep each row on one line
            console = Console(width=130)
    f = result["figures"]
    t = Table(title=f"Lift of served suggestions over the randomised holdout, {f['first_week']} to {f['last_week']} ({f['weeks']} weeks, {int(f['confidence'] * 100)}% bootstrap intervals over HCPs)")
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
    fig, axes = plt.subplots(1, len(est), figsize=(4.2 * len(est), 3.4), squeeze=False)
    for ax, (metric, by) in zip(axes[0], est.items()):
        groups = ["all", *SEGMENTS]
        e = [by[g] for g in groups]
        y = np.array([x.lift for x in e])
        err = np.array([[x.lift - x.ci_low for x in e], [x.ci_high - x.lift for x in e]])
        ax.errorbar(np.arange(len(groups)), y, yerr=np.nan_to_num(err), fmt="o", capsize=4)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(groups)), ["all", *[f"tier {s}" for s in SEGMENTS]])
        ax.set_title(LABELS.get(metric, metric), fontsize=9)
    axes[0][0].set_ylabel("served - holdout")
    fig.tight_layout()
    out.append(("Lift by tier (points: served minus holdout; bars: bootstrap interval)", _png(fig)))
    plt.close(fig)
    arm = result["acceptance"]["by_week_arm"]
    if len(arm):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for side, g in arm.groupby("arm"):
            ax.plot(pd.to_datetime(g["week"]), g["rate"], "o-", label=side)
        ax.set_ylim(0, 1)
        ax.set_ylabel("acceptance rate")
        ax.legend()
        fig.autofmt_xdate()
        fig.tight_layout()
        out.append(("Reps' acceptance rate per week", _png(fig)))
        plt.close(fig)
    return out


def write_html(result: dict[str, Any], path: str | Path, title: str = "nba lift") -> Path:
    """A self-contained HTML report (tables and inline PNG plots), written atomically."""
    path = Path(path)
    f = result["figures"]
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in lift_rows(result["estimates"]))
    acc = result["acceptance"]["by_tier_arm"]
    acc_rows = "".join(f"<tr><td>tier {html.escape(str(r['segment']))}</td><td>{r['arm']}</td><td>{r['rate']:.3f}</td><td>{int(r['n'])}</td></tr>" for _, r in acc.iterrows())
    imgs = "".join(f"<h3>{html.escape(t)}</h3><img src='data:image/png;base64,{b}'/>" for t, b in plots(result))
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child,td:nth-child(2){{text-align:left}}</style></head><body>
<h1>Lift of served suggestions over the randomised holdout</h1>
<p>Window {f['first_week']} to {f['last_week']} ({f['weeks']} weeks); {f['hcps_served']} served and {f['hcps_holdout']} holdout HCPs;
{f['suggestions']} suggestions. Intervals: {int(f['confidence'] * 100)}% percentile bootstrap over HCPs ({f['n_boot']} replicates), stratified by arm.
The holdout assignment is the one recorded in the audit trail.</p>
<table><tr>{''.join(f'<th>{h}</th>' for h in HEAD)}</tr>{rows}</table>
<h2>Reps' acceptance</h2><p>Overall {f['acceptance_rate']:.3f} of decided rep-executed suggestions.</p>
<table><tr><th>tier</th><th>arm</th><th>rate</th><th>n</th></tr>{acc_rows}</table>
{imgs}</body></html>"""
    tmp = path.with_name(f".{path.name}.tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(doc)
    tmp.replace(path)
    return path
