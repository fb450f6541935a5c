"""A parent that started a server in its own process group stops the whole group on SIGTERM, and exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nba.servers import ChildGuard, stop_group

# The parent: starts a "server" in a new session (as `nba serve` / `nba ui` do) that itself starts
# a worker in its group (as bentoml and mlflow do), writes both pids, then waits under ChildGuard.
PARENT = textwrap.dedent("""
    import subprocess, sys
    from nba.servers import ChildGuard
    server = (
        "import subprocess, sys, time\\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\\n"
        "open(sys.argv[1], 'w').write(f'{w.pid}\\\\n')\\n"
        "time.sleep(600)\\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", server, sys.argv[1] + ".worker"], start_new_session=True)
    open(sys.argv[1], "w").write(f"{proc.pid}\\n")
    with ChildGuard(proc, timeout_s=5) as guard:
        proc.wait()
    sys.exit(guard.exit_code)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"  # a zombie has stopped; only its exit status waits for a reaper


def _wait_for(path: Path, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return int(path.read_text())
        time.sleep(0.05)
    raise TimeoutError(path)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_stop_signal_stops_the_server_group_and_the_parent(tmp_path: Path, sig: signal.Signals) -> None:
    pidfile = tmp_path / "server.pid"
    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(pidfile)], cwd=root, env={**os.environ, "PYTHONPATH": str(root)})
    try:
        server = _wait_for(pidfile)
        worker = _wait_for(Path(f"{pidfile}.worker"))
        assert _alive(server) and _alive(worker)
        parent.send_signal(sig)
        assert parent.wait(timeout=20) == 128 + sig
        deadline = time.monotonic() + 10
        while (_alive(server) or _alive(worker)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(server), "the server outlived its parent"
        assert not _alive(worker), "the server's worker outlived the parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        for f in (pidfile, Path(f"{pidfile}.worker")):
            if f.exists():
                try:
                    os.kill(int(f.read_text()), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass


def test_a_server_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ok', flush=True); time.sleep(600)"],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout.readline().strip() == b"ok"  # the handler is installed
    start = time.monotonic()
    stop_group(proc, timeout_s=0.5)
    assert proc.returncode == -signal.SIGKILL and time.monotonic() - start < 5


def test_exit_code_is_the_childs_when_no_signal(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True)
    with ChildGuard(proc) as guard:
        assert signal.getsignal(signal.SIGTERM) is not before
        proc.wait()
    assert guard.signum is None and guard.exit_code == 3
    assert signal.getsignal(signal.SIGTERM) is before, "the parent's own handlers come back on leaving"


def test_stop_group_reaches_workers_in_sessions_of_their_own(tmp_path) -> None:
    """BentoML's arbiter (circus) starts each worker with setsid: signals to the server's group miss them, stop_group must not."""
    from nba.servers import kill_tree

    server = (
        "import subprocess, sys, time\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\n"
        "open(sys.argv[1], 'w').write(f'{w.pid}\\n')\n"
        "time.sleep(600)\n"
    )
    for stop in (stop_group, kill_tree):
        pidfile = tmp_path / f"{stop.__name__}.worker"
        proc = subprocess.Popen([sys.executable, "-c", server, str(pidfile)], start_new_session=True)
        deadline = time.time() + 20
        while not (pidfile.exists() and pidfile.read_text().endswith("\n")) and time.time() < deadline:
            time.sleep(0.05)
        worker = int(pidfile.read_text())
        assert os.getpgid(worker) != os.getpgid(proc.pid)  # out of reach of killpg
        stop(proc)
        proc.wait(timeout=10)
        deadline = time.time() + 10
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), f"{stop.__name__} left the worker running"
