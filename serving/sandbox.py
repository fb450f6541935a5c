"""A small real world for serving tests and benchmarks: contract data, a materialised Feast store, a champion.

Everything real (Feast on SQLite, an MLflow SQLite registry, a trained network) and seeded, so
an end-to-end test or ``nba bench serve`` can stand the service up from nothing in a minute.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

START = datetime(2025, 1, 6, tzinfo=UTC)
DAYS = 120
AS_OF = START + timedelta(days=DAYS)


@dataclass
class World:
    """Paths and facts of a built world."""

    root: Path
    data_dir: Path
    features_yaml: Path
    serving_yaml: Path
    tracking_uri: str
    hcp_ids: list[str]
    model_version: str | None


def build_world(root: Path, *, simulate: Callable[..., Any], n_hcps: int = 60, train: bool = True, seed: int = 0, epochs: int = 1) -> World:
    """Write contract data, build/apply/materialise features, optionally train and crown a champion.

    ``simulate(out, hcps=, days=, seed=, start_date=, progress=)`` writes the contract data (the
    composition root's ``nba.wiring.simulate_dataset``: serving never imports the simulator).
    """
    from contract.io import read_frame
    from features import apply, build_sources, materialize, open_store
    from features.config import FeaturesConfig

    root = Path(root)
    data_dir = root / "data"
    simulate(data_dir, hcps=n_hcps, days=DAYS, seed=seed, start_date=START.date(), progress=False)
    fcfg = FeaturesConfig(data_dir=data_dir, workspace_dir=root / "feature_workspace").resolved()
    build_sources(fcfg, progress=False)
    apply(fcfg)
    store = open_store(fcfg)
    materialize(fcfg, store=store)
    features_yaml = root / "features.yaml"
    features_yaml.write_text(yaml.safe_dump(json.loads(fcfg.model_dump_json())))
    tracking_uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    version = _train_champion(root, fcfg, store, tracking_uri, seed, epochs) if train else None
    serving_yaml = root / "serving.yaml"
    serving_yaml.write_text(
        yaml.safe_dump(
            {
                "audit_url": f"sqlite:///{root / 'audit.db'}",
                "tracking_uri": tracking_uri,
                "features_config": str(features_yaml),
                "require_auth": True,
                "max_batch": 1000,
                "exploration": {"holdout_share": 0.1, "epsilon": 0.1, "top_m": 3, "salt": "test"},
                # The world's data ends at AS_OF: the server's clock stands there (serving.clock), so requests
                # at AS_OF are live ones (recorded, content judged then), not backtests.
                "fixed_clock": AS_OF.isoformat(),
            }
        )
    )
    return World(root, data_dir, features_yaml, serving_yaml, tracking_uri, sorted(read_frame(data_dir, "hcps")["hcp_id"].tolist()), version)


def _train_champion(root: Path, fcfg, store, tracking_uri: str, seed: int, epochs: int) -> str:
    from mlflow import MlflowClient

    from features import build_training_set, decision_labels
    from training import tracking
    from training.config import TrainingConfig
    from training.jobs import train_job

    labels = decision_labels(fcfg.data_dir)
    frame = build_training_set(fcfg, labels, store=store, progress=False)
    ts_path = root / "training_set.parquet"
    frame.to_parquet(ts_path)
    cfg = TrainingConfig.model_validate(
        {
            "training_set": str(ts_path),
            "data_dir": str(fcfg.data_dir),
            "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 20},
            "tracking": {"uri": tracking_uri, "artifact_location": str(root / "mlflow" / "artifacts"), "experiment": "serving-test"},
            "epochs": epochs,
            "batch_size": 256,
            "val_weeks": 2,
            "test_weeks": 2,
            "seed": seed,
            "device": "cpu",
            "num_threads": 1,
            "output_dir": str(root / "models"),
        }
    )
    out = train_job(cfg, progress=False)
    tracking.setup(cfg.tracking)
    MlflowClient().set_registered_model_alias(cfg.tracking.registered_model, tracking.CHAMPION, out["model_version"])
    return str(out["model_version"])
