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
