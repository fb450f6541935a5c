"""Micro-batching of concurrent /recommend calls: one engine call scores many callers' HCPs.

The engine's cost per call is mostly fixed (online read, masks, one model pass, one audit
transaction), ~0.3 ms per extra HCP. Under load, requests that arrive while a batch is being
scored wait for the next one, so batches grow with the load and cost nothing when idle (no
timer unless ``max_wait_ms`` asks for one). Only requests with the same parameters share a call
(k, channels, as_of, rep, window, day, caller); an HCP asked twice in one batch goes to the next
call, so every caller's rows stay their own. Each caller keeps its own request id in the audit
trail (``Recommender.recommend(request_ids=...)``), so a response that never reached its caller
can be marked undelivered by itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class WaitClock:
    """When each piece of work still waiting for the engine thread arrived: admission control reads the oldest one's wait.

    Entered on the event loop, left on the engine thread as the work starts (or on the loop when a
    caller goes first); single dict operations and a list copy of its values, atomic under the GIL.
    """

    def __init__(self) -> None:
        self._since: dict[int, float] = {}
        self._ids = itertools.count()

    def enter(self) -> int:
        """A token for work that starts waiting now."""
        token = next(self._ids)
        self._since[token] = time.perf_counter()
        return token

    def leave(self, *tokens: int) -> None:
        """The work has started (or gone): it waits no longer. Idempotent."""
        for token in tokens:
            self._since.pop(token, None)

    def oldest_s(self) -> float:
        """Seconds the longest-waiting work has waited so far (0 when none waits)."""
        since = list(self._since.values())
        return time.perf_counter() - min(since) if since else 0.0

    def run(self, token: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, first marking ``token``'s wait over (call it on the engine thread)."""
        self.leave(token)
        return fn(*args, **kwargs)


@dataclass
class Pending:
    """One caller waiting for its suggestions."""

    key: Hashable
    hcp_ids: list[str]
    request_id: str
    future: asyncio.Future = field(repr=False)
    token: int = -1  # its WaitClock entry (-1: none)


def plan_groups(pending: list[Pending], max_hcps: int) -> tuple[list[list[Pending]], list[Pending]]:
    """Split waiting callers into engine calls: same key, no HCP twice, at most ``max_hcps`` HCPs (a larger single caller goes alone).

    Returns (groups in arrival order of their first caller, callers left for the next round).
    """
    groups: dict[Hashable, list[Pending]] = {}
    seen: dict[Hashable, set[str]] = {}
    left: list[Pending] = []
    total = 0
    for p in pending:
        ids = seen.get(p.key)
        n = len(p.hcp_ids)
        if ids is not None and (ids.intersection(p.hcp_ids) or total + n > max_hcps):
            left.append(p)
            continue
        if ids is None and groups and total + n > max_hcps:
            left.append(p)
            continue
        groups.setdefault(p.key, []).append(p)
        seen.setdefault(p.key, set()).update(p.hcp_ids)
        total += n
    return list(groups.values()), left


def slice_result(result: Any, hcp_ids: list[str], request_id: str) -> Any:
    """The part of a batch's ``Suggestions`` that answers one caller: its HCPs' rows, its request id.

    Per-HCP lists (HCPs without a suggestion, unknown ids) keep only the caller's HCPs; ``potential``
    (one value per batch HCP, in batch order) is not carried, as the API does not answer it.
    """
    cols = result.columns
    hcp = cols["hcp_id"]
    wanted = set(hcp_ids)
    rows = np.fromiter((h in wanted for h in hcp), dtype=bool, count=len(hcp))
    columns = {name: (_take(v, rows) if _is_column(v, len(hcp)) else v) for name, v in cols.items()}
    changes: dict[str, Any] = {"columns": columns, "request_id": request_id, "_frame": None, "potential": None}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if f.name not in changes and isinstance(value, list) and f.name not in ("notes", "warnings") and all(isinstance(x, str) for x in value):
            changes[f.name] = [x for x in value if x in wanted]  # per-HCP id lists (no_suggestion, unknown ids)
    return dataclasses.replace(result, **changes)


def _is_column(v: Any, n: int) -> bool:
    return isinstance(v, (np.ndarray, list)) and len(v) == n


def _take(v: Any, rows: np.ndarray) -> Any:
    if isinstance(v, np.ndarray):
        return v[rows]
    return [x for x, keep in zip(v, rows) if keep]


class MicroBatcher:
    """Scores waiting /recommend callers together on one worker thread (see module docstring).

    ``score(key, hcp_ids, request_ids)`` runs on ``executor`` and returns the engine's ``Suggestions``
    for the concatenated HCPs (``request_ids`` one per HCP). A caller that has gone before its batch
    starts (its future cancelled) is skipped.
    """

    def __init__(
        self,
        score: Callable[[Hashable, list[str], list[str]], Any],
        executor: Executor,
        *,
        max_hcps: int = 1000,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int, int], None] | None = None,
        clock: WaitClock | None = None,
    ) -> None:
        self.score = score
        self.executor = executor
        self.clock = clock  # callers wait here from submit until their engine call starts
        self.max_hcps = max_hcps
        self.max_wait_s = max_wait_ms / 1000.0
        self.on_batch = on_batch  # (callers, HCPs) per engine call, for metrics
        self._pending: list[Pending] = []
        self._runner: asyncio.Task | None = None

    @property
    def waiting(self) -> int:
        """Callers queued for a batch that has not started."""
        return len(self._pending)

    async def submit(self, key: Hashable, hcp_ids: list[str], request_id: str) -> Any:
        """Suggestions for ``hcp_ids`` (scored with whoever else is waiting with the same ``key``)."""
        loop = asyncio.get_running_loop()
        p = Pending(key, list(hcp_ids), request_id, loop.create_future(), self.clock.enter() if self.clock is not None else -1)
        self._pending.append(p)
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        try:
            return await p.future
        finally:
            if self.clock is not None:
                self.clock.leave(p.token)  # answered, failed or gone: no longer waiting

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            if self.max_wait_s > 0 and sum(len(p.hcp_ids) for p in self._pending) < self.max_hcps:
                await asyncio.sleep(self.max_wait_s)
            live = [p for p in self._pending if not p.future.done()]  # a cancelled caller has gone: no work for it
            groups, self._pending = plan_groups(live, self.max_hcps)
            for group in groups:
                group = [p for p in group if not p.future.done()]
                if group:
                    await self._score_group(loop, group)

    def _started(self, group: list[Pending], key: Hashable, ids: list[str], rids: list[str]) -> Any:
        """On the engine thread: the group's callers stop waiting, then their engine call runs."""
        if self.clock is not None:
            self.clock.leave(*(p.token for p in group))
        return self.score(key, ids, rids)

    async def _score_group(self, loop: asyncio.AbstractEventLoop, group: list[Pending]) -> None:
        ids = [h for p in group for h in p.hcp_ids]
        rids = [p.request_id for p in group for _ in p.hcp_ids]
        if self.on_batch is not None:
            self.on_batch(len(group), len(ids))
        try:
            result = await loop.run_in_executor(self.executor, functools.partial(self._started, group, group[0].key, ids, rids))
        except Exception as exc:
            if len(group) > 1 and _callers_fault(exc):
                # One caller's HCPs (a decision date past its time zone's week) must not fail the others.
                for p in group:
                    if not p.future.done():
                        await self._score_group(loop, [p])
                return
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        for p in group:
            if not p.future.done():
                p.future.set_result(dataclasses.replace(result, request_id=p.request_id) if len(group) == 1 else slice_result(result, p.hcp_ids, p.request_id))


def _callers_fault(exc: Exception) -> bool:
    from serving.engine import RequestError

    return isinstance(exc, RequestError)
