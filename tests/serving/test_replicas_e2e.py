"""Two `nba serve` replicas on one machine, as two nodes would run: one PostgreSQL audit trail, one Redis online store."""

from __future__ import annotations

import os
import signal
import uuid
from datetime import timedelta

import pytest

from serving.sandbox import AS_OF

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]
KEY = "nba_replica_key_5c1e"


def _replica(world, overrides: dict):
    from serving.bench import free_port, wait_ready
    from serving.cli import serve_process

    port = free_port()
    proc = serve_process(world.serving_yaml, overrides, "127.0.0.1", port, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=150)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return base, proc


def test_two_replicas_share_the_audit_trail_and_the_online_store(world, tmp_path, monkeypatch, postgres_db, redis_url) -> None:
    from features import get_online_features, load_features_config, open_store
    from nba.servers import stop_group
    from serving.bench import post
    from serving.resilience import redis_feature_copy

    monkeypatch.setenv("NBA_API_KEYS", f"replicas:{KEY}")
    fcfg, fyaml = redis_feature_copy(load_features_config(world.features_yaml), tmp_path / "ws", redis_url, project=f"r{uuid.uuid4().hex[:10]}")
    shared = {"audit_url": postgres_db, "features_config": str(fyaml)}
    procs = []
    try:
        # One after the other: the first creates the audit schema (production: `nba audit init` beforehand).
        a, pa = _replica(world, shared)
        procs.append(pa)
        b, pb = _replica(world, shared)
        procs.append(pb)
        hcp = world.hcp_ids[4]
        for base in (a, b):
            status, body = post(base, "/recommend", {"hcp_ids": [hcp], "k": 1, "as_of": AS_OF.isoformat()}, key=KEY)
            assert status == 200 and body["results"][0]["suggestions"], body
        _, body = post(a, "/recommend", {"hcp_ids": [hcp], "k": 1, "as_of": AS_OF.isoformat()}, key=KEY)
        sid = body["results"][0]["suggestions"][0]["suggestion_id"]
        store = open_store(fcfg)
        before = int(get_online_features(store, [hcp])["suggestions_accepted_90d"].iloc[0])

        # Served by A, fed back through B: B finds A's suggestion in the shared trail and pushes to the shared Redis.
        item = {
            "feedback_id": f"fb-{uuid.uuid4().hex[:8]}",
            "suggestion_id": sid,
            "outcome": "accepted",
            "reason": None,
            "ts": (AS_OF + timedelta(minutes=1)).isoformat(),
        }
        s1, b1 = post(b, "/feedback", item, key=KEY)
        assert (s1, b1["created"], b1["pushed_online"]) == (200, True, True), b1
        assert int(get_online_features(store, [hcp])["suggestions_accepted_90d"].iloc[0]) == before + 1
        # A sees B's feedback: the same item is a replay there, another outcome under its id a conflict.
        s2, b2 = post(a, "/feedback", item, key=KEY)
        assert (s2, b2["created"]) == (200, False), b2
        s3, _ = post(a, "/feedback", {**item, "outcome": "dismissed", "reason": "wrong_time"}, key=KEY)
        assert s3 == 409
        assert int(get_online_features(store, [hcp])["suggestions_accepted_90d"].iloc[0]) == before + 1  # counted once
    finally:
        for proc in procs:
            stop_group(proc, timeout_s=20)
