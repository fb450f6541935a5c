"""CLI of the features stage: ``nba features build|apply|materialize`` and ``nba bench features``.

Only typer and the standard library at top level; feast and the transforms load inside commands.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

features_app = typer.Typer(help="Feast feature store: build sources, register definitions, materialize online.", no_args_is_help=True)

_CONFIG = typer.Option(None, "--config", help="Config YAML (default configs/features.yaml).")
_DATA = typer.Option(None, "--data-dir", help="Contract dataset directory (config: data_dir).")
_WS = typer.Option(None, "--workspace", help="Feature workspace directory (config: workspace_dir).")
_SET = typer.Option(None, "--set", help="Override any config key, e.g. --set online_store.type=redis (repeatable).")


def _cfg(config: Optional[Path], data_dir: Optional[Path], workspace: Optional[Path], sets: Optional[list[str]], **extra):
    from features.config import load_features_config
    from nba.configuration import parse_override

    overrides = {"data_dir": str(data_dir) if data_dir else None, "workspace_dir": str(workspace) if workspace else None, **extra}
    for text in sets or []:
        key, value = parse_override(text)
        overrides[key] = value
    return load_features_config(config, overrides)


def features_cfg(config: Optional[Path] = None, data_dir: Optional[Path] = None, workspace: Optional[Path] = None, sets: Optional[list[str]] = None, **extra):
    """The features config from a YAML, the usual flags and ``--set`` overrides (shared with ``nba sync``)."""
    return _cfg(config, data_dir, workspace, sets, **extra)


def _when(text: Optional[str], hint: str) -> Optional[dt.datetime]:
    if text is None:
        return None
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint=hint) from None
    if value.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no timezone; add Z or an offset", param_hint=hint)
    return value


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


@features_app.command("build")
def build_command(
    config: Optional[Path] = _CONFIG,
    data_dir: Optional[Path] = _DATA,
    workspace: Optional[Path] = _WS,
    sequence_length: Optional[int] = typer.Option(None, "--sequence-length", help="Touchpoints per sequence (config: sequence_length)."),
    sets: Optional[list[str]] = _SET,
) -> None:
    """Compute weekly feature snapshots from a contract dataset into Parquet sources."""
    from features.build import build_sources

    cfg = _cfg(config, data_dir, workspace, sets, sequence_length=sequence_length)
    try:
        manifest = build_sources(cfg)
    except (FileNotFoundError, ValueError) as exc:
        _fail(exc)
    typer.echo(json.dumps({"sources_dir": str(cfg.sources_dir), "hcps": manifest["hcps"], "snapshots": manifest["snapshots"], "rows": manifest["rows"]}))


@features_app.command("apply")
def apply_command(
    config: Optional[Path] = _CONFIG, data_dir: Optional[Path] = _DATA, workspace: Optional[Path] = _WS, sets: Optional[list[str]] = _SET
) -> None:
    """Render the Feast repo into the workspace and register its definitions."""
    from features.repo import FeatureRepoMismatch, apply

    cfg = _cfg(config, data_dir, workspace, sets)
    try:
        summary = apply(cfg)
    except FeatureRepoMismatch as exc:
        _fail(exc)
    typer.echo(json.dumps(summary))


@features_app.command("materialize")
def materialize_command(
    config: Optional[Path] = _CONFIG,
    data_dir: Optional[Path] = _DATA,
    workspace: Optional[Path] = _WS,
    end: Optional[str] = typer.Option(None, "--end", help="Materialize rows before this ISO time (default: just past the last snapshot)."),
    start: Optional[str] = typer.Option(None, "--start", help="Start of the interval (full mode only)."),
    incremental: bool = typer.Option(True, "--incremental/--full", help="Continue from the last run (default) or reload [start, end)."),
    sets: Optional[list[str]] = _SET,
) -> None:
    """Load feature rows up to an end date into the online store."""
    from features.repo import FeatureRepoMismatch, materialize

    cfg = _cfg(config, data_dir, workspace, sets)
    try:
        summary = materialize(cfg, _when(end, "--end"), incremental=incremental, start=_when(start, "--start"))
    except (FeatureRepoMismatch, FileNotFoundError) as exc:
        _fail(exc)
    typer.echo(json.dumps(summary))


def make_bench_command(simulate: Optional[Callable[..., Any]] = None) -> Callable[..., None]:
    """`nba bench features`; ``simulate`` (``nba.wiring.simulate_dataset``) makes the data when no --data-dir is given."""

    def bench_command(
        hcps: int = typer.Option(100_000, "--hcps", help="HCPs to build, materialize and read."),
        weeks: int = typer.Option(52, "--weeks", help="Label weeks in the training-set benchmark."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Use this contract dataset instead of simulating one."),
        quick: bool = typer.Option(False, "--quick", help="Small sizes (2,000 HCPs, 8 weeks) for a smoke run."),
        reads: int = typer.Option(200, "--reads", help="Repeated online reads per measurement."),
        redis_url: str = typer.Option("redis://127.0.0.1:6379/14", "--redis-url", help="Redis for the Redis online-store figures (skipped if unreachable)."),
        workdir: Optional[Path] = typer.Option(None, "--workdir", help="Scratch directory (default: a temporary one, removed after)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the simulated world and of the sampled ids."),
        days: int = typer.Option(365, "--days", help="Simulated days (without --data-dir)."),
        parts: str = typer.Option(
            "build,reads,training",
            "--parts",
            help="Comma-separated parts: build (simulate, build, materialise), reads (latency), training. Partial runs share --workdir.",
        ),
    ) -> None:
        """Online read latency (SQLite, Redis), materialisation and training-set build on simulator data; JSON last line."""
        from features.bench import PARTS, run_bench

        if quick:
            hcps, weeks, reads = min(hcps, 2_000), min(weeks, 8), min(reads, 50)
        chosen = tuple(p.strip() for p in parts.split(",") if p.strip())
        bad = sorted(set(chosen) - set(PARTS)) or (not chosen and ["(none)"])
        if bad:
            raise typer.BadParameter(f"unknown part(s) {bad}; choose from {', '.join(PARTS)}", param_hint="--parts")
        if workdir is None and set(chosen) != set(PARTS):
            raise typer.BadParameter("running only some parts needs --workdir (the parts share its data and stores)", param_hint="--parts")
        figures = run_bench(
            hcps=hcps, weeks=weeks, data_dir=data_dir, reads=reads, redis_url=redis_url, workdir=workdir, seed=seed, days=days, parts=chosen, simulate=simulate
        )
        typer.echo(json.dumps(figures, sort_keys=True))

    return bench_command


def register(app: typer.Typer, bench_app: typer.Typer, simulate: Optional[Callable[..., Any]] = None) -> None:
    """Add ``nba features ...`` and ``nba bench features``; ``simulate`` is the composition root's data source (nba.wiring)."""
    app.add_typer(features_app, name="features")
    bench_app.command("features")(make_bench_command(simulate))
