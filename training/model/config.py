"""Architecture of the next-best-action network: the config dataclass and the fixed action grid.

Shapes used across ``training.model``: B batch, L sequence length, D model width (``d_model``),
C channels, V content vocabulary, S static features, A content tags, K candidates per row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

N_DAYS = 7  # slot = day offset (0..6) x daypart (0..3)
N_DAYPARTS = 4
N_SLOTS = N_DAYS * N_DAYPARTS
# History summary layout appended to the state when ModelConfig.history: sent then opened counts
# for every channel, weekday, daypart and slot, then two pooled content embeddings (D each).
N_HISTORY_FEATURES = 6 * 3 + 2  # per candidate: 6 (sent, opened, rate) triples + 2 totals
# With ModelConfig.long_history, per candidate 3 more triples (its channel, weekday, daypart over
# the feature stage's window) join them, and the topic block steers the content query.
N_LONG_HISTORY_FEATURES = 3 * 3
# With ModelConfig.relative_rates, per candidate 2 more features for each of its weekday, the two
# neighbouring days and its daypart: the year's opens there against what the HCP's overall rate
# predicts (empirical-Bayes relative rates, training.model.history.relative_rate).
N_RELATIVE_TIMING_FEATURES = 4 * 2


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of one network; saved beside its weights so it can be rebuilt without pickle.

    Each optional block below switches one module of ``NextBestActionModel`` on (see its docstring).
    """

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
    # Candidate-aware terms (training.model.candidates): (contact windows, item slots) of the feature
    # stage's contact-recency and item-history views, read per candidate channel and item: how
    # recently and often this HCP got this channel / this item. Empty = off.
    candidates: tuple[int, ...] = ()
    # Empirical-Bayes relative rates (training.model.history): the year's opens per topic, weekday
    # and daypart against what the HCP's own overall rate predicts, shrunk where touches are few;
    # per topic a direct additive term on every item of that topic, per weekday/daypart inputs to
    # the timing term. Needs ``long_history`` (no effect without it). Bundles saved before the
    # field existed load with it off (``from_dict``).
    relative_rates: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_attributes", tuple(int(x) for x in self.content_attributes))
        object.__setattr__(self, "long_history", tuple(int(x) for x in self.long_history))
        object.__setattr__(self, "candidates", tuple(int(x) for x in self.candidates))
        if self.candidates and (len(self.candidates) != 2 or min(self.candidates) < 1):
            raise ValueError(f"ModelConfig.candidates must be (contact windows, item slots), both >= 1, got {self.candidates}")
        if self.long_history and (not self.history or len(self.long_history) != 4 or self.long_history[:3] != (self.n_channels, N_DAYS, N_DAYPARTS)):
            raise ValueError(
                f"ModelConfig.long_history must be (n_channels, {N_DAYS}, {N_DAYPARTS}, n_topics) with history on, got {self.long_history} (history={self.history})"
            )
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
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Rebuild from ``to_dict`` output; unknown keys are an error naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}")
        return cls(**{"relative_rates": False, **data})  # saved before the field: its weights have no relative-rate terms
