"""`nba bench train` prints one JSON object of figures, units in the names, as its last line."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from nba.cli import app
from training.bench import synthetic_encoded

runner = CliRunner()


def test_bench_train_reports_figures() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            "train",
            "--hcps",
            "40",
            "--weeks",
            "5",
            "--rows-per-hcp-week",
            "1",
            "--set",
            "model.d_model=16",
            "--set",
            "model.n_heads=2",
            "--set",
            "batch_size=32",
            "--max-batches",
            "4",
        ],
    )
    assert result.exit_code == 0, result.output[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 200 and figures["epoch_extrapolated_from_batches"] == 4
    for enc in ("transformer", "gru"):  # both encoders, each with its epoch and same-run baselines
        assert figures[f"{enc}_epoch_s"] > 0 and figures[f"{enc}_train_rows_per_s"] > 0 and figures[f"{enc}_epoch_cpu_s"] > 0
        assert figures[f"{enc}_speedup_vs_reference_path"] > 0 and figures[f"{enc}_objective_vs_naive_throughput_ratio"] > 0
        assert isinstance(figures[f"{enc}_epoch_target_met"], bool)
    assert figures["peak_rss_mb"] >= figures["peak_rss_before_mb"] > 0
    # Two forked workers by default: their CPU time is counted, and the run's memory covers both.
    assert figures["workers"] == 2 and figures["peak_rss_worker_mb"] > 0 and figures["peak_memory_mb"] >= figures["peak_rss_mb"]
    assert figures["transformer_data_parallel_speedup_vs_one_process"] > 0


def test_bench_train_rejects_an_unknown_encoder() -> None:
    result = runner.invoke(app, ["bench", "train", "--hcps", "4", "--weeks", "2", "--encoders", "lstm"])
    assert result.exit_code == 2 and "lstm" in result.output  # a usage error naming the bad value


def test_bench_train_default_rows_follow_the_simulator() -> None:
    result = runner.invoke(
        app, ["bench", "train", "--hcps", "20", "--weeks", "4", "--encoders", "gru", "--set", "model.d_model=8", "--set", "batch_size=16", "--max-batches", "2"]
    )
    assert result.exit_code == 0, result.output[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["rows"] == round(20 * 4 * figures["rows_per_hcp_week"]) and 1.0 < figures["rows_per_hcp_week"] < 1.2
    assert "transformer_epoch_s" not in figures and figures["encoders"] == "gru"


def test_synthetic_encoded_respects_padding() -> None:
    data = synthetic_encoded(500, 6, 20, 3, seed=1)
    pad = np.arange(6)[None, :] >= data.arrays["length"][:, None]
    for key in ("channel", "content", "response", "weekday", "daypart"):
        assert (data.arrays[key][pad] == 0).all() and (data.arrays[key][~pad] > 0).all()
    assert data.arrays["content"].max() < 20
