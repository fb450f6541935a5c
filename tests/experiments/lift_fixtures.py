"""A tiny simulated world and a champion trained on it (no Feast: features from the pure as-of transforms)."""

from __future__ import annotations

from pathlib import Path


def simulate_world(out: Path, *, hcps: int = 150, days: int = 140, seed: int = 5) -> Path:
    """A simulated contract dataset with its _ground_truth."""
    from simulator.config import SimulatorConfig
    from simulator.generate import simulate

    cfg = SimulatorConfig.model_validate({"seed": seed, "hcps": hcps, "days": days, "start_date": "2025-01-06", "out": str(out)})
    simulate(cfg, out, progress=False)
    return out


def training_set(data_dir: Path, out: Path) -> Path:
    """Decision labels joined with features as of each label's Monday (what Feast's builder returns)."""
    import pandas as pd

    from contract.io import read_table
    from features import compute_features_asof, decision_labels
    from features.config import FeaturesConfig

    cfg = FeaturesConfig()
    labels = decision_labels(data_dir)
    tables = {n: read_table(data_dir, n) for n in ("products", "reps", "hcps", "content", "touchpoints", "outcomes", "feedback")}
    parts = []
    for ts, rows in labels.groupby("event_timestamp"):
        feats = compute_features_asof(tables, ts.to_pydatetime(), cfg).drop(columns=["event_timestamp"])
        parts.append(rows.merge(feats, on="hcp_id", how="left"))
    frame = pd.concat(parts, ignore_index=True)
    frame.to_parquet(out)
    return out


def train_champion(data_dir: Path, root: Path, seed: int = 0):
    """Train a small GRU on the world's logs, register it, crown it champion; returns the loaded model."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    from serving.scoring import load_champion
    from training import tracking
    from training.config import TrainingConfig
    from training.jobs import train_job

    ts = training_set(data_dir, root / "training_set.parquet")
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    cfg = TrainingConfig.model_validate({
        "training_set": str(ts), "data_dir": str(data_dir),
        "model": {"encoder": "gru", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 20},
        "tracking": {"uri": uri, "artifact_location": str(root / "mlflow" / "artifacts"), "experiment": "lift-test"},
        "epochs": 2, "batch_size": 256, "val_weeks": 2, "seed": seed, "device": "cpu", "num_threads": 1, "output_dir": str(root / "models"),
    })
    out = train_job(cfg, progress=False)
    tracking.setup(cfg.tracking)
    MlflowClient().set_registered_model_alias(cfg.tracking.registered_model, tracking.CHAMPION, out["model_version"])
    return load_champion(uri, cfg.tracking.registered_model, tracking.CHAMPION), uri
