"""``nba sync SRC_DIR``: a CRM export into the online store any day of the week, only what changed.

Import (validated, atomic, idempotent), then recompute the features of the HCPs the import
touched and write them online (``features.repo.materialize_hcps``), stamped as of the end of the
imported day (00:00 UTC after the dataset's newest touch or feedback: the state a day-grain
training row of the next day reads), then record what the online store reflects. The weekly ``nba features build`` stays the path for training sources; the sync
keeps serving current in between. ``nba bench sync`` times one simulated day's export.

Only typer and the standard library at import time: ``nba --help`` stays instant.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

# Tables whose rows carry an hcp_id: a touched row means that HCP's features change.
HCP_TABLES = ("hcps", "touchpoints", "feedback", "outcomes", "hcp_profile_history")


def _say(text: str) -> None:
    print(f"sync: {text}", file=sys.stderr, flush=True)


def affected(touched: dict[str, Any], tables: dict[str, Any]) -> tuple[set[str], bool]:
    """(HCP ids whose features change, whether the content view changes) for an import's touched rows.

    ``tables`` is the merged dataset (Arrow). A product's lifecycle is an HCP profile feature and a
    content item's topic and type feed per-topic recency, so changed products and content reach
    the HCPs that use them; reps feed only serving's reference data, not features.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    hcps: set[str] = set()
    for name in HCP_TABLES:
        t = touched.get(name)
        if t is not None and t.num_rows:
            hcps.update(t.column("hcp_id").drop_null().to_pylist())
    products = touched.get("products")
    if products is not None and products.num_rows:
        h = tables["hcps"]
        hit = pc.is_in(h.column("main_product_id"), value_set=products.column("product_id").combine_chunks().cast(pa.string()))
        hcps.update(h.filter(pc.fill_null(hit, False)).column("hcp_id").to_pylist())
    content = touched.get("content")
    content_changed = content is not None and content.num_rows > 0
    if content_changed:
        tp = tables["touchpoints"]
        hit = pc.is_in(tp.column("content_id"), value_set=content.column("content_id").combine_chunks().cast(pa.string()))
        hcps.update(tp.filter(pc.fill_null(hit, False)).column("hcp_id").to_pylist())
    return hcps, content_changed


def run_sync(
    src_dir: str | Path,
    features_cfg: Any,
    *,
    now: dt.datetime | None = None,
    cap: int | None = None,
    say: Callable[[str], None] = _say,
    written: list[str] | None = None,
) -> dict[str, Any]:
    """Import ``src_dir`` into ``features_cfg.data_dir`` and bring the online store up to date; a summary dict.

    ``written``, when given, receives the HCP ids whose online rows were rewritten (for ``after_sync``).

    Idempotent: a second run with the same export changes nothing and reports ``no_change``.
    Crash-safe: the HCPs still to write are recorded before writing and retried by the next run;
    when the online store is behind the dataset for reasons unknown (a plain ``nba import``, or
    a crash before that record), every HCP is recomputed.
    """
    from contract.coercion import DEFAULT_CAP
    from contract.importer import import_export
    from contract.io import dataset_fingerprint
    from features.build import read_contract
    from features.repo import materialize_hcps, open_store, read_online_state, write_online_state

    cfg = features_cfg.resolved()
    t0 = time.perf_counter()
    state = read_online_state(cfg)
    if not state:
        raise FileNotFoundError(
            f"{cfg.workspace_dir}: the online store was never loaded; run `nba features build`, "
            "`nba features apply` and `nba features materialize` once before syncing"
        )
    store = open_store(cfg)  # fails early, naming the fix, when the registry does not match
    pending = state.get("pending") or {}
    # The dataset version the online store reflects (once a recorded pending write is done).
    reflected = pending.get("dataset_fingerprint") if pending else state.get("dataset_fingerprint")
    before = dataset_fingerprint(cfg.data_dir) if (Path(cfg.data_dir) / "_manifest.json").exists() else None
    behind = reflected is None or reflected != before
    say(f"import {src_dir} -> {cfg.data_dir}")
    result = import_export(src_dir, cfg.data_dir, now=now, cap=DEFAULT_CAP if cap is None else cap)
    t_import = time.perf_counter() - t0
    fingerprint = dataset_fingerprint(cfg.data_dir)
    inserted = sum(s.inserted for s in result.stats.values())
    updated = sum(s.updated for s in result.stats.values())
    say(f"imported: {inserted:,} rows inserted, {updated:,} updated ({t_import:.1f} s)")
    summary: dict[str, Any] = {"rows_inserted": inserted, "rows_updated": updated, "dataset_fingerprint": fingerprint}
    if not result.changed and not pending and not behind:
        say("nothing changed: the online store already reflects this dataset")
        return {
            "status": "no_change",
            **summary,
            "hcps_affected": 0,
            "rows_written": 0,
            "import_s": round(t_import, 3),
            "read_s": 0.0,
            "compute_s": 0.0,
            "online_write_s": 0.0,
            "total_s": round(time.perf_counter() - t0, 3),
        }
    t1 = time.perf_counter()
    tables = read_contract(cfg.data_dir)
    t_read = time.perf_counter() - t1
    hcps, content = affected(result.touched, tables)
    hcps.update(pending.get("hcps", []))
    content = content or bool(pending.get("content"))
    if behind:
        # The dataset moved without a sync we know of (a plain `nba import`, or a crash between an
        # import and the record of what it touched): only a full recompute is sure to be right.
        say("the online store is behind the dataset and what changed is unknown: recomputing every HCP")
        hcps, content = set(tables["hcps"].column("hcp_id").to_pylist()), True
    write_online_state(cfg, pending={"hcps": sorted(hcps), "content": content, "dataset_fingerprint": fingerprint})
    say(f"features for {len(hcps):,} HCP(s){' and the content catalogue' if content else ''}")
    out = materialize_hcps(cfg, sorted(hcps), tables=tables, content=content, store=store)
    write_online_state(cfg, pending=None, dataset_fingerprint=fingerprint, synced_as_of=out["as_of"])
    if written is not None:
        written.extend(sorted(hcps))
    total = time.perf_counter() - t0
    say(f"done: {out['rows_written']:,} online rows written as of {out['as_of']} ({total:.1f} s)")
    return {
        "status": "ok",
        **summary,
        "hcps_affected": out["hcps"],
        "content_view": content,
        "recomputed_all": behind,
        "views": out["views"],
        "rows_written": out["rows_written"],
        "as_of": out["as_of"],
        "import_s": round(t_import, 3),
        "read_s": round(t_read + out["read_s"], 3),
        "compute_s": out["compute_s"],
        "online_write_s": out["write_s"],
        "total_s": round(total, 3),
    }


def after_sync(features_cfg: Any, written: list[str], serving_config: Path | None, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """What follows a sync: the per-HCP index of the new dataset (so the first /feedback push does not build it), then the feedback re-push.

    The sync rewrote ``written``'s online rows from the contract alone, dropping outcomes that
    came in through /feedback after the CRM export was cut; those HCPs are pushed again with the
    serving audit trail's outcomes, when that deployment serves from this dataset.
    """
    from contract.by_hcp import ensure_index

    cfg = features_cfg.resolved()
    t0 = time.perf_counter()
    say("per-HCP index of the dataset (contract.by_hcp)")
    ensure_index(cfg.data_dir)
    out: dict[str, Any] = {"index_s": round(time.perf_counter() - t0, 3)}
    if not written:
        return out
    t1 = time.perf_counter()
    out["feedback_repush"] = _repush(cfg, written, serving_config, say)
    out["feedback_repush_s"] = round(time.perf_counter() - t1, 3)
    return out


def _repush(cfg: Any, written: list[str], serving_config: Path | None, say: Callable[[str], None]) -> dict[str, Any]:
    from features import load_features_config, open_store
    from nba.configuration import load_config
    from serving.audit import AuditTrail, AuditTrailMissing
    from serving.config import ServingConfig
    from serving.feedback import repush_not_imported

    scfg = load_config(ServingConfig, "serving", serving_config, {})
    served_from = Path(scfg.data_dir) if scfg.data_dir else Path(load_features_config(scfg.features_config).data_dir)
    if served_from.resolve() != Path(cfg.data_dir).resolve():
        say(f"feedback re-push skipped: serving reads {served_from}, not this dataset")
        return {"skipped": f"serving data_dir {served_from} is not {cfg.data_dir}"}
    try:
        audit = AuditTrail(scfg.audit_url, create="never")
    except AuditTrailMissing:
        return {"skipped": "no audit trail yet"}
    try:
        say(f"feedback not in the export yet: checking {len(written):,} HCP(s) against the audit trail")
        res = repush_not_imported(cfg, open_store(cfg), audit, written)
    finally:
        audit.close()
    say(f"pushed {res['hcps_repushed']:,} HCP(s) again with their fed-back outcomes ({res['failed_count']} failed)")
    return res


def sync_command(
    src_dir: Path = typer.Argument(..., help="CRM export: one <table>.csv or <table>.parquet per contract table."),
    config: Optional[Path] = typer.Option(None, "--config", help="Features config YAML (default configs/features.yaml)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Contract dataset to merge into (features config: data_dir)."),
    workspace: Optional[Path] = typer.Option(None, "--workspace", help="Feature workspace (features config: workspace_dir)."),
    now: Optional[str] = typer.Option(None, "--now", help="Reference time for the no-future rule, ISO 8601 with offset (default: now)."),
    errors_out: Optional[Path] = typer.Option(None, "--errors-out", help="Write every import issue found to this CSV file."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="Override a features config key, e.g. --set online_store.type=redis."),
    serving_config: Optional[Path] = typer.Option(
        None, "--serving-config", help="Serving YAML whose audit trail's fed-back outcomes are pushed again after the sync (default configs/serving.yaml)."
    ),
) -> None:
    """Import a CRM export and update the online store for what it changed, any day of the week (JSON summary last)."""
    from contract.cli import EXIT_INVALID, parse_now, report_import_issues
    from contract.importer import DatasetBusy, ImportRejected
    from features.cli import features_cfg
    from features.repo import FeatureRepoMismatch

    cfg = features_cfg(config, data_dir, workspace, sets)
    try:
        written: list[str] = []
        summary = run_sync(src_dir, cfg, now=parse_now(now), written=written)
        # After the online store is current (total_s): the index and the feedback re-push.
        summary.update(after_sync(cfg, written, serving_config))
    except ImportRejected as exc:
        report_import_issues(exc.issues, errors_out)
        typer.echo(f"import rejected: nothing written to {cfg.data_dir}, online store unchanged")
        typer.echo(json.dumps({"status": "rejected", "errors": sum(i.severity == "error" for i in exc.issues)}))
        raise typer.Exit(EXIT_INVALID) from None
    except (FileNotFoundError, FileExistsError, DatasetBusy, FeatureRepoMismatch, ValueError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_INVALID) from None
    typer.echo(json.dumps(summary, sort_keys=True))


def bench_sync_command(
    hcps: int = typer.Option(100_000, "--hcps", min=10, help="HCPs in the simulated world (the target: 100,000)."),
    days: int = typer.Option(365, "--days", min=8, help="Simulated days of history before the synced day (a year: the import and the reads scale with it)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated world."),
    fmt: str = typer.Option("csv", "--format", help="Export file format: csv or parquet."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Split this contract dataset instead of simulating one."),
    workdir: Optional[Path] = typer.Option(None, "--workdir", help="Scratch directory (default: a temporary one, removed after)."),
) -> None:
    """One day's CRM export for N HCPs, from export to the online store: seconds per step (JSON last line)."""
    from nba.sync_bench import run_sync_bench

    if fmt not in ("csv", "parquet"):
        raise typer.BadParameter("must be csv or parquet", param_hint="--format")
    figures = run_sync_bench(hcps=hcps, days=days, seed=seed, fmt=fmt, data_dir=data_dir, workdir=workdir)
    typer.echo(json.dumps(figures, sort_keys=True))


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add ``nba sync`` and ``nba bench sync``."""
    app.command("sync")(sync_command)
    bench_app.command("sync")(bench_sync_command)
