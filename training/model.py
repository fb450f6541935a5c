"""The next-best-action network: a causal encoder over an HCP's touchpoints plus static features.

Inputs are right-padded token sequences with a learned start token prepended, so position 0 is
always valid and an HCP with no history still has a state. Token ids reserve 0 for padding:
channel/weekday/daypart are index+1, response is 1 (no) / 2 (yes), content ids come from
``training.dataset.ContentVocab`` (0 pad, 1 none/unknown). Shapes: B batch, L sequence length,
D model width, C channels, V content vocabulary, S static features, K candidate actions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

N_DAYS = 7  # slot = day offset (0..6) x daypart (0..3)
N_DAYPARTS = 4
N_SLOTS = N_DAYS * N_DAYPARTS


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one network; saved beside its weights so it can be rebuilt without pickle."""

    n_channels: int
    n_content: int
    n_static: int
    encoder: str = "transformer"
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    dropout: float = 0.1
    max_seq_len: int = 32

    def __post_init__(self) -> None:
        if self.encoder not in ("transformer", "gru"):
            raise ValueError(f"ModelConfig.encoder must be 'transformer' or 'gru', got {self.encoder!r}")
        if self.n_content < 2:
            raise ValueError(f"ModelConfig.n_content must count the 2 reserved ids (pad, none), got {self.n_content}")
        if self.encoder == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Rebuild from ``to_dict`` output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}")
        return cls(**data)


class NextBestActionModel(nn.Module):
    """Sequence + static encoder with channel, content, slot and response heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c, d = config, config.d_model
        self.channel_emb = nn.Embedding(c.n_channels + 1, d, padding_idx=0)
        self.content_emb = nn.Embedding(c.n_content, d, padding_idx=0)
        self.response_emb = nn.Embedding(3, d, padding_idx=0)
        self.weekday_emb = nn.Embedding(N_DAYS + 1, d, padding_idx=0)
        self.daypart_emb = nn.Embedding(N_DAYPARTS + 1, d, padding_idx=0)
        self.numeric_proj = nn.Linear(2, d)  # log1p(gap days), log1p(read seconds)
        self.position_emb = nn.Embedding(c.max_seq_len + 1, d)
        self.start = nn.Parameter(torch.zeros(d))
        self.norm_in = nn.LayerNorm(d)
        if c.encoder == "transformer":
            layer = nn.TransformerEncoderLayer(d, c.n_heads, 4 * d, c.dropout, batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        else:
            self.encoder = nn.GRU(d, d, c.n_layers, batch_first=True, dropout=c.dropout if c.n_layers > 1 else 0.0)
        self.static_mlp = nn.Sequential(nn.Linear(max(c.n_static, 1), d), nn.GELU(), nn.Linear(d, d))
        self.fuse = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(c.dropout), nn.LayerNorm(d))
        self.channel_head = nn.Linear(d, c.n_channels)
        self.content_query = nn.Linear(d, d)
        self.content_bias = nn.Parameter(torch.zeros(c.n_content))
        self.slot_head = nn.Linear(d, N_SLOTS)
        self.action_channel_emb = nn.Embedding(c.n_channels, d)
        self.action_slot_emb = nn.Embedding(N_SLOTS, d)
        # Response = MLP(state, channel, slot) + content term bilinear in (state, channel) x content:
        # scoring every content item for a (state, channel, slot) is then one matmul, not V MLP calls.
        self.response_mlp = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        self.response_state_query = nn.Linear(d, d)
        self.response_channel_query = nn.Linear(d, d, bias=False)
        self.response_content_bias = nn.Parameter(torch.zeros(c.n_content))
        self.response_channel_bilinear = nn.Linear(d, d, bias=False)  # this HCP likes this channel

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Token embeddings with the start token prepended: [B, L+1, D]."""
        numeric = torch.stack([torch.log1p(batch["gap_days"].clamp_min(0)), torch.log1p(batch["read_seconds"].clamp_min(0))], -1)
        tokens = (
            self.channel_emb(batch["channel"])
            + self.content_emb(batch["content"])
            + self.response_emb(batch["response"])
            + self.weekday_emb(batch["weekday"])
            + self.daypart_emb(batch["daypart"])
            + self.numeric_proj(numeric) * (batch["channel"] > 0).unsqueeze(-1)  # [B, L, D]; pads contribute nothing
        )
        start = self.start.expand(tokens.shape[0], 1, -1)  # [B, 1, D]
        x = torch.cat([start, tokens], 1)  # [B, L+1, D]
        positions = torch.arange(x.shape[1], device=x.device)
        return self.norm_in(x + self.position_emb(positions))

    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """Per-position hidden states [B, L+1, D]; position t sees only positions <= t."""
        x = self.embed(batch)
        if self.config.encoder == "gru":
            out, _ = self.encoder(x)
            return out
        n = x.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1)  # True = may not attend
        padding = torch.cat([torch.zeros_like(batch["channel"][:, :1], dtype=torch.bool), batch["channel"] == 0], 1)  # [B, L+1]
        return self.encoder(x, mask=causal, src_key_padding_mask=padding, is_causal=True)

    def state(self, batch: dict[str, Tensor]) -> Tensor:
        """The HCP's state at decision time [B, D]: last valid position fused with static features."""
        hidden = self.encode(batch)  # [B, L+1, D]
        last = batch["length"].clamp(0, hidden.shape[1] - 1)  # position of the last real touch (0 = start token)
        seq_state = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [B, D]
        static = batch["static"] if self.config.n_static else torch.zeros(hidden.shape[0], 1, device=hidden.device)
        return self.fuse(torch.cat([seq_state, self.static_mlp(static)], -1))

    def heads(self, z: Tensor, content_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Channel [B, C], content [B, V] and slot [B, 28] logits from states z [B, D].

        ``content_mask`` ([V] or [B, V], True = may be suggested) sets the rest to -inf; the
        padding id is never a valid content.
        """
        content = self.content_query(z) @ self.content_emb.weight.T + self.content_bias  # [B, V]
        allowed = torch.ones(content.shape[-1], dtype=torch.bool, device=z.device)
        allowed[0] = False
        allowed = allowed if content_mask is None else allowed & content_mask.to(z.device)
        content = content.masked_fill(~allowed, float("-inf"))
        return {"channel": self.channel_head(z), "content": content, "slot": self.slot_head(z)}

    def _response_parts(self, z: Tensor, channel: Tensor, slot: Tensor) -> tuple[Tensor, Tensor]:
        """Base logit [B, ...] and content query [B, ..., D] for candidates shaped like ``channel``."""
        extra = channel.dim() - 1
        zz = z.reshape(z.shape[0], *([1] * extra), z.shape[-1]).expand(*channel.shape, z.shape[-1])
        ch, sl = self.action_channel_emb(channel), self.action_slot_emb(slot)  # [B, ..., D]
        base = self.response_mlp(torch.cat([zz, ch, sl], -1)).squeeze(-1) + (self.response_channel_bilinear(zz) * ch).sum(-1) / self.config.d_model**0.5
        query = (self.response_state_query(zz) + self.response_channel_query(ch)) / self.config.d_model**0.5
        return base, query

    def response_logit(self, z: Tensor, channel: Tensor, content: Tensor, slot: Tensor) -> Tensor:
        """Logit of P(positive response | state, action) for candidates [B, ...] -> [B, ...]."""
        base, query = self._response_parts(z, channel, slot)
        return base + (query * self.content_emb(content)).sum(-1) + self.response_content_bias[content]

    def response_logit_all_content(self, z: Tensor, channel: Tensor, slot: Tensor) -> Tensor:
        """Response logits of every content item for one (channel, slot) per row: [B] x [B] -> [B, V]."""
        base, query = self._response_parts(z, channel, slot)  # [B], [B, D]
        return base.unsqueeze(-1) + query @ self.content_emb.weight.T + self.response_content_bias

    def forward(self, batch: dict[str, Tensor], content_mask: Tensor | None = None) -> dict[str, Tensor]:
        """State, head logits and the logged action's response logit (when the batch has labels)."""
        z = self.state(batch)
        out = {"state": z, **self.heads(z, content_mask)}
        if "label_channel" in batch:
            out["response"] = self.response_logit(z, batch["label_channel"], batch["label_content"], batch["label_slot"])
        return out


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for or available under 'auto', else CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda requested but torch.cuda.is_available() is False")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")
