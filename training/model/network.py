"""The next-best-action network: small modules composed by ``ModelConfig``.

    batch --StateEncoder--> z [B, D] --PolicyHeads--> channel [B, C], content [B, V], slot [B, 28]
    state = cat[z, history record (if history), candidate terms [C + V] (if candidates)]  [B, D + X]
    state --ResponseHead (+ HistoryTerms, CandidateTerms)--> response logit of any (channel, content, slot)

The content table (``ContentTable``, [V, D]) is shared by the encoder's tokens, both heads and the
history's pooled embeddings. Optional modules are None when the config leaves them off.
Shapes: B batch, L sequence length, D model width, C channels, V content vocabulary, S static
features, K candidate actions.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from training.model.candidates import CandidateTerms
from training.model.config import N_SLOTS, ModelConfig
from training.model.content import ContentTable, PolicyHeads
from training.model.encoder import StateEncoder
from training.model.history import HistoryTerms, history_summary
from training.model.response import ResponseHead, pick


class NextBestActionModel(nn.Module):
    """Sequence + static encoder with channel, content, slot and response heads."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c, d = config, config.d_model
        self.content = ContentTable(c.n_content, d, c.content_attributes)
        self.encoder = StateEncoder(c)
        self.policy = PolicyHeads(c.n_channels, c.n_content, d)
        self.response = ResponseHead(c.n_channels, c.n_content, d)
        self.history = HistoryTerms(c.n_channels, d, c.long_history, c.relative_rates) if c.history else None
        self.candidates = CandidateTerms(c.n_channels, c.candidates[0], c.candidates[1]) if c.candidates else None

    # -- state ---------------------------------------------------------------------------------

    @property
    def history_width(self) -> int:
        """Width of the raw response-history block appended to the state (0 without ``history``)."""
        return self.history.width if self.history is not None else 0

    @property
    def content_attr(self) -> Tensor | None:
        """The [V, A] tag codes of the content vocabulary (None when the model embeds no tags)."""
        return self.content.codes

    def set_content_attributes(self, codes: Any) -> None:
        """Load the [V, A] tag codes of the content vocabulary (0 = untagged; pad and none rows are 0)."""
        self.content.set_codes(codes)

    def content_table(self) -> Tensor:
        """Every content item's embedding [V, D]: its id embedding plus its tags' embeddings."""
        return self.content()

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Token embeddings with the start token prepended: [B, L+1, D]."""
        return self.encoder.embed(batch, self.content_table())

    def encode(self, batch: dict[str, Tensor]) -> Tensor:
        """Per-position hidden states [B, L+1, D]; position t sees only positions <= t."""
        return self.encoder.encode(batch, self.content_table())

    def last_hidden(self, batch: dict[str, Tensor]) -> Tensor:
        """The encoder's output at the last real touch [B, D] (position 0, the start token, when none)."""
        return self.encoder.last_hidden(batch, self.content_table())

    def history_summary(self, batch: dict[str, Tensor]) -> Tensor:
        """Raw response-history counts from the sequence tokens [B, X] (see N_HISTORY_FEATURES)."""
        return history_summary(batch, self.content_table(), self.config.n_channels, self.config.long_history)

    def state(self, batch: dict[str, Tensor]) -> Tensor:
        """The HCP's state at decision time [B, D + X]: last valid position fused with static features, then the raw blocks."""
        z = self.encoder.with_static(self.last_hidden(batch), batch)  # [B, D]; self.last_hidden so a bench may swap it
        parts = [z]
        if self.history is not None:
            parts.append(self.history.summary(batch, self.content_table()))  # [B, history_width]
        if self.candidates is not None:
            if "contact" not in batch or "item_ids" not in batch:
                raise ValueError("this model reads the candidate history (feature views hcp_contact_recency_*, hcp_item_history_*); the input has none")
            parts.append(self.candidates.terms(batch, self.content_attr, self.config.n_content).to(z.dtype))  # [B, C + V]
        return torch.cat(parts, -1) if len(parts) > 1 else z

    def _split_state(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """State [B, D + X] -> core [B, D], history record [B, history_width], candidate block [B, width] (empty when off)."""
        d, h = self.config.d_model, self.history_width
        k = self.candidates.width(self.config.n_content) if self.candidates is not None else 0
        return z[..., :d], z[..., d : d + h], z[..., d + h : d + h + k]

    # -- policy heads --------------------------------------------------------------------------

    def heads(self, z: Tensor, content_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Channel [B, C], content [B, V] and slot [B, 28] logits from states z [B, D].

        ``content_mask`` ([V] or [B, V], True = may be suggested) sets the rest to -inf; the
        padding id is never a valid content.
        """
        return self.policy(z[..., : self.config.d_model], self.content_table(), content_mask)  # the raw blocks feed the response head only

    # -- response head -------------------------------------------------------------------------

    def item_logits(self, z: Tensor) -> Tensor | None:
        """Per-item term of the response logit [B, V] (repetition, recency; the HCP's topic taste), or None without either term."""
        _, record, block = self._split_state(z)
        out = block[..., self.config.n_channels :] if self.candidates is not None else None
        topic = self.history.item_logits(record, self.content_attr) if self.history is not None else None  # [B, V] or None
        if topic is None:
            return out
        return topic if out is None else out + topic

    def _response_parts(self, z: Tensor, channel: Tensor, slot: Tensor, with_query: bool = True) -> tuple[Tensor, Tensor | None]:
        """Base logit [B, ...] and content query [B, ..., D] (None unless ``with_query``) for candidates shaped like ``channel``."""
        core, record, block = self._split_state(z)
        base, query = self.response(core, channel, slot, with_query)
        if self.history is not None:
            h_base, h_query = self.history(record, channel, slot, self.response.action_channel_emb.weight, self.response.action_slot_emb.weight, with_query)
            base = base + h_base
            if query is not None and h_query is not None:
                query = query + h_query
        if self.candidates is not None:
            base = base + pick(block[..., : self.config.n_channels], channel)  # [B, C] at the candidates' channels
        return base, query

    def content_logits(self, z: Tensor, query: Tensor) -> Tensor:
        """Content part of the response logit for every item: query [B, ..., D] -> [B, ..., V]."""
        return self.response.content_logits(query, self.content_table(), self.item_logits(z))

    def _content_logit_at(self, z: Tensor, query: Tensor, content: Tensor) -> Tensor:
        """Content part of the response logit for one item per candidate: query [B, ..., D], content [B, ...] -> [B, ...]."""
        return self.response.content_logit_at(query, self.content_table(), content, self.item_logits(z))

    def response_table(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Base logits of every (channel, slot) [B, C, 28] and each channel's content query [B, C, D].

        The content query depends on the state and the channel, never the slot, so
        logit(c, s, v) = base[:, c, s] + content_logits(z, query)[:, c, v]:
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
        return base + self._content_logit_at(z, query, content)

    def response_logit_all_content(self, z: Tensor, channel: Tensor, slot: Tensor) -> Tensor:
        """Response logits of every content item for one (channel, slot) per row: [B] x [B] -> [B, V]."""
        base, query = self._response_parts(z, channel, slot)  # [B], [B, D]
        assert query is not None
        return base.unsqueeze(-1) + self.content_logits(z, query)

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
        return base + self._content_logit_at(z, query, content).unsqueeze(-1)

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
