"""Local server processes the CLI starts (bentoml serve, mlflow server): a free port and waiting until they answer."""

from __future__ import annotations

import socket
import time
import urllib.request
from typing import Any


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ok(url: str, proc: Any, name: str, timeout_s: float) -> float:
    """Poll ``url`` until it answers 200; seconds it took. Raises when ``proc`` dies or time runs out."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return time.perf_counter() - start
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{name}: {url} not ready after {timeout_s:.0f} s")
