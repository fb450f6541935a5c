"""The background catch-up of failed feedback pushes: rounds on the engine's thread, failures survived, a clean stop."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from serving.catchup import PushCatchUp


def _wait(cond, timeout_s: float = 5.0) -> bool:
    deadline = time.time() + timeout_s
    while not cond() and time.time() < deadline:
        time.sleep(0.01)
    return cond()


def test_rounds_run_on_the_engine_thread_and_survive_failures() -> None:
    engine = ThreadPoolExecutor(1, thread_name_prefix="nba-engine")
    threads: list[str] = []
    calls = {"n": 0}

    def retry() -> dict:
        calls["n"] += 1
        threads.append(threading.current_thread().name)
        if calls["n"] == 2:
            raise ConnectionError("store down")  # the loop must go on to the next round
        return {"hcps": 1, "pushed": 1, "failed": {}}

    loop = PushCatchUp(retry, engine.submit, interval_s=0.02).start()
    try:
        assert _wait(lambda: calls["n"] >= 4)
    finally:
        loop.stop()
        engine.shutdown()
    assert all(name.startswith("nba-engine") for name in threads)  # never beside a scoring call
    assert loop.rounds == calls["n"] - 1  # the failed round is not counted
    n = calls["n"]
    time.sleep(0.1)
    assert calls["n"] == n  # stopped means stopped


def test_zero_interval_starts_nothing() -> None:
    loop = PushCatchUp(lambda: {"hcps": 0}, lambda fn: None, interval_s=0).start()
    assert loop._thread is None
    loop.stop()


def test_the_service_config_carries_the_catch_up_settings() -> None:
    import pytest

    from nba.configuration import ConfigError, load_config
    from serving.config import ServingConfig

    cfg = load_config(ServingConfig, "serving")
    assert cfg.online_read.push_retry_s == 30 and cfg.online_read.push_retry_hcps == 5
    with pytest.raises(ConfigError, match="push_retry_s"):
        load_config(ServingConfig, "serving", overrides={"online_read.push_retry_s": -1})
