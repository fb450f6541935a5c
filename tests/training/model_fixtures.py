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


# Candidate rows for the fused-grid checks: (channel, content, slot) per batch row.
GRID_CH, GRID_CT, GRID_SL = torch.tensor([0, 3, 7, 2]), torch.tensor([2, 1, 5, V - 1]), torch.tensor([1, 27, 4, 0])


def assert_fused_grids_exact(model, z: torch.Tensor) -> None:
    """The all-content and all-slot grids equal the one-candidate response logit, row by row (training.policy relies on them)."""
    ch, ct, sl = GRID_CH, GRID_CT, GRID_SL
    one = model.response_logit(z, ch.unsqueeze(1).expand(-1, V), torch.arange(V).expand(B, -1), sl.unsqueeze(1).expand(-1, V))
    torch.testing.assert_close(model.response_logit_all_content(z, ch, sl), one)
    one = model.response_logit(z, ch.unsqueeze(1).expand(-1, N_SLOTS), ct.unsqueeze(1).expand(-1, N_SLOTS), torch.arange(N_SLOTS).expand(B, -1))
    torch.testing.assert_close(model.response_logit_all_slots(z, ch, ct), one)
