"""Sentences a rep can read for each suggestion, built column-wise from the features it used."""

from __future__ import annotations

import numpy as np

from contract.schema import CHANNELS
from features.rules import CHANNEL_LABELS

_LABELS = np.asarray([CHANNEL_LABELS[c] for c in CHANNELS], dtype=object)


_NOTES = {
    "model": "",
    "explore": "exploration: chosen at random among the top suggestions so their value can be measured",
    "holdout": "holdout group: rule-based suggestion (measures the model's lift)",
    "fallback": "degraded mode: model unavailable, rule-based suggestion",
}

# Plain comprehensions: per-call overhead of pandas string ops was a visible share of a
# single-HCP request, and at batch sizes these are no slower.


def history_reason(channel: np.ndarray, sent: np.ndarray, opened: np.ndarray, window: str) -> np.ndarray:
    """Per suggestion: how the HCP answered this channel lately ("opened 3 of 5 emails in 90d")."""
    labels = _LABELS[np.asarray(channel)].tolist()
    text = [
        f"answered {o} of {s} {lab} contacts in the last {window}" if s > 0 else f"no {lab} contact in the last {window}: a channel not yet tried with this HCP"
        for lab, s, o in zip(labels, np.asarray(sent).tolist(), np.asarray(opened).tolist())
    ]
    return np.asarray(text, dtype=object).reshape(-1)


def model_reason(channel: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per suggestion: what the model expects ("model: 34% expected response to a WeChat push")."""
    pct = np.round(np.asarray(expected, dtype=np.float64) * 100).astype(np.int64).tolist()
    text = [f"model: {p}% expected response to a {lab}" for p, lab in zip(pct, _LABELS[np.asarray(channel)].tolist())]
    return np.asarray(text, dtype=object).reshape(-1)


def policy_note(policy: np.ndarray) -> np.ndarray:
    """Per suggestion: a note when the suggestion did not come from the model's greedy choice."""
    return np.asarray([_NOTES.get(p, "") for p in np.asarray(policy, dtype=object).tolist()], dtype=object).reshape(-1)


def combine(*columns: np.ndarray) -> list[list[str]]:
    """Row-wise lists of the non-empty sentences (the JSON boundary needs lists)."""
    stacked = np.column_stack([np.asarray(c, dtype=object) for c in columns]) if columns else np.zeros((0, 0), dtype=object)
    return [[s for s in row if s] for row in stacked.tolist()]
