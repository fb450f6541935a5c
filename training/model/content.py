"""Content scorer: the content embedding table and the policy heads (channel, content, slot).

The table [V, D] (an item's id embedding plus its tags') is shared by the encoder's tokens, the
content policy head, the response head's content term and the history's pooled embeddings.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from training.model.config import N_SLOTS


class ContentTable(nn.Module):
    """Every content item's embedding [V, D]: its id embedding plus its tags' embeddings."""

    def __init__(self, n_content: int, d: int, attributes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.attributes = tuple(attributes)
        self.id_emb = nn.Embedding(n_content, d, padding_idx=0)
        # Tag codes per content index [V, A] (0 = untagged): a buffer, so it travels in the state dict.
        self.register_buffer("codes", torch.zeros(n_content, len(self.attributes), dtype=torch.long) if self.attributes else None)
        if self.attributes:
            self.tag_emb = nn.ModuleList(nn.Embedding(size + 1, d, padding_idx=0) for size in self.attributes)

    def set_codes(self, codes: Any) -> None:
        """Load the [V, A] tag codes of the content vocabulary (0 = untagged; pad and none rows are 0)."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        expected = (self.id_emb.num_embeddings, len(self.attributes))
        if tuple(codes.shape) != expected:
            raise ValueError(f"content attribute codes: expected shape {expected}, got {tuple(codes.shape)}")
        bad = [(a, int(codes[:, a].max())) for a, size in enumerate(self.attributes) if len(codes) and int(codes[:, a].max()) > size]
        if bad or (codes < 0).any():
            raise ValueError(f"content attribute codes out of range (attribute, max code): {bad}; sizes {self.attributes}")
        if self.codes is not None:
            self.codes.copy_(codes.to(self.codes.device))

    def forward(self) -> Tensor:
        """[V, D]."""
        w = self.id_emb.weight
        if self.codes is not None:
            for a, emb in enumerate(self.tag_emb):
                w = w + emb(self.codes[:, a])
        return w


class PolicyHeads(nn.Module):
    """What the reps did: channel [B, C], content [B, V] and slot [B, 28] logits from the state [B, D]."""

    def __init__(self, n_channels: int, n_content: int, d: int) -> None:
        super().__init__()
        self.channel_head = nn.Linear(d, n_channels)
        self.content_query = nn.Linear(d, d)
        self.content_bias = nn.Parameter(torch.zeros(n_content))
        self.slot_head = nn.Linear(d, N_SLOTS)

    def forward(self, z: Tensor, content_table: Tensor, content_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Logits from z [B, D] and the content table [V, D]; ``content_mask`` [V] or [B, V] (True = may be suggested)."""
        content = self.content_query(z) @ content_table.T + self.content_bias  # [B, V]
        allowed = torch.ones(content.shape[-1], dtype=torch.bool, device=z.device)
        allowed[0] = False  # the padding id is never a valid content
        allowed = allowed if content_mask is None else allowed & content_mask.to(z.device)
        content = content.masked_fill(~allowed, float("-inf"))
        return {"channel": self.channel_head(z), "content": content, "slot": self.slot_head(z)}
