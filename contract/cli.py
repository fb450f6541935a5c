"""CLI of the contract stage: ``nba import``, ``nba validate`` and ``nba bench import``.

Only typer and the standard library are imported here; the work happens in contract.importer.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Optional

import typer

EXIT_INVALID = 2


def parse_now(text: Optional[str]) -> dt.datetime:
    """The ``--now`` reference time: now in UTC, or an ISO 8601 time with an offset (BadParameter otherwise)."""
    return _now(text)


def report_import_issues(issues, errors_out: Optional[Path] = None, config: Optional[Path] = None) -> None:
    """Print an import's issues as the import command does (and write them to ``errors_out``)."""
    _report_issues(issues, _config(config, {}), errors_out)


def _now(text: Optional[str]) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time", param_hint="--now") from None
    if value.tzinfo is None:
        raise typer.BadParameter(f"{text!r} has no timezone; give an offset such as +08:00 or Z", param_hint="--now")
    return value


def _console():
    from rich.console import Console

    # Not a terminal (pipes, CliRunner): wide enough that file names and messages stay on one line.
    return Console(width=shutil.get_terminal_size((200, 24)).columns, soft_wrap=False)


def _config(config: Optional[Path], overrides: dict):
    from contract.config import ContractConfig
    from nba.configuration import load_config

    return load_config(ContractConfig, "contract", config, overrides=overrides)


def _report_issues(issues, cfg, errors_out: Optional[Path]) -> None:
    from contract.issues import render_issues, write_issues_csv

    if issues:
        render_issues(issues, limit=cfg.list_limit, console=_console())
    if errors_out is not None:
        n = write_issues_csv(issues, errors_out)
        typer.echo(f"wrote {n} issue(s) to {errors_out}")


def _counts(issues) -> dict:
    return {"errors": sum(i.severity == "error" for i in issues), "warnings": sum(i.severity == "warning" for i in issues)}


_CONFIG_OPT = typer.Option(None, "--config", help="Config YAML (default configs/contract.yaml).")
_NOW_OPT = typer.Option(None, "--now", help="Reference time for the no-future rule, ISO 8601 with offset (default: now).")
_ERRORS_OPT = typer.Option(None, "--errors-out", help="Write every issue found to this CSV file.")
_CAP_OPT = typer.Option(None, "--max-issues-per-rule", help="Issues listed per file, column and rule (config: max_issues_per_rule).")
_LIMIT_OPT = typer.Option(None, "--list-limit", help="Issues printed as a table (config: list_limit).")


def import_command(
    src_dir: Path = typer.Argument(..., help="CRM export: one <table>.csv or <table>.parquet per contract table."),
    out: Path = typer.Option(..., "--out", "-o", help="Dataset directory to create or merge into."),
    now: Optional[str] = _NOW_OPT,
    errors_out: Optional[Path] = _ERRORS_OPT,
    config: Optional[Path] = _CONFIG_OPT,
    max_issues_per_rule: Optional[int] = _CAP_OPT,
    list_limit: Optional[int] = _LIMIT_OPT,
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Progress bars on stderr (config: progress)."),
) -> None:
    """Validate every row of a CRM export and merge it into a dataset atomically (exit 2 on any error)."""
    from contract.importer import DatasetBusy, ImportRejected, import_export
    from contract.io import dataset_fingerprint

    cfg = _config(config, {"max_issues_per_rule": max_issues_per_rule, "list_limit": list_limit, "progress": progress})
    reference = _now(now)
    started = time.perf_counter()
    try:
        result = import_export(src_dir, out, now=reference, cap=cfg.max_issues_per_rule, progress=cfg.progress)
    except ImportRejected as exc:
        _report_issues(exc.issues, cfg, errors_out)
        typer.echo(f"import rejected: nothing written to {out}")
        typer.echo(json.dumps({"status": "rejected", **_counts(exc.issues), "elapsed_s": round(time.perf_counter() - started, 3)}))
        raise typer.Exit(EXIT_INVALID) from None
    except (FileNotFoundError, FileExistsError, DatasetBusy) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_INVALID) from None
    elapsed = time.perf_counter() - started
    # The per-HCP index of the new tables, so the first /feedback push after an import does not build it.
    from contract.by_hcp import ensure_index

    t_index = time.perf_counter()
    ensure_index(result.data_dir)
    index_s = time.perf_counter() - t_index
    _report_issues(result.issues, cfg, errors_out)
    _print_summary(result.stats)
    tables = {
        n: {"rows_read": s.rows_read, "rows_inserted": s.inserted, "rows_unchanged": s.unchanged, "rows_updated": s.updated, "rows_total": s.rows_total}
        for n, s in result.stats.items()
    }
    typer.echo(f"imported {src_dir} into {result.data_dir}")
    typer.echo(
        json.dumps(
            {
                "status": "ok",
                **_counts(result.issues),
                "rows_read": sum(s.rows_read for s in result.stats.values()),
                "rows_inserted": sum(s.inserted for s in result.stats.values()),
                "rows_unchanged": sum(s.unchanged for s in result.stats.values()),
                "rows_updated": sum(s.updated for s in result.stats.values()),
                "tables": tables,
                "fingerprint": dataset_fingerprint(result.data_dir),
                "elapsed_s": round(elapsed, 3),
                "index_s": round(index_s, 3),
            },
            sort_keys=True,
        )
    )


def _print_summary(stats) -> None:
    from rich.table import Table

    table = Table(title="import summary (rows)")
    for name in ("table", "read", "inserted", "unchanged", "updated", "total"):
        table.add_column(name, justify="left" if name == "table" else "right")
    for name, s in stats.items():
        table.add_row(name, *(f"{v:,}" for v in (s.rows_read, s.inserted, s.unchanged, s.updated, s.rows_total)))
    _console().print(table)


def validate_command(
    data_dir: Path = typer.Argument(..., help="Dataset directory written by `nba import` or `nba simulate`."),
    now: Optional[str] = _NOW_OPT,
    errors_out: Optional[Path] = _ERRORS_OPT,
    config: Optional[Path] = _CONFIG_OPT,
    max_issues_per_rule: Optional[int] = _CAP_OPT,
    list_limit: Optional[int] = _LIMIT_OPT,
) -> None:
    """Re-check an existing dataset against the contract (exit 2 on any error)."""
    from contract.importer import validate_dataset

    cfg = _config(config, {"max_issues_per_rule": max_issues_per_rule, "list_limit": list_limit})
    started = time.perf_counter()
    try:
        issues, rows = validate_dataset(data_dir, now=_now(now), cap=cfg.max_issues_per_rule)
    except FileNotFoundError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_INVALID) from None
    _report_issues(issues, cfg, errors_out)
    counts = _counts(issues)
    status = "invalid" if counts["errors"] else "ok"
    typer.echo(f"{data_dir}: {status} ({counts['errors']} error(s), {counts['warnings']} warning(s))")
    typer.echo(json.dumps({"status": status, **counts, "rows": rows, "elapsed_s": round(time.perf_counter() - started, 3)}, sort_keys=True))
    if counts["errors"]:
        raise typer.Exit(EXIT_INVALID)


def bench_import_command(
    rows: int = typer.Option(1_000_000, "--rows", min=1, help="Touchpoint rows in the synthetic export."),
    hcps: int = typer.Option(10_000, "--hcps", min=1, help="HCPs in the synthetic export."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed repetitions; medians are reported."),
    fmt: str = typer.Option("csv", "--format", help="Export file format: csv or parquet."),
    seed: int = typer.Option(0, "--seed", help="Seed of the synthetic export."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Scratch directory (default: a temporary one, removed after)."),
) -> None:
    """Time read+coerce+validate and a full import of a synthetic export against a plain Arrow read."""
    from contract.bench import run_import_bench

    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter("must be csv or parquet", param_hint="--format")
    figures = run_import_bench(rows=rows, hcps=hcps, repeats=repeats, fmt=fmt, seed=seed, workdir=workdir)
    typer.echo(json.dumps(figures, sort_keys=True))


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add ``import`` and ``validate`` to ``nba`` and ``import`` to ``nba bench``."""
    app.command("import")(import_command)
    app.command("validate")(validate_command)
    bench_app.command("import")(bench_import_command)
