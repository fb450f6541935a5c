"""Config validation names the bad key; ``nba simulate`` and ``nba bench simulate`` end with JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from contract.io import read_manifest
from nba.cli import app
from nba.configuration import ConfigError, load_config
from simulator.config import SimulatorConfig

runner = CliRunner()


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"hcps": 0}, "hcps"),
        ({"days": 20}, "days"),
        ({"start_date": "2025-01-07"}, "start_date"),
        ({"behaviour.exploration": 0}, "behaviour.exploration"),
        ({"population.consent": {"visit": 2.0}}, "population.consent"),
        ({"drift.events": [{"week": 3, "channel": "fax", "delta_logit": 1.0}]}, "drift.events.0.channel"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_config_fails_at_load_naming_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"simulator.yaml: {key}: ")):
        load_config(SimulatorConfig, "simulator", overrides=overrides)


def test_future_end_date_is_refused() -> None:
    with pytest.raises(ConfigError, match="lies in the future"):
        load_config(SimulatorConfig, "simulator", overrides={"start_date": "2026-11-02", "days": 365})


def test_stock_config_loads_with_documented_defaults() -> None:
    cfg = load_config(SimulatorConfig, "simulator")
    assert (cfg.seed, cfg.hcps, cfg.days, str(cfg.out)) == (7, 2000, 365, ".nba/data")
    assert cfg.weeks == 52


def test_simulate_command_writes_a_dataset(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = runner.invoke(app, ["simulate", "--hcps", "120", "--days", "28", "--seed", "5", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    manifest = read_manifest(out)
    assert figures["touchpoints_rows"] == manifest["tables"]["touchpoints"]["rows"] > 0
    assert figures["hcps_rows"] == 120 and manifest["simulator"]["seed"] == 5
    assert (out / "_ground_truth" / "world.json").exists()
    # A second run replaces the dataset atomically: no staging leftovers beside it.
    result = runner.invoke(app, ["simulate", "--hcps", "130", "--days", "28", "--out", str(out), "--quiet"])
    assert result.exit_code == 0 and read_manifest(out)["tables"]["hcps"]["rows"] == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_bench_simulate_prints_figures_last(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "simulate", "--hcps", "150", "--days", "28", "--seed", "1", "--repeats", "2"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["hcps"] == 150 and figures["simulate_wall_s"] > 0 and figures["peak_rss_mb"] > 0
    assert figures["touchpoints_rows"] > 0 and figures["touchpoints_rows_per_s"] > 0
    assert figures["repeats"] == 2 and figures["phase_weeks_s"] > 0 and figures["wall_ratio_to_parquet_write"] > 1


def test_bench_oracle_gap_scores_the_ready_policies(small_world: Path) -> None:
    result = runner.invoke(app, ["bench", "oracle-gap", "--data", str(small_world), "--weeks", "4"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["weeks"] == 4 and figures["hcps"] == 400
    assert figures["logged_share_of_oracle_gain_responses"] == 0.0 and figures["oracle_share_of_oracle_gain_responses"] == 1.0
    assert figures["oracle_responses_ratio_to_logged"] > 1.5


def test_bench_oracle_gap_needs_ground_truth(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "oracle-gap", "--data", str(tmp_path)])
    assert result.exit_code != 0 and "no simulator ground truth" in str(result.exception)


def test_simulate_command_rejects_bad_flags_naming_the_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = "import sys; from nba.cli import main; sys.argv = ['nba', 'simulate', '--hcps', '0', '--out', sys.argv[1]]; main()"
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "x")], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 2 and "hcps:" in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()
