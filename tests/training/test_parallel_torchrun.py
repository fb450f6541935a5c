"""`nba train` on two torchrun nodes (a second machine simulated on this one) equals `nba train` with two forked ranks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from nba.cli import app
from training.parallel import can_fork
from training.synthetic import synthetic_training_frame

pytestmark = pytest.mark.skipif(not can_fork(), reason="forked data-parallel ranks need os.fork (POSIX)")


def _args(root, name: str) -> list[str]:
    sets = {
        "val_weeks": 3,
        "test_weeks": 2,
        "model.d_model": 16,
        "model.n_heads": 2,
        "batch_size": 96,
        "tracking.uri": f"sqlite:///{root}/{name}/mlflow.db",
        "tracking.artifact_location": f"{root}/{name}/artifacts",
        "output_dir": f"{root}/{name}/models",
    }
    return ["train", "--training-set", str(root / "ts.parquet"), "--epochs", "2", "--seed", "5", *(x for k, v in sets.items() for x in ("--set", f"{k}={v}"))]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(bundle_dir) -> dict[str, torch.Tensor]:
    from training.artifacts import load_bundle

    return load_bundle(bundle_dir).model.state_dict()


@pytest.mark.slow
def test_two_torchrun_nodes_train_the_same_model_as_two_forked_ranks(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    synthetic_training_frame(n_hcps=48, n_weeks=10, n_content=8, max_hist=12, seed=2).to_parquet(tmp_path / "ts.parquet")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": os.getcwd()}
    port = _free_port()
    # Two launchers, one per "machine", each starting one rank: static rendezvous on rank 0's address.
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc-per-node",
                "1",
                "--node-rank",
                str(rank),
                "--master-addr",
                "127.0.0.1",
                "--master-port",
                str(port),
                "-m",
                "nba.cli",
                *_args(tmp_path, "torchrun"),
            ],
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    out = [p.communicate(timeout=240) for p in nodes]
    for p, (_, err) in zip(nodes, out):
        assert p.returncode == 0, err[-3000:]
    leader = json.loads(out[0][0].strip().splitlines()[-1])
    follower = json.loads(out[1][0].strip().splitlines()[-1])
    assert leader["run_id"] and leader["model_version"] == "1"
    assert follower["run_id"] is None and follower["seconds_per_epoch_median"] > 0  # rank 1 trains, records nothing
    assert not (tmp_path / "torchrun" / "models" / "None").exists()

    forked = CliRunner().invoke(app, [*_args(tmp_path, "forked"), "--set", "workers=2"])
    assert forked.exit_code == 0, forked.output
    run_id = json.loads(forked.stdout.strip().splitlines()[-1])["run_id"]

    a, b = _weights(tmp_path / "torchrun" / "models" / leader["run_id"]), _weights(tmp_path / "forked" / "models" / run_id)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name  # same seed, same world size: the same weights, bit for bit
