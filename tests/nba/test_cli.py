"""The ``nba`` command: every subcommand answers --help, and start-up stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from nba.cli import app

runner = CliRunner()


def _commands(typer_app) -> list[list[str]]:
    import typer.main

    group = typer.main.get_command(typer_app)
    paths: list[list[str]] = []

    def walk(cmd, prefix: list[str]) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.append(prefix + [name])
            walk(sub, prefix + [name])

    walk(group, [])
    return paths


def test_root_help_lists_bench() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    assert "bench" in result.output


@pytest.mark.parametrize("path", _commands(app), ids=lambda p: " ".join(p))
def test_every_subcommand_has_help(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_does_not_import_heavy_packages() -> None:
    code = (
        "import sys\n"
        "from nba.cli import app\n"
        "heavy = [m for m in ('torch', 'feast', 'mlflow', 'evidently', 'bentoml', 'optuna') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy imports at CLI start-up: {out.stdout.strip()}"
