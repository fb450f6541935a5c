"""Background catch-up of feedback whose online push failed (the store was down when it arrived).

A replay of the same feedback pushes it again, but a CRM that got its 200 never replays: without
this loop such outcomes would reach the online features only at the next import. The retry runs
on the engine's own thread (``submit``), since the Feast store and the audit trail it touches are
owned by that thread, and it pushes a few HCPs per round so a backlog never stalls scoring.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

log = logging.getLogger("nba.serving")


class PushCatchUp:
    """Every ``interval_s`` seconds, run ``retry`` through ``submit`` (the engine's executor) until stopped.

    ``name`` labels the loop's thread and its log lines (the service also refits the outcome shift with it).
    """

    def __init__(
        self, retry: Callable[[], dict[str, Any]], submit: Callable[[Callable[[], Any]], Future], interval_s: float, name: str = "feedback push catch-up"
    ) -> None:
        self.retry = retry
        self.name = name
        self.submit = submit
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0

    def run_once(self) -> dict[str, Any]:
        """One round on the engine's thread: what ``retry`` reports (``hcps``, ``pushed``, ``failed``)."""
        out = self.submit(self.retry).result()
        self.rounds += 1
        if out.get("hcps"):
            log.info("%s: %d HCP(s) pushed again, %d failed", self.name, out.get("pushed", 0), len(out.get("failed") or {}))
        return out

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception as exc:  # the store or the trail is down: the next round tries again
                log.warning("%s failed: %s: %s", self.name, type(exc).__name__, exc)

    def start(self) -> PushCatchUp:
        """Start the loop on a daemon thread (nothing when ``interval_s`` is 0)."""
        if self.interval_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"nba-{self.name.replace(' ', '-')}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the loop and wait for a round in progress."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
