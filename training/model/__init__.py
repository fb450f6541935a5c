"""The next-best-action network, as small modules composed by config (see ``training.model.network``).

config      ModelConfig, the action grid (N_DAYS, N_DAYPARTS, N_SLOTS) and history layout sizes
encoder     StateEncoder: token embeddings, causal Transformer/GRU, static features -> state [B, D]
content     ContentTable (id + tag embeddings [V, D]) and PolicyHeads (channel, content, slot)
response    ResponseHead: the separable response logit base(z, c, s) + query(z, c) . content[v]
history     HistoryTerms (ModelConfig.history, long_history): the HCP's response record per candidate
candidates  CandidateTerms (ModelConfig.candidates): repetition and wear-out per candidate item and channel
network     NextBestActionModel, composing them
"""

from __future__ import annotations

from training.model.candidates import CandidateTerms
from training.model.config import N_DAYPARTS, N_DAYS, N_HISTORY_FEATURES, N_LONG_HISTORY_FEATURES, N_RELATIVE_TIMING_FEATURES, N_SLOTS, ModelConfig
from training.model.content import ContentTable, PolicyHeads
from training.model.encoder import StateEncoder
from training.model.history import HistoryTerms, history_summary
from training.model.network import NextBestActionModel, select_device
from training.model.response import ResponseHead

__all__ = [
    "CandidateTerms",
    "ContentTable",
    "HistoryTerms",
    "ModelConfig",
    "NextBestActionModel",
    "PolicyHeads",
    "ResponseHead",
    "StateEncoder",
    "N_DAYPARTS",
    "N_DAYS",
    "N_HISTORY_FEATURES",
    "N_LONG_HISTORY_FEATURES",
    "N_RELATIVE_TIMING_FEATURES",
    "N_SLOTS",
    "history_summary",
    "select_device",
]
