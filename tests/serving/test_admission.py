"""Admission control (``serving.admission``) driven as plain ASGI: limits, queue, 503 with Retry-After, callers that leave."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from serving.admission import Admission


class Caller:
    """One HTTP exchange over ASGI: a body, an optional hang-up, and what came back."""

    def __init__(self, body: bytes = b"{}", hang_up_after_s: float | None = None) -> None:
        self.body = body
        self.hang_up_after_s = hang_up_after_s
        self.sent_body = False
        self.messages: list[dict] = []
        self.start = time.perf_counter()
        self.answered_s: float | None = None

    async def receive(self) -> dict:
        if not self.sent_body:
            self.sent_body = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        if self.hang_up_after_s is None:
            await asyncio.Event().wait()  # the caller stays until the answer
        await asyncio.sleep(max(self.hang_up_after_s - (time.perf_counter() - self.start), 0))
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start" and self.answered_s is None:
            self.answered_s = time.perf_counter() - self.start
        self.messages.append(message)

    @property
    def status(self) -> int | None:
        return next((m["status"] for m in self.messages if m["type"] == "http.response.start"), None)

    @property
    def headers(self) -> dict[bytes, bytes]:
        return dict(next(m["headers"] for m in self.messages if m["type"] == "http.response.start"))

    @property
    def json(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"))


def scope(path: str = "/recommend") -> dict:
    return {"type": "http", "method": "POST", "path": path, "headers": [], "state": {}}


class SlowApp:
    """An API that takes ``delay_s`` per request, records what it served and what was cancelled."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.delay_s = delay_s
        self.started = 0
        self.finished = 0
        self.cancelled = 0

    async def __call__(self, scope: dict, receive, send) -> None:
        body = (await receive())["body"]
        scope["state"]["nba_request_id"] = f"req-{self.started}"
        self.started += 1
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


def run(coro):
    return asyncio.run(coro)


def test_past_the_limit_and_queue_a_request_gets_503_with_retry_after_at_once() -> None:
    app = SlowApp(0.2)
    adm = Admission(app, max_in_flight=2, max_queue=0, retry_after_s=3)

    async def go():
        callers = [Caller() for _ in range(5)]
        await asyncio.gather(*(adm(scope(), c.receive, c.send) for c in callers))
        return callers

    callers = run(go())
    assert sorted(c.status for c in callers) == [200, 200, 503, 503, 503]
    for c in callers:
        if c.status == 503:
            assert c.answered_s < 0.05  # refused at once, not after the 0.2 s of work ahead
            assert c.headers[b"retry-after"] == b"3"
            err = c.json["error"]
            assert err["status"] == 503 and err["code"] and "retry" in err["message"]
    assert app.started == 2 and adm.in_flight == 0


def test_a_queued_request_is_served_when_a_slot_frees_within_the_timeout() -> None:
    app = SlowApp(0.03)
    adm = Admission(app, max_in_flight=1, max_queue=4, queue_timeout_ms=500)

    async def go():
        callers = [Caller(json.dumps({"i": i}).encode()) for i in range(3)]
        await asyncio.gather(*(adm(scope(), c.receive, c.send) for c in callers))
        return callers

    callers = run(go())
    assert [c.status for c in callers] == [200, 200, 200]
    assert [c.json["i"] for c in callers] == [0, 1, 2]  # each got its own body back, in order
    assert app.started == 3 and adm.in_flight == 0 and adm.queued == 0


def test_a_request_still_queued_after_the_timeout_is_refused_quickly() -> None:
    app = SlowApp(0.5)
    adm = Admission(app, max_in_flight=1, max_queue=4, queue_timeout_ms=30)

    async def go():
        first, queued = Caller(), Caller()
        t1 = asyncio.ensure_future(adm(scope(), first.receive, first.send))
        await asyncio.sleep(0.01)
        await adm(scope(), queued.receive, queued.send)
        await t1
        return first, queued

    first, queued = run(go())
    assert first.status == 200 and queued.status == 503
    assert 0.025 <= queued.answered_s < 0.2
    assert app.started == 1


def test_a_caller_that_leaves_while_queued_costs_no_work() -> None:
    app = SlowApp(0.2)
    adm = Admission(app, max_in_flight=1, max_queue=4, queue_timeout_ms=5000)

    async def go():
        first, leaver = Caller(), Caller(hang_up_after_s=0.03)
        t1 = asyncio.ensure_future(adm(scope(), first.receive, first.send))
        await asyncio.sleep(0.01)
        await adm(scope(), leaver.receive, leaver.send)
        await t1
        return first, leaver

    first, leaver = run(go())
    assert first.status == 200 and leaver.status == 499  # closed, into a connection nobody reads
    assert app.started == 1 and adm.abandoned == 1 and adm.in_flight == 0


def test_a_caller_that_leaves_while_served_cancels_the_work_and_is_reported_undelivered() -> None:
    app = SlowApp(0.3)
    undelivered: list[str] = []
    adm = Admission(app, max_in_flight=4, on_undelivered=lambda s: undelivered.append(s["state"].get("nba_request_id")))

    async def go():
        stays, leaver = Caller(b'{"a": 1}'), Caller(hang_up_after_s=0.05)
        await asyncio.gather(adm(scope(), stays.receive, stays.send), adm(scope(), leaver.receive, leaver.send))
        return stays, leaver

    stays, leaver = run(go())
    assert stays.status == 200 and leaver.status == 499  # closed, into a connection nobody reads
    assert app.cancelled == 1 and app.finished == 1
    assert len(undelivered) == 1 and undelivered[0] is not None  # only the caller that left
    assert adm.in_flight == 0


def test_only_an_answer_the_caller_left_before_is_reported_undelivered() -> None:
    """Reported undelivered only when the caller left before the answer went out."""

    class AnswersRegardless:
        async def __call__(self, scope, receive, send):
            await receive()
            scope["state"]["nba_request_id"] = "late"
            await asyncio.shield(asyncio.sleep(0.1))  # scoring in a thread: cancelling does not stop it
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

    undelivered: list[str] = []
    adm = Admission(AnswersRegardless(), on_undelivered=lambda s: undelivered.append(s["state"].get("nba_request_id")))

    async def go():
        c = Caller(hang_up_after_s=0.12)  # hangs up only after the answer went out
        await adm(scope(), c.receive, c.send)
        return c

    run(go())
    assert undelivered == []  # delivered before the hang-up

    adm2 = Admission(AnswersRegardless(), on_undelivered=lambda s: undelivered.append(s["state"].get("nba_request_id")))

    async def go_early():
        c = Caller(hang_up_after_s=0.02)
        await adm2(scope(), c.receive, c.send)

    run(go_early())
    assert undelivered == ["late"]


def test_other_paths_pass_untouched() -> None:
    app = SlowApp(0.0)
    adm = Admission(app, max_in_flight=1, max_queue=0)

    async def go():
        callers = [Caller() for _ in range(3)]
        await asyncio.gather(*(adm(scope("/readyz"), c.receive, c.send) for c in callers))
        return callers

    assert [c.status for c in run(go())] == [200, 200, 200]


@pytest.mark.parametrize("in_flight,queue", [(1, 0), (3, 2)])
def test_slots_are_all_returned(in_flight: int, queue: int) -> None:
    app = SlowApp(0.01)
    adm = Admission(app, max_in_flight=in_flight, max_queue=queue, queue_timeout_ms=5)

    async def go():
        callers = [Caller(hang_up_after_s=0.005 if i % 3 == 0 else None) for i in range(30)]
        await asyncio.gather(*(adm(scope(), c.receive, c.send) for c in callers))
        return callers

    callers = run(go())
    assert adm.in_flight == 0 and adm.queued == 0
    assert {c.status for c in callers} <= {200, 503, 499}


def test_past_the_wait_budget_a_request_is_refused_on_arrival_and_admitted_again_once_the_backlog_clears() -> None:
    """Free slots are not enough: a request that would wait behind work older than max_wait_ms gets 503 at once."""
    app = SlowApp(0.12)
    adm = Admission(app, max_in_flight=100, max_queue=100, max_wait_ms=40)

    async def go():
        first, early, after = Caller(), Caller(), Caller()
        t1 = asyncio.ensure_future(adm(scope(), first.receive, first.send))
        await asyncio.sleep(0.01)
        t2 = asyncio.ensure_future(adm(scope(), early.receive, early.send))  # the oldest has waited 10 ms: admitted
        await asyncio.sleep(0.05)
        late = Caller()
        await adm(scope(), late.receive, late.send)  # the oldest has waited 60 ms > 40: refused now
        await asyncio.gather(t1, t2)
        await adm(scope(), after.receive, after.send)  # nothing in flight: admitted again
        return first, early, late, after

    first, early, late, after = run(go())
    assert [first.status, early.status, late.status, after.status] == [200, 200, 503, 200]
    assert late.answered_s < 0.03  # refused on arrival, not after the 0.12 s of work ahead
    assert late.headers[b"retry-after"] == b"1" and "wait" in late.json["error"]["message"]
    assert app.started == 3 and adm.in_flight == 0


def test_a_late_event_loop_counts_as_wait() -> None:
    """The loop's own lag is part of the wait: after a stall (the engine thread holding the GIL) new arrivals are refused while a backlog drains."""
    app = SlowApp(0.0)
    shed: list[str] = []
    adm = Admission(app, max_in_flight=100, max_queue=100, max_wait_ms=40, lag_every_ms=2, on_shed=lambda path, why: shed.append(why))

    async def go():
        first, slow, blocked, later = Caller(), Caller(), Caller(), Caller()
        await adm(scope(), first.receive, first.send)  # served at once; the lag sampler is running
        time.sleep(0.06)  # the loop runs nothing for 60 ms
        await asyncio.sleep(0.003)  # the lag sampler wakes first (its timer was due long ago)
        assert adm.loop_lag_s > 0.04 and adm.expected_wait_s() == 0.0  # nothing of ours waits behind the stall
        app.delay_s = 0.2
        t_slow = asyncio.ensure_future(adm(scope(), slow.receive, slow.send))  # admitted: nothing in flight
        await asyncio.sleep(0.001)
        t0 = time.perf_counter()
        await adm(scope(), blocked.receive, blocked.send)  # the slow one is 1 ms old, but the loop still runs ~50 ms late
        waited = time.perf_counter() - t0
        await t_slow
        await asyncio.sleep(0.07)  # the estimate drains in real time
        app.delay_s = 0.0
        await adm(scope(), later.receive, later.send)  # admitted again
        return [first.status, slow.status, blocked.status, later.status], waited

    statuses, waited = run(go())
    assert statuses == [200, 200, 503, 200] and waited < 0.03
    assert shed == ["wait_budget"]


def test_with_a_wait_probe_time_being_scored_is_not_waiting() -> None:
    """A slow request alone sheds nothing; the probe's report of work waiting behind it past the budget does."""
    app = SlowApp(0.1)
    waiting = {"s": 0.0}
    adm = Admission(app, max_in_flight=100, max_queue=100, max_wait_ms=40, wait_probe=lambda: waiting["s"])

    async def go():
        slow, beside, behind = Caller(), Caller(), Caller()
        t1 = asyncio.ensure_future(adm(scope(), slow.receive, slow.send))
        await asyncio.sleep(0.06)
        await_beside = asyncio.ensure_future(adm(scope(), beside.receive, beside.send))  # the slow one is 60 ms in, nothing waits
        await asyncio.sleep(0.001)
        waiting["s"] = 0.05  # the engine's queue reports work waiting 50 ms
        await adm(scope(), behind.receive, behind.send)
        await asyncio.gather(t1, await_beside)
        return slow, beside, behind

    slow, beside, behind = run(go())
    assert [slow.status, beside.status, behind.status] == [200, 200, 503]


def test_the_wait_budget_refuses_recommend_only_feedback_and_plans_queue() -> None:
    app = SlowApp(0.0)
    adm = Admission(app, max_in_flight=100, max_queue=100, max_wait_ms=40, wait_probe=lambda: 0.5)

    async def go():
        busy = Caller()
        app.delay_s = 0.05
        t = asyncio.ensure_future(adm(scope("/feedback"), busy.receive, busy.send))  # something in flight
        await asyncio.sleep(0.005)
        out = {}
        for path in ("/recommend", "/feedback", "/feedback/batch", "/plan"):
            c = Caller()
            await adm(scope(path), c.receive, c.send)
            out[path] = c.status
        await t
        return out

    assert run(go()) == {"/recommend": 503, "/feedback": 200, "/feedback/batch": 200, "/plan": 200}
