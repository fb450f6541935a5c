"""Choosing the next best action from the response head's counterfactual scores, within guardrails.

Every allowed channel x every allowed slot x every allowed content item is scored by the response
head (one matmul per channel); per channel the best (content, slot) wins, then the best channel.
The policy heads (channel/content/slot) are not consulted: they describe what reps would log
(``naive``) or a propensity-corrected policy (``ips``/``dr``), while the decision is "highest
expected response". Off-policy estimates evaluate this rule as served (training.served_policy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from training.model import N_DAYPARTS, N_DAYS, NextBestActionModel

NONE_CONTENT = 1  # training.dataset.NONE: "no content" (a phone call)


def working_hours_slots() -> np.ndarray:
    """[C, 28] True where the slot is allowed for the channel (in-person channels: Mon-Fri working dayparts).

    ``features.rules.working_hours_mask`` flattened to slots (day x 4 + daypart): the rule policy,
    evaluation and serving share one definition.
    """
    from features.rules import working_hours_mask

    mask = working_hours_mask()  # [C, 7, 4]
    return mask.reshape(mask.shape[0], N_DAYS * N_DAYPARTS)


def _content_mask(model: NextBestActionModel, content_mask: Tensor | None, b: int, device: Any) -> Tensor:
    """[B or 1, C or 1, V] boolean mask from a [V], [B, V] or [B, C, V] mask; the padding id never allowed."""
    v = model.config.n_content
    m = torch.ones(v, dtype=torch.bool, device=device) if content_mask is None else content_mask.to(device=device, dtype=torch.bool)
    m = m.view(1, 1, v) if m.dim() == 1 else m.unsqueeze(1) if m.dim() == 2 else m
    pad = torch.ones(v, dtype=torch.bool, device=device)
    pad[0] = False
    return m & pad


def _per_channel_content(m: Tensor, c: int, contentless: Tensor | None) -> Tensor:
    """Allowed content for channel ``c`` [B or 1, V]: only NONE on a contentless channel, else real items
    (NONE only where a row has no real item allowed)."""
    row = m[:, c] if m.shape[1] > 1 else m[:, 0]
    only_none = torch.zeros_like(row)
    only_none[:, NONE_CONTENT] = True
    if contentless is not None and bool(contentless[c]):
        return only_none
    real = row.clone()
    real[:, NONE_CONTENT] = False
    return torch.where(real.any(-1, keepdim=True), real, row)


@torch.no_grad()
def channel_scores(
    model: NextBestActionModel,
    z: Tensor,
    *,
    content_mask: Tensor | None = None,
    slot_allowed: Tensor | None = None,
    contentless: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per row and channel the best response logit over allowed (content, slot), and that content and slot: [B, C] each.

    ``content_mask``: [V], [B, V] or [B, C, V] (True = may be suggested); ``slot_allowed``: [C, 28]
    (e.g. rep-time channels only in working hours); ``contentless``: [C] channels that carry no
    content (they get NONE). A channel with nothing allowed scores -inf.
    """
    b, dev = z.shape[0], z.device
    n_ch = model.config.n_channels
    neg = float("-inf")
    m = _content_mask(model, content_mask, b, dev)
    allowed = torch.stack([_per_channel_content(m, c, contentless) for c in range(n_ch)], 1)  # [B|1, C, V]
    # The slot and content terms of a response logit add up (model.response_table), so the max over
    # (slot, content) pairs is the best slot's term plus the best content's: C x (28 + V) scores, not C x 28 x V.
    base, query = model.response_table(z)  # [B, C, 28], [B, C, D]
    if slot_allowed is not None:  # [C, 28] for every row, or [B, C, 28] (e.g. today's remaining slots)
        sa = slot_allowed.to(dev, torch.bool)
        base = base.masked_fill(~(sa.unsqueeze(0) if sa.dim() == 2 else sa), neg)
    slot_logit, best_slot = base.max(-1)  # [B, C]
    content_logit = model.content_logits(z, query)  # [B, C, V], with the per-item history term
    content_logit, best_content = content_logit.masked_fill(~allowed, neg).max(-1)  # [B, C]
    return slot_logit + content_logit, best_content, best_slot


@torch.no_grad()
def recommend(
    model: NextBestActionModel,
    batch: dict[str, Tensor],
    *,
    channel_allowed: Tensor | None = None,
    content_mask: Tensor | None = None,
    slot_allowed: Tensor | None = None,
    contentless: Tensor | None = None,
    calibrator: Any = None,
) -> dict[str, Tensor]:
    """Best action per row: channel [B], content [B], slot [B], expected response [B] (calibrated when a calibrator is given).

    ``channel_allowed`` [B, C] (consent, capacity) and ``content_mask`` are hard guardrails: a
    disallowed channel or item is never returned; ``any_allowed`` is False where nothing was.
    """
    z = model.state(batch)
    score, content, slot = channel_scores(model, z, content_mask=content_mask, slot_allowed=slot_allowed, contentless=contentless)
    if channel_allowed is not None:
        score = score.masked_fill(~channel_allowed.to(z.device, torch.bool), float("-inf"))
    best = score.argmax(-1)
    rows = torch.arange(z.shape[0], device=z.device)
    top = score[rows, best]
    prob = torch.sigmoid(top)
    if calibrator is not None:
        prob = calibrator.torch(prob)
    ok = torch.isfinite(top)
    return {
        "channel": best,
        "content": content[rows, best],
        "slot": slot[rows, best],
        "expected_response": torch.where(ok, prob, torch.zeros_like(prob)),
        "any_allowed": ok,
    }


def logged_pair_mask(data: Any, n_channels: int, n_content: int) -> Tensor:
    """[C, V] True for (channel, content) pairs that occur in ``data``'s logged actions: the catalogue as the logs show it."""
    import numpy as np

    m = np.zeros((n_channels, n_content), dtype=bool)
    m[data.arrays["label_channel"].astype(np.int64), data.arrays["label_content"].astype(np.int64)] = True
    return torch.from_numpy(m)


@torch.no_grad()
def chosen_at_logged_slot(
    model: NextBestActionModel,
    data: Any,
    batch_size: int,
    device: Any = "cpu",
    *,
    pair_mask: Tensor | None = None,
    contentless: Any = None,
    row_items: Any = None,
) -> dict[str, Any]:
    """Per logged row, the (channel, content) the response head would choose at the logged slot and its raw P(response).

    ``pair_mask`` [C, V] limits the choice to pairs the catalogue allows (e.g. ``logged_pair_mask``),
    ``row_items`` [N, V] bool to items each row may be offered (e.g. its HCP's product's); what
    calibration on chosen actions (training.calibration.chosen_action_calibration) needs.
    """
    import numpy as np

    contentless = None if contentless is None else torch.as_tensor(np.asarray(contentless, dtype=bool))
    mask = None if pair_mask is None else pair_mask.unsqueeze(0)
    n_ch = model.config.n_channels
    out: dict[str, list[Any]] = {"channel": [], "content": [], "raw_prob": []}
    model.eval()
    start = 0
    for batch in data.batches(batch_size, device):
        z = model.state(batch)
        b, dev = z.shape[0], z.device
        logits = torch.stack([model.response_logit_all_content(z, torch.full((b,), c, device=dev), batch["label_slot"]) for c in range(n_ch)], 1)
        m = _content_mask(model, mask, b, dev)
        if row_items is not None:
            m = m & torch.as_tensor(np.asarray(row_items[start : start + b], dtype=bool), device=dev).unsqueeze(1)
        start += b
        allowed = torch.stack([_per_channel_content(m, c, contentless).expand(b, -1) for c in range(n_ch)], 1)
        best = logits.masked_fill(~allowed, float("-inf")).reshape(b, -1).max(-1)
        out["channel"].append((best.indices // logits.shape[2]).cpu().numpy())
        out["content"].append((best.indices % logits.shape[2]).cpu().numpy())
        out["raw_prob"].append(torch.sigmoid(best.values).cpu().numpy())
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
