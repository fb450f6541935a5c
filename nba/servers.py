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


# What a supervisor (systemd, Kubernetes, a shell's kill), a terminal's Ctrl-C and a closed
# terminal send. The child runs in its own session, so it hears none of them unless we forward.
STOP_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP")


class Signalled(Exception):
    """A stop signal arrived while the parent waited on its child server."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def process_tree(pid: int) -> list[Any]:
    """``pid`` and every live process below it (psutil handles); empty when ``pid`` is gone."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def descendants(pid: int) -> list[Any]:
    """Every live process below ``pid`` (psutil handles), found before anything is signalled."""
    return process_tree(pid)[1:]


def kill_tree(proc: Any) -> None:
    """SIGKILL ``proc``, its process group and every process below it, as a machine crash would."""
    import os
    import signal

    import psutil

    below = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for p in below:
        try:
            p.kill()
        except psutil.Error:
            pass


def stop_group(proc: Any, timeout_s: float = 10.0) -> None:
    """Stop ``proc``'s process group (the server and its workers): SIGTERM, wait, then SIGKILL if it lingers."""
    import os
    import signal
    import subprocess

    import psutil

    # BentoML's arbiter (circus) starts each worker in a session of its own (setsid), so signals to
    # the server's group never reach them: remember them now and sweep whatever outlives the leader.
    below = descendants(proc.pid)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout_s)
            break
        except subprocess.TimeoutExpired:
            continue
    # A worker can outlive its leader (BentoML's arbiter exits while a worker still shuts down, or a
    # kill -9 of the leader alone): it would hold memory and a CPU as an orphan, so sweep the group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _, alive = psutil.wait_procs(below, timeout=min(timeout_s, 5.0))
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


class ChildGuard:
    """While inside, a stop signal stops the child server's process group; leaving in any way stops it too.

    ``with ChildGuard(proc) as guard: proc.wait()`` then ``guard.exit_code``: the child's code, or
    128 + the signal number when a signal ended the wait (143 for SIGTERM, 130 for Ctrl-C).
    """

    def __init__(self, proc: Any, timeout_s: float = 10.0) -> None:
        self.proc = proc
        self.timeout_s = timeout_s
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> ChildGuard:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
            for name in STOP_SIGNALS:
                sig = getattr(signal, name)
                self._previous[sig] = signal.signal(sig, self._raise)
        return self

    @staticmethod
    def _raise(signum: int, _frame: Any) -> None:
        raise Signalled(signum)

    def __exit__(self, exc_type: Any, exc: BaseException | None, _tb: Any) -> bool:
        import signal

        for sig in self._previous:  # a second signal must not interrupt the stopping itself
            signal.signal(sig, signal.SIG_IGN)
        try:
            stop_group(self.proc, self.timeout_s)
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
        if isinstance(exc, Signalled):
            self.signum = exc.signum
            return True
        return False

    @property
    def exit_code(self) -> int:
        """128 + signal number when stopped by a signal, else the child's exit code."""
        if self.signum is not None:
            return 128 + self.signum
        rc = self.proc.returncode
        return 0 if rc is None else 128 - rc if rc < 0 else rc  # Popen reports death by signal N as -N
