"""What `nba train` / `nba tune` / `nba promote` tell a person: progress on stderr, notes beside alarming-looking figures, one-line refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nba.cli import app
from training.metric_notes import metric_notes
from training.synthetic import synthetic_training_frame

runner = CliRunner()


def test_notes_explain_what_alarms_and_stay_quiet_otherwise() -> None:
    notes = metric_notes(
        {"val/channel_accuracy": 0.02, "val/slot_accuracy": 0.0, "train/channel_loss": -0.31, "train/response_loss": 0.52, "val/response_auc": 0.71}
    )
    assert len(notes) == 3
    acc, slot, loss = notes
    assert "val/channel_accuracy 0.020" in acc and "response head" in acc and "not a fault" in acc
    assert "val/slot_accuracy 0.000" in slot and "28" in slot
    assert "train/channel_loss -0.310" in loss and "train/response_loss" not in loss and "negative by construction" in loss
    assert metric_notes({"val/response_auc": 0.7, "train/loss": 0.4}) == []
    assert metric_notes({"val/channel_accuracy": float("nan")}) == []


def _sets(tmp_path) -> list[str]:
    return [
        "--set",
        "epochs=2",
        "--set",
        "val_weeks=2",
        "--set",
        "test_weeks=2",
        "--set",
        "batch_size=128",
        "--set",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        "--set",
        f"tracking.artifact_location={tmp_path}/artifacts",
        "--set",
        f"output_dir={tmp_path}/models",
    ]


@pytest.mark.slow
def test_train_then_tune_then_promote_talks_to_a_person(tmp_path, monkeypatch) -> None:
    """`nba train` labels its start and explains its figures (also in MLflow); `nba tune` prints a line per trial and epoch;
    `nba promote` right after `nba tune` (nothing evaluated) refuses in one line, no traceback."""
    monkeypatch.chdir(tmp_path)
    synthetic_training_frame(n_hcps=32, n_weeks=8, n_content=6, max_hist=8, seed=4).to_parquet(tmp_path / "ts.parquet")
    trained = runner.invoke(app, ["train", "--training-set", str(tmp_path / "ts.parquet"), "--objective", "dr", *_sets(tmp_path)])
    assert trained.exit_code == 0, trained.output[-3000:]
    assert trained.stderr.startswith("[train] ") and "progress bar per epoch" in trained.stderr
    assert "note: " in trained.stderr and "channel_accuracy" in trained.stderr
    run_id = json.loads(trained.stdout.strip().splitlines()[-1])["run_id"]
    from mlflow import MlflowClient

    note = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db").get_run(run_id).data.tags["mlflow.note.content"]
    assert "channel_accuracy" in note and "response head" in note

    tuned = runner.invoke(
        app,
        [
            "tune",
            "--trials",
            "2",
            "--storage",
            f"sqlite:///{tmp_path}/optuna.db",
            "--training-set",
            str(tmp_path / "ts.parquet"),
            "--set",
            "tune.startup_trials=1",
            *_sets(tmp_path),
        ],
    )
    assert tuned.exit_code == 0, tuned.output[-3000:]
    lines = [line for line in tuned.stderr.splitlines() if line.startswith("[tune] ")]
    assert lines[0].startswith("[tune] 2 trials")
    for trial in (0, 1):
        assert any(line.startswith(f"[tune] trial {trial} (") and " epochs" in line for line in lines), lines
        assert any(f"trial {trial} (" in line and "epoch 1/2: val/response_auc" in line for line in lines), lines
    assert any("done: val/policy_value_dr" in line and "best so far" in line for line in lines), lines

    main = "import sys; from nba.cli import main; sys.argv[0] = 'nba'; main()"
    promoted = subprocess.run([sys.executable, "-c", main, "promote", *_sets(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    err = [line for line in promoted.stderr.splitlines() if line.strip()]
    assert promoted.returncode == 1 and promoted.stdout == "", promoted.stderr[-2000:]
    assert len(err) == 1 and err[0].startswith("error: ") and "nba evaluate --version" in err[0], err
