"""Where training rows come from: a ready Parquet training set, or the feature store over a dataset."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from contract.schema import CONTENT_FORMS, CONTENT_TYPES, TOPICS

# The content tags the model embeds beside each item's id, with their allowed values (contract).
CONTENT_TAGS: dict[str, tuple[str, ...]] = {"topic": TOPICS, "content_type": CONTENT_TYPES, "form": CONTENT_FORMS}


@dataclass
class TrainingSet:
    """Rows, a fingerprint of the data they came from, and the content catalogue's ids and tags."""

    frame: pd.DataFrame
    fingerprint: str
    content_ids: list[str]
    source: str
    # content_id, topic, content_type, form (None for a ready Parquet set: it carries no catalogue).
    content_tags: pd.DataFrame | None = None
    # content_id -> product_id and hcp_id -> main_product_id (None without the contract's tables):
    # which items an HCP may be offered, as serving offers them (its own product's).
    content_products: pd.Series | None = None
    hcp_products: pd.Series | None = None


def _file_fingerprint(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_training_set(training_set: str | None, data_dir: str, features_config: str | None = None) -> TrainingSet:
    """Read ``training_set`` (Parquet) if given, else build decision labels + point-in-time features
    for the contract dataset in ``data_dir`` through the feature stage, at its ``examples.grain``
    (week: the Feast sources' weekly snapshots; day: each day's state, features.examples)."""
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

    fcfg = load_features_config(features_config, overrides={"data_dir": data_dir})
    labels = features.decision_labels(data_dir, grain=fcfg.examples.grain)
    if fcfg.examples.grain == "week":
        frame = builder(fcfg, labels)
    else:
        from features.examples import build_examples

        frame = build_examples(fcfg, labels)
    tags = read_frame(data_dir, "content", columns=["content_id", "product_id", *CONTENT_TAGS])
    hcps = read_frame(data_dir, "hcps", columns=["hcp_id", "main_product_id"])
    return TrainingSet(
        frame,
        dataset_fingerprint(data_dir),
        tags["content_id"].astype(str).tolist(),
        str(data_dir),
        tags.drop(columns="product_id"),
        tags.set_index(tags["content_id"].astype(str))["product_id"].astype(str),
        hcps.set_index(hcps["hcp_id"].astype(str))["main_product_id"].astype(str),
    )


def content_tag_codes(vocab_ids: list[str] | tuple[str, ...], tags: pd.DataFrame) -> np.ndarray:
    """[2 + len(vocab_ids), len(CONTENT_TAGS)] tag codes per content index (1-based; 0 for pad, none and untagged items)."""
    import numpy as np

    uniq = tags.drop_duplicates("content_id", keep="last")
    by_id = uniq.set_index(uniq["content_id"].astype(str))
    codes = np.zeros((len(vocab_ids) + 2, len(CONTENT_TAGS)), dtype=np.int64)
    rows = by_id.index.get_indexer(pd.Index(list(vocab_ids), dtype=object))
    found = rows >= 0
    for a, (col, allowed) in enumerate(CONTENT_TAGS.items()):
        values = by_id[col].astype(object).to_numpy()[rows[found]]
        code = pd.Index(allowed).get_indexer(values) + 1  # unknown values -> 0 (untagged)
        codes[2 + np.flatnonzero(found), a] = code
    return codes
