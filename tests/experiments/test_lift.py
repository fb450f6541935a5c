"""`nba lift` on data with a known answer: hand-computed figures, planted lifts on an imported dataset without ground truth, the error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.lift import (
    LiftError,
    acceptance_rates,
    assignments,
    bootstrap_diff,
    bootstrap_ratio_diff,
    contract_tiers,
    cuped_theta,
    hcp_table,
    lift_job,
    measure,
)

MONDAY = datetime(2026, 1, 5, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).parent))


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
    assert raw.theta is None and 0.9 < adj.theta < 1.1  # y moves one for one with the market


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


def _hcp_weeks(rng: np.random.Generator, hcps: int, weeks: int, lift: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HCP-week rows where HCPs differ a lot (intra-HCP correlation about 0.8): y, holdout, hcp."""
    holdout = rng.random(hcps) < 0.5
    level = rng.normal(0, 2.0, hcps) + lift * ~holdout
    hcp = np.repeat(np.arange(hcps), weeks)
    return level[hcp] + rng.normal(0, 1.0, hcps * weeks), holdout[hcp], hcp


def test_cluster_bootstrap_resamples_hcps_not_rows() -> None:
    rng = np.random.default_rng(8)
    y, h, hcp = _hcp_weeks(rng, 200, 8, 0.5)
    cluster = bootstrap_diff(y, h, clusters=hcp, n_boot=800, confidence=0.95, seed=0)
    rows = bootstrap_diff(y, h, n_boot=800, confidence=0.95, seed=0)
    assert cluster.lift == pytest.approx(rows.lift)  # same HCP-weeks per HCP: the same point estimate
    assert (cluster.n_served + cluster.n_holdout, rows.n_served + rows.n_holdout) == (200, 1600)
    # Design effect 1 + (8 - 1) * 0.8: rows treated as independent give an interval about 2.5 times too narrow.
    ratio = (cluster.ci_high - cluster.ci_low) / (rows.ci_high - rows.ci_low)
    assert 2.0 < ratio < 3.0, ratio
    covered = {"hcp": [], "row": []}
    for rep in range(80):
        y, h, hcp = _hcp_weeks(rng, 60, 8, 0.5)
        for unit, cl in (("hcp", hcp), ("row", None)):
            e = bootstrap_diff(y, h, clusters=cl, n_boot=300, confidence=0.9, seed=rep)
            covered[unit].append(e.ci_low <= 0.5 <= e.ci_high)
    assert np.mean(covered["hcp"]) >= 0.8 and np.mean(covered["row"]) <= 0.6, {k: np.mean(v) for k, v in covered.items()}
    with pytest.raises(LiftError, match="HCP '3' has rows in both arms"):
        bootstrap_diff(np.ones(4), np.array([False, False, True, False]), clusters=np.array([1, 1, 3, 3]), n_boot=10, confidence=0.9, seed=0)


def _suggestion(hcp: str, week: int, policy: str, channel: str = "visit", seg: int = 0) -> dict:
    return {
        "suggestion_id": uuid.uuid4().hex,
        "request_id": "r",
        "hcp_id": hcp,
        "rep_id": "rep1",
        "as_of": MONDAY + timedelta(weeks=week),
        "rank": 1,
        "channel": channel,
        "content_id": None,
        "propensity": 1.0,
        "policy": policy,
        "degraded": False,
        "features_json": json.dumps({"segment": seg}),
        "rules_json": "{}",
        "reasons_json": "[]",
    }


def _frames():
    s = pd.DataFrame(
        [
            _suggestion("h1", 0, "model"),
            _suggestion("h1", 1, "explore", "email"),
            _suggestion("h2", 0, "holdout", seg=1),
            _suggestion("h2", 1, "holdout", seg=1),
            _suggestion("h3", 1, "model", "phone", seg=1),
        ]
    )
    sid = s["suggestion_id"].tolist()
    fb = pd.DataFrame(
        [
            {"feedback_id": "a", "suggestion_id": sid[0], "outcome": "accepted"},
            {"feedback_id": "b", "suggestion_id": sid[0], "outcome": "done"},
            {"feedback_id": "c", "suggestion_id": sid[0], "outcome": "opened"},
            {"feedback_id": "c2", "suggestion_id": sid[1], "outcome": "opened"},
            {"feedback_id": "d", "suggestion_id": sid[2], "outcome": "dismissed"},
            {"feedback_id": "e", "suggestion_id": sid[3], "outcome": "attended"},
            {"feedback_id": "f", "suggestion_id": sid[4], "outcome": "snoozed"},
        ]
    )
    return s, fb


def test_per_hcp_table_counts_from_each_hcps_first_suggestion_by_recorded_arm() -> None:
    s, fb = _frames()
    outcomes = pd.DataFrame(
        {
            "hcp_id": ["h1", "h1", "h1", "h2", "h2", "h3", "h3"],
            "week_start": pd.to_datetime(["2025-12-29", "2026-01-05", "2026-01-12", "2026-01-05", "2026-01-12", "2026-01-05", "2026-01-12"]).date,
            "prescriptions": [3, 5, 7, 1, 2, 8, 4],
        }
    )
    t = hcp_table(s, fb, outcomes, tiers=None, baseline_weeks=4)
    assert t.attrs["weeks"] == ["2026-01-05", "2026-01-12"]
    # h3's first suggestion is in week 2: one week of exposure, and week 1 is part of its baseline.
    assert t["exposure_weeks"].to_dict() == {"h1": 2, "h2": 2, "h3": 1}
    assert t.loc["h1", "responses_per_week"] == 1.0 and t.loc["h2", "responses_per_week"] == 0.5 and t.loc["h3", "responses_per_week"] == 0.0
    assert bool(t.loc["h2", "holdout"]) and not t.loc[["h1", "h3"], "holdout"].any()
    assert t.loc["h1", "prescriptions_per_week"] == 6.0 and t.loc["h1", "prescriptions_baseline"] == 3.0
    assert t.loc["h3", "prescriptions_per_week"] == 4.0 and t.loc["h3", "prescriptions_baseline"] == 4.0  # (0 in 12-29 + 8) / 2
    assert t.loc["h2", "prescriptions_baseline"] == 0.0  # the CRM delivered week 12-29 without a row for h2: nothing prescribed
    assert t.loc["h1", "segment"] == "A" and t.loc["h3", "segment"] == "B"  # without contract tiers: the recorded feature codes
    acc = acceptance_rates(s, fb)
    # visit h1 accepted+done, visit h2 dismissed, phone h3 snoozed; the email gets no rep decision.
    assert acc["overall"]["n"].iloc[0] == 3 and acc["overall"]["rate"].iloc[0] == pytest.approx(1 / 3)
    by_arm = acc["by_tier_arm"].set_index(["segment", "arm"])["rate"]
    assert by_arm[("A", "served")] == 1.0 and by_arm[("B", "holdout")] == 0.0


def test_four_hcps_give_the_hand_computed_lifts_and_theta() -> None:
    """h1, h2 served; h3, h4 held out; two weeks; baseline two weeks before."""
    rows, opened = [], {"h1": 2, "h2": 1, "h3": 1, "h4": 0}
    for h in opened:
        for w in range(2):
            rows.append(_suggestion(h, w, "holdout" if h in ("h3", "h4") else "model", "email"))
    s = pd.DataFrame(rows)
    fb = pd.DataFrame(
        [
            {"feedback_id": f"f{i}", "suggestion_id": r["suggestion_id"], "outcome": "opened"}
            for i, r in enumerate(rows)
            if int(r["as_of"] > MONDAY) < opened[r["hcp_id"]]
        ]
    )
    rx = {"h1": ([4, 6], [8, 10]), "h2": ([3, 3], [3, 3]), "h3": ([6, 4], [6, 6]), "h4": ([2, 0], [2, 0])}  # (baseline weeks, window weeks)
    weeks = pd.date_range("2025-12-22", periods=4, freq="7D").date
    outcomes = pd.DataFrame([{"hcp_id": h, "week_start": wk, "prescriptions": v} for h, (b, w) in rx.items() for wk, v in zip(weeks, b + w)])
    t = hcp_table(s, fb, outcomes, tiers=pd.Series({"h1": "A", "h2": "A", "h3": "A", "h4": "A"}), baseline_weeks=2)
    est = measure(t, n_boot=200)
    # Responses per HCP-week: (1 + 0.5) / 2 - (0.5 + 0) / 2; per suggestion: 3/4 - 1/4.
    assert est["responses_per_hcp_week"]["all"].lift == pytest.approx(0.5)
    assert est["response_rate_per_suggestion"]["all"].lift == pytest.approx(0.5)
    # Prescriptions: window means 9, 3 | 6, 1 -> 6 - 3.5; baselines 5, 3 | 5, 1.
    raw, adj = est["prescriptions_per_hcp_week"]["all"], est["prescriptions_per_hcp_week_adjusted"]["all"]
    assert raw.lift == pytest.approx(2.5) and (raw.served, raw.holdout) == (6.0, 3.5)
    # theta = cov(y, x) / var(x) = (18.5 / 4) / (11 / 4) = 37 / 22; adjusted = 2.5 - theta * (4 - 3) = 9 / 11.
    assert adj.theta == pytest.approx(37 / 22) and cuped_theta(t["prescriptions_per_week"], t["prescriptions_baseline"]) == pytest.approx(37 / 22)
    assert adj.lift == pytest.approx(9 / 11) and adj.served - adj.holdout == pytest.approx(9 / 11)
    assert adj.ci_low <= adj.lift <= adj.ci_high and est["prescriptions_per_hcp_week_adjusted"]["A"].lift == pytest.approx(9 / 11)
    assert np.isnan(est["prescriptions_per_hcp_week"]["B"].lift)  # no HCP of tier B: no figure rather than a made-up one


def test_mixed_assignment_is_refused_naming_the_hcp() -> None:
    s, _ = _frames()
    s.loc[len(s)] = _suggestion("h2", 2, "model")
    with pytest.raises(LiftError, match="'h2'.*holdout share or salt changed"):
        assignments(s)


def test_tiers_come_from_the_contract_as_of_the_first_suggestion() -> None:
    at = pd.Series(pd.to_datetime(["2026-01-05", "2026-01-05", "2026-01-05", "2026-01-05"], utc=True), index=["h1", "h2", "h3", "h4"])
    hcps = pd.DataFrame({"hcp_id": ["h1", "h2", "h3", "h4"], "segment": ["A", "B", None, "Z"]})
    history = pd.DataFrame(
        {"hcp_id": ["h1", "h1", "h2"], "segment": ["C", "A", "D"], "valid_from": pd.to_datetime(["2025-06-01", "2026-02-01", "2026-03-01"], utc=True)}
    )
    tiers = contract_tiers(hcps, history, at)
    # h1 was C when first served (A only later, perhaps because of it); h2's history starts later: the hcps table.
    assert tiers.to_dict() == {"h1": "C", "h2": "B", "h3": None, "h4": None}


def test_measure_gives_every_metric_overall_and_per_tier() -> None:
    rng = np.random.default_rng(6)
    n = 400
    t = pd.DataFrame(
        {
            "holdout": _arms(n, 0.3, rng),
            "segment": rng.choice(list("ABCD"), n),
            "responses_per_week": rng.poisson(1.0, n) / 4,
            "suggestions": np.full(n, 8.0),
            "prescriptions_per_week": rng.gamma(3, 2, n),
            "prescriptions_baseline": rng.gamma(3, 2, n),
        }
    )
    t.loc[:9, "prescriptions_baseline"] = np.nan
    t["responses"] = t["responses_per_week"] * 4
    est = measure(t, n_boot=200)
    assert set(est) == {"responses_per_hcp_week", "response_rate_per_suggestion", "prescriptions_per_hcp_week", "prescriptions_per_hcp_week_adjusted"}
    assert all(set(by) == {"all", "A", "B", "C", "D"} for by in est.values())
    # HCPs without a baseline stay in the adjusted figure (given the mean): raw and adjusted cover the same HCPs.
    assert est["prescriptions_per_hcp_week_adjusted"]["all"].n_served + est["prescriptions_per_hcp_week_adjusted"]["all"].n_holdout == n


# -- an imported dataset (no ground truth) and a real audit trail -----------------------------------


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    from lift_fixtures import imported_dataset

    return imported_dataset(tmp_path_factory.mktemp("lift-imported"))


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    """`nba lift` in a fresh interpreter; reports on stderr which simulator modules the command imported.

    (The CLI's composition root registers every stage's commands, `nba simulate` too, before any runs.)
    """
    code = (
        "import sys\nfrom nba.cli import main\nsys.argv = ['nba', *sys.argv[1:]]\nbefore = set(sys.modules)\n"
        "try:\n    main()\nfinally:\n"
        "    sim = sorted(m for m in set(sys.modules) - before if m.split('.')[0] == 'simulator' or m == 'experiments.sim_judge')\n"
        "    print('SIMULATOR_MODULES=' + ','.join(sim), file=sys.stderr)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_lift_on_an_imported_dataset_finds_the_planted_lifts(imported, tmp_path) -> None:
    data = Path(imported["data_dir"])
    assert not (data / "_ground_truth").exists() and json.loads((data / "_manifest.json").read_text())["source"] != "simulator"
    html = tmp_path / "lift.html"
    proc = _run_cli("lift", "--audit-url", imported["audit_url"], "--data", str(data), "--n-boot", "500", "--html", str(html))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "SIMULATOR_MODULES=\n" in proc.stderr + "\n", "nba lift must never import the simulator"
    assert "[lift] reading the audit trail" in proc.stderr and "[lift] bootstrap over 200 HCPs" in proc.stderr  # progress on stderr
    f = json.loads(proc.stdout.strip().splitlines()[-1])
    holdout, tier = imported["holdout"], imported["tier"]
    assert f["hcps_holdout"] == int(holdout.sum()) and f["weeks"] == 6 and f["bootstrap_unit"] == "hcp"
    # The features recorded with each suggestion say tier D, and hcps.segment holds some later tiers: the tiers must be
    # the contract's history as of each HCP's first suggestion.
    assert f["tier_source"].startswith("hcp_profile_history as of the first suggestion") and f["hcps_without_tier"] == 0
    assert all(f[f"hcps_holdout_tier_{s}"] == int((holdout & (tier == s)).sum()) for s in "ABCD")
    assert (imported["export_tier"] != tier).sum() > 20
    # Engagement: 0.5 vs 0.2 opens of one suggestion a week, seen in the feedback and in the CRM's touchpoints alike.
    for m in ("responses_per_hcp_week", "touch_responses_per_hcp_week", "responses_per_touch", "response_rate_per_suggestion"):
        assert 0 < f[f"{m}_ci_low"] <= imported["responses_lift"] <= f[f"{m}_ci_high"], m
    assert f["responses_per_hcp_week_lift"] == pytest.approx(f["touch_responses_per_hcp_week_lift"])
    assert f["touches_per_hcp_week_lift"] == 0.0
    # Prescriptions: the adjusted interval covers the planted average lift and, the baseline predicting the window, is far
    # narrower than the raw one (which, wide as it is, moves with the arms' chance imbalance in market size).
    truth = imported["rx_lift"]
    raw = (f["prescriptions_per_hcp_week_ci_low"], f["prescriptions_per_hcp_week_ci_high"])
    adj = (f["prescriptions_per_hcp_week_adjusted_ci_low"], f["prescriptions_per_hcp_week_adjusted_ci_high"])
    assert adj[0] <= truth <= adj[1], (raw, adj, truth)
    assert adj[1] - adj[0] < 0.5 * (raw[1] - raw[0]) and f["prescriptions_adjusted_ci_width_ratio"] < 0.5
    assert 0.7 < f["prescriptions_per_hcp_week_adjusted_theta"] < 1.2 and f["baseline_weeks_covered"] == 8
    for s, planted in imported["rx_lift_by_tier"].items():
        lo, hi = f[f"prescriptions_per_hcp_week_adjusted_tier_{s}_ci_low"], f[f"prescriptions_per_hcp_week_adjusted_tier_{s}_ci_high"]
        assert lo <= planted <= hi, (s, lo, hi, planted)
        raw_w = f[f"prescriptions_per_hcp_week_tier_{s}_ci_high"] - f[f"prescriptions_per_hcp_week_tier_{s}_ci_low"]
        assert hi - lo < raw_w, s
    assert f["prescriptions_per_hcp_week_adjusted_tier_A_ci_low"] > 0
    text = html.read_text()
    assert text.startswith("<!doctype html>") and text.count("<img src='data:image/png;base64,") == 1 and "theta" in text
    assert f["html_report"] == str(html)


def test_report_gives_each_series_its_own_colour() -> None:
    from experiments.lift_report import COLOURS, LABELS, PANELS

    assert set(COLOURS) == set(LABELS) and len(set(COLOURS.values())) == len(COLOURS)
    assert {m for _, ms in PANELS for m in ms} == set(LABELS)


@pytest.mark.postgres
def test_lift_reads_a_postgres_audit_trail_the_same_as_sqlite(imported, tmp_path, postgres_db) -> None:
    from lift_fixtures import imported_dataset

    pg = imported_dataset(tmp_path, postgres_db)  # the same seed: the same HCPs, arms, responses and prescriptions
    a = lift_job(pg["audit_url"], pg["data_dir"], n_boot=200)["figures"]
    b = lift_job(imported["audit_url"], imported["data_dir"], n_boot=200)["figures"]
    keys = [k for k in b if k.endswith(("_lift", "_ci_low", "_ci_high", "_theta")) or k.startswith("hcps_")]
    assert len(keys) > 50 and {k: a[k] for k in keys} == pytest.approx({k: b[k] for k in keys}, nan_ok=True)
    assert a["audit_url"].startswith("postgresql+psycopg://") and a["suggestions"] == b["suggestions"] == 1200


# -- error paths: one line naming the input, exit 1, no traceback ------------------------------------


def _cli(*args: str):
    from typer.testing import CliRunner

    from nba.cli import app

    return CliRunner().invoke(app, ["lift", "--n-boot", "100", "--json", *args])


def _fails(res, *fragments: str) -> None:
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output, (res.exception, res.output)  # an expected condition, no crash
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("[lift]")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and res.stdout == "", res.output
    for frag in fragments:
        assert frag in lines[0], (frag, lines[0])


def _audit(path: Path, rows: list[dict]) -> str:
    from serving.audit import AuditTrail

    url = f"sqlite:///{path}"
    audit = AuditTrail(url)
    audit.record_suggestions(rows)
    audit.close()
    return url


def test_missing_inputs_fail_with_one_line_naming_them(imported, tmp_path) -> None:
    from contract.io import read_frame, write_tables

    url, data = imported["audit_url"], str(imported["data_dir"])
    _fails(_cli("--audit-url", f"sqlite:///{tmp_path / 'none.db'}", "--data", data), "none.db", "no such SQLite file")
    _fails(_cli("--audit-url", _audit(tmp_path / "empty.db", []), "--data", data), "table 'suggestions' has no rows")
    _fails(_cli("--audit-url", "postgresql+psycopg://nba:secret@127.0.0.1:1/nba", "--data", data), "cannot read the audit trail", "nba:***@127.0.0.1:1")
    (tmp_path / "not-a-db.db").write_text("hello")
    _fails(_cli("--audit-url", f"sqlite:///{tmp_path / 'not-a-db.db'}", "--data", data), "not-a-db.db: cannot read the audit trail")
    _fails(_cli("--audit-url", url, "--data", data, "--since", "2027-01-01"), "no suggestions between", "table 'suggestions' has as_of from")
    no_holdout = _audit(tmp_path / "served.db", [_suggestion(f"H{i:05d}", 0, "model") for i in range(5)])
    _fails(_cli("--audit-url", no_holdout, "--data", data), "0 holdout HCP(s)", "column 'policy' = 'holdout'", "holdout_share")
    _fails(_cli("--audit-url", url, "--data", str(tmp_path / "nowhere")), "nowhere", "no such contract dataset")
    hcps_only = tmp_path / "hcps-only"
    write_tables(hcps_only, {"hcps": read_frame(data, "hcps")}, source="test")
    _fails(_cli("--audit-url", url, "--data", str(hcps_only)), "table 'outcomes' (outcomes.parquet) not found", str(hcps_only))
    stale = tmp_path / "stale"
    out = read_frame(data, "outcomes")
    write_tables(stale, {"hcps": read_frame(data, "hcps"), "outcomes": out[pd.to_datetime(out["week_start"]) < "2025-12-01"]}, source="test")
    _fails(_cli("--audit-url", url, "--data", str(stale)), "outcomes.parquet: no prescriptions in the window's weeks 2026-01-05 to 2026-02-09")
    bad = tmp_path / "bad-columns"
    bad.mkdir()
    out.drop(columns=["prescriptions"]).to_parquet(bad / "outcomes.parquet")
    _fails(_cli("--audit-url", url, "--data", str(bad)), "outcomes.parquet: column(s) ['prescriptions'] missing")
    _fails(_cli("--audit-url", url, "--data", data, "--since", "2026-02-01", "--until", "2026-01-01"), "--until 2026-01-01 must be after --since")
