"""`nba monitor` on a real SQLite audit trail and MLflow store: flags drift, stays quiet, writes and logs reports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monitor_fixtures import record_window, write_configs
from typer.testing import CliRunner

from experiments.bench import synthetic_features
from experiments.config import load_experiments_config
from experiments.monitor import monitor_job, parse_window
from nba.cli import app
from serving.audit import AuditTrail

runner = CliRunner()
ROWS = 800


@pytest.fixture(scope="module")
def audit(tmp_path_factory) -> tuple[str, Path]:
    """An audit trail with a reference week, a same-distribution week and a drifted week."""
    root = tmp_path_factory.mktemp("monitor")
    url = f"sqlite:///{root / 'audit.db'}"
    trail = AuditTrail(url)
    record_window(trail, synthetic_features(ROWS, 1), "2026-01-05", seed=1)
    record_window(trail, synthetic_features(ROWS, 2), "2026-01-12", seed=2)
    drifted = synthetic_features(ROWS, 3)
    # An email collapse: opens and open rates fall; the served mix leaves email for visits.
    for col in [c for c in drifted.columns if c.startswith("email_") and ("open" in c or "read" in c)]:
        drifted[col] = (drifted[col] * 0.1).astype(drifted[col].dtype)
    p = np.array([0.45, 0.05, 0.25, 0.15, 0.0, 0.02, 0.02, 0.06])
    record_window(trail, drifted, "2026-01-19", seed=3, channel_p=p / p.sum())
    trail.close()
    return url, write_configs(root / "cfg", url)


def test_drifted_window_is_flagged_with_the_features_that_moved(audit) -> None:
    url, cfg_path = audit
    cfg = load_experiments_config(cfg_path)
    s = monitor_job(cfg, "2026-01-05..2026-01-12", "2026-01-19..2026-01-26", progress=False)
    assert s["drift_detected"] and s["data_drift"] and s["prediction_drift"]
    assert s["top_features"][0]["column"].startswith("email_")
    assert s["predictions"]["channel_mix_tvd"] > 0.2
    assert any("retrain" in step and "email_" in step for step in s["next_steps"])
    assert s["rows"] == {
        "reference_features": ROWS,
        "current_features": ROWS,
        "reference_predictions": s["rows"]["reference_predictions"],
        "current_predictions": s["rows"]["current_predictions"],
    }
    for key in ("summary_json", "features_html", "predictions_html"):
        assert Path(s["outputs"][key]).stat().st_size > 1000
    assert json.loads(Path(s["outputs"]["summary_json"]).read_text())["drift_detected"] is True
    import mlflow

    run = mlflow.get_run(s["mlflow_run_id"])
    assert run.data.tags["stage"] == "monitoring" and run.data.metrics["drift_detected"] == 1.0
    names = {a.path for a in mlflow.MlflowClient().list_artifacts(s["mlflow_run_id"], "monitor")}
    assert {"monitor/summary.json", "monitor/features_report.html", "monitor/predictions_report.html"} <= names


def test_same_distribution_window_stays_quiet(audit) -> None:
    _, cfg_path = audit
    s = monitor_job(
        load_experiments_config(cfg_path, overrides={"monitor.log_to_mlflow": False, "monitor.html": False}),
        "2026-01-05..2026-01-12",
        "2026-01-12..2026-01-19",
        progress=False,
    )
    assert not s["drift_detected"], s["reasons"]
    # 800 rows per side: sampling noise alone moves some of ~220 features past 0.1, none near 0.3.
    t = load_experiments_config(cfg_path).monitor.thresholds
    assert s["max_feature_score"] < t.feature_score and s["drifted_feature_share"] < t.drifted_share / 2
    assert s["next_steps"][0].startswith("no action")


def test_cli_exit_status_and_last_line(audit) -> None:
    _, cfg_path = audit
    sets = ["--set", "monitor.log_to_mlflow=false", "--set", "monitor.html=false"]
    quiet = runner.invoke(app, ["monitor", "--reference", "2026-01-05..2026-01-12", "--current", "2026-01-12..2026-01-19", "-c", str(cfg_path), *sets])
    assert quiet.exit_code == 0, quiet.output
    assert json.loads(quiet.output.strip().splitlines()[-1])["drift_detected"] is False
    loud = runner.invoke(app, ["monitor", "--reference", "2026-01-05..2026-01-12", "--current", "2026-01-19..", "-c", str(cfg_path), *sets])
    assert loud.exit_code == 3, loud.output
    last = json.loads(loud.output.strip().splitlines()[-1])
    assert last["drift_detected"] is True and last["top_features"][0].startswith("email_")
    empty = runner.invoke(app, ["monitor", "--reference", "2026-01-05..2026-01-12", "--current", "2027-01-01..", "-c", str(cfg_path), *sets])
    assert empty.exit_code == 2 and "--current" in empty.output and "no suggestions" in empty.output


@pytest.mark.parametrize(("text", "match"), [("yesterday", "START..END"), ("2026-13-01..", "not an ISO date"), ("2026-02-01..2026-01-01", "ends before")])
def test_bad_window_names_the_option(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        parse_window(text, "--current")
    assert "--current" in str(err.value)


def test_reference_from_a_training_run_reads_its_dataset(audit, tmp_path: Path) -> None:
    """A run id as reference: features as of the run dataset's last weeks, compared with the served window."""
    from lift_fixtures import simulate_world

    url, cfg_path = audit
    data = simulate_world(tmp_path / "data", hcps=100, days=56, seed=2)
    cfg = load_experiments_config(cfg_path, overrides={"monitor.html": False, "monitor.reference_weeks": 2})
    import mlflow

    from experiments.config import training_config
    from training import tracking

    tracking.setup(training_config(cfg).tracking)
    with mlflow.start_run() as run:
        mlflow.log_params({"data_dir": str(data), "features_config": "None"})
    s = monitor_job(cfg, run.info.run_id, "2026-01-05..2026-01-12", progress=False)
    assert s["reference"]["kind"] == "run" and s["reference"]["weeks"] == 2
    assert s["features_compared"] > 20 and s["predictions"] is None and any("prediction drift skipped" in n for n in s["notes"])
    with pytest.raises(ValueError, match="no MLflow run"):
        monitor_job(cfg, "0" * 32, "2026-01-05..2026-01-12", progress=False)


@pytest.mark.postgres
def test_monitor_reads_a_postgresql_audit_trail(postgres_db: str, tmp_path: Path) -> None:
    trail = AuditTrail(postgres_db)
    record_window(trail, synthetic_features(300, 1), "2026-01-05", seed=1)
    shifted = synthetic_features(300, 2)
    shifted["visit_sent_90d"] = shifted["visit_sent_90d"] + 5
    record_window(trail, shifted, "2026-01-12", seed=2)
    trail.close()
    cfg = load_experiments_config(write_configs(tmp_path, postgres_db), overrides={"monitor.html": False, "monitor.log_to_mlflow": False})
    s = monitor_job(cfg, "2026-01-05..2026-01-12", "2026-01-12..", progress=False)
    assert s["drift_detected"] and s["top_features"][0]["column"] == "visit_sent_90d"
    assert s["rows"]["reference_features"] == 300 and s["current"]["audit_url"].startswith("postgresql")


def test_catalogue_check_that_cannot_run_is_named_not_fatal(tmp_path: Path) -> None:
    """The served model is not in the registry: the other checks still run and the summary says why the catalogue one did not."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    trail = AuditTrail(url)
    record_window(trail, synthetic_features(300, 1), "2026-01-05", seed=1, model_version="nba-test/9")
    record_window(trail, synthetic_features(300, 2), "2026-01-12", seed=2, model_version="nba-test/9")
    trail.close()
    cfg = load_experiments_config(write_configs(tmp_path / "cfg", url), overrides={"monitor.log_to_mlflow": False, "monitor.html": False})
    s = monitor_job(cfg, "2026-01-05..2026-01-12", "2026-01-12..2026-01-19", progress=False)
    assert s["catalogue"] is None and not s["catalogue_drift"]
    assert any(n.startswith("catalogue check skipped") for n in s["notes"]) and s["features_compared"] > 20


def _evidently_columns(page: str) -> dict[str, bool]:
    """Evidently's own per-column result in a saved report: column -> drift detected."""
    import re

    found = re.findall(r"Drift in column '([^']+)'\", \"label\": \"Data drift (not )?detected", page)
    return {col: not negated for col, negated in found}


@pytest.mark.parametrize(("current", "drift"), [("2026-01-12..2026-01-19", False), ("2026-01-19..2026-01-26", True)])
def test_html_report_opens_with_the_cli_verdict_and_tests_columns_by_its_bars(audit, current: str, drift: bool) -> None:
    """One drift verdict: the report's first block is the CLI's headline, and Evidently calls a column drifted exactly when the rule's bar is passed."""
    from experiments.drift_report import BLOCK_ID, column_bars, verdict_lines

    _, cfg_path = audit
    cfg = load_experiments_config(cfg_path, overrides={"monitor.log_to_mlflow": False})
    s = monitor_job(cfg, "2026-01-05..2026-01-12", current, progress=False)
    assert s["drift_detected"] is drift
    page = Path(s["outputs"]["features_html"]).read_text(encoding="utf-8")
    body = page[page.index("<body") :]
    assert body[body.index(">") + 1 :].lstrip().startswith(f'<div id="{BLOCK_ID}"')  # the verdict comes first
    headline, reasons = verdict_lines(s)
    assert f"Verdict: {headline}" in page and headline.startswith("DRIFT" if drift else "no drift")
    assert all(r.replace("'", "&#x27;") in page for r in reasons)
    columns = _evidently_columns(page)
    assert columns, "no per-column results found in the Evidently report"
    # 800 rows per side, under max_rows and report_rows: the report scores exactly the rows the verdict scored.
    scores = {r["column"]: r["score"] for r in [*s["features"], *s["sequences"]]}
    bars = column_bars(s, cfg.monitor.thresholds)
    for col, detected in columns.items():
        assert detected == (scores[col] >= bars[col]), (col, scores[col], bars[col])
    if not drift:
        assert not any(columns.values())  # the CLI says no drift: no panel below says otherwise
    else:
        assert any(detected for col, detected in columns.items() if col.startswith("email_"))


def test_column_bar_is_the_group_bar_or_the_noise_floor_multiple() -> None:
    from experiments.config import Thresholds
    from experiments.drift_report import column_bar, with_verdict

    t = Thresholds()
    assert column_bar("touches_total", 0.0, t, sequence=True) == t.activity_score  # activity: Evidently's fixed 0.1 flagged it
    assert column_bar("email_open_rate_90d", 0.0, t) == t.feature_score
    assert column_bar("email_open_rate_90d", 0.5, t) == pytest.approx(t.noise_multiple * 0.5)
    assert with_verdict("<html><body class='x'><div id='root'></div></body></html>", "<div id='v'></div>").index("<div id='v'>") < with_verdict(
        "<html><body class='x'><div id='root'></div></body></html>", "<div id='v'></div>"
    ).index("<div id='root'>")
