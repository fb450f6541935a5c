"""`nba ui` stops its MLflow server (and the server's workers) when it gets SIGTERM, not only on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from monitor_fixtures import write_configs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    # Only zombies left (waiting for a reaper) count as stopped.
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def test_sigterm_stops_the_ui_server(tmp_path: Path) -> None:
    from nba.servers import free_port, wait_ok

    config = write_configs(tmp_path, "sqlite://")
    port = free_port()
    nba = str(Path(sys.executable).with_name("nba"))
    proc = subprocess.Popen([nba, "ui", "--config", str(config), "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ok(f"{url}/health", proc, "nba ui", 120)
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        assert children, "nba ui started no server"
        pgid = os.getpgid(int(children[0]))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        deadline = time.monotonic() + 20
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group_alive(pgid), "the MLflow server outlived `nba ui`"
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
