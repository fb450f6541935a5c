"""Choosing the next best action: the candidate with the highest predicted response, within guardrails.

Candidates are every channel the HCP consented to x the content head's top approved items x
the slot head's top slots; the response head scores each (state, action) and the best wins.
"""

from __future__ import annotations

import torch
from torch import Tensor

from training.model import NextBestActionModel


@torch.no_grad()
def recommend(
    model: NextBestActionModel,
    batch: dict[str, Tensor],
    *,
    channel_allowed: Tensor | None = None,
    content_mask: Tensor | None = None,
    k_content: int = 5,
    k_slots: int = 3,
) -> dict[str, Tensor]:
    """Best action per row: channel [B], content [B], slot [B], expected response [B].

    ``channel_allowed`` [B, C] (consent, capacity) and ``content_mask`` [V] or [B, V] (approved,
    unexpired) are hard guardrails: a disallowed channel or item is never returned.
    """
    z = model.state(batch)  # [B, D]
    heads = model.heads(z, content_mask)
    b, n_ch = heads["channel"].shape
    kc = min(k_content, int(torch.isfinite(heads["content"]).sum(-1).min().clamp_min(1)))
    top_content = heads["content"].topk(kc, -1).indices  # [B, kc]
    top_slot = heads["slot"].topk(min(k_slots, heads["slot"].shape[-1]), -1).indices  # [B, ks]
    ks = top_slot.shape[-1]
    ch = torch.arange(n_ch, device=z.device).view(1, n_ch, 1, 1).expand(b, n_ch, kc, ks)
    ct = top_content.view(b, 1, kc, 1).expand(b, n_ch, kc, ks)
    sl = top_slot.view(b, 1, 1, ks).expand(b, n_ch, kc, ks)
    prob = torch.sigmoid(model.response_logit(z, ch.reshape(b, -1), ct.reshape(b, -1), sl.reshape(b, -1)))  # [B, K]
    if channel_allowed is not None:
        allowed = channel_allowed.to(z.device).view(b, n_ch, 1, 1).expand(b, n_ch, kc, ks).reshape(b, -1)
        prob = prob.masked_fill(~allowed, -1.0)  # below any probability: chosen only when nothing is allowed
    best = prob.argmax(-1)
    rows = torch.arange(b, device=z.device)
    return {
        "channel": ch.reshape(b, -1)[rows, best],
        "content": ct.reshape(b, -1)[rows, best],
        "slot": sl.reshape(b, -1)[rows, best],
        "expected_response": prob[rows, best].clamp_min(0.0),
        "any_allowed": prob.max(-1).values >= 0,
    }
