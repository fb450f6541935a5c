"""State encoder: an HCP's touchpoints through a causal Transformer or GRU, fused with static features.

Inputs are right-padded token sequences with a learned start token prepended, so position 0 is
always valid and an HCP with no history still has a state. Token ids reserve 0 for padding:
channel/weekday/daypart are index+1, response is 1 (no) / 2 (yes), content ids come from
``training.dataset.ContentVocab`` (0 pad, 1 none/unknown). The content embedding table [V, D] is
shared with the heads, so it is passed in rather than owned here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model.config import N_DAYPARTS, N_DAYS, ModelConfig


class StateEncoder(nn.Module):
    """Token embeddings -> causal encoder -> last real position, fused with the static features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, d = config, config.d_model
        self.kind = c.encoder
        self.channel_emb = nn.Embedding(c.n_channels + 1, d, padding_idx=0)
        self.response_emb = nn.Embedding(3, d, padding_idx=0)
        self.weekday_emb = nn.Embedding(N_DAYS + 1, d, padding_idx=0)
        self.daypart_emb = nn.Embedding(N_DAYPARTS + 1, d, padding_idx=0)
        self.numeric_proj = nn.Linear(2, d)  # log1p(gap days), log1p(read seconds)
        self.position_emb = nn.Embedding(c.max_seq_len + 1, d)
        self.start = nn.Parameter(torch.zeros(d))
        self.norm_in = nn.LayerNorm(d)
        if c.encoder == "transformer":
            layer = nn.TransformerEncoderLayer(d, c.n_heads, 4 * d, c.dropout, batch_first=True, norm_first=True)
            self.stack: nn.Module = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        else:
            self.stack = nn.GRU(d, d, c.n_layers, batch_first=True, dropout=c.dropout if c.n_layers > 1 else 0.0)
        self.n_static = c.n_static
        self.static_mlp = nn.Sequential(nn.Linear(max(c.n_static, 1), d), nn.GELU(), nn.Linear(d, d))
        self.fuse = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Dropout(c.dropout), nn.LayerNorm(d))

    def embed(self, batch: dict[str, Tensor], content_table: Tensor) -> Tensor:
        """Token embeddings with the start token prepended: [B, L+1, D] (content_table [V, D])."""
        numeric = torch.stack([torch.log1p(batch["gap_days"].clamp_min(0)), torch.log1p(batch["read_seconds"].clamp_min(0))], -1)  # [B, L, 2]
        tokens = (
            self.channel_emb(batch["channel"])
            + content_table[batch["content"].long()]
            + self.response_emb(batch["response"])
            + self.weekday_emb(batch["weekday"])
            + self.daypart_emb(batch["daypart"])
            + self.numeric_proj(numeric) * (batch["channel"] > 0).unsqueeze(-1)  # [B, L, D]; pads contribute nothing
        )
        start = self.start.expand(tokens.shape[0], 1, -1)  # [B, 1, D]
        x = torch.cat([start, tokens], 1)  # [B, L+1, D]
        positions = torch.arange(x.shape[1], device=x.device)
        return self.norm_in(x + self.position_emb(positions))

    def encode(self, batch: dict[str, Tensor], content_table: Tensor) -> Tensor:
        """Per-position hidden states [B, L+1, D]; position t sees only positions <= t."""
        x = self.embed(batch, content_table)
        if self.kind == "gru":
            out, _ = self.stack(x)
            return out
        n = x.shape[1]
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), 1)  # True = may not attend
        padding = torch.cat([torch.zeros_like(batch["channel"][:, :1], dtype=torch.bool), batch["channel"] == 0], 1)  # [B, L+1]
        return self.stack(x, mask=causal, src_key_padding_mask=padding, is_causal=True)

    def last_hidden(self, batch: dict[str, Tensor], content_table: Tensor) -> Tensor:
        """The encoder's output at the last real touch [B, D] (position 0, the start token, when none).

        Same values as ``encode(batch)[b, length[b]]``, computed with less work: the final
        Transformer layer is evaluated at that one position only (its other outputs are never
        read), and the causal mask alone suffices because padding only ever follows real touches.
        """
        x = self.embed(batch, content_table)  # [B, L+1, D]
        rows = torch.arange(x.shape[0], device=x.device)
        last = batch["length"].long().clamp(0, x.shape[1] - 1)  # [B]
        if self.kind == "gru":
            out, _ = self.stack(x)
            return out[rows, last]
        layers = self.stack.layers
        if not all(layer.norm_first for layer in layers):  # the helpers below implement pre-norm layers only
            return self.encode(batch, content_table)[rows, last]
        for layer in layers[:-1]:
            x = _layer_all_positions(layer, x)
        return _layer_one_position(layers[-1], x, last)

    def with_static(self, seq_state: Tensor, batch: dict[str, Tensor]) -> Tensor:
        """The HCP's state [B, D]: the sequence state [B, D] fused with the static features [B, S]."""
        static = batch["static"] if self.n_static else torch.zeros(seq_state.shape[0], 1, device=seq_state.device)
        return self.fuse(torch.cat([seq_state, self.static_mlp(static.to(seq_state.dtype))], -1))


def _split_heads(t: Tensor, n_heads: int) -> Tensor:
    """[B, T, D] -> [B, H, T, D/H]."""
    b, n, d = t.shape
    return t.view(b, n, n_heads, d // n_heads).transpose(1, 2)


def _layer_all_positions(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    """One pre-norm encoder layer over every position with a causal mask: ``layer``'s own weights and
    maths (as ``layer(x, is_causal=True)``) through fused scaled-dot-product attention. [B, T, D] -> [B, T, D]."""
    attn = layer.self_attn
    h = attn.num_heads
    q, k, v = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    a = F.scaled_dot_product_attention(
        _split_heads(q, h), _split_heads(k, h), _split_heads(v, h), dropout_p=attn.dropout if layer.training else 0.0, is_causal=True
    )
    x = x + layer.dropout1(attn.out_proj(a.transpose(1, 2).reshape(x.shape)))
    return x + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(x))))))


def _layer_one_position(layer: nn.TransformerEncoderLayer, x: Tensor, pos: Tensor) -> Tensor:
    """The same layer's output at position ``pos[b]`` of each row only [B, D]: keys and values over
    all positions <= pos, the query, attention output and feed-forward for that one position."""
    attn = layer.self_attn
    h, d = attn.num_heads, x.shape[-1]
    rows = torch.arange(x.shape[0], device=x.device)
    normed = layer.norm1(x)
    w, bias = attn.in_proj_weight, attn.in_proj_bias
    k, v = F.linear(normed, w[d:], bias[d:]).chunk(2, -1)  # [B, T, D] each
    q = F.linear(normed[rows, pos], w[:d], bias[:d]).unsqueeze(1)  # [B, 1, D]
    # One query per row: scores and the weighted sum as broadcast products (a batched 1 x T matmul
    # per row and head costs more in call overhead than in arithmetic).
    q, k, v = _split_heads(q, h), _split_heads(k, h), _split_heads(v, h)  # [B, H, 1|T, Dh]
    scores = (q * k).sum(-1) * (d // h) ** -0.5  # [B, H, T]
    allowed = torch.arange(x.shape[1], device=x.device)[None, :] <= pos[:, None]  # [B, T]
    weights = torch.softmax(scores.masked_fill(~allowed[:, None, :], float("-inf")), -1)
    weights = F.dropout(weights, attn.dropout, layer.training)
    a = (weights.unsqueeze(-1) * v).sum(-2)  # [B, H, Dh]
    y = x[rows, pos] + layer.dropout1(attn.out_proj(a.reshape(x.shape[0], d)))
    return y + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(y))))))
