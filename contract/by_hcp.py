"""One HCP's rows of a contract dataset without reading the whole dataset: a per-HCP index beside the tables.

The contract tables are stored in arrival order, so one HCP's touches are spread over every row
group and any read filtered to an HCP decodes them all (2.6 s at 100k HCPs x 1 year). The index
keeps, for each table with an ``hcp_id``, a copy of the columns readers need sorted by HCP
(stable: each HCP's rows keep their stored order) as an uncompressed Arrow IPC file, plus each
HCP's row range. Readers memory-map it, so an HCP's rows are a zero-copy slice and every worker
on the machine shares one copy in the page cache.

Index files live in ``<data_dir>/_by_hcp/`` and are named after the SHA-256 of the table they
were built from (the dataset manifest's), so they are never stale: an import that changes a
table changes its hash, and the next read (or ``ensure_index``, which ``nba import`` and
``nba sync`` call) builds the new one; the import carries the others over unchanged. Builds
take a file lock and write atomically (temporary file, then rename), so concurrent readers in
other processes never see half a file.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contract.schema import TOUCH_STATE_COLUMNS

INDEX_DIR = "_by_hcp"
# Tables with an hcp_id column, and the columns the per-HCP readers (the feedback push) need;
# None: every column.
INDEXED: dict[str, list[str] | None] = {
    "hcps": None,
    # The feature transforms' columns plus the ids the push de-duplicates by (event, suggestion).
    "touchpoints": [*TOUCH_STATE_COLUMNS, "event_id", "suggestion_id"],
    "outcomes": ["hcp_id", "week_start", "product_id", "prescriptions", "market_boxes"],
    "feedback": ["hcp_id", "ts", "decision", "feedback_id", "suggestion_id"],
    "hcp_profile_history": None,
}
# Rows per record batch: large, as a take within one batch is several times faster than across
# many, yet small enough that no string column of a batch nears Arrow's 2 GiB offset limit.
CHUNK_ROWS = 1 << 22
_CACHE: dict[str, Any] = {}
_WHOLE: dict[tuple[str, str], tuple[str, Any]] = {}  # (data_dir, table) -> (content hash, Arrow table)
_CACHE_LOCK = threading.Lock()


def _table_sha(data_dir: Path, name: str, manifest: dict[str, Any]) -> str | None:
    entry = manifest.get("tables", {}).get(name)
    if entry is None:
        return None
    if entry.get("sha256"):
        return str(entry["sha256"])
    from contract.io import file_sha256, table_path

    return file_sha256(table_path(data_dir, name))


def index_path(data_dir: str | Path, name: str, sha: str) -> Path:
    """Where the index of table ``name`` with content hash ``sha`` lives."""
    return Path(data_dir) / INDEX_DIR / f"{name}-{sha[:20]}.arrow"


@contextlib.contextmanager
def _build_lock(data_dir: Path) -> Iterator[None]:
    import fcntl

    d = data_dir / INDEX_DIR
    d.mkdir(parents=True, exist_ok=True)
    with (d / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_table_index(data_dir: str | Path, name: str, sha: str) -> Path:
    """Write the per-HCP index of table ``name`` (sorted by HCP, row order within an HCP kept); its path."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.ipc as ipc

    from contract.io import read_table

    data_dir = Path(data_dir)
    target = index_path(data_dir, name, sha)
    table = read_table(data_dir, name, columns=INDEXED[name])
    ids = table.column("hcp_id").combine_chunks()
    if pa.types.is_dictionary(ids.type):
        ids = ids.cast(pa.string())
    # Sorting on integer codes: a string sort of millions of ids is ten times slower.
    uniq = pc.unique(ids).sort()
    codes = pc.index_in(ids, value_set=uniq).to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    table = table.take(pa.array(order))
    counts = np.bincount(codes, minlength=len(uniq))
    stops = np.cumsum(counts)
    ranges = pa.table({"hcp_id": uniq, "start": pa.array(stops - counts, pa.int64()), "stop": pa.array(stops, pa.int64())})
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        # Uncompressed: readers memory-map it and slice without decoding anything.
        with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table.combine_chunks(), max_chunksize=CHUNK_ROWS)
        with pa.OSFile(str(tmp) + ".ranges", "wb") as sink, ipc.new_file(sink, ranges.schema) as writer:
            writer.write_table(ranges)
        os.replace(str(tmp) + ".ranges", str(target) + ".ranges")
        os.replace(tmp, target)
    finally:
        for p in (tmp, Path(str(tmp) + ".ranges")):
            p.unlink(missing_ok=True)
    return target


def _gc(data_dir: Path, keep: set[str]) -> None:
    d = data_dir / INDEX_DIR
    for p in d.glob("*.arrow*"):
        base = p.name[: -len(".ranges")] if p.name.endswith(".ranges") else p.name
        if base not in keep and not p.name.startswith("."):
            p.unlink(missing_ok=True)


def ensure_index(data_dir: str | Path, tables: tuple[str, ...] | None = None) -> dict[str, str]:
    """Build the index of every indexed table (or ``tables``) whose current content has none; table -> index file. Old ones are removed."""
    from contract.io import read_manifest

    data_dir = Path(data_dir).resolve()
    manifest = read_manifest(data_dir)
    wanted = {n: _table_sha(data_dir, n, manifest) for n in (tables or tuple(INDEXED))}
    wanted = {n: s for n, s in wanted.items() if s is not None}
    out = {}
    missing = {n: s for n, s in wanted.items() if not index_path(data_dir, n, s).exists()}
    if missing:
        with _build_lock(data_dir):
            for n, s in missing.items():
                if not index_path(data_dir, n, s).exists():  # another process may have built it meanwhile
                    build_table_index(data_dir, n, s)
            if tables is None:
                _gc(data_dir, {index_path(data_dir, n, s).name for n, s in wanted.items()})
    for n, s in wanted.items():
        out[n] = str(index_path(data_dir, n, s))
    return out


class TableIndex:
    """One memory-mapped table index: ``rows(hcp_ids)`` takes those HCPs' rows."""

    def __init__(self, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.ipc as ipc

        self.path = path
        import numpy as np

        reader = ipc.open_file(pa.memory_map(str(path), "r"))
        self.batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        self.schema = reader.schema
        self.starts = np.cumsum([0] + [b.num_rows for b in self.batches])
        ranges = ipc.open_file(pa.memory_map(str(path) + ".ranges", "r")).read_all()
        self.ranges = dict(zip(ranges.column("hcp_id").to_pylist(), zip(ranges.column("start").to_pylist(), ranges.column("stop").to_pylist())))

    def rows(self, hcp_ids: list[str]):
        """The rows of ``hcp_ids`` (an HCP without rows contributes none)."""
        import numpy as np
        import pyarrow as pa

        spans = [self.ranges[h] for h in hcp_ids if h in self.ranges]
        if not spans:
            return self.schema.empty_table()
        idx = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in spans])
        which = np.searchsorted(self.starts, idx, side="right") - 1
        parts = []
        for c in np.unique(which):
            local = idx[which == c] - self.starts[c]
            batch = self.batches[c]
            if len(local) == local[-1] - local[0] + 1 and np.all(np.diff(local) == 1):  # one HCP: a zero-copy slice
                parts.append(batch.slice(int(local[0]), len(local)))
            else:
                parts.append(batch.take(pa.array(local)))
        return pa.Table.from_batches(parts, schema=self.schema)


def open_index(data_dir: str | Path, name: str, manifest: dict[str, Any] | None = None) -> TableIndex | None:
    """The index of table ``name`` for the dataset's current content (built if missing), or None when the dataset has no such table."""
    from contract.io import read_manifest

    data_dir = Path(data_dir).resolve()
    manifest = manifest if manifest is not None else read_manifest(data_dir)
    sha = _table_sha(data_dir, name, manifest)
    if sha is None:
        return None
    path = index_path(data_dir, name, sha)
    key = str(path)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    if not path.exists():
        ensure_index(data_dir, (name,))
    idx = TableIndex(path)
    with _CACHE_LOCK:
        # Indexes of a table's earlier content are dropped: their files may be deleted, their mappings only cost address space.
        for k in [k for k, v in _CACHE.items() if Path(k).parent == path.parent and Path(k).name.startswith(f"{name}-")]:
            del _CACHE[k]
        _CACHE[key] = idx
    return idx


def rows_of(data_dir: str | Path, hcp_ids: list[str], tables: tuple[str, ...] = tuple(INDEXED), manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """Table -> the rows of ``hcp_ids`` (Arrow), read through the index; a table the dataset lacks maps to None."""
    from contract.io import read_manifest

    manifest = manifest if manifest is not None else read_manifest(data_dir)  # once: every table's index matches the same dataset version
    out = {}
    for name in tables:
        idx = open_index(data_dir, name, manifest)
        out[name] = None if idx is None else idx.rows(list(hcp_ids))
    return out


def whole_table(data_dir: str | Path, name: str, manifest: dict[str, Any] | None = None):
    """A small table read whole (products, content), kept in memory while its content hash is unchanged; None when the dataset lacks it."""
    from contract.io import read_manifest, read_table

    data_dir = Path(data_dir).resolve()
    manifest = manifest if manifest is not None else read_manifest(data_dir)
    sha = _table_sha(data_dir, name, manifest)
    if sha is None:
        return None
    key = (str(data_dir), name)
    with _CACHE_LOCK:
        hit = _WHOLE.get(key)
    if hit is not None and hit[0] == sha:
        return hit[1]
    table = read_table(data_dir, name)
    with _CACHE_LOCK:
        _WHOLE[key] = (sha, table)
    return table
