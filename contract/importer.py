"""``nba import`` and ``nba validate``: a CRM export checked row by row, merged, written atomically.

Nothing is written unless every file passes: issues from reading, coercion, the row rules and
the merge are all collected first, and the dataset is replaced in one rename (contract.io).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from contract.coercion import DEFAULT_CAP, canonical_frame, coerce_arrow
from contract.io import file_sha256, read_manifest, read_table, staged_dir, table_path, to_arrow, write_tables
from contract.issues import RULE_MANIFEST, RULE_MISSING_FILE, RULE_UNKNOWN_FILE, SourceFile, ValidationIssue, errors, sort_issues
from contract.merge import MergePlan, MergeStats, apply_merge, plan_merge
from contract.readers import discover_export, read_source
from contract.schema import CONTRACT_VERSION, MANIFEST_NAME, REQUIRED_TABLES, TABLES
from contract.validate import validate_tables

IMPORT_SOURCE = "nba import"
_MANIFEST_KEYS = ("contract_version", "source", "tables")


class ImportRejected(Exception):
    """The export broke the contract; ``issues`` lists every problem found (nothing was written)."""

    def __init__(self, issues: list[ValidationIssue]) -> None:
        self.issues = issues
        n = len(errors(issues))
        super().__init__(f"import rejected: {n} error(s); first: {errors(issues)[0] if n else '-'}")


@dataclass
class ImportResult:
    """What an import did: per-table counts, warnings, and the manifest written."""

    data_dir: Path
    stats: dict[str, MergeStats]
    issues: list[ValidationIssue] = field(default_factory=list)
    manifest: dict = field(default_factory=dict)
    # Per table, the incoming rows that were inserted or changed a stored row (contract-typed
    # Arrow): what `nba sync` recomputes features for. Empty tables when a replay changed nothing.
    touched: dict[str, pa.Table] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """True when the import inserted or updated any row."""
        return any(s.inserted or s.updated for s in self.stats.values())


def load_dataset(data_dir: str | Path, tables: tuple[str, ...] | None = None) -> dict[str, pd.DataFrame]:
    """The tables of a dataset as contract-typed frames (the form ``validate_tables`` takes)."""
    manifest = read_manifest(data_dir)
    names = [n for n in TABLES if n in manifest["tables"] and (tables is None or n in tables)]
    return {n: canonical_frame(read_table(data_dir, n)) for n in names}


def _existing_manifest(data_dir: Path) -> dict:
    if not data_dir.exists() or not any(data_dir.iterdir()):
        return {}
    if not (data_dir / MANIFEST_NAME).exists():
        raise FileExistsError(f"{data_dir}: exists, is not empty and holds no {MANIFEST_NAME}; refusing to replace it with an import")
    return read_manifest(data_dir)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link ``src`` as ``dst`` (dataset files are never modified in place), else copy it."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _semi_join_mask(rows: pa.Table, keys: pa.Table, key: list[str]) -> np.ndarray:
    """[len(rows)] True where the row's primary key is among ``keys`` (Arrow hashing, no pandas index).

    The hash table is built on the smaller side: a day's export probing a year of stored keys
    hashes the day's few thousand keys, not the millions stored.
    """
    if not rows.num_rows or not keys.num_rows:
        return np.zeros(rows.num_rows, dtype=bool)
    rows_k, keys_k = rows.select(key), keys.select(key).cast(rows.select(key).schema)
    if keys_k.num_rows > rows_k.num_rows:
        keys_k = _semi_join(keys_k, rows_k, key)  # the stored keys that occur in rows: few
    if len(key) == 1:
        return np.asarray(
            pc.fill_null(pc.is_in(rows_k.column(0), value_set=keys_k.column(0).combine_chunks()), False).to_numpy(zero_copy_only=False), dtype=bool
        )
    probe = rows_k.append_column("__row", pa.array(np.arange(rows.num_rows, dtype=np.int64)))
    mask = np.zeros(rows.num_rows, dtype=bool)
    mask[_semi_join(probe, keys_k, key).column("__row").to_numpy()] = True
    return mask


def _semi_join(left: pa.Table, right: pa.Table, key: list[str]) -> pa.Table:
    """Rows of ``left`` whose key occurs in ``right`` (the hash is built on ``right``)."""
    if len(key) == 1:
        return left.filter(pc.fill_null(pc.is_in(left.column(key[0]), value_set=right.column(key[0]).combine_chunks()), False))
    return left.join(right.select(key), keys=key, join_type="left semi", use_threads=True)


def _plan_events(name: str, data_dir: Path, incoming: pa.Table, frame: pd.DataFrame, source: SourceFile, cap: int) -> tuple[MergePlan, pa.Table | None]:
    """Merge plan of an events table against a stored one that may hold millions of rows; (plan, the stored rows if read).

    Only the stored keys are read to find which incoming events are known; the known ones
    (none on a new day, all on a replay) are compared in full by ``plan_merge``. Same result as
    planning against the whole table, without a pandas index over every stored key.
    """
    table = TABLES[name]
    key = list(table.primary_key)
    stored_keys = read_table(data_dir, name, columns=key)
    known = _semi_join_mask(incoming, stored_keys, key)
    full = None
    if known.any():
        full = read_table(data_dir, name)
        rows = full.filter(pa.array(_semi_join_mask(full, incoming.filter(pa.array(known)), key)))
        plan = plan_merge(table, canonical_frame(to_arrow(table, rows)), frame, source, cap=cap)
    else:
        plan = plan_merge(table, None, frame, source, cap=cap)
    stats = replace(plan.stats, rows_total=stored_keys.num_rows + plan.stats.inserted)
    return replace(plan, stats=stats), full


@contextlib.contextmanager
def _progress(enabled: bool, total: int) -> Iterator:
    """A rich progress bar on stderr (or a no-op) whose ``step(text)`` advances one unit."""
    if not enabled:
        yield lambda text: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=Console(stderr=True), transient=True
    ) as bar:
        task = bar.add_task("import", total=total)

        def step(text: str) -> None:
            bar.update(task, advance=1, description=text)

        yield step


@contextlib.contextmanager
def dataset_lock(data_dir: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on a dataset for a read-merge-write cycle, or fail at once.

    Two imports racing into one dataset would each merge into the old rows and the second
    rename would silently drop the first's events; the lock file sits beside the dataset
    because the dataset directory itself is replaced.
    """
    import fcntl

    data_dir = Path(data_dir).resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with (data_dir.parent / f".{data_dir.name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DatasetBusy(f"{data_dir}: another import is writing this dataset; try again when it has finished") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class DatasetBusy(RuntimeError):
    """Another process holds the dataset's lock."""


def import_export(
    src_dir: str | Path,
    data_dir: str | Path,
    *,
    now: dt.datetime | None = None,
    cap: int = DEFAULT_CAP,
    progress: bool = False,
) -> ImportResult:
    """Validate every row of the export in ``src_dir`` and merge it into ``data_dir`` atomically.

    Raises ``ImportRejected`` with all issues (and writes nothing) when any rule is broken,
    ``DatasetBusy`` when another import holds the dataset.
    """
    with dataset_lock(data_dir):
        return _import_locked(src_dir, data_dir, now=now, cap=cap, progress=progress)


def _import_locked(src_dir: str | Path, data_dir: str | Path, *, now: dt.datetime | None, cap: int, progress: bool) -> ImportResult:
    now = now or dt.datetime.now(dt.UTC)
    src_dir, data_dir = Path(src_dir), Path(data_dir).resolve()
    export = discover_export(src_dir)
    issues = list(export.issues)
    old_manifest = _existing_manifest(data_dir)
    if old_manifest and old_manifest.get("contract_version") != CONTRACT_VERSION:
        # Merging rows checked under another contract would mix two sets of rules in one dataset.
        issues.append(
            ValidationIssue(
                file=MANIFEST_NAME,
                rule=RULE_MANIFEST,
                message=f"{data_dir} was written under contract {old_manifest.get('contract_version')}, this is {CONTRACT_VERSION}: import into a new directory",
            )
        )
        raise ImportRejected(sort_issues(issues))
    listed = [n for n in TABLES if n in old_manifest.get("tables", {})]
    # Snapshot tables are the small dimension tables every reference points to: read them whole.
    # Events tables (touchpoints, outcomes, feedback) grow by millions of rows a year; they are
    # read only as far as the merge needs (see _plan_events), and not rewritten when unchanged.
    existing_arrow = {n: read_table(data_dir, n) for n in listed if TABLES[n].merge != "events"}
    existing = {n: canonical_frame(a) for n, a in existing_arrow.items()}
    frames: dict[str, pd.DataFrame] = {}
    typed: dict[str, pa.Table] = {}
    sources: dict[str, SourceFile] = {}
    with _progress(progress, len(export.tables) + 2) as step:
        for name in TABLES:
            if name not in export.tables:
                continue
            path = export.tables[name]
            raw, source, read_issues = read_source(path, name)
            issues += read_issues
            if raw is not None:
                typed[name], coerce_issues = coerce_arrow(TABLES[name], raw, source, cap=cap)
                issues += coerce_issues
                frames[name], sources[name] = canonical_frame(typed[name]), source
                del raw
            step(f"read {path.name}")
        # References point only at snapshot tables, so those are all the stored rows validation needs.
        issues += validate_tables(frames, existing=existing, now=now, sources=sources, cap=cap)
        step("validated")
        plans: dict[str, MergePlan] = {}
        stored_events: dict[str, pa.Table | None] = {}
        # A table that already breaks a rule is not merged: its nulled cells would read as changes.
        broken = {i.table for i in errors(issues)}
        for name, df in frames.items():
            if name in broken:
                continue
            if TABLES[name].merge == "events" and name in listed:
                plans[name], stored_events[name] = _plan_events(name, data_dir, typed[name], df, sources[name], cap)
            else:
                plans[name] = plan_merge(TABLES[name], existing.get(name), df, sources[name], cap=cap)
            issues += plans[name].issues
        del frames, existing
        issues = sort_issues(issues)
        if errors(issues):
            raise ImportRejected(issues)
        # Only tables that gain or change rows are written again; the others are linked as they are.
        changed: dict[str, pa.Table] = {}
        touched: dict[str, pa.Table] = {}
        for name, plan in plans.items():
            touched[name] = typed[name].filter(pa.array(plan.touched)) if plan.touched is not None else typed[name]
            if name in listed and not (plan.stats.inserted or plan.stats.updated):
                continue
            stored = existing_arrow.get(name)
            if stored is None and name in listed:
                stored = stored_events.get(name)
                stored = stored if stored is not None else read_table(data_dir, name)
            changed[name] = apply_merge(TABLES[name], plan, stored, typed[name])
        step("merged")
    stats: dict[str, MergeStats] = {name: plan.stats for name, plan in plans.items()}
    extra = {k: v for k, v in old_manifest.items() if k not in _MANIFEST_KEYS}
    extra["last_import"] = {"files": {p.name: file_sha256(p) for p in export.tables.values()}}
    if old_manifest and not changed and old_manifest.get("last_import") == extra["last_import"]:
        # The same export again: rewriting identical bytes would only cost time (and wake watchers).
        return ImportResult(data_dir=data_dir, stats=stats, issues=issues, manifest=old_manifest, touched=touched)
    with staged_dir(data_dir) as staging:
        # Keep what other stages put beside the tables (e.g. the simulator's ground truth).
        if data_dir.exists():
            ours = {MANIFEST_NAME, *(table_path(data_dir, n).name for n in TABLES)}
            for entry in sorted(data_dir.iterdir()):
                if entry.name in ours:
                    continue
                target = staging / entry.name
                if entry.is_dir():
                    shutil.copytree(entry, target, copy_function=_link_or_copy)
                else:
                    _link_or_copy(entry, target)
        manifest = write_tables(staging, changed, source=IMPORT_SOURCE, extra=extra)
        kept = [n for n in listed if n not in changed]
        for name in kept:
            _link_or_copy(table_path(data_dir, name), table_path(staging, name))
            entry = dict(old_manifest["tables"][name])
            entry.setdefault("sha256", file_sha256(table_path(staging, name)))
            manifest["tables"][name] = entry
        if kept:
            manifest["tables"] = {n: manifest["tables"][n] for n in TABLES if n in manifest["tables"]}
            (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return ImportResult(data_dir=data_dir, stats=stats, issues=issues, manifest=manifest, touched=touched)


def validate_dataset(data_dir: str | Path, *, now: dt.datetime | None = None, cap: int = DEFAULT_CAP) -> tuple[list[ValidationIssue], dict[str, int]]:
    """Re-check a written dataset: manifest hashes, required tables, types and every row rule."""
    now = now or dt.datetime.now(dt.UTC)
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    issues: list[ValidationIssue] = []
    frames: dict[str, pd.DataFrame] = {}
    sources: dict[str, SourceFile] = {}
    listed = manifest.get("tables", {})
    for name in REQUIRED_TABLES:
        if name not in listed:
            issues.append(ValidationIssue(file=MANIFEST_NAME, table=name, rule=RULE_MISSING_FILE, message=f"required table {name!r} not in the dataset"))
    for path in sorted(data_dir.glob("*.parquet")):
        if path.stem not in listed:
            issues.append(
                ValidationIssue(file=path.name, rule=RULE_UNKNOWN_FILE, severity="warning", message="Parquet file not listed in the manifest; ignored")
            )
    for name, entry in listed.items():
        path = table_path(data_dir, name)
        if name not in TABLES:
            issues.append(ValidationIssue(file=MANIFEST_NAME, table=name, rule=RULE_MANIFEST, message=f"manifest lists unknown table {name!r}"))
            continue
        if not path.exists():
            issues.append(ValidationIssue(file=path.name, table=name, rule=RULE_MISSING_FILE, message="listed in the manifest but missing"))
            continue
        if file_sha256(path) != entry.get("sha256"):
            issues.append(
                ValidationIssue(
                    file=path.name, table=name, rule=RULE_MANIFEST, message="content hash differs from the manifest (file changed after it was written)"
                )
            )
        source = SourceFile(file=path.name)
        typed, coerce_issues = coerce_arrow(TABLES[name], read_table(data_dir, name), source, cap=cap)
        issues += coerce_issues
        frames[name], sources[name] = canonical_frame(typed), source
    issues += validate_tables(frames, now=now, sources=sources, cap=cap)
    return sort_issues(issues), {n: len(df) for n, df in frames.items()}
