"""`nba recommend` validates its planning-horizon flags before loading anything, naming the flag."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from nba.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "flag", "message"),
    [
        (["--decision-date", "3000-01-01"], "--decision-date", "outside"),
        (["--decision-date", "2026-02-30"], "--decision-date", "not a date"),
        (["--window", "month"], "--window", "must be one of"),
        (["--window", "today", "--decision-date", "2026-05-01"], "--decision-date", "either"),
        (["--as-of", "1500-01-01T00:00:00+00:00"], "--as-of", "outside"),
    ],
)
def test_bad_horizon_flags_exit_2_naming_the_flag(tmp_path, args, flag, message) -> None:
    result = runner.invoke(app, ["recommend", "--all", "--out", str(tmp_path / "crm.csv"), *args])
    assert result.exit_code == 2, result.output
    assert flag in result.output and message in result.output
