"""A circuit breaker for the online-store read: fail fast while the store is down, probe it again after a cool-off.

Without it every request during an outage pays the store client's timeout before falling back
to the rules; with it only the first failure and one probe per cool-off do, and the others are
answered degraded at once. The model comes back on the first probe that succeeds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """closed -> (``threshold`` failures in a row) -> open -> (``cooloff_s``) -> half-open: one probe; success closes, failure reopens."""

    def __init__(self, cooloff_s: float = 1.0, threshold: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if cooloff_s <= 0 or threshold < 1:
            raise ValueError("cooloff_s must be > 0 and threshold >= 1")
        self.cooloff_s = cooloff_s
        self.threshold = threshold
        self.clock = clock
        self.state = CLOSED
        self.failures = 0
        self.opened_at: float | None = None
        self.last_error: str | None = None
        self.trips = 0
        self._probing = False
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether a call may go to the store now (at most one probe at a time while half-open)."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self.clock() - (self.opened_at or 0.0) >= self.cooloff_s:
                self.state = HALF_OPEN
            if self.state == HALF_OPEN and not self._probing:
                self._probing = True
                return True
            return False

    def success(self) -> None:
        """The call answered: close the circuit."""
        with self._lock:
            self.state, self.failures, self._probing, self.last_error = CLOSED, 0, False, None

    def failure(self, error: str) -> None:
        """The call failed: open the circuit (again) once ``threshold`` failures ran in a row."""
        with self._lock:
            self.failures += 1
            self.last_error = error
            self._probing = False
            if self.state == HALF_OPEN or self.failures >= self.threshold:
                if self.state == CLOSED:  # a failed probe is the same outage
                    self.trips += 1
                self.state, self.opened_at = OPEN, self.clock()

    def why_open(self) -> str:
        """A one-line reason for a fast failure (what the last call said)."""
        return f"online store circuit open after {self.last_error or 'a failure'}; next probe within {self.cooloff_s:g} s"
