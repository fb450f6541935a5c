"""Tiny token batches shared by the network tests (test_model, test_candidate_terms)."""

from __future__ import annotations

import torch

from training.model import N_SLOTS

B, L, V, S = 4, 6, 10, 3
LONG = (8, 7, 4, 6)  # channels, weekdays, dayparts, topics


def token_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """B rows of right-padded touch tokens (lengths 6, 3, 0, 1), static features and labels."""
    g = torch.Generator().manual_seed(seed)
    length = torch.tensor([6, 3, 0, 1])
    valid = torch.arange(L)[None, :] < length[:, None]

    def tok(high: int) -> torch.Tensor:
        return torch.randint(1, high, (B, L), generator=g) * valid

    return {
        "channel": tok(9),
        "content": tok(V),
        "response": tok(3),
        "weekday": tok(8),
        "daypart": tok(5),
        "gap_days": torch.rand(B, L, generator=g) * 10 * valid,
        "read_seconds": torch.rand(B, L, generator=g) * 100 * valid,
        "length": length,
        "static": torch.randn(B, S, generator=g),
        "label_channel": torch.randint(0, 8, (B,), generator=g),
        "label_content": torch.randint(1, V, (B,), generator=g),
        "label_slot": torch.randint(0, N_SLOTS, (B,), generator=g),
    }
