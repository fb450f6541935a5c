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

The computed terms sit in the state after the history record (``training.model.network``), so
each is computed once per state however many candidates are scored. Encoded inputs (``training.dataset``): ``contact`` uint8 [B, K] (days as ``days_code``, counts capped at
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
    """Channel term [B, C] and item term [B, V] from the encoded candidate block, computed once per state.

    The item term is additive in three small MLPs, so its cost grows with the history, not the
    catalogue: per row M history items + 6 topics + 5 types are scored, then gathered to V items:

        item_term(v) = topic_term(topic(v)) + type_term(type(v)) + [v in history] (hist(x_v) - hist(never))

    Items the HCP never got share the topic and type terms; a repeated item moves by how its own
    delivery record differs from "never".
    """

    def __init__(self, n_channels: int, n_windows: int, item_slots: int, hidden: int = 16) -> None:
        super().__init__()
        self.n_channels, self.n_windows, self.item_slots = n_channels, n_windows, item_slots
        self.channel_emb = nn.Embedding(n_channels, 4)
        self.channel_mlp = nn.Sequential(nn.Linear(2 + n_windows + 4, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.item_mlp = nn.Sequential(nn.Linear(N_ITEM_FEATURES + 1, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.topic_mlp = nn.Sequential(nn.Linear(2, hidden), nn.GELU(), nn.Linear(hidden, 1))
        self.type_mlp = nn.Sequential(nn.Linear(2, hidden), nn.GELU(), nn.Linear(hidden, 1))
        # Start at zero: an untrained term leaves the response head as it was.
        for mlp in (self.channel_mlp, self.item_mlp, self.topic_mlp, self.type_mlp):
            nn.init.zeros_(mlp[-1].weight)
            nn.init.zeros_(mlp[-1].bias)

    def width(self, n_content: int) -> int:
        """Columns the terms take in the state: C channel terms, then V item terms."""
        return self.n_channels + n_content

    def terms(self, batch: dict[str, Tensor], content_attr: Tensor | None, n_content: int) -> Tensor:
        """[B, C + V]: the channel terms then the item terms of every row."""
        contact = batch["contact"].float()  # [B, K]
        ids = batch["item_ids"].long()[:, : self.item_slots]  # [B, M]
        feats = batch["item_feats"].float()[:, : self.item_slots]  # [B, M, 5]
        return torch.cat([self.channel_term(contact), self.item_term(contact, ids, feats, content_attr, n_content)], -1)

    def channel_term(self, contact: Tensor) -> Tensor:
        """[B, C]: how the channel's recent use changes the response logit."""
        c, w = self.n_channels, self.n_windows
        per = contact[:, : c * (1 + w)].reshape(-1, c, 1 + w)  # [B, C, 1+W]
        days = per[..., :1] / 255.0
        counts = torch.log1p(per[..., 1:]) / math.log1p(255.0)
        any_days = (contact[:, -1:] / 255.0).unsqueeze(1).expand(-1, c, 1)  # [B, C, 1]
        emb = self.channel_emb.weight.unsqueeze(0).expand(per.shape[0], -1, -1)  # [B, C, 4]
        return self.channel_mlp(torch.cat([days, counts, any_days, emb], -1)).squeeze(-1)

    def item_term(self, contact: Tensor, ids: Tensor, feats: Tensor, content_attr: Tensor | None, n_content: int) -> Tensor:
        """[B, V]: how each item's delivery record, and its topic's and type's, change the response logit."""
        b, c, w = contact.shape[0], self.n_channels, self.n_windows
        any_days = contact[:, -1:] / 255.0  # [B, 1]

        def item_x(f: Tensor) -> Tensor:  # [..., 5] codes -> [..., 6] features with days since any touch
            return torch.cat(
                [f[..., :2] / 255.0, torch.log1p(f[..., 2:]) / math.log1p(255.0), any_days.reshape(b, *([1] * (f.dim() - 2)), 1).expand(*f.shape[:-1], 1)], -1
            )

        never = feats.new_tensor([255.0, 255.0, 0.0, 0.0, 0.0]).expand(b, 1, N_ITEM_FEATURES)
        delta = (self.item_mlp(item_x(feats)) - self.item_mlp(item_x(never))).squeeze(-1) * (ids > 0)  # [B, M]
        out = torch.zeros(b, n_content, device=contact.device, dtype=contact.dtype).scatter_add(1, ids.clamp(0, n_content - 1), delta)
        if content_attr is not None and content_attr.shape[1] >= 2:
            off = c * (1 + w)
            for col, size, mlp in ((0, N_TOPICS, self.topic_mlp), (1, N_TYPES, self.type_mlp)):
                days = contact[:, off : off + size] / 255.0  # [B, size]
                x = torch.stack([days, any_days.expand(b, size)], -1)  # [B, size, 2]
                per = torch.cat([torch.zeros(b, 1, device=contact.device, dtype=contact.dtype), mlp(x).squeeze(-1)], 1)  # [B, 1 + size]; 0 = untagged
                out = out + per[:, content_attr[:, col].clamp(0, size)]
                off += size
        return out


__all__ = ["CandidateTerms", "DAYS_CAP", "N_ITEM_FEATURES", "contact_width", "days_code"]
