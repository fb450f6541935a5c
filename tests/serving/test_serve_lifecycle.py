"""A real `nba serve`: the audit rows name the API caller, and SIGTERM stops bentoml's whole process group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from serving.sandbox import AS_OF

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "nba_lifecycle_key_51c2"


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(d.name))
    return out


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_nba_serve_records_the_caller_and_stops_on_sigterm(world, tmp_path) -> None:
    import sqlalchemy as sa

    from nba.servers import free_port, wait_ok
    from serving.bench import post

    port = free_port()
    audit = tmp_path / "audit.db"
    nba = str(Path(sys.executable).with_name("nba"))
    env = {**os.environ, "NBA_API_KEYS": f"crm-eu:{KEY}"}
    proc = subprocess.Popen(
        [nba, "serve", "--config", str(world.serving_yaml), "--port", str(port), "--set", f"audit_url=sqlite:///{audit}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ok(f"{base}/readyz", proc, "nba serve", 150)
        status, body = post(base, "/recommend", {"hcp_ids": [world.hcp_ids[3]], "k": 1, "as_of": AS_OF.isoformat()}, key=KEY)
        assert status == 200, body
        sid = body["results"][0]["suggestions"][0]["suggestion_id"]
        item = {
            "feedback_id": "life-fb-1",
            "suggestion_id": sid,
            "outcome": "dismissed",
            "reason": "wrong_time",
            "ts": (AS_OF + timedelta(minutes=1)).isoformat(),
        }
        status, body = post(base, "/feedback", item, key=KEY)
        assert status == 200, body
        status, body = post(base, "/recommend", {"hcp_ids": world.hcp_ids[:4], "k": 3, "as_of": AS_OF.isoformat()}, key=KEY)
        assert status == 200, body
        engine = sa.create_engine(f"sqlite:///{audit}")
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT DISTINCT caller FROM suggestions").scalars().all() == ["crm-eu"]
            assert conn.exec_driver_sql("SELECT caller FROM feedback").scalars().all() == ["crm-eu"]
            # One feature document per HCP per request; the HCP's other suggestions point at it.
            docs = conn.exec_driver_sql(
                "SELECT request_id, hcp_id, COUNT(*), SUM(features_json NOT LIKE '{\"same_as\":%') FROM suggestions GROUP BY request_id, hcp_id"
            ).all()
        engine.dispose()
        assert docs and all(n_docs == 1 for _, _, _, n_docs in docs), docs
        assert any(n > 1 for _, _, n, _ in docs), "some HCP got several suggestions (the case that shares a document)"

        leaders = _children(proc.pid)
        assert leaders, "nba serve started no server process"
        pgid = os.getpgid(leaders[0])
        assert pgid != os.getpgid(proc.pid), "the server runs in its own process group"
        assert len(_group_members(pgid)) >= 1
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 20
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _group_members(pgid) == [], "bentoml's processes outlived `nba serve`"
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass  # the port is free again
    finally:
        if proc.poll() is None:
            proc.kill()
        for child in _children(proc.pid) if proc.poll() is None else []:
            try:
                os.killpg(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
