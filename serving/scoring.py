"""The champion model: loading it from the MLflow registry and scoring every channel per HCP.

``training.policy.recommend`` returns one best action per HCP; serving needs a score for every
channel so guardrails can remove some and the rest can be ranked, explored and explained. Both
use the same rule, ``training.policy.channel_scores``: per channel, the best (content, slot) over
every approved item and slot by the response head, so the policy served is the policy evaluated.
The expected response is the bundle's calibrated probability; channels rank by the raw one
(calibration is monotone but flat in places, which would tie channels).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from functools import lru_cache
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

    prob: np.ndarray  # [N, C] float: uncalibrated P(response) of the channel's best feasible action (ranking)
    expected: np.ndarray  # [N, C] float: the same, calibrated (what suggestions report)
    allowed: np.ndarray  # [N, C] bool: False where nothing on the channel may be suggested
    content_id: np.ndarray  # [N, C] object (None: no content)
    weekday: np.ndarray  # [N, C] int, 0 = Monday (local)
    daypart: np.ndarray  # [N, C] int
    # The model's unmasked view: approved content only, no rule masks (-inf: no slot or content at all).
    raw_prob: np.ndarray | None = None  # [N, C] float
    raw_content_id: np.ndarray | None = None  # [N, C] object


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


def _content_mask(bundle: Any, approved_content: list[str] | None) -> Any:
    """The vocabulary mask tensor of the approved set, cached on the bundle (the set changes rarely)."""
    import torch

    if approved_content is None:
        return None
    cache = bundle.__dict__.setdefault("_serving_masks", {})
    key = tuple(approved_content)
    if key not in cache:
        if len(cache) >= 16:
            cache.pop(next(iter(cache)))
        cache[key] = torch.from_numpy(bundle.vocab.mask(approved_content))
    return cache[key]


def _item_codes(bundle: Any, values: np.ndarray) -> np.ndarray:
    """``bundle.vocab.encode(values)`` for string ids through a dict cached on the bundle (the vocabulary's pandas Index cost ~2 ms a call)."""
    from training.dataset import NONE

    values = np.asarray(values, dtype=object)
    if not all(isinstance(v, str) for v in values.tolist()):
        return bundle.vocab.encode(values)  # nulls and non-strings: the vocabulary's own conversion
    index = bundle.__dict__.get("_serving_item_index")
    if index is None:
        index = bundle.__dict__.setdefault("_serving_item_index", {v: i + 2 for i, v in enumerate(bundle.vocab.ids)})
    return np.fromiter((index.get(v, NONE) for v in values.tolist()), dtype=np.int32, count=len(values))


def _decode(bundle: Any, indices: np.ndarray) -> np.ndarray:
    """``bundle.vocab.decode`` with its lookup table built once per bundle."""
    table = bundle.__dict__.get("_serving_decode")
    if table is None:
        table = bundle.__dict__.setdefault("_serving_decode", np.array([None, None, *bundle.vocab.ids], dtype=object))
    return table[np.asarray(indices)]


@lru_cache(maxsize=1)
def _working_hours_slots() -> np.ndarray:
    from training.policy import working_hours_slots

    out = working_hours_slots()[None]
    out.flags.writeable = False  # shared by every request
    return out


def _slot_groups(slots: np.ndarray, n: int, n_ch: int) -> tuple[list[Any], np.ndarray]:
    """The distinct [C, 28] slot masks as tensors and each row's group: one mask for the whole week (no unique pass), else by row."""
    import torch

    if slots.shape[0] == 1:
        return [torch.from_numpy(slots[0].reshape(n_ch, -1).copy())], np.zeros(n, dtype=np.int64)
    flat = slots.reshape(slots.shape[0], -1)
    uniq, group = np.unique(flat, axis=0, return_inverse=True)
    masks = [torch.from_numpy(u.reshape(n_ch, -1).copy()) for u in uniq]
    return masks, (np.broadcast_to(group.reshape(-1), (n,)) if len(uniq) == 1 else group.reshape(-1))


def contentless_channels(model: LoadedModel | None, default: list[str]) -> np.ndarray:
    """[C] channels served without content: the champion's (read from its training data), else ``default`` (ServingConfig.contentless_channels)."""
    if model is not None:
        return np.asarray(model.bundle.contentless, dtype=bool)
    from training.contentless import contentless_mask

    return contentless_mask(default)


def _grouped_scores(channel_scores: Any, model: Any, z: Any, content_mask: Any, slot_masks: Any, group: np.ndarray, contentless: Any) -> tuple[Any, Any, Any]:
    """``channel_scores`` per group of rows sharing one [C, 28] slot mask (a day horizon differs by time zone)."""
    import torch

    if len(slot_masks) == 1:
        return channel_scores(model, z, content_mask=content_mask, slot_allowed=slot_masks[0], contentless=contentless)
    b, c = z.shape[0], model.config.n_channels
    score = torch.full((b, c), float("-inf"))
    content = torch.zeros((b, c), dtype=torch.long)
    slot = torch.zeros((b, c), dtype=torch.long)
    for g in np.unique(group).tolist():
        idx = torch.from_numpy(np.flatnonzero(group == g))
        per_row = content_mask is not None and content_mask.dim() >= 2 and content_mask.shape[0] == b and (content_mask.dim() == 3 or b > 1)
        cm = content_mask[idx] if per_row else content_mask
        score[idx], content[idx], slot[idx] = channel_scores(model, z[idx], content_mask=cm, slot_allowed=slot_masks[g], contentless=contentless)
    return score, content, slot


def score_channels(
    bundle: Any,
    frame: Any,
    approved_content: list[str] | None = None,
    *,
    channel_allowed: np.ndarray | None = None,
    blocked_items: tuple[np.ndarray, np.ndarray] | None = None,
    slot_allowed: np.ndarray | None = None,
    products: tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int = 256,
) -> ChannelScores:
    """Score every channel for each row of an online feature frame (see module docstring), feasible first.

    channel_allowed: [N, C] bool, channels the guardrails allow: the others score -inf (``allowed``
        False) before anything is ranked. blocked_items: (rows [M], content ids [M]) items a window
        rule forbids for that row: each channel's best content is chosen among the rest.
        slot_allowed: [N or 1, C, 28] bool slots (a one-day horizon), on top of working hours.
        products: ([V] product of each vocabulary item, "" unknown; [N] the HCP's product, "" unknown):
        an HCP is offered its own product's items only (``training.suitability.own_product_items``).
    ``raw_prob`` / ``raw_content_id`` keep the scores with approved content only and no channel
    mask: what the model would have chosen, for the reasons and the override statistics.
    Batches of 256: the rule builds [B, 28, V] logits per channel, which stay in cache at this
    size (1,000 HCPs measured ~10% faster than at 1,024).
    """
    import torch

    from training.dataset import NONE, encode_frame
    from training.policy import channel_scores
    from training.suitability import bundle_item_mask, own_product_items

    model = bundle.model
    n, n_ch = len(frame), model.config.n_channels
    data = encode_frame(frame, bundle.vocab, bundle.scaler, model.config.max_seq_len, with_labels=False)
    mask = _content_mask(bundle, approved_content)
    contentless = torch.from_numpy(bundle.contentless)  # as the training data showed (training.contentless)
    # The slots evaluation scores the model with: visits and calls only in working hours (and the day's, when asked).
    slots = _working_hours_slots()
    if slot_allowed is not None:
        slots = slots & np.asarray(slot_allowed, dtype=bool)
    slot_masks, group = _slot_groups(slots, n, n_ch)
    b_rows = b_items = np.zeros(0, dtype=np.int64)
    if blocked_items is not None and len(blocked_items[0]):
        b_items = _item_codes(bundle, blocked_items[1]).astype(np.int64)
        known = b_items > NONE  # an item the model never saw cannot be suggested anyway
        b_rows, b_items = np.asarray(blocked_items[0], dtype=np.int64)[known], b_items[known]
    blocked_row = np.zeros(n, dtype=bool)
    blocked_row[b_rows] = True
    # [1, C, V] where the bundle knows which items each channel carried (training.suitability).
    base = bundle_item_mask(bundle, mask if mask is not None else torch.ones(len(bundle.vocab), dtype=torch.bool))
    own = None
    if products is not None:
        rows = own_product_items(products[0], products[1], base.reshape(-1, base.shape[-1]).any(0).numpy())  # [N, V] or None
        own = None if rows is None else torch.from_numpy(rows)
    out = {k: [] for k in ("score", "content", "slot", "raw_score", "raw_content")}
    with torch.inference_mode():
        start = 0
        for batch in data.batches(batch_size):
            z = model.state(batch)
            stop = start + z.shape[0]
            grp = group[start:stop]
            row_base = base
            if own is not None:
                row_base = (base if base.dim() == 3 else base.view(1, 1, -1)) & own[start:stop].unsqueeze(1)  # [b, C, V]
            score, content, slot = _grouped_scores(channel_scores, model, z, row_base, slot_masks, grp, contentless)
            raw_score, raw_content = score, content
            if blocked_row[start:stop].any():
                # Removing items a channel did not choose cannot change its choice: only rows where
                # some channel's favourite is blocked are scored again without the blocked items.
                sel = (b_rows >= start) & (b_rows < stop)
                banned = torch.zeros((z.shape[0], len(bundle.vocab)), dtype=torch.bool)
                banned[torch.from_numpy(b_rows[sel] - start), torch.from_numpy(b_items[sel])] = True
                again = banned.gather(1, content.long()).any(1).numpy()
                if again.any():
                    rows = np.flatnonzero(again)
                    idx = torch.from_numpy(rows)
                    score, content, slot = score.clone(), content.clone(), slot.clone()
                    keep = ~banned[idx].unsqueeze(1) if row_base.dim() == 3 else ~banned[idx]
                    sub_base = row_base[idx] if row_base.dim() == 3 and row_base.shape[0] == z.shape[0] else row_base
                    score[idx], content[idx], slot[idx] = _grouped_scores(channel_scores, model, z[idx], sub_base & keep, slot_masks, grp[rows], contentless)
            for k, v in zip(out, (score, content, slot, raw_score, raw_content)):
                out[k].append(v.numpy())
            start = stop
    cat = {k: np.concatenate(v) if v else np.zeros((0, n_ch)) for k, v in out.items()}
    score = cat["score"].astype(np.float64)
    if channel_allowed is not None:
        score = np.where(np.asarray(channel_allowed, dtype=bool), score, -np.inf)
    allowed = np.isfinite(score)
    prob = np.where(allowed, 1.0 / (1.0 + np.exp(-np.where(allowed, score, 0.0))), 0.0)
    raw = cat["raw_score"].astype(np.float64)
    raw_ok = np.isfinite(raw)
    slot = cat["slot"].astype(np.int64)
    decode = functools.partial(_decode, bundle)
    return ChannelScores(
        prob=prob,
        expected=np.where(allowed, np.asarray(bundle.expected_response(prob), dtype=np.float64), 0.0),
        allowed=allowed,
        content_id=decode(cat["content"].astype(np.int64)) if n else np.zeros((0, n_ch), dtype=object),
        weekday=slot // 4,
        daypart=slot % 4,
        raw_prob=np.where(raw_ok, 1.0 / (1.0 + np.exp(-np.where(raw_ok, raw, 0.0))), -np.inf),
        raw_content_id=decode(cat["raw_content"].astype(np.int64)) if n else np.zeros((0, n_ch), dtype=object),
    )
