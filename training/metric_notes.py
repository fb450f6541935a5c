"""Plain-words notes for training figures that look alarming but are expected.

A data scientist reading ``channel_accuracy 0.02``, ``slot_accuracy 0.0`` or a negative loss
would suspect a broken model. They are what the objectives produce: the policy heads are not what
serving uses, and the off-policy losses are negative by construction. `nba train` prints these
notes beside its figures and stores them as the MLflow run's description.
"""

from __future__ import annotations

import math
from typing import Any

CHANNELS_CHANCE = 1 / 8  # eight channels
SLOTS = 28  # 7 days x 4 dayparts


def _values(figures: dict[str, Any], suffix: str) -> dict[str, float]:
    out = {}
    for k, v in figures.items():
        if k.replace("/", "_").endswith(suffix) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def _show(values: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in sorted(values.items()))


def metric_notes(figures: dict[str, Any]) -> list[str]:
    """One note per alarming-looking kind of figure present in ``figures`` (keys as `nba train` reports them)."""
    notes = []
    acc = _values(figures, "channel_accuracy")
    if acc:
        notes.append(
            f"{_show(acc)}: how often the channel head's first choice equals the channel the rep logged. Serving does not use that "
            f"head: it scores every allowed channel, item and slot with the response head (README, 'Decision rule'). Under "
            f"loss.objective ips or dr the head is trained away from imitating the reps, so values near or below chance "
            f"({CHANNELS_CHANCE:.3f}) are expected, not a fault. Judge the model by val/response_auc, the policy values and "
            f"`nba evaluate`'s share of the oracle's gain."
        )
    slot = _values(figures, "slot_accuracy")
    if slot:
        notes.append(
            f"{_show(slot)}: exact match of the logged slot among {SLOTS} (weekday x daypart). The slot head is not used by serving "
            f"either (the response head picks the slot), and reps log most touches in a few slots it is not trained to copy under "
            f"ips or dr, so 0 is common and harmless."
        )
    negative = {k: v for k, v in _values(figures, "loss").items() if v < 0}
    if negative:
        notes.append(
            f"{_show(negative)}: negative by construction. The ips and dr objectives' policy losses are minus an estimated reward "
            f"(-sum(w r log pi) / sum(w), or minus the doubly robust value), so lower is better and below zero is normal; the "
            f"cross-entropy parts (the response head's) stay at or above zero."
        )
    return notes
