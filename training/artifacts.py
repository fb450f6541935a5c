"""Model artifacts that reload without unpickling arbitrary objects: JSON metadata + state dict.

A directory holds ``model.json`` (architecture, content vocabulary, static-feature scaler,
feature list, the response calibration's knots as plain lists, the channels that carry no content,
anything else JSON-able) and ``weights.pt`` (tensors only, loaded with
``torch.load(weights_only=True)``, which refuses pickled code). Writes are atomic.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contract.schema import CHANNELS
from training.calibration import Calibrator
from training.contentless import DEFAULT_CONTENTLESS, bundle_contentless, contentless_mask
from training.dataset import ContentVocab, StaticScaler
from training.model import ModelConfig, NextBestActionModel

META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"
FORMAT_VERSION = 1


@dataclass
class ModelBundle:
    """A network with everything needed to encode inputs for it."""

    model: NextBestActionModel
    vocab: ContentVocab
    scaler: StaticScaler
    meta: dict[str, Any] = field(default_factory=dict)
    # Raw response-head P -> calibrated P (None: raw); every expected_response a bundle reports goes through it.
    calibrator: Calibrator | None = None
    # [C] channels whose touches carry no content, as the training data showed (training.contentless).
    contentless: np.ndarray = field(default_factory=lambda: contentless_mask(DEFAULT_CONTENTLESS))

    def expected_response(self, raw_prob: Any) -> Any:
        """Calibrated P(response) for raw response-head probabilities (numpy array or tensor)."""
        if self.calibrator is None:
            return raw_prob
        return self.calibrator(raw_prob) if isinstance(raw_prob, np.ndarray) else self.calibrator.torch(raw_prob)


def save_bundle(bundle: ModelBundle, directory: str | Path) -> Path:
    """Write the bundle to ``directory`` atomically (replacing it) and return the path."""
    import torch

    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        meta = {
            "format_version": FORMAT_VERSION,
            "model_config": bundle.model.config.to_dict(),
            "content_ids": list(bundle.vocab.ids),
            "static_scaler": bundle.scaler.to_dict(),
            "meta": bundle.meta,
            "calibration": bundle.calibrator.to_dict() if bundle.calibrator is not None else None,
            "contentless_channels": {c: bool(m) for c, m in zip(CHANNELS, np.asarray(bundle.contentless, dtype=bool))},
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in bundle.model.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def read_meta(directory: str | Path) -> dict[str, Any]:
    """A saved bundle's ``model.json`` (architecture, content vocabulary, ...), checked; the weights are not read."""
    directory = Path(directory)
    meta_path, weights_path = directory / META_FILE, directory / WEIGHTS_FILE
    for path in (meta_path, weights_path):
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; not a model artifact directory (expected {META_FILE} and {WEIGHTS_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{meta_path}: not valid JSON: {exc}") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{meta_path}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}")
    return meta


def load_bundle(directory: str | Path, device: Any = "cpu") -> ModelBundle:
    """Rebuild a saved bundle; weights load with ``weights_only=True`` so pickled code is refused."""
    import torch

    directory = Path(directory)
    meta, weights_path = read_meta(directory), directory / WEIGHTS_FILE
    config = ModelConfig.from_dict(meta["model_config"])
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError wrapped in various types
        raise ValueError(f"{weights_path}: refused to load (only plain tensors are allowed): {exc}") from None
    model = NextBestActionModel(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{weights_path}: weights do not match {META_FILE}'s model_config: {exc}") from None
    model.to(device).eval()
    try:
        calibrator = Calibrator.from_dict(meta["calibration"]) if meta.get("calibration") else None
    except ValueError as exc:
        raise ValueError(f"{directory / META_FILE}: {exc}") from None
    contentless = bundle_contentless(meta, str(directory / META_FILE))
    return ModelBundle(
        model, ContentVocab(tuple(meta["content_ids"])), StaticScaler.from_dict(meta["static_scaler"]), meta.get("meta", {}), calibrator, contentless
    )
