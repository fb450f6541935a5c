"""Sentences a rep can read for each suggestion, built column-wise from the features it used."""

from __future__ import annotations

import numpy as np
import pandas as pd

from contract.schema import CHANNELS
from features.rules import CHANNEL_LABELS

_LABELS = np.asarray([CHANNEL_LABELS[c] for c in CHANNELS], dtype=object)


def _s(values) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=object)).astype(str)


def history_reason(channel: np.ndarray, sent: np.ndarray, opened: np.ndarray, window: str) -> np.ndarray:
    """Per suggestion: how the HCP answered this channel lately ("opened 3 of 5 emails in 90d")."""
    label = _s(_LABELS[channel])
    tried = sent > 0
    text = np.where(
        tried,
        ("answered " + _s(opened) + " of " + _s(sent) + " " + label + " contacts in the last " + window).to_numpy(dtype=object),
        ("no " + label + " contact in the last " + window + ": a channel not yet tried with this HCP").to_numpy(dtype=object),
    )
    return text.astype(object)


def model_reason(channel: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per suggestion: what the model expects ("model: 34% expected response to a WeChat push")."""
    pct = _s(np.round(np.asarray(expected, dtype=np.float64) * 100).astype(np.int64))
    return ("model: " + pct + "% expected response to a " + _s(_LABELS[channel])).to_numpy(dtype=object)


def policy_note(policy: np.ndarray) -> np.ndarray:
    """Per suggestion: a note when the suggestion did not come from the model's greedy choice."""
    notes = {
        "model": "",
        "explore": "exploration: chosen at random among the top suggestions so their value can be measured",
        "holdout": "holdout group: rule-based suggestion (measures the model's lift)",
        "fallback": "degraded mode: model unavailable, rule-based suggestion",
    }
    return pd.Series(np.asarray(policy, dtype=object)).map(notes).fillna("").to_numpy(dtype=object)


def combine(*columns: np.ndarray) -> list[list[str]]:
    """Row-wise lists of the non-empty sentences (the JSON boundary needs lists)."""
    stacked = np.column_stack([np.asarray(c, dtype=object) for c in columns]) if columns else np.zeros((0, 0), dtype=object)
    return [[s for s in row if s] for row in stacked.tolist()]
