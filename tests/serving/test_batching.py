"""Micro-batching (``serving.batching``): who is scored with whom, and each caller getting exactly its own answer."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pytest

from serving.batching import MicroBatcher, Pending, WaitClock, plan_groups, slice_result


def _p(key, ids, rid="r"):
    return Pending(key, list(ids), rid, future=None)


def test_groups_share_a_key_never_repeat_an_hcp_and_respect_the_size_cap() -> None:
    a1, a2, b1, a3, a4 = _p("a", ["h1"]), _p("a", ["h2"]), _p("b", ["h1"]), _p("a", ["h1", "h3"]), _p("a", ["h4", "h5", "h6"])
    groups, left = plan_groups([a1, a2, b1, a3, a4], max_hcps=5)
    assert groups == [[a1, a2], [b1]]
    assert left == [a3, a4]  # h1 already in a's call; a4 would pass 5 HCPs this round
    groups, left = plan_groups(left, max_hcps=5)
    assert groups == [[a3, a4]] and left == []  # next round: 5 HCPs, none twice
    big = _p("a", [f"h{i}" for i in range(10)])
    groups, left = plan_groups([big, a1], max_hcps=5)
    assert groups == [[big]] and left == [a1]  # a request larger than the cap goes alone, first


@dataclass
class FakeSuggestions:
    """The fields of ``serving.engine.Suggestions`` that slicing reads."""

    columns: dict
    request_id: str
    notes: list = field(default_factory=list)
    no_suggestion: list = field(default_factory=list)
    potential: object = None
    _frame: object = None


class FakeEngine:
    """Two suggestions per HCP, slow enough that callers pile up behind a call; records every call."""

    def __init__(self, delay_s: float = 0.03) -> None:
        self.calls: list[tuple] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def score(self, key, ids, rids):
        from serving.engine import RequestError

        self.threads.add(threading.current_thread().name)
        self.calls.append((key, list(ids), list(rids)))
        if "bad" in ids:
            raise RequestError("decision_date: past this HCP's week")
        time.sleep(self.delay_s)
        hcp = np.repeat(np.asarray(ids, dtype=object), 2)
        return FakeSuggestions(
            {
                "hcp_id": hcp,
                "rank": np.tile([1, 2], len(ids)),
                "request_id": np.repeat(np.asarray(rids, dtype=object), 2),
                "reasons": [[f"why {h}"] for h in hcp],
            },
            "batch",
            no_suggestion=[h for h in ids if h.endswith("9")],
        )


def _batcher(engine, **kw):
    return MicroBatcher(engine.score, ThreadPoolExecutor(1, thread_name_prefix="engine-test"), **kw)


def test_concurrent_callers_are_scored_together_and_each_gets_only_its_own_rows() -> None:
    engine = FakeEngine()
    batcher = _batcher(engine)

    async def go():
        first = asyncio.ensure_future(batcher.submit("k", ["h0"], "r0"))
        await asyncio.sleep(0.005)  # h0's call is running: the next 20 callers wait for one call together
        rest = [batcher.submit("k", [f"h{i}", f"x{i}"], f"r{i}") for i in range(1, 21)]
        return await asyncio.gather(first, *rest)

    results = asyncio.run(go())
    assert len(engine.calls) == 2 and len(engine.calls[1][1]) == 40
    assert engine.threads == {"engine-test_0"}
    for i, res in enumerate(results):
        want = {f"h{i}"} if i == 0 else {f"h{i}", f"x{i}"}
        assert set(res.columns["hcp_id"]) == want and res.request_id == f"r{i}"
        assert set(res.columns["request_id"]) == {f"r{i}"}  # the rows the audit trail records carry the caller's id
        assert len(res.columns["reasons"]) == len(res.columns["hcp_id"])  # list columns sliced alike
        assert set(res.no_suggestion) <= want
    assert results[9].no_suggestion == ["h9", "x9"] and results[18].no_suggestion == []


def test_different_parameters_are_not_mixed() -> None:
    engine = FakeEngine()
    batcher = _batcher(engine)

    async def go():
        blocker = asyncio.ensure_future(batcher.submit("k3", ["h0"], "r0"))
        await asyncio.sleep(0.005)
        return await asyncio.gather(blocker, *(batcher.submit(f"k{i % 2}", [f"h{i}"], f"r{i}") for i in range(1, 7)))

    asyncio.run(go())
    keys = [c[0] for c in engine.calls]
    assert keys == ["k3", "k1", "k0"]


def test_a_callers_mistake_fails_only_that_caller() -> None:
    from serving.engine import RequestError

    engine = FakeEngine()
    batcher = _batcher(engine)

    async def go():
        blocker = asyncio.ensure_future(batcher.submit("k", ["h0"], "r0"))
        await asyncio.sleep(0.005)
        return await asyncio.gather(
            blocker, batcher.submit("k", ["h1"], "r1"), batcher.submit("k", ["bad"], "r2"), batcher.submit("k", ["h3"], "r3"), return_exceptions=True
        )

    results = asyncio.run(go())
    assert isinstance(results[2], RequestError)
    assert [set(r.columns["hcp_id"]) for i, r in enumerate(results) if i != 2] == [{"h0"}, {"h1"}, {"h3"}]


def test_a_caller_gone_before_its_batch_starts_costs_no_work() -> None:
    engine = FakeEngine(delay_s=0.05)
    batcher = _batcher(engine)

    async def go():
        blocker = asyncio.ensure_future(batcher.submit("k", ["h0"], "r0"))
        await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(batcher.submit("k", ["gone"], "r1"))
        stays = asyncio.ensure_future(batcher.submit("k", ["h2"], "r2"))
        await asyncio.sleep(0.005)
        gone.cancel()
        return await asyncio.gather(blocker, stays)

    asyncio.run(go())
    assert [c[1] for c in engine.calls] == [["h0"], ["h2"]]


def test_the_wait_clock_counts_callers_behind_the_running_call_not_the_one_being_scored() -> None:
    """Admission control's probe: time being scored is not waiting; callers queued behind a call are, until theirs starts."""
    engine = FakeEngine(delay_s=0.1)
    clock = WaitClock()
    batcher = _batcher(engine, clock=clock)
    seen: dict[str, float] = {}

    async def go():
        first = asyncio.ensure_future(batcher.submit("k", ["h0"], "r0"))
        await asyncio.sleep(0.05)
        seen["while_scored"] = clock.oldest_s()  # h0's call runs: nobody waits
        later = asyncio.ensure_future(batcher.submit("k", ["h1"], "r1"))
        await asyncio.sleep(0.03)
        seen["behind"] = clock.oldest_s()  # h1 has waited ~30 ms behind h0's call
        gone = asyncio.ensure_future(batcher.submit("k", ["h2"], "r2"))
        await asyncio.sleep(0)
        gone.cancel()
        await asyncio.gather(first, later)
        seen["after"] = clock.oldest_s()

    asyncio.run(go())
    assert seen["while_scored"] == 0.0
    assert 0.02 <= seen["behind"] < 0.1
    assert seen["after"] == 0.0  # answered and gone callers all left the clock


@pytest.mark.slow
def test_batched_scoring_matches_scoring_alone_and_records_each_callers_request_id(serving_cfg, world) -> None:
    """On the real engine: three callers in one call get what each would have got alone, under their own request ids."""
    from serving.engine import Recommender
    from serving.sandbox import AS_OF

    rec = Recommender.from_config(serving_cfg)
    try:
        callers = {"r-a": world.hcp_ids[:1], "r-b": world.hcp_ids[1:3], "r-c": world.hcp_ids[3:4]}
        ids = [h for hs in callers.values() for h in hs]
        rids = [r for r, hs in callers.items() for _ in hs]
        batch = rec.recommend(ids, k=3, as_of=AS_OF, request_ids=rids)
        for rid, hs in callers.items():
            part = slice_result(batch, hs, rid)
            alone = rec.recommend(hs, k=3, as_of=AS_OF, record=False)
            assert part.request_id == rid
            assert list(part.columns["hcp_id"]) == list(alone.columns["hcp_id"])
            assert list(part.columns["channel"]) == list(alone.columns["channel"])
            assert np.allclose(part.columns["propensity"], alone.columns["propensity"])
        rows = rec.audit.read("suggestions")
        got = rows.groupby("request_id")["hcp_id"].agg(lambda s: sorted(set(s))).to_dict()
        assert got == {rid: sorted(hs) for rid, hs in callers.items()}
    finally:
        rec.audit.close()
