"""Shared fixtures: service availability for tests of the real PostgreSQL and Redis backends.

Tests marked ``postgres`` / ``redis`` talk to the real servers on this machine. Where a server
is not running they skip with the reason, except under ``CI=true``, where they fail: CI must
exercise the production backends.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _require(service: str, host: str, port: int, how: str) -> None:
    if _reachable(host, port):
        return
    msg = f"{service} not reachable at {host}:{port}; start it with: {how}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true requires the real backend. {msg}")
    pytest.skip(msg)


@pytest.fixture(autouse=True)
def _service_markers(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("postgres"):
        _require("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    if request.node.get_closest_marker("redis"):
        _require("Redis", REDIS_HOST, REDIS_PORT, "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''")


@pytest.fixture()
def postgres_db() -> str:
    """A fresh, uniquely named PostgreSQL database; yields its SQLAlchemy URL and drops it after."""
    import psycopg

    _require("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT, "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start")
    name = f"nba_test_{uuid.uuid4().hex[:12]}"
    admin = f"host={POSTGRES_HOST} port={POSTGRES_PORT} user=postgres dbname=postgres sslmode=disable"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Logical databases a test run may take; 0 is left to whatever else uses the server.
REDIS_TEST_DBS = range(1, 16)


@pytest.fixture(scope="session")
def _redis_db() -> int:
    """A Redis logical database this test run holds alone: two runs at once (two checkouts, CI and a
    laptop) would otherwise flush each other's rows. Held by an exclusive file lock for the session."""
    import fcntl
    import tempfile
    from pathlib import Path

    for db in REDIS_TEST_DBS:
        handle = open(Path(tempfile.gettempdir()) / f"nba-test-redis-{REDIS_PORT}-db{db}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        try:
            yield db
        finally:
            handle.close()  # closing releases the lock
        return
    pytest.skip(f"every Redis test database {REDIS_TEST_DBS.start}-{REDIS_TEST_DBS.stop - 1} is held by another test run")


@pytest.fixture()
def redis_url(_redis_db: int) -> str:
    """A Redis URL on a logical database no concurrent test run uses, flushed before and after the test."""
    import redis

    _require("Redis", REDIS_HOST, REDIS_PORT, "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''")
    db = _redis_db
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=db)
    client.flushdb()
    try:
        yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
    finally:
        client.flushdb()
