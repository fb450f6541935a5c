"""Serving fixtures: one tiny real world (Feast store + champion in MLflow) per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """Synthetic contract data, a materialised Feast store and a trained champion (~40 s)."""
    from nba.wiring import simulate_dataset
    from serving.sandbox import build_world

    return build_world(tmp_path_factory.mktemp("serving-world"), simulate=simulate_dataset, n_hcps=60, seed=0)


@pytest.fixture()
def serving_cfg(world, tmp_path):
    """The world's serving config with a fresh audit database."""
    from nba.configuration import load_config
    from serving.config import ServingConfig

    return load_config(ServingConfig, "serving", world.serving_yaml, {"audit_url": f"sqlite:///{tmp_path / 'audit.db'}"})


@pytest.fixture(scope="session")
def busy_rep(world) -> str:
    """The rep owning the most HCPs in the test world (rep ids come from the simulator)."""
    from contract.io import read_frame

    return str(read_frame(world.data_dir, "hcps", columns=["rep_id"])["rep_id"].value_counts().index[0])
