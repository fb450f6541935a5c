"""Fast degraded mode: a circuit breaker, a store that is down or empty flagged at once, unknown ids and a far as_of said out loud."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta

import pytest

from serving.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_breaker_opens_on_failure_fails_fast_then_probes_once():
    clock = Clock()
    b = CircuitBreaker(cooloff_s=1.0, clock=clock)
    assert b.allow() and b.state == CLOSED
    b.failure("ConnectionError: refused")
    assert b.state == OPEN and not b.allow()
    assert "ConnectionError" in b.why_open()
    clock.t += 0.99
    assert not b.allow()  # still cooling off: no call reaches the store
    clock.t += 0.02
    assert b.allow() and b.state == HALF_OPEN  # one probe ...
    assert not b.allow()  # ... and only one while it runs
    b.failure("ConnectionError: refused")
    assert b.state == OPEN and not b.allow()
    clock.t += 1.0
    assert b.allow()
    b.success()
    assert b.state == CLOSED and b.allow() and b.allow()
    assert b.trips == 1  # reopening from half-open is the same outage


def test_breaker_rejects_bad_settings():
    with pytest.raises(ValueError):
        CircuitBreaker(cooloff_s=0)


def test_unknown_ids_listed_and_far_as_of_warned(world, serving_cfg):
    from serving.engine import Recommender
    from serving.sandbox import AS_OF
    from serving.schemas import RecommendResponse
    from serving.service_io import recommend_payload

    eng = Recommender.from_config(serving_cfg)
    known = world.hcp_ids[0]
    res = eng.recommend([known, "nobody_404"], as_of=AS_OF)
    assert res.unknown_hcp_ids == ["nobody_404"]
    assert "nobody_404" not in set(res.columns["hcp_id"].tolist())  # nothing suggested for an id nobody knows
    assert known in set(res.columns["hcp_id"].tolist())
    assert res.warnings == []  # as_of inside the data
    body = RecommendResponse.model_validate(recommend_payload(res, [known, "nobody_404"])).model_dump()
    assert body["unknown_hcp_ids"] == ["nobody_404"]
    assert any("unknown HCP id" in w for w in body["warnings"])
    # Only the caller's own unknown ids (a micro-batched result carries other callers' too).
    assert RecommendResponse.model_validate(recommend_payload(res, [known])).unknown_hcp_ids == []

    late = eng.recommend([known], as_of=AS_OF + timedelta(days=330), record=False)
    assert late.unknown_hcp_ids == []
    assert len(late.warnings) == 1 and "days after the newest feature snapshot" in late.warnings[0]
    early = eng.recommend([known], as_of=AS_OF - timedelta(days=400), record=False)
    assert "before the oldest feature snapshot" in early.warnings[0]


@pytest.fixture()
def private_redis(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH: the outage tests kill a private Redis")
    from serving.resilience import PrivateRedis

    r = PrivateRedis(tmp_path / "redis")
    r.start(with_data=False)
    try:
        yield r
    finally:
        r.stop()


@pytest.mark.slow
def test_store_killed_then_back_then_empty(world, tmp_path, private_redis):
    """Killed: flagged at once, failing fast; back with its data: the model within the cool-off; back empty: flagged, never 'no suggestions'."""
    from features import load_features_config
    from nba.configuration import load_config
    from serving.config import ServingConfig
    from serving.engine import Recommender
    from serving.resilience import redis_feature_copy
    from serving.sandbox import AS_OF

    _, fyaml = redis_feature_copy(load_features_config(world.features_yaml), tmp_path / "ws", private_redis.url)
    private_redis.save()
    cooloff = 0.3
    cfg = load_config(
        ServingConfig,
        "serving",
        world.serving_yaml,
        {
            "audit_url": f"sqlite:///{tmp_path / 'audit.db'}",
            "features_config": str(fyaml),
            "online_read": {"cooloff_s": cooloff},
            "exploration": {"holdout_share": 0.0, "epsilon": 0.0},
        },
    )
    eng = Recommender.from_config(cfg)
    ids = world.hcp_ids[:6]

    def ask():
        t = time.perf_counter()
        res = eng.recommend(ids, as_of=AS_OF)
        return res, time.perf_counter() - t

    res, _ = ask()
    assert not res.degraded_features and set(res.columns["policy"]) == {"model"}

    private_redis.kill()
    res, secs = ask()
    assert secs < 1.0, f"a dead store cost {secs:.2f} s: timeouts or retries too long"
    assert res.degraded_features and res.columns["degraded"].all() and len(res.columns["degraded"]) > 0
    assert set(res.degraded_hcp_ids) == set(ids)
    assert eng.breaker.state == OPEN
    res, secs = ask()  # inside the cool-off the store is not even tried
    assert res.degraded_features and any("circuit open" in n for n in res.notes)

    private_redis.start(with_data=True)
    time.sleep(cooloff + 0.05)
    res, _ = ask()
    assert not res.degraded_features and set(res.columns["policy"]) == {"model"}, res.notes

    private_redis.kill()
    private_redis.start(with_data=False)  # back, but empty
    eng.recommend(ids, as_of=AS_OF)  # may land inside a cool-off opened by the restart
    time.sleep(cooloff + 0.05)
    res, _ = ask()
    assert eng.breaker.state == CLOSED  # the store answers ...
    assert res.degraded_features and set(res.degraded_hcp_ids) == set(ids)  # ... but holds nothing for known HCPs
    assert len(res.columns["degraded"]) > 0 and res.columns["degraded"].all()
    assert set(res.columns["channel"]) <= set(cfg.degraded_channels)
    assert any("missing online" in n for n in res.notes)
    assert res.unknown_hcp_ids == []


@pytest.mark.slow
def test_hung_store_times_out_in_tens_of_milliseconds(world, tmp_path, private_redis):
    """A store that accepts but never answers (SIGSTOP) costs one read timeout, not the caller's patience."""
    import os
    import signal

    from features import load_features_config
    from nba.configuration import load_config
    from serving.config import ServingConfig
    from serving.engine import Recommender
    from serving.resilience import redis_feature_copy
    from serving.sandbox import AS_OF

    _, fyaml = redis_feature_copy(load_features_config(world.features_yaml), tmp_path / "ws", private_redis.url)
    cfg = load_config(ServingConfig, "serving", world.serving_yaml, {"audit_url": f"sqlite:///{tmp_path / 'audit.db'}", "features_config": str(fyaml)})
    eng = Recommender.from_config(cfg)
    ids = world.hcp_ids[:3]
    assert not eng.recommend(ids, as_of=AS_OF).degraded_features
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        t = time.perf_counter()
        res = eng.recommend(ids, as_of=AS_OF)
        secs = time.perf_counter() - t
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    assert res.degraded_features and res.columns["degraded"].all()
    assert any("Timeout" in n for n in res.notes), res.notes
    assert secs < 0.5, f"a hung store cost {secs:.2f} s (read timeout {cfg.online_read.read_timeout_ms:g} ms)"
