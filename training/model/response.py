"""Response head: P(positive response | state, action) as a logit separable in slot and content.

    logit(c, s, v) = base(z, c, s) + query(z, c) . content_table[v] + content_bias[v]

The optional terms (``training.model.history``, ``training.model.candidates``) add to ``base``,
``query`` or the per-item part without breaking that form, so a channel's best (slot, content)
is its best slot plus its best content (``training.policy.channel_scores`` relies on this).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model.config import N_SLOTS


def per_row(t: Tensor, like: Tensor) -> Tensor:
    """[B, X] -> [B, 1.., X] broadcasting over the candidate dimensions of ``like`` [B, ...]."""
    return t.reshape(t.shape[0], *([1] * (like.dim() - 1)), t.shape[-1])


def pick(table: Tensor, index: Tensor) -> Tensor:
    """table [B, n] at index [B, ...] -> [B, ...]."""
    return table.gather(1, index.reshape(index.shape[0], -1)).reshape(index.shape)


class ResponseHead(nn.Module):
    """Base logit of (state, channel, slot) candidates and the content query of (state, channel)."""

    def __init__(self, n_channels: int, n_content: int, d: int) -> None:
        super().__init__()
        self.d = d
        self.action_channel_emb = nn.Embedding(n_channels, d)
        self.action_slot_emb = nn.Embedding(N_SLOTS, d)
        # base = MLP(state, channel, slot) + bilinear(state, channel); content term bilinear in
        # (state, channel) x content: scoring every item for a (state, channel, slot) is one matmul.
        self.mlp = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.state_query = nn.Linear(d, d)
        self.channel_query = nn.Linear(d, d, bias=False)
        self.content_bias = nn.Parameter(torch.zeros(n_content))
        self.channel_bilinear = nn.Linear(d, d, bias=False)  # this HCP likes this channel

    def forward(self, z: Tensor, channel: Tensor, slot: Tensor, with_query: bool = True) -> tuple[Tensor, Tensor | None]:
        """Base logit [B, ...] and content query [B, ..., D] (None unless ``with_query``) from z [B, D], candidates [B, ...]."""
        # Same maths as mlp(cat[z, channel_emb, slot_emb]), but the first layer is split by input
        # block: the state part once per row, the action parts once per table entry, then
        # gathered, so K candidates cost K additions instead of K full MLP input layers.
        d = self.d
        first, w = self.mlp[0], self.mlp[0].weight  # Linear(3D, D): [D, 3D]
        ch_table, sl_table = self.action_channel_emb.weight, self.action_slot_emb.weight  # [C, D], [28, D]
        hidden = (
            per_row(F.linear(z, w[:, :d], first.bias), channel) + F.linear(ch_table, w[:, d : 2 * d])[channel] + F.linear(sl_table, w[:, 2 * d :])[slot]
        )  # [B, ..., D]
        ch = ch_table[channel]  # [B, ..., D]
        base = self.mlp[1:](hidden).squeeze(-1) + (per_row(self.channel_bilinear(z), channel) * ch).sum(-1) / d**0.5  # [B, ...]
        query = (per_row(self.state_query(z), channel) + self.channel_query(ch_table)[channel]) / d**0.5 if with_query else None
        return base, query

    def content_logits(self, query: Tensor, content_table: Tensor, item: Tensor | None = None) -> Tensor:
        """Content part for every item: query [B, ..., D], table [V, D], item term [B, V] or None -> [B, ..., V]."""
        out = torch.matmul(query, content_table.T) + self.content_bias
        if item is not None:
            out = out + item.reshape(item.shape[0], *([1] * (query.dim() - 2)), item.shape[-1])
        return out

    def content_logit_at(self, query: Tensor, content_table: Tensor, content: Tensor, item: Tensor | None = None) -> Tensor:
        """Content part for one item per candidate: query [B, ..., D], content [B, ...] -> [B, ...]."""
        out = (query * content_table[content]).sum(-1) + self.content_bias[content]
        if item is not None:
            out = out + pick(item, content)
        return out
