"""Where training rows come from: a ready Parquet training set, or the feature store over a dataset."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class TrainingSet:
    """Rows, a fingerprint of the data they came from, and the content catalogue's ids."""

    frame: pd.DataFrame
    fingerprint: str
    content_ids: list[str]
    source: str


def _file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_training_set(training_set: str | None, data_dir: str, features_config: str | None = None) -> TrainingSet:
    """Read ``training_set`` (Parquet) if given, else build decision labels + point-in-time features
    for the contract dataset in ``data_dir`` through the feature stage."""
    if training_set:
        path = Path(training_set)
        if not path.exists():
            raise FileNotFoundError(f"training_set {path}: no such file")
        frame = pd.read_parquet(path)
        ids = frame["label_content_id"].dropna().astype(str).unique().tolist() if "label_content_id" in frame else []
        return TrainingSet(frame, _file_fingerprint(path), ids, str(path))
    import features
    from contract.io import dataset_fingerprint, read_frame

    builder = getattr(features, "build_training_set", None)
    if builder is None:
        raise RuntimeError("features.build_training_set is not available; pass --training-set PATH (a Parquet training set)")
    from features.config import load_features_config

    labels = features.decision_labels(data_dir)
    frame = builder(load_features_config(features_config, overrides={"data_dir": data_dir}), labels)
    catalogue = read_frame(data_dir, "content", columns=["content_id"])["content_id"].astype(str).tolist()
    return TrainingSet(frame, dataset_fingerprint(data_dir), catalogue, str(data_dir))
