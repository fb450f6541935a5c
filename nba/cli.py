"""The ``nba`` console command: one entry point to every job.

Each stage contributes its commands through ``<stage>/cli.py:register(app, bench_app)``.
Those modules import only typer at top level; feast, torch, mlflow, evidently are imported
inside the commands, so ``nba --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer

from nba import __version__
from nba.configuration import ConfigError

app = typer.Typer(
    name="nba",
    help="Next-best-action for pharma omnichannel HCP engagement.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
bench_app = typer.Typer(help="Benchmarks: each prints progress, then one JSON object of figures on the last line.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

# Stages in pipeline order. A stage without a cli module yet is simply skipped.
STAGES = ("contract", "simulator", "features", "training", "serving", "experiments")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"nba {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Next-best-action for pharma omnichannel HCP engagement."""


@app.command("contract")
def contract_cmd(
    write_readme: bool = typer.Option(False, "--write-readme", help="Rewrite the contract section of ./README.md in place."),
) -> None:
    """Print the CRM data contract (tables, columns, rules) as Markdown."""
    from pathlib import Path

    from contract.docs import BEGIN, END, contract_markdown

    text = contract_markdown()
    if not write_readme:
        typer.echo(text)
        return
    readme = Path("README.md")
    current = readme.read_text()
    if BEGIN not in current or END not in current:
        raise typer.BadParameter(f"{readme} has no contract markers ({BEGIN} ... {END})", param_hint="--write-readme")
    start, end = current.index(BEGIN), current.index(END) + len(END)
    readme.write_text(current[:start] + text + current[end:])
    typer.echo(f"updated {readme}")


@app.command("quickstart")
def quickstart_cmd(
    workdir: Path = typer.Option(Path(".nba/quickstart"), "--workdir", help="Where the run writes data, features, models, configs and the API key."),
    hcps: int = typer.Option(2000, "--hcps", min=50, help="HCPs in the simulated world."),
    days: int = typer.Option(365, "--days", min=56, help="Simulated days of history (at least 8 weeks: training keeps most, validation and test the rest)."),
    seed: int = typer.Option(7, "--seed", help="Seed of the simulated world."),
    world: Optional[str] = typer.Option(None, "--world", help="World preset of configs/worlds/ (default: the stock simulator config)."),
) -> None:
    """Main job end to end: simulate, validate, features, train, evaluate, promote, serve once, ask; then print the next steps.

    Leaves nothing running. A rerun into the same --workdir rebuilds it (a changed seed or world says what changed); a folder the quickstart did not write is refused.
    """
    from nba.quickstart import print_summary, run_quickstart

    print_summary(run_quickstart(workdir, hcps=hcps, days=days, seed=seed, world=world))


def _register_stages() -> None:
    from nba.wiring import stage_wiring

    for stage in STAGES:
        try:
            module = importlib.import_module(f"{stage}.cli")
        except ModuleNotFoundError as exc:
            if exc.name == f"{stage}.cli":
                continue
            raise
        # What a production stage may not import (the simulator as data source and judge) is handed in here.
        module.register(app, bench_app, **stage_wiring(stage))


_register_stages()


def _register_sync() -> None:
    # `nba sync` spans two stages (contract import, then features), so the composition root owns it.
    from nba.sync import register

    register(app, bench_app)


_register_sync()


def main() -> None:
    """Console entry point: run the app; config errors exit 2 and expected conditions exit 1, each as one clean line."""
    import os

    from nba.errors import ExpectedError
    from nba.quiet import quiet_output

    quiet_output()
    try:
        app()
    except ConfigError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)
    except (ExpectedError, FileNotFoundError) as exc:
        # A missing dataset or model is the user's next step, not a crash: one line naming it.
        # NBA_TRACEBACK=1 shows the traceback when a maintainer needs it.
        if os.environ.get("NBA_TRACEBACK"):
            raise
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(1)


if __name__ == "__main__":
    main()
