"""Helpers of the monitor tests: configs on scratch stores and audit trails filled with served windows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from contract.schema import CHANNELS

CHANNEL_P = np.array([0.2, 0.05, 0.25, 0.15, 0.15, 0.1, 0.02, 0.08])


def write_configs(root: Path, audit_url: str) -> Path:
    """Training + experiments YAML on scratch MLflow / audit / report paths; returns the experiments YAML."""
    root.mkdir(parents=True, exist_ok=True)
    training = {
        "tracking": {
            "uri": f"sqlite:///{root / 'mlflow.db'}",
            "artifact_location": str(root / "artifacts"),
            "experiment": "nba-training",
            "registered_model": "nba-test",
        },
        "data_dir": str(root / "data"),
        "output_dir": str(root / "models"),
    }
    (root / "training.yaml").write_text(yaml.safe_dump(training))
    exp = {"training_config": str(root / "training.yaml"), "monitor": {"audit_url": audit_url, "out_dir": str(root / "monitor"), "report_rows": 500}}
    path = root / "experiments.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def record_window(trail, features: pd.DataFrame, as_of: str, seed: int, channel_p: np.ndarray = CHANNEL_P, k: int = 2, model_version: str | None = None) -> int:
    """Record one served week: ``k`` suggestions per feature row, all carrying the row's features."""
    rng = np.random.default_rng(seed)
    when = dt.datetime.fromisoformat(as_of).replace(tzinfo=dt.UTC)
    docs = features.drop(columns=["hcp_id"]).to_json(orient="records", lines=True).splitlines()
    rows = []
    for i, (hcp, doc) in enumerate(zip(features["hcp_id"], docs)):
        policy = "holdout" if rng.random() < 0.05 else "model"
        for rank in range(k):
            ch = CHANNELS[int(rng.choice(len(CHANNELS), p=channel_p))]
            rows.append(
                {
                    "suggestion_id": f"S{seed}-{i}-{rank}",
                    "request_id": f"R{seed}-{i // 500}",
                    "hcp_id": hcp,
                    "as_of": when,
                    "rank": rank,
                    "channel": ch,
                    "content_id": None if ch == "phone" else f"C{int(rng.integers(0, 60)):05d}",
                    "expected_response": float(rng.beta(2, 5)),
                    "propensity": 0.9,
                    "policy": policy,
                    "features_json": doc,
                    "model_version": model_version if policy == "model" else None,
                }
            )
    return trail.record_suggestions(rows)
