"""The champion model: loading it from the MLflow registry and scoring every channel per HCP.

``training.policy.recommend`` returns one best action per HCP; serving needs a score for every
channel so guardrails can remove some and the rest can be ranked, explored and explained. The
network's own heads do this: for each channel, the best (content, slot) among the content head's
top approved items and the slot head's top slots, scored by the response head.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np


class ModelUnavailable(RuntimeError):
    """No usable champion: nothing registered under the alias, or it failed to load."""


@dataclass
class LoadedModel:
    """A champion bundle with the registry coordinates it came from."""

    bundle: Any  # training.artifacts.ModelBundle
    name: str
    version: str
    alias: str

    @property
    def label(self) -> str:
        """How responses and the audit trail name the model: ``name/version``."""
        return f"{self.name}/{self.version}"


@dataclass(frozen=True)
class ChannelScores:
    """Per HCP and channel: P(response) of the best action on it, its content and slot."""

    prob: np.ndarray  # [N, C] float
    content_id: np.ndarray  # [N, C] object (None: no content)
    weekday: np.ndarray  # [N, C] int, 0 = Monday (local)
    daypart: np.ndarray  # [N, C] int


def load_champion(tracking_uri: str, name: str, alias: str = "champion") -> LoadedModel:
    """The version of ``name`` holding ``alias`` in the registry at ``tracking_uri``, ready to score."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.artifacts import load_bundle
    from training.tracking import bundle_path

    if tracking_uri.startswith("sqlite:///") and not os.path.exists(tracking_uri[len("sqlite:///") :]):
        raise ModelUnavailable(f"no MLflow store at {tracking_uri}: train and promote a model first (nba train, nba promote)")
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mv = MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise ModelUnavailable(f"registered model {name!r} has no version with alias {alias!r} at {tracking_uri}: run nba promote ({exc.error_code})") from None
    try:
        bundle = load_bundle(bundle_path(name, str(mv.version)))
    except Exception as exc:  # a broken artifact must not take the service down with it
        raise ModelUnavailable(f"{name} version {mv.version} ({alias}) failed to load: {exc}") from exc
    return LoadedModel(bundle, name, str(mv.version), alias)


def score_channels(bundle: Any, frame: Any, approved_content: list[str] | None = None, *, k_content: int = 5, k_slots: int = 3, batch_size: int = 2048) -> ChannelScores:
    """Score every channel for each row of an online feature frame (see module docstring)."""
    import torch

    from training.dataset import encode_frame

    model = bundle.model
    data = encode_frame(frame, bundle.vocab, bundle.scaler, model.config.max_seq_len, with_labels=False)
    mask = torch.from_numpy(bundle.vocab.mask(approved_content)) if approved_content is not None else None
    probs, contents, slots = [], [], []
    with torch.no_grad():
        for batch in data.batches(batch_size):
            z = model.state(batch)
            heads = model.heads(z, mask)
            b, n_ch = heads["channel"].shape
            finite = int(torch.isfinite(heads["content"]).sum(-1).min().clamp_min(1))
            kc = min(k_content, finite)
            top_content = heads["content"].topk(kc, -1).indices  # [B, kc]
            top_slot = heads["slot"].topk(min(k_slots, heads["slot"].shape[-1]), -1).indices  # [B, ks]
            ks = top_slot.shape[-1]
            ch = torch.arange(n_ch).view(1, n_ch, 1, 1).expand(b, n_ch, kc, ks)
            ct = top_content.view(b, 1, kc, 1).expand(b, n_ch, kc, ks)
            sl = top_slot.view(b, 1, 1, ks).expand(b, n_ch, kc, ks)
            logit = model.response_logit(z, ch.reshape(b, -1), ct.reshape(b, -1), sl.reshape(b, -1)).view(b, n_ch, kc * ks)
            best = logit.argmax(-1)  # [B, C]: best (content, slot) per channel
            probs.append(torch.sigmoid(logit.gather(-1, best.unsqueeze(-1)).squeeze(-1)).numpy())
            contents.append(ct.reshape(b, n_ch, -1).gather(-1, best.unsqueeze(-1)).squeeze(-1).numpy())
            slots.append(sl.reshape(b, n_ch, -1).gather(-1, best.unsqueeze(-1)).squeeze(-1).numpy())
    if not probs:
        n_ch = model.config.n_channels
        empty = np.zeros((0, n_ch))
        return ChannelScores(empty, empty.astype(object), empty.astype(np.int64), empty.astype(np.int64))
    slot = np.concatenate(slots).astype(np.int64)
    return ChannelScores(
        prob=np.concatenate(probs).astype(np.float64),
        content_id=bundle.vocab.decode(np.concatenate(contents)),
        weekday=slot // 4,
        daypart=slot % 4,
    )
