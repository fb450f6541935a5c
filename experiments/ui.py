"""`nba ui`: the MLflow UI (tracking server) on 127.0.0.1 against the project's tracking store."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def ui_command(tracking: Any, host: str, port: int, workers: int = 1) -> list[str]:
    """The `mlflow server` command line for a training ``tracking`` config (uri, artifact_location)."""
    uri = tracking.uri
    if uri.startswith("sqlite:///"):
        # Relative SQLite paths resolve against the server's cwd: pin them to ours.
        uri = f"sqlite:///{Path(uri[len('sqlite:///') :]).resolve()}"
    artifacts = Path(tracking.artifact_location).resolve().as_uri()
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        artifacts,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]


def ui_env() -> dict[str, str]:
    """The server's environment: no job runner (saves ~2 GB of workers), no telemetry."""
    env = dict(os.environ)
    env.update({"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    return env


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float = 60.0) -> float:
    """Poll ``url/health`` until it answers 200; seconds it took. Raises if the server dies or times out."""
    from nba.servers import wait_ok

    return wait_ok(f"{url}/health", proc, "mlflow server", timeout_s)


def start_ui(tracking: Any, host: str = "127.0.0.1", port: int = 5000, workers: int = 1, *, log_path: Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start the UI as a child process (in its own process group); return it and its URL."""
    if tracking.uri.startswith("sqlite:///"):
        Path(tracking.uri[len("sqlite:///") :]).resolve().parent.mkdir(parents=True, exist_ok=True)
    Path(tracking.artifact_location).resolve().mkdir(parents=True, exist_ok=True)
    if not port:
        from nba.servers import free_port

        port = free_port()
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115 - owned by the child's lifetime
    proc = subprocess.Popen(ui_command(tracking, host, port, workers), env=ui_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, f"http://{host}:{port}"


def stop_ui(proc: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """Stop the server and its workers (its process group): SIGTERM, then SIGKILL."""
    from nba.servers import stop_group

    stop_group(proc, timeout_s)
