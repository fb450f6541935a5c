"""`nba lift` estimators on data with a known answer, and the command on a real SQLite audit trail."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from experiments.lift import LiftError, acceptance_rates, assignments, bootstrap_diff, bootstrap_ratio_diff, hcp_table, measure

MONDAY = datetime(2026, 1, 5, tzinfo=timezone.utc)


def _arms(n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    return rng.random(n) < share


def test_bootstrap_interval_finds_a_known_effect_and_covers_zero_without_one() -> None:
    rng = np.random.default_rng(1)
    holdout = _arms(3000, 0.2, rng)
    base = rng.gamma(2.0, 1.0, 3000)
    with_effect = bootstrap_diff(base + 0.4 * ~holdout, holdout, n_boot=800, confidence=0.95, seed=0)
    assert with_effect.ci_low > 0 and with_effect.ci_low <= 0.4 <= with_effect.ci_high
    assert with_effect.n_holdout == int(holdout.sum()) and with_effect.ci_low < with_effect.lift < with_effect.ci_high
    none = bootstrap_diff(base, holdout, n_boot=800, confidence=0.95, seed=0)
    assert none.ci_low < 0 < none.ci_high


def test_baseline_adjustment_keeps_the_effect_and_narrows_the_interval() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    holdout = _arms(n, 0.25, rng)
    market = rng.lognormal(2.0, 0.8, n)  # HCPs differ widely: the baseline explains most of y
    y = market + rng.normal(0, 1.0, n) + 0.5 * ~holdout
    raw = bootstrap_diff(y, holdout, n_boot=600, confidence=0.95, seed=3)
    adj = bootstrap_diff(y, holdout, x=market + rng.normal(0, 0.3, n), n_boot=600, confidence=0.95, seed=3)
    assert adj.ci_low <= 0.5 <= adj.ci_high and raw.ci_low <= 0.5 <= raw.ci_high
    assert (adj.ci_high - adj.ci_low) < 0.5 * (raw.ci_high - raw.ci_low)


def test_interval_coverage_is_close_to_nominal_over_repeated_experiments() -> None:
    rng = np.random.default_rng(4)
    covered = []
    for rep in range(120):
        holdout = _arms(400, 0.3, rng)
        y = rng.poisson(np.where(holdout, 1.0, 1.2)).astype(float)
        e = bootstrap_diff(y, holdout, n_boot=400, confidence=0.9, seed=rep)
        covered.append(e.ci_low <= 0.2 <= e.ci_high)
    assert 0.8 <= np.mean(covered) <= 0.97, np.mean(covered)


def test_ratio_interval_is_a_rate_difference() -> None:
    rng = np.random.default_rng(5)
    holdout = _arms(2000, 0.3, rng)
    den = rng.integers(1, 4, 2000)
    num = rng.binomial(den, np.where(holdout, 0.2, 0.3))
    e = bootstrap_ratio_diff(num, den, holdout, n_boot=500, confidence=0.95, seed=0)
    assert e.ci_low <= 0.1 <= e.ci_high and e.ci_low > 0
    assert e.served == pytest.approx(num[~holdout].sum() / den[~holdout].sum())


def _suggestion(hcp: str, week: int, policy: str, channel: str = "visit", seg: int = 0) -> dict:
    return {"suggestion_id": uuid.uuid4().hex, "request_id": "r", "hcp_id": hcp, "rep_id": "rep1", "as_of": MONDAY + timedelta(weeks=week),
            "rank": 1, "channel": channel, "content_id": None, "propensity": 1.0, "policy": policy, "degraded": False,
            "features_json": json.dumps({"segment": seg}), "rules_json": "{}", "reasons_json": "[]"}


def _frames():
    s = pd.DataFrame([
        _suggestion("h1", 0, "model"), _suggestion("h1", 1, "explore", "email"),
        _suggestion("h2", 0, "holdout", seg=1), _suggestion("h2", 1, "holdout", seg=1),
        _suggestion("h3", 1, "model", "phone", seg=1),
    ])
    sid = s["suggestion_id"].tolist()
    fb = pd.DataFrame([
        {"feedback_id": "a", "suggestion_id": sid[0], "outcome": "accepted"},
        {"feedback_id": "b", "suggestion_id": sid[0], "outcome": "done"},
        {"feedback_id": "c", "suggestion_id": sid[0], "outcome": "opened"},
        {"feedback_id": "c2", "suggestion_id": sid[1], "outcome": "opened"},
        {"feedback_id": "d", "suggestion_id": sid[2], "outcome": "dismissed"},
        {"feedback_id": "e", "suggestion_id": sid[3], "outcome": "attended"},
        {"feedback_id": "f", "suggestion_id": sid[4], "outcome": "snoozed"},
    ])
    return s, fb


def test_per_hcp_table_counts_responses_per_week_by_recorded_arm() -> None:
    s, fb = _frames()
    outcomes = pd.DataFrame({
        "hcp_id": ["h1", "h1", "h1", "h2", "h2", "h3"],
        "week_start": pd.to_datetime(["2025-12-29", "2026-01-05", "2026-01-12", "2026-01-05", "2026-01-12", "2026-01-12"]).date,
        "prescriptions": [3, 5, 7, 1, 2, 4],
    })
    t = hcp_table(s, fb, outcomes, tiers=None, baseline_weeks=4)
    assert t.attrs["weeks"] == ["2026-01-05", "2026-01-12"]
    assert t.loc["h1", "responses_per_week"] == 1.0 and t.loc["h2", "responses_per_week"] == 0.5 and t.loc["h3", "responses_per_week"] == 0.0
    assert bool(t.loc["h2", "holdout"]) and not t.loc[["h1", "h3"], "holdout"].any()
    assert t.loc["h1", "prescriptions_per_week"] == 6.0 and t.loc["h1", "prescriptions_baseline"] == 3.0
    assert np.isnan(t.loc["h2", "prescriptions_baseline"])
    assert t.loc["h1", "segment"] == "A" and t.loc["h3", "segment"] == "B"  # decoded from the recorded feature codes
    acc = acceptance_rates(s, fb)
    # visit h1 accepted+done, visit h2 dismissed, phone h3 snoozed; the email gets no rep decision.
    assert acc["overall"]["n"].iloc[0] == 3 and acc["overall"]["rate"].iloc[0] == pytest.approx(1 / 3)
    by_arm = acc["by_tier_arm"].set_index(["segment", "arm"])["rate"]
    assert by_arm[("A", "served")] == 1.0 and by_arm[("B", "holdout")] == 0.0


def test_mixed_assignment_is_refused_naming_the_hcp() -> None:
    s, _ = _frames()
    s.loc[len(s)] = _suggestion("h2", 2, "model")
    with pytest.raises(LiftError, match="'h2'.*holdout share or salt changed"):
        assignments(s)


def test_measure_gives_every_metric_overall_and_per_tier() -> None:
    rng = np.random.default_rng(6)
    n = 400
    t = pd.DataFrame({
        "holdout": _arms(n, 0.3, rng), "segment": rng.choice(list("ABCD"), n), "responses_per_week": rng.poisson(1.0, n) / 4,
        "suggestions": np.full(n, 8.0), "prescriptions_per_week": rng.gamma(3, 2, n), "prescriptions_baseline": rng.gamma(3, 2, n),
    })
    t["responses"] = t["responses_per_week"] * 4
    est = measure(t, n_boot=200)
    assert set(est) == {"responses_per_hcp_week", "response_rate_per_suggestion", "prescriptions_per_hcp_week", "prescriptions_per_hcp_week_adjusted"}
    assert all(set(by) == {"all", "A", "B", "C", "D"} for by in est.values())
    assert est["responses_per_hcp_week"]["all"].n_served + est["responses_per_hcp_week"]["all"].n_holdout == n


def test_lift_command_on_a_real_audit_trail(tmp_path) -> None:
    from typer.testing import CliRunner

    from contract.io import write_tables
    from nba.cli import app
    from serving.audit import AuditTrail

    rng = np.random.default_rng(7)
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    audit = AuditTrail(url)
    rows, fbs = [], []
    hcps = [f"H{i:04d}" for i in range(120)]
    holdout = {h: rng.random() < 0.3 for h in hcps}
    for week in range(3):
        for h in hcps:
            r = _suggestion(h, week, "holdout" if holdout[h] else "model", seg=int(h[-1]) % 4)
            rows.append(r)
            if rng.random() < (0.2 if holdout[h] else 0.6):
                fbs.append({"feedback_id": f"{r['suggestion_id']}-o", "suggestion_id": r["suggestion_id"], "outcome": "opened", "ts": r["as_of"] + timedelta(hours=5)})
    audit.record_suggestions(rows)
    for f in fbs:
        assert audit.record_feedback(f).created
    assert not audit.record_feedback(fbs[0]).created  # a replay is a no-op
    audit.close()
    out = pd.DataFrame({"hcp_id": np.repeat(hcps, 5), "week_start": np.tile(pd.date_range("2025-12-08", periods=5, freq="7D").date, len(hcps)),
                        "product_id": "P1", "prescriptions": rng.poisson(5, 5 * len(hcps)), "market_boxes": 20, "share": 0.25})
    write_tables(tmp_path / "data", {"outcomes": out}, source="test")
    res = CliRunner().invoke(app, ["lift", "--audit-url", url, "--data", str(tmp_path / "data"), "--n-boot", "200", "--json", "--html", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    figures = json.loads(res.output.strip().splitlines()[-1])
    assert figures["weeks"] == 3 and figures["hcps_served"] + figures["hcps_holdout"] == 120
    assert figures["responses_per_hcp_week_ci_low"] > 0  # 0.6 vs 0.2 opens per suggestion, one suggestion a week
    assert "prescriptions_per_hcp_week_adjusted_lift" in figures and (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    bad = CliRunner().invoke(app, ["lift", "--audit-url", f"sqlite:///{tmp_path / 'none.db'}", "--data", str(tmp_path / "data")])
    assert bad.exit_code == 2 and "no such SQLite file" in bad.output
    window = CliRunner().invoke(app, ["lift", "--audit-url", url, "--data", str(tmp_path / "data"), "--since", "2027-01-01"])
    assert window.exit_code == 2 and "no suggestions between" in window.output
