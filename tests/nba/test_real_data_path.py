"""The customer's path end to end, on data that came through `nba import` with no simulator truth.

A simulated year is exported as CSV the way a CRM would hand it over: no ``_ground_truth``, and
no propensities (real CRM logs rarely carry them). Then `nba import` -> `nba features build /
apply / materialize` -> `nba train` -> `nba evaluate` -> `nba promote` -> `nba serve` and a
/recommend over HTTP. Nothing here may need the simulator's truth: evaluation is off-policy with
an estimated logging policy, promotion is on that evidence.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "nba_real_data_key_2c9d"


def _last_json(result) -> dict:
    # Third-party progress bars (MLflow's downloads) write to the same captured stream without a newline.
    lines = [ln[ln.index('{"') :] for ln in result.output.strip().splitlines() if '{"' in ln and ln.rstrip().endswith("}")]
    assert lines, f"exit {result.exit_code}: {result.output[-2000:]}"
    return json.loads(lines[-1])


def _export_without_truth(sim_dir: Path, out: Path) -> None:
    """Each contract table as <table>.csv, propensities blanked; the ground truth left behind."""
    from contract.io import read_frame
    from contract.schema import TABLES

    out.mkdir(parents=True)
    for name in TABLES:
        frame = read_frame(sim_dir, name)
        if "propensity" in frame.columns:
            frame["propensity"] = None
        frame.to_csv(out / f"{name}.csv", index=False)


def test_import_train_evaluate_promote_serve_without_ground_truth(tmp_path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from nba.cli import app
    from serving.bench import free_port, post, wait_ready
    from serving.cli import serve_process

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    runner = CliRunner()
    sim = runner.invoke(app, ["simulate", "--hcps", "80", "--days", "112", "--seed", "5", "--out", str(tmp_path / "sim")])
    assert sim.exit_code == 0, sim.output[-2000:]
    _export_without_truth(tmp_path / "sim", tmp_path / "export")
    data = tmp_path / ".nba" / "data"  # the configs' default data_dir: every later command finds it without flags
    imported = runner.invoke(app, ["import", str(tmp_path / "export"), "--out", str(data), "--no-progress"])
    assert imported.exit_code == 0, imported.output[-2000:]
    assert not (data / "_ground_truth").exists()

    for args in (["features", "build", "--data-dir", str(data)], ["features", "apply"], ["features", "materialize", "--full"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, f"{args}: {res.output[-2000:]}"

    sets = [
        "--set",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "--set",
        f"tracking.artifact_location={tmp_path}/artifacts",
        "--set",
        f"output_dir={tmp_path}/models",
        "--set",
        "val_weeks=3",
        "--set",
        "test_weeks=3",
        "--set",
        "ope.n_boot=200",
        "--set",
        "model.d_model=16",
        "--set",
        "model.n_heads=2",
        "--set",
        "batch_size=256",
    ]
    trained = _last_json(runner.invoke(app, ["train", "--data-dir", str(data), "--epochs", "2", *sets]))
    evaluated = runner.invoke(app, ["evaluate", "--data-dir", str(data), *sets])
    figures = _last_json(evaluated)
    assert evaluated.exit_code == 0, evaluated.output[-2000:]
    # Logs alone: no simulator figure, off-policy estimates of the served policy with the reps' policy estimated.
    assert not any(k.startswith(("sim_", "gap_")) for k in figures)
    assert figures["evaluation_split"] == "test" and figures["split_overlaps_selection"] is False
    assert figures["ope_propensity_share_estimated"] == 1.0 and figures["ope_rows"] > 0
    assert figures["ope_ci_low"] <= figures["ope_value"] <= figures["ope_ci_high"]
    assert isinstance(figures["ope_verdict_trusted"], bool) and figures["ope_verdict"]

    promote = runner.invoke(app, ["promote", *sets])
    decision = _last_json(promote)
    assert promote.exit_code == 0 and "Traceback" not in promote.output
    assert decision["evidence"] == "ope" and decision["reason"]
    # The gate: the first model is promoted exactly when its lower bound beats the logged policy on trusted evidence.
    expected = figures["ope_vs_logged_ci_low"] > 0 and figures["ope_verdict_trusted"]
    assert decision["promoted"] is bool(expected)

    # Serve whatever the registry now says: the champion, or (not promoted) the rule policy, flagged.
    serving_yaml = tmp_path / "serving.yaml"
    serving_yaml.write_text(
        json.dumps(
            {
                "audit_url": f"sqlite:///{tmp_path / 'audit.db'}",
                "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                "require_auth": True,
                "require_model": bool(decision["promoted"]),
            }
        )
    )
    os.environ["NBA_API_KEYS"] = f"e2e:{KEY}"
    port = free_port()
    proc = serve_process(serving_yaml, {}, "127.0.0.1", port, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=150)
        from contract.io import read_frame

        hcp = str(read_frame(data, "hcps", columns=["hcp_id"])["hcp_id"].iloc[0])
        status, body = post(base, "/recommend", {"hcp_ids": [hcp], "k": 2}, key=KEY)
        assert status == 200, body
        assert body["results"][0]["suggestions"]
        if decision["promoted"]:
            assert body["model_version"] == f"nba-next-best-action/{decision['champion_version']}"
    finally:
        from nba.servers import stop_group

        stop_group(proc, timeout_s=20)
    assert trained["model_version"] is not None
