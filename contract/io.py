"""Reading and writing contract datasets: one Parquet file per table plus a manifest.

Writes are atomic: everything goes to a staging directory beside the target, which replaces
the target in one rename only once every file is complete. A crash leaves the old dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from contract.schema import CONTRACT_VERSION, MANIFEST_NAME, TABLES, Table

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema a contract table is stored with."""
    return pa.schema([pa.field(c.name, _ARROW_TYPES[c.kind], nullable=c.nullable) for c in table.columns])


def to_arrow(table: Table, data: Any) -> pa.Table:
    """Cast a DataFrame or Arrow table to the contract schema (column order, types)."""
    if not isinstance(data, pa.Table):
        data = pa.Table.from_pandas(data, preserve_index=False)
    missing = [c for c in table.column_names if c not in data.column_names]
    if missing:
        raise ValueError(f"table {table.name!r}: missing columns {missing}")
    return data.select(list(table.column_names)).cast(arrow_schema(table))


def table_path(data_dir: str | Path, name: str) -> Path:
    """Path of table ``name`` inside a dataset directory."""
    return Path(data_dir) / f"{name}.parquet"


def file_sha256(path: Path) -> str:
    """SHA-256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_tables(directory: str | Path, tables: Mapping[str, Any], *, source: str, extra: Mapping[str, Any] | None = None) -> dict:
    """Write contract tables as Parquet into ``directory`` with a manifest; return the manifest.

    Meant for a staging directory (see ``staged_dir``); the manifest holds no wall-clock time,
    so the same data gives the same bytes.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {"contract_version": CONTRACT_VERSION, "source": source, "tables": {}}
    for name in TABLES:
        if name not in tables:
            continue
        arrow = to_arrow(TABLES[name], tables[name])
        path = table_path(directory, name)
        pq.write_table(arrow, path, compression="zstd", row_group_size=1 << 20)
        manifest["tables"][name] = {"rows": arrow.num_rows, "sha256": file_sha256(path)}
    if extra:
        manifest.update(extra)
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


@contextlib.contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory; on success it atomically replaces ``target``.

    On any exception the staging directory is removed and ``target`` is left untouched.
    """
    target = Path(target).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    # mkdtemp makes the directory 0700; a dataset should get the usual umask-based mode.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if target.exists():
        backup = target.parent / f".{target.name}.old-{os.getpid()}"
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
    try:
        os.replace(staging, target)
    except BaseException:
        if backup is not None:
            os.replace(backup, target)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a dataset, or a clear error if the directory is not a dataset."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.exists():
        raise FileNotFoundError(f"{data_dir}: not an nba dataset (no {MANIFEST_NAME}); run `nba simulate` or `nba import` first")
    return json.loads(path.read_text())


def read_table(data_dir: str | Path, name: str, columns: list[str] | None = None) -> pa.Table:
    """Read one contract table as Arrow (all columns unless ``columns`` is given)."""
    path = table_path(data_dir, name)
    if not path.exists():
        raise FileNotFoundError(f"{path}: table {name!r} not in dataset")
    return pq.read_table(path, columns=columns)


def read_frame(data_dir: str | Path, name: str, columns: list[str] | None = None):
    """Read one contract table as a pandas DataFrame."""
    return read_table(data_dir, name, columns).to_pandas()


def dataset_fingerprint(data_dir: str | Path) -> str:
    """A short hash of the dataset's content (from the manifest's per-table hashes)."""
    manifest = read_manifest(data_dir)
    h = hashlib.sha256()
    for name in sorted(manifest["tables"]):
        h.update(f"{name}:{manifest['tables'][name]['sha256']}".encode())
    return h.hexdigest()[:16]
