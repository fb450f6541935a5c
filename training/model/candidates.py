"""Candidate-aware terms of the response head: the HCP's history with each candidate channel and item.

Repetition (the same item again), wear-out (the same channel again soon) and recency are facts
about a candidate action, not about the HCP alone, so they enter the response logit per
candidate rather than through the pooled state:

    logit(c, s, v) = base(state, c, s) + channel_term(state, c) + content(state, c, v) + item_term(state, v)

``channel_term`` reads the channel's days since last use and touches per window (the feature
stage's view ``hcp_contact_recency_*``); ``item_term`` reads, for every content item, days since
it was last delivered and opened and how often it was delivered in 30/90/365 days (view
``hcp_item_history_*``), plus days since the last item on its topic and of its type. Both terms
are small MLPs shared across channels and items, learnt from the logs: nothing is hard-coded
about how fast an audience tires. The terms keep the logit separable in slot and content (the
item term has no slot, the channel term no content), which ``training.policy`` relies on.

The raw block sits in the state after the history record (``training.model.network``). Encoded
inputs (``training.dataset``): ``contact`` uint8 [B, K] (days as ``days_code``, counts capped at
255), ``item_ids`` [B, M] content indices (0 = empty slot), ``item_feats`` uint8 [B, M, 5] (days
since delivered, days since opened, n30, n90, n365).
Shapes: B batch, C channels, V content vocabulary, M item slots, W contact windows.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Days are stored as one byte on a log scale: 0 = today, 255 = the cap (or never).
DAYS_CAP = 365.0
N_ITEM_FEATURES = 5  # days since delivered, days since opened, n30, n90, n365
N_TOPICS, N_TYPES = 6, 5  # contract.schema TOPICS, CONTENT_TYPES (checked by the dataset encoder)


def days_code(days):
    """Days (numpy array) -> uint8 log-scale code; the cap and beyond -> 255."""
    import numpy as np

    d = np.clip(np.nan_to_num(np.asarray(days, dtype=np.float64), nan=DAYS_CAP), 0.0, DAYS_CAP)
    return np.round(255.0 * np.log1p(d) / math.log1p(DAYS_CAP)).astype(np.uint8)


def contact_width(n_windows: int, n_channels: int) -> int:
    """Columns of the contact block: per channel (days since, one count per window), topics, types, any."""
    return n_channels * (1 + n_windows) + N_TOPICS + N_TYPES + 1


class CandidateTerms(nn.Module):
    """Channel term [B, C] and item term [B, V] from the raw candidate block appended to the state."""

    def __init__(self, n_channels: int, n_windows: int, item_slots: int, hidden: int = 16) -> None:
        super().__init__()
        self.n_channels, self.n_windows, self.item_slots = n_channels, n_windows, item_slots
        self.width = contact_width(n_windows, n_channels) + item_slots * (1 + N_ITEM_FEATURES)
        self.channel_emb = nn.Embedding(n_channels, 4)
        self.channel_mlp = nn.Sequential(nn.Linear(2 + n_windows + 4, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.item_mlp = nn.Sequential(nn.Linear(N_ITEM_FEATURES + 3, hidden), nn.GELU(), nn.Linear(hidden, 1))
        # Start at zero: an untrained term leaves the response head as it was.
        for mlp in (self.channel_mlp, self.item_mlp):
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)

    @staticmethod
    def raw(batch: dict[str, Tensor]) -> Tensor:
        """The encoded block as floats to append to the state [B, width]: codes decoded, ids kept."""
        contact = batch["contact"].float()
        b = contact.shape[0]
        return torch.cat([contact, batch["item_ids"].float(), batch["item_feats"].float().reshape(b, -1)], -1)

    def _split(self, raw: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """raw [B, width] -> contact [B, K], item ids [B, M], item features [B, M, 5]."""
        k = contact_width(self.n_windows, self.n_channels)
        m = self.item_slots
        contact, ids, feats = raw[:, :k], raw[:, k : k + m], raw[:, k + m : k + m + m * N_ITEM_FEATURES]
        return contact, ids.round().long(), feats.reshape(raw.shape[0], m, N_ITEM_FEATURES)

    def channel_term(self, raw: Tensor) -> Tensor:
        """[B, C]: how the channel's recent use changes the response logit."""
        contact, _, _ = self._split(raw)
        c, w = self.n_channels, self.n_windows
        per = contact[:, : c * (1 + w)].reshape(-1, c, 1 + w)  # [B, C, 1+W]
        days = per[..., :1] / 255.0
        counts = torch.log1p(per[..., 1:]) / math.log1p(255.0)
        any_days = (contact[:, -1:] / 255.0).unsqueeze(1).expand(-1, c, 1)  # [B, C, 1]
        emb = self.channel_emb.weight.unsqueeze(0).expand(per.shape[0], -1, -1)  # [B, C, 4]
        return self.channel_mlp(torch.cat([days, counts, any_days, emb], -1)).squeeze(-1)

    def item_term(self, raw: Tensor, content_attr: Tensor | None, n_content: int) -> Tensor:
        """[B, V]: how each item's delivery history (and its topic's and type's) changes the response logit."""
        contact, ids, feats = self._split(raw)
        b, c, w = raw.shape[0], self.n_channels, self.n_windows
        # Dense per-item features, "never" (days code 255, counts 0) where the item is not in the history.
        dense = torch.zeros(b, n_content, N_ITEM_FEATURES, device=raw.device, dtype=raw.dtype)
        dense[..., 0:2] = 255.0
        valid = ids > 0
        rows = torch.arange(b, device=raw.device).unsqueeze(1).expand_as(ids)
        dense[rows[valid], ids[valid]] = feats[valid]
        item = torch.cat([dense[..., :2] / 255.0, torch.log1p(dense[..., 2:]) / math.log1p(255.0)], -1)  # [B, V, 5]
        off = c * (1 + w)
        topic_days = contact[:, off : off + N_TOPICS] / 255.0  # [B, 6]
        type_days = contact[:, off + N_TOPICS : off + N_TOPICS + N_TYPES] / 255.0  # [B, 5]
        never = torch.ones(b, 1, device=raw.device, dtype=raw.dtype)
        if content_attr is not None and content_attr.shape[1] >= 2:
            # content_attr codes are index + 1 (0 = untagged): column 0 is "untagged" = never.
            t_days = torch.cat([never, topic_days], 1)[:, content_attr[:, 0].clamp(0, N_TOPICS)]  # [B, V]
            y_days = torch.cat([never, type_days], 1)[:, content_attr[:, 1].clamp(0, N_TYPES)]
        else:
            t_days = y_days = never.expand(b, n_content)
        any_days = (contact[:, -1:] / 255.0).expand(b, n_content)
        x = torch.cat([item, t_days.unsqueeze(-1), y_days.unsqueeze(-1), any_days.unsqueeze(-1)], -1)  # [B, V, 8]
        return self.item_mlp(x).squeeze(-1)


__all__ = ["CandidateTerms", "DAYS_CAP", "N_ITEM_FEATURES", "contact_width", "days_code"]
