"""Feedback on a Redis online store: no lost updates out of order, and a push that failed is pushed again on replay."""

from __future__ import annotations

import shutil
import time
import uuid
from datetime import timedelta

import pytest


def _engine(world, tmp_path, features_yaml, **overrides):
    from nba.configuration import load_config
    from serving.config import ServingConfig
    from serving.engine import Recommender

    cfg = load_config(
        ServingConfig,
        "serving",
        world.serving_yaml,
        {
            "audit_url": f"sqlite:///{tmp_path / 'audit.db'}",
            "features_config": str(features_yaml),
            **overrides,
        },
    )
    return Recommender.from_config(cfg)


def _accepted(eng, hcp: str) -> int:
    from features import get_online_features

    return int(get_online_features(eng.store, [hcp])["suggestions_accepted_90d"].iloc[0])


def _served(eng, hcp: str):
    from serving.sandbox import AS_OF

    res = eng.recommend([hcp], as_of=AS_OF)
    return str(res.columns["suggestion_id"][0])


@pytest.mark.redis
@pytest.mark.slow
def test_out_of_order_feedback_counts_every_outcome_on_redis(world, tmp_path, redis_url):
    """Counts go 0 -> 1 -> 2 on Redis, as on SQLite, when the second outcome is stamped before the first."""
    from features import load_features_config
    from serving.resilience import redis_feature_copy
    from serving.sandbox import AS_OF

    # A project of its own: every Redis key carries it, so no other run's rows are touched.
    _, fyaml = redis_feature_copy(load_features_config(world.features_yaml), tmp_path / "ws", redis_url, project=f"t{uuid.uuid4().hex[:10]}")
    eng = _engine(world, tmp_path, fyaml)
    hcp = world.hcp_ids[3]
    sid = _served(eng, hcp)
    before = _accepted(eng, hcp)
    t = AS_OF - timedelta(hours=1)
    out = eng.feedback({"feedback_id": "fb-late", "suggestion_id": sid, "outcome": "accepted", "reason": None, "ts": t})
    assert out["pushed_online"] and out["push_error"] is None
    assert _accepted(eng, hcp) == before + 1
    # Stamped a day earlier than the first: Feast's Redis writer used to skip it (same row time).
    out = eng.feedback({"feedback_id": "fb-early", "suggestion_id": sid, "outcome": "accepted", "reason": None, "ts": t - timedelta(days=1)})
    assert out["pushed_online"]
    assert _accepted(eng, hcp) == before + 2
    # And a third, later one still lands after the re-stamped row.
    eng.feedback({"feedback_id": "fb-later", "suggestion_id": sid, "outcome": "accepted", "reason": None, "ts": t + timedelta(minutes=5)})
    assert _accepted(eng, hcp) == before + 3


@pytest.mark.slow
def test_failed_push_is_pushed_again_on_replay(world, tmp_path):
    """Redis down when the feedback arrives: stored, not pushed, said so; its replay once Redis is back pushes it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH: the test kills a private Redis")
    import sqlalchemy as sa

    from features import load_features_config
    from serving.feedback import push_log
    from serving.resilience import PrivateRedis, redis_feature_copy
    from serving.sandbox import AS_OF

    redis = PrivateRedis(tmp_path / "redis")
    redis.start(with_data=False)
    try:
        _, fyaml = redis_feature_copy(load_features_config(world.features_yaml), tmp_path / "ws", redis.url)
        redis.save()
        cooloff = 0.2
        eng = _engine(world, tmp_path, fyaml, online_read={"cooloff_s": cooloff})
        hcp = world.hcp_ids[5]
        sid = _served(eng, hcp)
        before = _accepted(eng, hcp)
        item = {"feedback_id": "fb-1", "suggestion_id": sid, "outcome": "accepted", "reason": None, "ts": AS_OF - timedelta(hours=2)}

        redis.kill()
        t = time.perf_counter()
        out = eng.feedback(item)
        assert time.perf_counter() - t < 1.0
        assert out["created"] and not out["pushed_online"] and out["push_error"]
        # A replay during the outage is stored already, and still not online (said so, fast).
        out = eng.feedback(item)
        assert not out["created"] and not out["pushed_online"] and out["push_error"]

        redis.start(with_data=True)
        time.sleep(cooloff + 0.05)
        out = eng.feedback(item)
        assert out == {"feedback_id": "fb-1", "created": False, "pushed_online": True, "push_error": None}
        assert _accepted(eng, hcp) == before + 1

        log = push_log(eng.audit)
        with eng.audit.engine.connect() as conn:
            attempts = conn.execute(sa.select(sa.func.count()).select_from(log.table)).scalar()
        out = eng.feedback(item)  # pushed already: a replay is a no-op again
        assert out["pushed_online"] and not out["created"]
        with eng.audit.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(log.table)).scalar() == attempts
        assert _accepted(eng, hcp) == before + 1
        assert eng.retry_pushes() == {"hcps": 0, "pushed": 0, "failed": {}}
    finally:
        redis.stop()


@pytest.mark.slow
def test_background_retry_pushes_what_an_outage_left_behind(world, tmp_path):
    """The catch-up finds feedback no successful push has read, and pushes it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH: the test kills a private Redis")
    from features import load_features_config
    from serving.resilience import PrivateRedis, redis_feature_copy
    from serving.sandbox import AS_OF

    redis = PrivateRedis(tmp_path / "redis")
    redis.start(with_data=False)
    try:
        _, fyaml = redis_feature_copy(load_features_config(world.features_yaml), tmp_path / "ws", redis.url)
        redis.save()
        eng = _engine(world, tmp_path, fyaml, online_read={"cooloff_s": 0.2})
        hcp = world.hcp_ids[7]
        sid = _served(eng, hcp)
        before = _accepted(eng, hcp)
        redis.kill()
        out = eng.feedback({"feedback_id": "fb-x", "suggestion_id": sid, "outcome": "accepted", "reason": None, "ts": AS_OF - timedelta(hours=2)})
        assert not out["pushed_online"]
        redis.start(with_data=True)
        time.sleep(0.25)
        assert eng.retry_pushes() == {"hcps": 1, "pushed": 1, "failed": {}}
        assert _accepted(eng, hcp) == before + 1
        assert eng.retry_pushes()["hcps"] == 0
    finally:
        redis.stop()
