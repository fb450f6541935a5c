"""History terms: the HCP's response record per channel, weekday, daypart, slot and topic, read per candidate.

The raw record [B, width] is appended to the state (``history_summary``); the response head reads
the rows of it that a candidate (channel, slot) touches, so an HCP-specific channel or timing
effect needs no discovering by the encoder. Counts come from the sequence tokens, and with
``long_history`` also from the feature stage's year of counts (batch["history_long"]).

With ``relative_rates`` the year's counts are also read against the HCP's own overall rate
(``relative_rate``: excess opens over sent x rate, shrunk where touches are few): per weekday and
daypart as inputs of the timing term, and per topic as a direct logit on every item of the topic
(``item_logits``, added to the per-item term, so the logit stays separable in slot and content).
A raw rate mixes "likes this topic" with "responds to everything"; the relative rate keeps only the
first, and a year of ~60 touches per HCP is too little for the network to learn that split alone
(a simple relative-rate estimator ranked content and slots better than the network without it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.model.config import N_DAYPARTS, N_DAYS, N_HISTORY_FEATURES, N_LONG_HISTORY_FEATURES, N_RELATIVE_TIMING_FEATURES, N_SLOTS
from training.model.response import per_row, pick


def history_width(n_channels: int, d: int, long_history: tuple[int, ...] = ()) -> int:
    """Columns of the raw record: sent and opened per channel, weekday, daypart, slot; 2 pooled embeddings; the long blocks."""
    return 2 * (n_channels + N_DAYS + N_DAYPARTS + N_SLOTS) + 2 * d + 2 * sum(long_history)


def history_summary(batch: dict[str, Tensor], content_table: Tensor, n_channels: int, long_history: tuple[int, ...] = ()) -> Tensor:
    """Raw response-history counts from the sequence tokens [B, history_width] (see N_HISTORY_FEATURES)."""
    ch, resp = batch["channel"].long(), batch["response"].long()  # [B, L]
    valid = (ch > 0).float()
    opened = (resp == 2).float() * valid

    def counts(tokens: Tensor, size: int) -> tuple[Tensor, Tensor]:  # ids are index + 1, 0 = pad
        onehot = F.one_hot(tokens.long().clamp(0, size), size + 1)[..., 1:].float()  # [B, L, size]
        return (onehot * valid.unsqueeze(-1)).sum(1), (onehot * opened.unsqueeze(-1)).sum(1)

    slot = torch.where(ch > 0, (batch["weekday"].long() - 1).clamp_min(0) * N_DAYPARTS + (batch["daypart"].long() - 1).clamp_min(0) + 1, 0)
    parts = [*counts(ch, n_channels), *counts(batch["weekday"], N_DAYS), *counts(batch["daypart"], N_DAYPARTS), *counts(slot, N_SLOTS)]
    has_content = (batch["content"].long() > 1).float() * valid
    emb = content_table[batch["content"].long()]  # [B, L, D]
    for w in (has_content * opened, has_content * (1 - opened)):
        parts.append((emb * w.unsqueeze(-1)).sum(1) / (w.sum(1, keepdim=True) + 1.0))  # [B, D]
    if long_history:
        if "history_long" not in batch:
            raise ValueError("this model reads the response-history counts (feature view hcp_response_history_*); the input has none")
        parts.append(batch["history_long"].to(emb.dtype))  # [B, 2 * sum(long_history)]
    return torch.cat(parts, -1)


def _rates(sent: Tensor, opened: Tensor) -> list[Tensor]:
    """One (sent, opened, smoothed rate) triple."""
    return [torch.log1p(sent), torch.log1p(opened), (opened + 0.5) / (sent + 2.0)]


def relative_rate(sent: Tensor, opened: Tensor, rate: Tensor) -> list[Tensor]:
    """The opens of a facet (a topic, weekday, daypart) against what the HCP's overall ``rate`` predicts: two shrunk contrasts.

    E = sent x rate; (O - E) / (E + 1) is an empirical-Bayes log-ratio estimate (a facet with few
    touches stays near 0, the HCP's own average) and (O - E) / sqrt(E + 1) a z-score. Unlike the raw
    rate, neither moves with how responsive the HCP is overall, only with how this facet differs.
    sent, opened [B, ...], rate broadcastable -> two tensors shaped like sent.
    """
    expected = sent * rate
    excess = opened - expected
    return [excess / (expected + 1.0), excess / torch.sqrt(expected + 1.0)]


def overall_rate(sent: Tensor, opened: Tensor) -> Tensor:
    """[B, n] counts of one block -> [B, 1] the HCP's smoothed overall rate over it (a weak prior of 1 in 4)."""
    return (opened.sum(-1, keepdim=True) + 1.0) / (sent.sum(-1, keepdim=True) + 4.0)


class HistoryTerms(nn.Module):
    """History logit [B, ...] for candidates and a content-query term [B, 1.., D] (the HCP's content taste)."""

    def __init__(self, n_channels: int, d: int, long_history: tuple[int, ...] = (), relative_rates: bool = False) -> None:
        super().__init__()
        self.n_channels, self.d, self.long_history = n_channels, d, tuple(long_history)
        self.relative = bool(relative_rates and self.long_history)
        self.width = history_width(n_channels, d, self.long_history)
        n_feats = N_HISTORY_FEATURES + (N_LONG_HISTORY_FEATURES if self.long_history else 0) + (N_RELATIVE_TIMING_FEATURES if self.relative else 0)
        self.mlp = nn.Sequential(nn.Linear(n_feats + 2 * d, d), nn.GELU(), nn.Linear(d, 1))  # (feats, channel emb, slot emb) -> logit
        self.content_query = nn.Linear(2 * d, d, bias=False)  # opened / unopened content -> content taste
        # Per-topic (sent, opened, rate) -> a query direction: the content embeddings carry their
        # topic's embedding, so this scores every item by the HCP's topic record.
        self.topic_query = nn.Linear(3 * self.long_history[3], d, bias=False) if self.long_history else None
        # Per topic (log sent, two relative rates) -> a logit added to every item on the topic: the
        # HCP's topic taste as a direct term, not only a direction the content embeddings must align
        # with. Zero-initialised last layer: untrained, it changes nothing.
        self.topic_mlp = nn.Sequential(nn.Linear(3, 16), nn.GELU(), nn.Linear(16, 1)) if self.relative else None
        if self.topic_mlp is not None:
            nn.init.zeros_(self.topic_mlp[-1].weight)
            nn.init.zeros_(self.topic_mlp[-1].bias)

    def summary(self, batch: dict[str, Tensor], content_table: Tensor) -> Tensor:
        """The raw record to append to the state [B, width]."""
        return history_summary(batch, content_table, self.n_channels, self.long_history)

    def _long_blocks(self, raw: Tensor) -> list[Tensor]:
        """The long-history blocks of the record: sent, opened for channels, weekdays, dayparts, topics ([B, n] each)."""
        c, d = self.n_channels, self.d
        start = 2 * (c + N_DAYS + N_DAYPARTS + N_SLOTS) + 2 * d
        long_sizes = [size for size in self.long_history for _ in range(2)]  # sent, opened per block
        return list(torch.split(raw[:, start : start + sum(long_sizes)], long_sizes, -1))

    def topic_logits(self, raw: Tensor) -> Tensor | None:
        """[B, topics] the HCP's relative response per topic as a logit (None without ``relative_rates``); raw [B, width]."""
        if self.topic_mlp is None:
            return None
        lb = self._long_blocks(raw)
        sent, opened = lb[6], lb[7]  # [B, T]
        x = torch.stack([torch.log1p(sent), *relative_rate(sent, opened, overall_rate(sent, opened))], -1)  # [B, T, 3]
        return self.topic_mlp(x).squeeze(-1)

    def item_logits(self, raw: Tensor, content_attr: Tensor | None) -> Tensor | None:
        """[B, V] each item's topic logit (0 for untagged items), or None without ``relative_rates`` or topic tags."""
        topic = self.topic_logits(raw)
        if topic is None or content_attr is None or content_attr.shape[1] < 1:
            return None
        per = torch.cat([torch.zeros_like(topic[:, :1]), topic], 1)  # [B, 1 + T]; code 0 = untagged
        return per[:, content_attr[:, 0].long().clamp(0, topic.shape[1])]

    def forward(self, raw: Tensor, channel: Tensor, slot: Tensor, ch_table: Tensor, sl_table: Tensor, with_query: bool = True) -> tuple[Tensor, Tensor | None]:
        """Logit [B, ...] and query term [B, 1.., D] (None unless ``with_query``) for candidates [B, ...].

        raw [B, width] is the record, ch_table [C, D] and sl_table [28, D] the response head's action embeddings.
        """
        c, d = self.n_channels, self.d
        sizes = (c, c, N_DAYS, N_DAYS, N_DAYPARTS, N_DAYPARTS, N_SLOTS, N_SLOTS)
        blocks = list(torch.split(raw[:, : sum(sizes)], sizes, -1))  # sent, opened per block: [B, n] each
        pooled = raw[:, sum(sizes) : sum(sizes) + 2 * d]  # [B, 2D]
        wd, dp = slot // N_DAYPARTS, slot % N_DAYPARTS
        feats = []
        for (sent, opened), index in (
            ((blocks[0], blocks[1]), channel),
            ((blocks[2], blocks[3]), wd),
            ((blocks[2], blocks[3]), (wd + 1) % N_DAYS),
            ((blocks[2], blocks[3]), (wd - 1) % N_DAYS),
            ((blocks[4], blocks[5]), dp),
            ((blocks[6], blocks[7]), slot),
        ):
            feats += _rates(pick(sent, index), pick(opened, index))
        total_sent, total_open = blocks[0].sum(-1), blocks[1].sum(-1)  # [B]
        for t in (torch.log1p(total_sent), (total_open + 0.5) / (total_sent + 2.0)):  # the same for every candidate of a row
            feats.append(per_row(t[:, None], channel).squeeze(-1).expand(channel.shape))
        topic = None
        if self.long_history:
            long_sizes = [size for size in self.long_history for _ in range(2)]  # sent, opened per block
            start = sum(sizes) + 2 * d
            lb = list(torch.split(raw[:, start : start + sum(long_sizes)], long_sizes, -1))
            for (sent, opened), index in (((lb[0], lb[1]), channel), ((lb[2], lb[3]), wd), ((lb[4], lb[5]), dp)):
                feats += _rates(pick(sent, index), pick(opened, index))
            if self.relative:
                # Timing relative to the HCP's own average: a weekday's or daypart's excess opens.
                rate = per_row(overall_rate(lb[0], lb[1]), channel).squeeze(-1)  # [B, 1..]
                for (sent, opened), index in (
                    ((lb[2], lb[3]), wd),
                    ((lb[2], lb[3]), (wd + 1) % N_DAYS),
                    ((lb[2], lb[3]), (wd - 1) % N_DAYS),
                    ((lb[4], lb[5]), dp),
                ):
                    feats += relative_rate(pick(sent, index), pick(opened, index), rate)
            topic = torch.cat(_rates(lb[6], lb[7]), -1)  # [B, 3 x topics]
        # mlp(cat[feats, channel_emb, slot_emb]) with its first layer split by input block: the
        # embedding parts are projected once per table row and gathered (same maths, K x less work).
        first, n = self.mlp[0], len(feats)
        ch_part = F.linear(ch_table, first.weight[:, n : n + d])[channel]  # [B, ..., D]
        sl_part = F.linear(sl_table, first.weight[:, n + d :])[slot]
        hidden = F.linear(torch.stack(feats, -1), first.weight[:, :n], first.bias) + ch_part + sl_part
        logit = self.mlp[1:](hidden).squeeze(-1)  # [B, ...]
        if not with_query:
            return logit, None
        query = per_row(self.content_query(pooled), channel) / d**0.5  # [B, 1.., D]
        if topic is not None:
            query = query + per_row(self.topic_query(topic), channel) / d**0.5
        return logit, query
