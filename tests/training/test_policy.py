"""The decision rule: every channel x slot x content scored by the response head; the stochastic target policy."""

from __future__ import annotations

import torch

from training.model import N_SLOTS, ModelConfig, NextBestActionModel
from training.policy import channel_scores, recommend


def _model(vocab, scaler, history: bool = True) -> NextBestActionModel:
    torch.manual_seed(1)
    return NextBestActionModel(ModelConfig(8, len(vocab), len(scaler.columns), "gru", 16, 1, 2, 0.0, 8, history=history)).eval()


def test_channel_scores_are_the_max_over_every_allowed_content_and_slot(encoded) -> None:
    data, vocab, scaler = encoded
    model = _model(vocab, scaler)
    batch = next(data.batches(6))
    z = model.state(batch)
    slot_allowed = torch.ones(8, N_SLOTS, dtype=torch.bool)
    slot_allowed[0, 5:] = False  # channel 0 only in the first 5 slots
    score, content, slot = channel_scores(model, z, slot_allowed=slot_allowed)
    for c in (0, 3):
        # brute force over every (slot, content) pair, real content only (ids >= 2)
        best = torch.full((6,), float("-inf"))
        for s in range(N_SLOTS):
            if not slot_allowed[c, s]:
                continue
            logits = model.response_logit_all_content(z, torch.full((6,), c), torch.full((6,), s))[:, 2:]
            best = torch.maximum(best, logits.max(-1).values)
        torch.testing.assert_close(score[:, c], best)
        assert (slot[:, 0] < 5).all() and (content >= 2).all()
        again = model.response_logit(z, torch.full((6,), c), content[:, c], slot[:, c])
        torch.testing.assert_close(again, score[:, c])


def test_recommend_respects_guardrails(encoded) -> None:
    data, vocab, scaler = encoded
    model = _model(vocab, scaler)
    batch = next(data.batches(5))
    allowed = torch.zeros(5, 8, dtype=torch.bool)
    allowed[:, 2] = True
    allowed[4] = False  # nothing allowed for the last row
    mask = torch.zeros(len(vocab), dtype=torch.bool)
    mask[3] = True
    rec = recommend(model, batch, channel_allowed=allowed, content_mask=mask)
    assert (rec["channel"][:4] == 2).all() and (rec["content"][:4] == 3).all()
    assert rec["any_allowed"].tolist() == [True] * 4 + [False]
    assert float(rec["expected_response"][4]) == 0.0


def test_history_summary_changes_the_response_head(encoded) -> None:
    data, vocab, scaler = encoded
    model = _model(vocab, scaler)
    batch = next(data.batches(8))
    flipped = dict(batch)
    flipped["response"] = torch.where(batch["response"] > 0, 3 - batch["response"], batch["response"])  # opened <-> not
    a = model.response_logit(model.state(batch), batch["label_channel"], batch["label_content"], batch["label_slot"])
    b = model.response_logit(model.state(flipped), batch["label_channel"], batch["label_content"], batch["label_slot"])
    assert not torch.allclose(a, b)
    assert model.state(batch).shape[-1] > model.config.d_model
    assert _model(vocab, scaler, history=False).state(batch).shape[-1] == model.config.d_model
