"""One writer per HCP: the feedback push of an HCP holds its lock, in every worker and replica.

A push reads the HCP's recorded outcomes, recomputes its online rows and writes them. Two
processes pushing the same HCP at once could each read a different set of outcomes and the
slower one would overwrite the newer rows (a lost update that the push log would record as
pushed). Holding the HCP's lock from the read to the push-log record serialises them: whoever
comes second reads everything the first stored.

On PostgreSQL (replicas sharing one audit database) the lock is a transaction-scoped advisory
lock, ``pg_advisory_xact_lock(namespace, key)``, taken on the connection whose transaction also
records the push; it is released at commit or rollback, or when the connection dies. On SQLite
(one machine) it is a POSIX byte-range lock on a file beside the database, one byte per key,
plus a thread lock, as POSIX locks do not exclude threads of one process. Keys are 32-bit
hashes of the HCP id, taken in sorted order so that two batches never deadlock; two HCPs
sharing a key only wait for each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

NAMESPACE = 0x6E62_6668  # "nbfh": the first key of the two-key advisory lock, apart from the schema lock
_SLOTS = 1 << 16  # bytes of the SQLite lock file: keys folded onto them
_FDS: dict[str, int] = {}
_THREAD_LOCKS: dict[tuple[str, int], threading.Lock] = {}
_GUARD = threading.Lock()


def lock_key(hcp_id: str) -> int:
    """The signed 32-bit lock key of an HCP id (stable across processes and machines)."""
    return int.from_bytes(hashlib.blake2b(hcp_id.encode(), digest_size=4).digest(), "big", signed=True)


def _lock_file(engine: Any) -> str | None:
    db = engine.url.database
    return None if not db or db == ":memory:" else f"{os.path.abspath(db)}.hcp-locks"


def _fd(path: str) -> int:
    # One descriptor per file and process, never closed: closing any descriptor of a file drops
    # every POSIX lock the process holds on it.
    with _GUARD:
        fd = _FDS.get(path)
        if fd is None:
            fd = _FDS[path] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        return fd


def _thread_lock(path: str, slot: int) -> threading.Lock:
    with _GUARD:
        return _THREAD_LOCKS.setdefault((path, slot), threading.Lock())


@contextlib.contextmanager
def _file_locks(path: str | None, slots: list[int]) -> Iterator[None]:
    import fcntl

    fd = _fd(path) if path is not None else None
    held: list[tuple[threading.Lock, int]] = []
    try:
        for slot in slots:
            lock = _thread_lock(path or "", slot)
            lock.acquire()
            held.append((lock, slot))
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_EX, 1, slot)
        yield
    finally:
        for lock, slot in reversed(held):
            if fd is not None:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, slot)
            lock.release()


@contextlib.contextmanager
def hcp_locks(engine: Any, hcp_ids: Iterable[str]) -> Iterator[Any]:
    """Hold the write lock of every HCP in ``hcp_ids``; yields the connection whose transaction holds them (PostgreSQL) or None (SQLite)."""
    import sqlalchemy as sa

    keys = sorted({lock_key(h) for h in hcp_ids})
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # unnest keeps the array's (sorted) order, so the locks are taken in that order.
            conn.execute(sa.text("SELECT count(pg_advisory_xact_lock(:ns, k)) FROM unnest(CAST(:keys AS integer[])) AS k"), {"ns": NAMESPACE, "keys": keys})
            yield conn
        return
    with _file_locks(_lock_file(engine), sorted({k % _SLOTS for k in keys})):
        yield None
