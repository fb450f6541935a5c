"""`nba bench ope` re-judges cached runs without simulating or training again."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments import ope_bench
from experiments.worlds_config import OpeBenchConfig


def _variant(seed: int, truth: float) -> dict:
    rng = np.random.default_rng(seed)
    n = 400
    p = np.full(n, 0.2)
    pi = np.where(rng.random(n) < 0.2, 0.95, 0.0)
    q = rng.uniform(0.3, 0.6, n)
    rows = {
        "reward": (rng.random(n) < q).astype(np.float64),
        "propensity": p,
        "pi_logged": pi,
        "q_logged": q,
        "q_target": q + 0.05,
        "support_mass": np.ones(n),
        "feasible_logged": np.ones(n, dtype=bool),
        "hcp_id": np.array([f"H{i // 4:03d}" for i in range(n)], dtype=object),
        "top_prob": np.tile([0.95, 0.05], (n, 1)).astype(np.float32),
        "propensity_source": np.zeros(n, dtype=np.int8),
    }
    return {"rows": rows, "keep": np.ones(n, dtype=bool), "truth": truth, "covered": 1.0, "figures": {"behaviour_ece": 0.01}}


def test_cache_round_trip_and_rejudge(tmp_path) -> None:
    cfg = OpeBenchConfig(workdir=tmp_path, hcps=100, n_boot=200)
    variants = {"logged": _variant(1, 0.5), "estimated": _variant(2, 0.5)}
    path = ope_bench.cache_path(cfg, "default", 7)
    ope_bench.save_run(path, {"test_rows": 400, "train_s": 12.0, "serve_s": 3.0}, variants)
    meta, back = ope_bench.load_run(path)
    assert meta["test_rows"] == 400 and set(back) == {"logged", "estimated"}
    for name, v in variants.items():
        assert back[name]["truth"] == v["truth"] and back[name]["figures"] == v["figures"]
        for k, col in v["rows"].items():
            assert np.array_equal(back[name]["rows"][k], col.astype(str) if col.dtype.kind == "O" else col), k
    # run_world reads the cache instead of simulating: seconds, not minutes, and the same figures twice
    row = ope_bench.run_world("default", 7, cfg)
    assert row["cached"] and row["train_s"] == 12.0 and row["test_rows"] == 400
    for variant in ("logged", "estimated"):
        for est in ope_bench.ESTIMATORS:
            lo, hi = row[f"{variant}_{est}_ci_low"], row[f"{variant}_{est}_ci_high"]
            assert row[f"{variant}_{est}_covers"] == (lo <= 0.5 <= hi)
        assert row[f"{variant}_switch_dr_ba_value"] == row[f"{variant}_switch_dr_value"] == row[f"{variant}_switch_dr_bb_value"]
        bb_lo, bb_hi, v = row[f"{variant}_switch_dr_bb_ci_low"], row[f"{variant}_switch_dr_bb_ci_high"], row[f"{variant}_switch_dr_bb_value"]
        assert bb_hi - v == pytest.approx(v - bb_lo) and bb_hi - v >= abs(row[f"{variant}_reward_model_error"])  # symmetric, at least the bound
        assert row[f"{variant}_behaviour_ece"] == 0.01
        assert row[f"{variant}_matched_rows"] == int((variants[variant]["rows"]["pi_logged"] > 0).sum())
        assert row[f"{variant}_reward_model_error"] == row[f"{variant}_dm_rc_value"] - row[f"{variant}_dm_value"]
    again = ope_bench.run_world("default", 7, cfg)
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in row.items() if k != "seconds"}
    summary = ope_bench.summarise([row, again], "switch_dr_bb")
    assert summary["runs"] == 2 and summary["chosen_estimator"] == "switch_dr_bb"
    assert summary["logged_switch_dr_bb_median_ci_width"] == pytest.approx(row["logged_switch_dr_bb_ci_width"])
    json.dumps(summary)
    ope_bench.plot([row, again], tmp_path / "coverage.png", "switch_dr_ba")  # asymmetric interval ends, drawn as they are
    assert (tmp_path / "coverage.png").stat().st_size > 0


def test_cache_key_changes_with_what_changes_the_rows(tmp_path) -> None:
    a = ope_bench.cache_path(OpeBenchConfig(workdir=tmp_path), "default", 1)
    assert a == ope_bench.cache_path(OpeBenchConfig(workdir=tmp_path, n_boot=500), "default", 1)  # resamples are re-judged, not re-simulated
    assert a != ope_bench.cache_path(OpeBenchConfig(workdir=tmp_path, epochs=3), "default", 1)
    assert a != ope_bench.cache_path(OpeBenchConfig(workdir=tmp_path, hcps=900), "default", 1)
    assert a != ope_bench.cache_path(OpeBenchConfig(workdir=tmp_path), "default", 2)
