"""Admission control in front of the API routes: a concurrency limit, a bounded queue, 503 past them.

Without it every request past capacity queued inside BentoML until its 60 s timeout while the
server kept computing for callers that had left. Here, per worker process:

- at most ``max_in_flight`` requests are served at once; up to ``max_queue`` more wait for a
  slot, at most ``queue_timeout_ms``; anything else is answered 503 with ``Retry-After`` at once,
  so a refusal costs microseconds and arrives well within 50 ms;
- with ``max_wait_ms``, a /recommend request (``wait_paths``) is also refused on arrival, before
  BentoML parses it, when the wait it would face already exceeds that budget: admitted work of
  any route has waited longer than that for the engine thread (``wait_probe``: the service's
  clock of micro-batch callers, plans and feedback not yet started; without one, the oldest
  in-flight request's whole time), a request has queued here that long, or, with work in
  flight, the event loop itself runs that late (its lag, sampled every few ms while requests
  come, draining in real time). Feedback and plans are never refused for the wait. Counting slots alone
  admitted work the engine thread could not reach in time, and a saturated loop (the engine
  thread holds the GIL) made queue timeouts fire late: refusals took 160 ms at p99. The
  decision reads a few numbers; nothing waits for the engine or the body. Time being scored is
  not waiting: a slow box or a large request alone sheds nothing, a backlog behind it does;
- the body is read before a request queues, so a client that hangs up is noticed (ASGI
  ``http.disconnect``) while it waits or is served: its work is abandoned (the handler task is
  cancelled; a micro-batch skips it if it has not started);
- a response that never reached its caller is reported to ``on_undelivered(scope)`` (the service
  marks its suggestions undelivered in the audit trail): the client left before the response
  started, or the request was cancelled (BentoML's timeout) after the handler recorded it;
- a request whose caller left is closed with status 499 (sent into the closed connection, so
  nobody receives it): the middleware outside sees it end and counts it under 499.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("nba.serving.admission")

ADMITTED_PATHS = ("/recommend", "/plan", "/feedback", "/feedback/batch")


# Not an HTTP status anyone receives (nginx's "client closed request"): what a request whose caller
# left is answered with, so middleware outside (BentoML's timeout, access log, metrics) sees it end
# now; otherwise BentoML's timeout middleware held the request, and shutdown, for its 60 s.
CLIENT_GONE = 499


async def _closed(send: Any) -> None:
    await send({"type": "http.response.start", "status": CLIENT_GONE, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _error_body(message: str) -> bytes:
    from serving.errors import error_body

    return error_body(503, "overloaded", message)


class Admission:
    """ASGI middleware: concurrency limit + bounded queue + disconnect watch on ``paths`` (see module docstring)."""

    def __init__(
        self,
        app: Any,
        max_in_flight: int = 32,
        max_queue: int = 64,
        queue_timeout_ms: float = 30.0,
        retry_after_s: int = 1,
        paths: tuple[str, ...] = ADMITTED_PATHS,
        on_undelivered: Callable[[dict], None] | None = None,
        on_shed: Callable[[str, str], None] | None = None,
        max_wait_ms: float = 0.0,
        lag_every_ms: float = 5.0,
        wait_probe: Callable[[], float] | None = None,
        wait_paths: tuple[str, ...] = ("/recommend",),
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_ms / 1000.0
        self.max_wait_s = max_wait_ms / 1000.0  # 0: no wait budget, slots and the queue only
        self.lag_every_s = lag_every_ms / 1000.0
        self.loop_lag_s = 0.0  # how late the event loop ran its last timer (sampled while requests come)
        self._lag_task: asyncio.Task | None = None
        self._since: dict[int, float] = {}  # admitted request -> when it got its slot (at most max_in_flight entries)
        self._tokens = itertools.count()
        # Seconds the oldest admitted request has waited for the engine (not counting its own scoring);
        # None: the oldest in-flight request's whole time so far stands in.
        self.wait_probe = wait_probe
        # Where the wait budget applies: the latency-bound route. Feedback and plans queue within the
        # slots instead (a burst of feedback posts is writes a client would otherwise have to retry).
        self.wait_paths = wait_paths
        self.retry_after = str(int(retry_after_s)).encode()
        self.paths = paths
        self.on_undelivered = on_undelivered
        self.on_shed = on_shed  # (path, reason) for metrics
        self.in_flight = 0
        self._queue: deque[asyncio.Future] = deque()
        self._queued_at: dict[asyncio.Future, float] = {}  # when each waiter joined the queue
        self.abandoned = 0  # requests whose caller left before the answer (for tests and logs)

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return sum(not f.done() for f in self._queue)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight and (len(self._queue) >= self.max_queue or self.queue_timeout_s <= 0):
            await self._shed(scope, send, "queue_full", "overloaded: the request queue is full, retry later")
            return
        if self.max_wait_s > 0:
            self._watch_lag()
            if scope["path"] in self.wait_paths and self.expected_wait_s() > self.max_wait_s:
                await self._shed(scope, send, "wait_budget", "overloaded: the expected wait exceeds the budget, retry later")
                return
        # Read the body now: afterwards receive() answers only the caller's disconnect.
        messages = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                await _closed(send)  # gone before it was even received: nothing to do
                return
            messages.append(message)
            if not message.get("more_body", False):
                break
        loop = asyncio.get_running_loop()
        watcher = loop.create_task(receive())  # completes with http.disconnect: the caller left (or the response completed)
        try:
            outcome = await self._acquire(watcher)
            if outcome == "gone":
                self.abandoned += 1
                await _closed(send)
            elif outcome == "full":
                await self._shed(scope, send, "queue_full", "overloaded: the request queue is full, retry later")
            elif outcome == "timeout":
                await self._shed(scope, send, "queue_timeout", "overloaded: no capacity within the queue timeout, retry later")
            else:
                token = next(self._tokens)
                self._since[token] = time.perf_counter()
                try:
                    await self._serve(scope, messages, watcher, send)
                finally:
                    del self._since[token]
                    self._release()
        finally:
            if not watcher.done():
                watcher.cancel()

    def expected_wait_s(self) -> float:
        """The wait a request arriving now would face at least: the oldest in-flight request's time so far, or the event loop's lag.

        0 with nothing in flight or queued: a late loop with no work of ours behind it (a pause of
        the box, a collection) is no backlog, and refusing would not shorten anything.
        """
        if not self._since and not self._queue:
            return 0.0
        now = time.perf_counter()
        queued = now - min(self._queued_at.values(), default=now)  # waiting here for a slot
        if self.wait_probe is not None:
            behind = self.wait_probe()
        else:
            behind = now - min(self._since.values(), default=now)
        return max(queued, behind, self.loop_lag_s)

    def _watch_lag(self) -> None:
        """Start sampling the loop's lag (once per loop; it stops after a quiet second and restarts with the next request)."""
        if self._lag_task is None or self._lag_task.done():
            self._lag_task = asyncio.get_running_loop().create_task(self._sample_lag())

    async def _sample_lag(self) -> None:
        loop = asyncio.get_running_loop()
        quiet_since = loop.time()
        while True:
            due = loop.time() + self.lag_every_s
            await asyncio.sleep(self.lag_every_s)
            now = loop.time()
            # A stall leaves a backlog that drains in real time: the estimate falls by the time since
            # the last sample, so one timely tick right after a long stall does not erase it.
            self.loop_lag_s = max(now - due, self.loop_lag_s - (now - due + self.lag_every_s), 0.0)
            if self._since or self._queue:
                quiet_since = now
            elif now - quiet_since > 1.0:  # idle: no timer left running
                self.loop_lag_s = 0.0
                return

    async def _acquire(self, watcher: asyncio.Task) -> str:
        """A slot ("ok"), waiting in the queue if need be; else "gone" (the caller left), "full" or "timeout"."""
        if self.in_flight < self.max_in_flight and not self._queue:
            self.in_flight += 1
            return "ok"
        if len(self._queue) >= self.max_queue or self.queue_timeout_s <= 0:
            return "full"
        waiter = asyncio.get_running_loop().create_future()
        self._queued_at[waiter] = time.perf_counter()
        self._queue.append(waiter)
        try:
            await asyncio.wait((waiter, watcher), timeout=self.queue_timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._queued_at.pop(waiter, None)
            if not waiter.done():
                waiter.cancel()
            try:
                self._queue.remove(waiter)
            except ValueError:
                pass
        granted = waiter.done() and not waiter.cancelled()
        if watcher.done():
            if granted:  # handed a slot just as the caller left: pass it on
                self._release()
            return "gone"
        return "ok" if granted else "timeout"

    def _release(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the next in line; in_flight unchanged
                return
        self.in_flight -= 1

    async def _serve(self, scope: dict, messages: list[dict], watcher: asyncio.Task, send: Any) -> None:
        pending = list(messages)
        started = delivered = False

        async def replay() -> dict:
            if pending:
                return pending.pop(0)
            await asyncio.shield(watcher)
            return {"type": "http.disconnect"}

        async def tracked_send(message: dict) -> None:
            nonlocal started, delivered
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                # The server drops what is sent to a closed connection: delivered only if the caller is still there.
                delivered = not watcher.done()
            await send(message)

        task = asyncio.ensure_future(self.app(scope, replay, tracked_send))
        try:
            await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
            if not task.done() and not started:
                task.cancel()  # the caller left while its request waited or was scored: abandon the work
                self.abandoned += 1
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
            if not started and watcher.done():
                await _closed(send)
        finally:
            if not task.done():
                task.cancel()  # we were cancelled (BentoML's timeout): so is the handler
            if not delivered and self.on_undelivered is not None:
                try:
                    self.on_undelivered(scope)
                except Exception:  # a failed mark must not turn into a 500 for nobody
                    log.exception("marking an undelivered response failed")

    async def _shed(self, scope: dict, send: Any, reason: str, message: str) -> None:
        if self.on_shed is not None:
            self.on_shed(scope["path"], reason)
        body = _error_body(message)
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"retry-after", self.retry_after)],
            }
        )
        await send({"type": "http.response.body", "body": body})
