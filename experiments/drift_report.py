"""One drift verdict in the HTML reports: the block `nba monitor` prints, at the top of Evidently's page.

Evidently's per-column tests call a column drifted past one fixed threshold; `nba monitor` judges
each column against its group's bar (profile, response, activity, sequence) raised to a multiple
of the column's noise floor, then decides per group (``experiments.drift_stats.verdict``). Left as
they were, the two disagreed (Evidently: "drift detected" for ``touches_total``; the CLI: no
drift). So the report's column tests are given the same bars (``column_bars``), and the page opens
with the CLI's verdict and reasons (``verdict_block``); Evidently's panels below are the detail.
"""

from __future__ import annotations

import html
from typing import Any

from experiments import drift_stats as ds

BLOCK_ID = "nba-verdict"


def column_bar(column: str, floor: float, t: Any, *, sequence: bool = False) -> float:
    """The score at which `nba monitor`'s rule calls ``column`` moved: its group's bar, or ``t.noise_multiple`` x its noise floor if higher."""
    group = ds.feature_group(column)
    if sequence:
        bar = t.activity_score if group == "activity" else t.sequence_score
    else:
        bar = {"profile": t.profile_score, "response": t.feature_score, "activity": t.activity_score}[group]
    return float(max(bar, t.noise_multiple * float(floor or 0.0)))


def column_bars(summary: dict[str, Any], t: Any) -> dict[str, float]:
    """Per feature and sequence statistic of a monitor summary, the bar its rule uses (``column_bar``)."""
    bars = {r["column"]: column_bar(r["column"], r.get("floor", 0.0), t) for r in summary.get("features", [])}
    bars.update({r["column"]: column_bar(r["column"], r.get("floor", 0.0), t, sequence=True) for r in summary.get("sequences", [])})
    return bars


def prediction_bars(t: Any) -> dict[str, float]:
    """Bars for the predictions report: the expected-response score uses the CLI's own; the channel and content mixes are
    judged by the CLI on total variation / Jensen-Shannon of the whole mix, which Evidently's column test approximates."""
    return {"expected_response": float(t.score), "channel": float(t.channel_mix), "content_id": float(t.content_mix)}


def verdict_lines(summary: dict[str, Any]) -> tuple[str, list[str]]:
    """The headline (as `nba monitor` prints it) and the reasons, in plain text."""
    word = "DRIFT" if summary.get("drift_detected") else "no drift"
    parts = ", ".join(
        f"{name} {bool(summary.get(key, False))}"
        for name, key in (("data", "data_drift"), ("sequences", "sequence_drift"), ("predictions", "prediction_drift"), ("catalogue", "catalogue_drift"))
    )
    return f"{word}: {parts}", list(summary.get("reasons", []))


def verdict_block(summary: dict[str, Any], t: Any, report: str) -> str:
    """The HTML block that opens a report: the CLI's verdict, its reasons and next steps, and how to read the panels below."""
    headline, reasons = verdict_lines(summary)
    drift = bool(summary.get("drift_detected"))
    colour = "#b42318" if drift else "#067647"
    items = "".join(f"<li>{html.escape(r)}</li>" for r in reasons) or "<li>no group passed its bar</li>"
    steps = "".join(f"<li>{html.escape(s)}</li>" for s in summary.get("next_steps", []))
    top = "".join(
        f"<tr><td>{html.escape(str(r['column']))}</td><td>{float(r['score']):.3f}</td><td>{html.escape(str(r.get('method', '')))}</td></tr>"
        for r in summary.get("top_features", [])
    )
    window = summary.get("current", {}).get("window", "")
    ref = summary.get("reference", {})
    ref_text = ref.get("window") or ref.get("run_id") or ref.get("path") or ref.get("kind", "")
    return (
        f'<div id="{BLOCK_ID}" style="font-family:sans-serif;margin:16px;padding:16px;border:2px solid {colour};border-radius:8px">'
        f'<h1 style="color:{colour};margin:0 0 8px 0">Verdict: {html.escape(headline)}</h1>'
        f"<p>Current window {html.escape(str(window))} against reference {html.escape(str(ref_text))}. This is the verdict "
        f"<code>nba monitor</code> prints and exits on (exit 3 on drift), by its rule: each column against its group's bar "
        f"(profile {t.profile_score}, response {t.feature_score}, activity {t.activity_score}, sequences {t.sequence_score}) or "
        f"{t.noise_multiple:g}x its own moves within the reference, whichever is higher; a group drifts when one column passes "
        f"its bar or enough of its columns move.</p>"
        f"<ul>{items}</ul>"
        + (f"<p><b>Next steps</b></p><ul>{steps}</ul>" if steps else "")
        + (f"<table><tr><th>moved most</th><th>score</th><th>method</th></tr>{top}</table>" if top else "")
        + f'<p style="color:#555">Below: Evidently\'s {html.escape(report)}, secondary. Each column test uses the same bar as the '
        f"verdict above, so a column it marks drifted is one the rule saw pass its bar; its scores come from a sample of the rows "
        f"(<code>monitor.report_rows</code>), so a column right at its bar can differ. The verdict above decides.</p></div>"
    )


def with_verdict(page: str, block: str) -> str:
    """``page`` (a fresh Evidently report) with ``block`` as the first thing in its body."""
    i = page.find("<body")
    if i == -1:
        return block + page
    j = page.find(">", i) + 1
    return page[:j] + "\n" + block + "\n" + page[j:]
