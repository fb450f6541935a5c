"""`nba bench train` prints one JSON object of figures, units in the names, as its last line."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from nba.cli import app
from training.bench import synthetic_encoded

runner = CliRunner()


def test_bench_train_reports_figures() -> None:
    result = runner.invoke(app, ["bench", "train", "--hcps", "40", "--weeks", "5", "--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "batch_size=32", "--max-batches", "4"])
    assert result.exit_code == 0, result.output[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 200 and figures["epoch_extrapolated_from_batches"] == 4
    assert figures["epoch_s_median"] > 0 and figures["train_rows_per_s_median"] > 0
    assert figures["peak_rss_mb"] >= figures["peak_rss_before_mb"] > 0
    assert figures["objective_vs_naive_throughput_ratio"] > 0


def test_synthetic_encoded_respects_padding() -> None:
    data = synthetic_encoded(500, 6, 20, 3, seed=1)
    pad = np.arange(6)[None, :] >= data.arrays["length"][:, None]
    for key in ("channel", "content", "response", "weekday", "daypart"):
        assert (data.arrays[key][pad] == 0).all() and (data.arrays[key][~pad] > 0).all()
    assert data.arrays["content"].max() < 20
