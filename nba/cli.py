"""The ``nba`` console command: one entry point to every job.

Each stage contributes its commands through ``<stage>/cli.py:register(app, bench_app)``.
Those modules import only typer at top level; feast, torch, mlflow, evidently are imported
inside the commands, so ``nba --help`` stays instant.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

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
    workdir: Path = typer.Option(Path(".nba/quickstart"), "--workdir", help="Where the run writes data, features, models and logs."),
    hcps: int = typer.Option(2000, "--hcps", min=50, help="HCPs in the simulated world."),
    days: int = typer.Option(365, "--days", min=28, help="Simulated days of history."),
    seed: int = typer.Option(7, "--seed", help="Seed of the simulated world."),
) -> None:
    """Main job end to end: simulate, validate, features, train, evaluate, promote, serve, ask."""
    from nba.quickstart import print_summary, run_quickstart

    print_summary(run_quickstart(workdir, hcps=hcps, days=days, seed=seed))


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


def main() -> None:
    """Console entry point: run the app, turning config errors into a clean exit 2."""
    import warnings

    # Third-party deprecation chatter (ibis inside Feast, ...) buries our progress output.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="feast")
    try:
        app()
    except ConfigError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
