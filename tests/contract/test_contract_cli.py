"""``nba import`` / ``nba validate`` / ``nba bench import``: exit codes, readable errors, JSON last line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from contract_fixtures import set_cell
from typer.testing import CliRunner

from nba.cli import app

runner = CliRunner()
NOW = "2025-03-01T12:00:00+00:00"


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_import_ok_prints_summary_and_counts(csv_export: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(csv_export), "--out", str(tmp_path / "data"), "--now", NOW, "--no-progress"])
    assert result.exit_code == 0, result.output
    figures = _last_json(result.stdout)
    assert figures["status"] == "ok" and figures["errors"] == 0
    assert figures["tables"]["touchpoints"] == {"rows_read": 4, "rows_inserted": 4, "rows_unchanged": 0, "rows_updated": 0, "rows_total": 4}
    assert figures["rows_read"] == 2 + 2 + 3 + 3 + 2 + 4 + 3 + 2  # products, reps, hcps, hcp_profile_history, content, ...
    assert "import summary" in result.output
    again = runner.invoke(app, ["import", str(csv_export), "--out", str(tmp_path / "data"), "--now", NOW, "--no-progress"])
    assert _last_json(again.stdout)["rows_unchanged"] == figures["rows_inserted"]
    assert _last_json(again.stdout)["fingerprint"] == figures["fingerprint"]


def test_import_errors_exit_2_with_table_and_csv(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "touchpoints", 2, "ts", "2025-02-04 12:00:00")
    set_cell(csv_export, "reps", 1, "visit_capacity_per_day", "-4")
    errors_csv = tmp_path / "errors.csv"
    result = runner.invoke(
        app, ["import", str(csv_export), "--out", str(tmp_path / "data"), "--now", NOW, "--errors-out", str(errors_csv), "--list-limit", "1", "--no-progress"]
    )
    assert result.exit_code == 2, result.output
    assert "reps.csv" in result.output and "visit_capacity_per_day" in result.output
    assert "and 1 more" in result.output  # listing capped at 1
    assert "nothing written" in result.output and not (tmp_path / "data").exists()
    assert _last_json(result.stdout) | {"elapsed_s": 0} == {"status": "rejected", "errors": 2, "warnings": 0, "elapsed_s": 0}
    with errors_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["file"], r["row"], r["line"], r["column"], r["rule"]) for r in rows} == {
        ("reps.csv", "1", "2", "visit_capacity_per_day", "min"),
        ("touchpoints.csv", "2", "3", "ts", "timestamp_without_timezone"),
    }


def test_import_rejects_naive_now(csv_export: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(csv_export), "--out", str(tmp_path / "data"), "--now", "2025-03-01T12:00:00"])
    assert result.exit_code == 2
    assert "no timezone" in result.output


def test_import_missing_source_dir_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(tmp_path / "nope"), "--out", str(tmp_path / "data")])
    assert result.exit_code == 2
    assert "export directory not found" in result.output


def test_validate_exit_codes(csv_export: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert runner.invoke(app, ["import", str(csv_export), "--out", str(data), "--now", NOW, "--no-progress"]).exit_code == 0
    ok = runner.invoke(app, ["validate", str(data), "--now", NOW])
    assert ok.exit_code == 0, ok.output
    assert _last_json(ok.stdout)["rows"]["touchpoints"] == 4
    # A week earlier, the February events of the dataset lie in the future.
    bad = runner.invoke(app, ["validate", str(data), "--now", "2025-02-05T00:00:00Z"])
    assert bad.exit_code == 2
    figures = _last_json(bad.stdout)
    assert figures["status"] == "invalid" and figures["errors"] >= 3
    assert "touchpoints.parquet" in bad.output and "future" in bad.output
    missing = runner.invoke(app, ["validate", str(tmp_path / "empty")])
    assert missing.exit_code == 2 and "not an nba dataset" in missing.output


def test_bench_import_prints_figures_last(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", "import", "--rows", "500", "--hcps", "50", "--repeats", "1", "--workdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    figures = _last_json(result.stdout)
    assert figures["touchpoint_rows"] == 500
    assert figures["validate_s_median"] > 0 and figures["validate_to_baseline_read_ratio"] > 0
    assert list(tmp_path.iterdir()) == []  # scratch removed


def test_stock_config_loads_and_bad_override_names_the_key() -> None:
    import pytest

    from contract.config import ContractConfig
    from nba.configuration import ConfigError, load_config

    cfg = load_config(ContractConfig, "contract")
    assert cfg.list_limit == 50 and cfg.max_issues_per_rule == 1000
    with pytest.raises(ConfigError, match="max_issues_per_rule"):
        load_config(ContractConfig, "contract", overrides={"max_issues_per_rule": 0})
