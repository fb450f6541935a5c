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
import torch.nn.functional as F
from torch import Tensor, nn

N_DAYS = 7  # slot = day offset (0..6) x daypart (0..3)
N_DAYPARTS = 4
N_SLOTS = N_DAYS * N_DAYPARTS
# History summary layout appended to the state when ModelConfig.history: sent then opened counts
# for every channel, weekday, daypart and slot, then two pooled content embeddings (D each).
N_HISTORY_FEATURES = 6 * 3 + 2  # per candidate: 6 (sent, opened, rate) triples + 2 totals
# With ModelConfig.long_history, per candidate 3 more triples (its channel, weekday, daypart over
# the feature stage's window) join them, and the topic block steers the content query.
N_LONG_HISTORY_FEATURES = 3 * 3


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
    # Per-HCP response history (sent/opened counts per channel, weekday, daypart and slot in the
    # sequence, pooled embeddings of opened content) fed to the response head per candidate:
    # HCP-specific channel, timing and topic effects without the encoder having to discover them.
    history: bool = False
    # Sizes of the content tag vocabularies (topic, type, form; 0 = untagged is extra): each item's
    # embedding is its own plus its tags', so an item shares what is learnt about its topic (and
    # an HCP's taste for a topic carries over to every item on it). Empty = id embeddings only.
    content_attributes: tuple[int, ...] = ()
    # Block sizes (channels, weekdays, dayparts, topics) of the feature stage's response-history
    # counts (batch["history_long"]: sent then opened per block; training.dataset): a year of
    # touches where the sequence holds the last max_seq_len. Needs ``history``. Empty = off.
    long_history: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_attributes", tuple(int(x) for x in self.content_attributes))
        object.__setattr__(self, "long_history", tuple(int(x) for x in self.long_history))
        if self.long_history and (not self.history or len(self.long_history) != 4 or self.long_history[:3] != (self.n_channels, N_DAYS, N_DAYPARTS)):
            raise ValueError(f"ModelConfig.long_history must be (n_channels, {N_DAYS}, {N_DAYPARTS}, n_topics) with history on, got {self.long_history} (history={self.history})")
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
        if c.content_attributes:
            # Tag codes per content index [V, A] (0 = untagged): a buffer, so it travels in the state dict.
            self.register_buffer("content_attr", torch.zeros(c.n_content, len(c.content_attributes), dtype=torch.long))
            self.content_attr_emb = nn.ModuleList(nn.Embedding(size + 1, d, padding_idx=0) for size in c.content_attributes)
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
        if c.history:
            self.history_mlp = nn.Sequential(nn.Linear(N_HISTORY_FEATURES + 2 * d, d), nn.GELU(), nn.Linear(d, 1))
            self.history_content_query = nn.Linear(2 * d, d, bias=False)  # opened / unopened content -> content taste
            if c.long_history:  # replaced after the fact so models without it initialise exactly as before
                self.history_mlp[0] = nn.Linear(N_HISTORY_FEATURES + N_LONG_HISTORY_FEATURES + 2 * d, d)
                # Per-topic (sent, opened, rate) -> a query direction: the content embeddings carry
                # their topic's embedding, so this scores every item by the HCP's topic record.
                self.history_topic_query = nn.Linear(3 * c.long_history[3], d, bias=False)

    def set_content_attributes(self, codes: Any) -> None:
        """Load the [V, A] tag codes of the content vocabulary (0 = untagged; pad and none rows are 0)."""
        codes = torch.as_tensor(codes, dtype=torch.long)
        expected = (self.config.n_content, len(self.config.content_attributes))
        if tuple(codes.shape) != expected:
            raise ValueError(f"content attribute codes: expected shape {expected}, got {tuple(codes.shape)}")
        bad = [(a, int(codes[:, a].max())) for a, size in enumerate(self.config.content_attributes) if len(codes) and int(codes[:, a].max()) > size]
        if bad or (codes < 0).any():
            raise ValueError(f"content attribute codes out of range (attribute, max code): {bad}; sizes {self.config.content_attributes}")
        self.content_attr.copy_(codes.to(self.content_attr.device))

    def content_table(self) -> Tensor:
        """Every content item's embedding [V, D]: its id embedding plus its tags' embeddings."""
        w = self.content_emb.weight
        if self.config.content_attributes:
            for a, emb in enumerate(self.content_attr_emb):
                w = w + emb(self.content_attr[:, a])
        return w

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Token embeddings with the start token prepended: [B, L+1, D]."""
        numeric = torch.stack([torch.log1p(batch["gap_days"].clamp_min(0)), torch.log1p(batch["read_seconds"].clamp_min(0))], -1)
        tokens = (
            self.channel_emb(batch["channel"])
            + self.content_table()[batch["content"].long()]
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

    def last_hidden(self, batch: dict[str, Tensor]) -> Tensor:
        """The encoder's output at the last real touch [B, D] (position 0, the start token, when none).

        Same values as ``encode(batch)[b, length[b]]``, computed with less work: the final
        Transformer layer is evaluated at that one position only (its other outputs are never
        read), and the causal mask alone suffices because padding only ever follows real touches.
        """
        x = self.embed(batch)  # [B, L+1, D]
        rows = torch.arange(x.shape[0], device=x.device)
        last = batch["length"].long().clamp(0, x.shape[1] - 1)
        if self.config.encoder == "gru":
            out, _ = self.encoder(x)
            return out[rows, last]
        layers = self.encoder.layers
        if not all(layer.norm_first for layer in layers):  # the helpers below implement pre-norm layers only
            return self.encode(batch)[rows, last]
        for layer in layers[:-1]:
            x = _layer_all_positions(layer, x)
        return _layer_one_position(layers[-1], x, last)

    def state(self, batch: dict[str, Tensor]) -> Tensor:
        """The HCP's state at decision time [B, D]: last valid position fused with static features."""
        seq_state = self.last_hidden(batch)  # [B, D]
        static = batch["static"] if self.config.n_static else torch.zeros(seq_state.shape[0], 1, device=seq_state.device)
        z = self.fuse(torch.cat([seq_state, self.static_mlp(static.to(seq_state.dtype))], -1))
        return torch.cat([z, self.history_summary(batch)], -1) if self.config.history else z

    def history_summary(self, batch: dict[str, Tensor]) -> Tensor:
        """Raw response-history counts from the sequence tokens [B, X] (see N_HISTORY_FEATURES)."""
        ch, resp = batch["channel"].long(), batch["response"].long()
        valid = (ch > 0).float()
        opened = (resp == 2).float() * valid

        def counts(tokens: Tensor, size: int) -> tuple[Tensor, Tensor]:  # ids are index + 1, 0 = pad
            onehot = F.one_hot(tokens.long().clamp(0, size), size + 1)[..., 1:].float()  # [B, L, size]
            return (onehot * valid.unsqueeze(-1)).sum(1), (onehot * opened.unsqueeze(-1)).sum(1)

        slot = torch.where(ch > 0, (batch["weekday"].long() - 1).clamp_min(0) * N_DAYPARTS + (batch["daypart"].long() - 1).clamp_min(0) + 1, 0)
        parts = [*counts(ch, self.config.n_channels), *counts(batch["weekday"], N_DAYS), *counts(batch["daypart"], N_DAYPARTS), *counts(slot, N_SLOTS)]
        has_content = (batch["content"].long() > 1).float() * valid
        emb = self.content_table()[batch["content"].long()]  # [B, L, D]
        for w in (has_content * opened, has_content * (1 - opened)):
            parts.append((emb * w.unsqueeze(-1)).sum(1) / (w.sum(1, keepdim=True) + 1.0))
        if self.config.long_history:
            if "history_long" not in batch:
                raise ValueError("this model reads the response-history counts (feature view hcp_response_history_*); the input has none")
            parts.append(batch["history_long"].to(emb.dtype))  # [B, 2 * sum(long_history)]
        return torch.cat(parts, -1)

    def _history_terms(self, raw: Tensor, channel: Tensor, slot: Tensor, ch_table: Tensor, sl_table: Tensor) -> tuple[Tensor, Tensor]:
        """History logit [B, ...] and content-query term [B, 1.., D] for candidates shaped like ``channel``."""
        c, d = self.config.n_channels, self.config.d_model
        sizes = (c, c, N_DAYS, N_DAYS, N_DAYPARTS, N_DAYPARTS, N_SLOTS, N_SLOTS)
        blocks = list(torch.split(raw[:, : sum(sizes)], sizes, -1))
        pooled = raw[:, sum(sizes) : sum(sizes) + 2 * d]  # [B, 2D]
        extra = channel.dim() - 1

        def pick(table: Tensor, index: Tensor) -> Tensor:  # [B, n] at [B, ...] -> [B, ...]
            return table.gather(1, index.reshape(index.shape[0], -1)).reshape(index.shape)

        def rates(s: Tensor, o: Tensor) -> list[Tensor]:  # one (sent, opened, smoothed rate) triple
            return [torch.log1p(s), torch.log1p(o), (o + 0.5) / (s + 2.0)]

        wd, dp = slot // N_DAYPARTS, slot % N_DAYPARTS
        feats = []
        for (sent, opened), index in (
            ((blocks[0], blocks[1]), channel), ((blocks[2], blocks[3]), wd), ((blocks[2], blocks[3]), (wd + 1) % N_DAYS),
            ((blocks[2], blocks[3]), (wd - 1) % N_DAYS), ((blocks[4], blocks[5]), dp), ((blocks[6], blocks[7]), slot),
        ):
            feats += rates(pick(sent, index), pick(opened, index))
        total_sent, total_open = blocks[0].sum(-1), blocks[1].sum(-1)
        shape = channel.shape
        per_row = lambda t: t.reshape(t.shape[0], *([1] * extra)).expand(shape)  # noqa: E731
        feats += [per_row(torch.log1p(total_sent)), per_row((total_open + 0.5) / (total_sent + 2.0))]
        topic_query = None
        if self.config.long_history:
            long_sizes = [size for size in self.config.long_history for _ in range(2)]  # sent, opened per block
            lb = list(torch.split(raw[:, sum(sizes) + 2 * d :], long_sizes, -1))
            for (sent, opened), index in (((lb[0], lb[1]), channel), ((lb[2], lb[3]), wd), ((lb[4], lb[5]), dp)):
                feats += rates(pick(sent, index), pick(opened, index))
            topic = torch.cat(rates(lb[6], lb[7]), -1)  # [B, 3 x topics]
            topic_query = self.history_topic_query(topic).reshape(topic.shape[0], *([1] * extra), d) / d**0.5
        # history_mlp(cat[feats, channel_emb, slot_emb]) with its first layer split by input block:
        # the embedding parts are projected once per table row and gathered (same maths, K x less work).
        first, n = self.history_mlp[0], len(feats)
        ch_part = F.linear(ch_table, first.weight[:, n : n + d])[channel]
        sl_part = F.linear(sl_table, first.weight[:, n + d :])[slot]
        hidden = F.linear(torch.stack(feats, -1), first.weight[:, :n], first.bias) + ch_part + sl_part
        query = self.history_content_query(pooled).reshape(pooled.shape[0], *([1] * extra), d) / d**0.5
        if topic_query is not None:
            query = query + topic_query
        return self.history_mlp[1:](hidden).squeeze(-1), query

    def heads(self, z: Tensor, content_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Channel [B, C], content [B, V] and slot [B, 28] logits from states z [B, D].

        ``content_mask`` ([V] or [B, V], True = may be suggested) sets the rest to -inf; the
        padding id is never a valid content.
        """
        z = z[..., : self.config.d_model]  # the history summary (if any) feeds the response head only
        content = self.content_query(z) @ self.content_table().T + self.content_bias  # [B, V]
        allowed = torch.ones(content.shape[-1], dtype=torch.bool, device=z.device)
        allowed[0] = False
        allowed = allowed if content_mask is None else allowed & content_mask.to(z.device)
        content = content.masked_fill(~allowed, float("-inf"))
        return {"channel": self.channel_head(z), "content": content, "slot": self.slot_head(z)}

    def _response_parts(self, z: Tensor, channel: Tensor, slot: Tensor, with_query: bool = True) -> tuple[Tensor, Tensor | None]:
        """Base logit [B, ...] and content query [B, ..., D] (None unless ``with_query``) for candidates shaped like ``channel``."""
        # Same maths as response_mlp(cat[z, channel_emb, slot_emb]), but the first layer is split by
        # input block: the state part once per row, the action parts once per table entry, then
        # gathered, so K candidates cost K additions instead of K full MLP input layers.
        d = self.config.d_model
        z, raw = z[..., :d], z[..., d:]

        def per_row(t: Tensor) -> Tensor:  # [B, D] -> [B, 1.., D] broadcasting over candidates
            return t.reshape(t.shape[0], *([1] * (channel.dim() - 1)), t.shape[-1])

        first, w = self.response_mlp[0], self.response_mlp[0].weight  # Linear(3D, D): [D, 3D]
        ch_table, sl_table = self.action_channel_emb.weight, self.action_slot_emb.weight  # [C, D], [28, D]
        hidden = per_row(F.linear(z, w[:, :d], first.bias)) + F.linear(ch_table, w[:, d : 2 * d])[channel] + F.linear(sl_table, w[:, 2 * d :])[slot]
        ch = ch_table[channel]  # [B, ..., D]
        base = self.response_mlp[1:](hidden).squeeze(-1) + (per_row(self.response_channel_bilinear(z)) * ch).sum(-1) / d**0.5
        query = (per_row(self.response_state_query(z)) + self.response_channel_query(ch_table)[channel]) / d**0.5 if with_query else None
        if self.config.history:
            h_base, h_query = self._history_terms(raw, channel, slot, ch_table, sl_table)
            base = base + h_base
            query = query + h_query if query is not None else None
        return base, query

    def response_table(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Base logits of every (channel, slot) [B, C, 28] and each channel's content query [B, C, D].

        The content query depends on the state and the channel, never the slot, so
        logit(c, s, v) = base[:, c, s] + query[:, c] . content_emb[v] + response_content_bias[v]:
        a channel's best (slot, content) is its best slot plus its best content, found without
        scoring all 28 x V pairs (training.policy.channel_scores relies on this).
        """
        b, c = z.shape[0], self.config.n_channels
        ch = torch.arange(c, device=z.device).view(1, c, 1).expand(b, c, N_SLOTS)
        sl = torch.arange(N_SLOTS, device=z.device).view(1, 1, N_SLOTS).expand(b, c, N_SLOTS)
        base, _ = self._response_parts(z, ch, sl, with_query=False)  # [B, C, 28]
        _, query = self._response_parts(z, ch[:, :, 0], sl[:, :, 0])  # [B, C, D]
        assert query is not None
        return base, query

    def response_logit(self, z: Tensor, channel: Tensor, content: Tensor, slot: Tensor) -> Tensor:
        """Logit of P(positive response | state, action) for candidates [B, ...] -> [B, ...]."""
        base, query = self._response_parts(z, channel, slot)
        assert query is not None
        return base + (query * self.content_table()[content]).sum(-1) + self.response_content_bias[content]

    def response_logit_all_content(self, z: Tensor, channel: Tensor, slot: Tensor) -> Tensor:
        """Response logits of every content item for one (channel, slot) per row: [B] x [B] -> [B, V]."""
        base, query = self._response_parts(z, channel, slot)  # [B], [B, D]
        assert query is not None
        return base.unsqueeze(-1) + query @ self.content_table().T + self.response_content_bias

    def response_logit_all_slots(self, z: Tensor, channel: Tensor, content: Tensor) -> Tensor:
        """Response logits of every slot for one (channel, content) per row: [B] x [B] -> [B, 28].

        The content term does not depend on the slot (see ``response_table``): it is computed once
        per row, the 28 slots pay only for the base logit.
        """
        b = z.shape[0]
        slots = torch.arange(N_SLOTS, device=z.device).expand(b, -1)
        base, _ = self._response_parts(z, channel.unsqueeze(1).expand(-1, N_SLOTS), slots, with_query=False)  # [B, 28]
        _, query = self._response_parts(z, channel, slots[:, 0])  # [B, D]
        assert query is not None
        return base + ((query * self.content_table()[content]).sum(-1) + self.response_content_bias[content]).unsqueeze(-1)

    def forward(self, batch: dict[str, Tensor], content_mask: Tensor | None = None) -> dict[str, Tensor]:
        """State, head logits and the logged action's response logit (when the batch has labels)."""
        z = self.state(batch)
        out = {"state": z, **self.heads(z, content_mask)}
        if "label_channel" in batch:
            out["response"] = self.response_logit(z, batch["label_channel"], batch["label_content"], batch["label_slot"])
        return out


def _split_heads(t: Tensor, n_heads: int) -> Tensor:
    """[B, T, D] -> [B, H, T, D/H]."""
    b, n, d = t.shape
    return t.view(b, n, n_heads, d // n_heads).transpose(1, 2)


def _layer_all_positions(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
    """One pre-norm encoder layer over every position with a causal mask: ``layer``'s own weights and
    maths (as ``layer(x, is_causal=True)``) through fused scaled-dot-product attention."""
    attn = layer.self_attn
    h = attn.num_heads
    q, k, v = F.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, -1)
    a = F.scaled_dot_product_attention(_split_heads(q, h), _split_heads(k, h), _split_heads(v, h), dropout_p=attn.dropout if layer.training else 0.0, is_causal=True)
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


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for or available under 'auto', else CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise ValueError("device=cuda requested but torch.cuda.is_available() is False")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")
