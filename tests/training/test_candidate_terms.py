"""Candidate terms: exact fused grids, per-item and per-channel invariances, and a behaviour test on a habituating world."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_fixtures import GRID_CH, GRID_CT, GRID_SL, LONG, B, L, S, V, assert_fused_grids_exact, token_batch

from training.model import ModelConfig, NextBestActionModel
from training.model.candidates import N_ITEM_FEATURES, contact_width, days_code

W, M = 4, 5  # contact windows, item slots


def _model(history: bool = True, seed: int = 0) -> NextBestActionModel:
    torch.manual_seed(seed)
    model = NextBestActionModel(
        ModelConfig(
            n_channels=8,
            n_content=V,
            n_static=S,
            d_model=16,
            n_layers=1,
            n_heads=2,
            dropout=0.0,
            max_seq_len=L,
            history=history,
            content_attributes=(6, 5),
            long_history=LONG if history else (),
            candidates=(W, M),
        )
    )
    codes = torch.zeros(V, 2, dtype=torch.long)
    codes[2:, 0] = torch.tensor([1, 1, 2, 2, 3, 3, 4, 0])
    codes[2:, 1] = torch.tensor([1, 2, 1, 2, 1, 2, 1, 0])
    model.set_content_attributes(codes)
    for p in model.candidates.parameters():  # the zero-initialised last layers would hide every effect
        torch.nn.init.normal_(p, std=0.5)
    return model.eval()


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """The shared token batch plus the long history and the candidate block."""
    g = torch.Generator().manual_seed(seed + 1)
    ids = torch.tensor([[2, 3, 4, 0, 0], [5, 0, 0, 0, 0], [0, 0, 0, 0, 0], [9, 8, 7, 6, 2]])
    return {
        **token_batch(seed),
        "history_long": torch.randint(0, 30, (B, 2 * sum(LONG)), generator=g),
        "contact": torch.randint(0, 256, (B, contact_width(W, 8)), generator=g),
        "item_ids": ids,
        "item_feats": torch.randint(0, 256, (B, M, N_ITEM_FEATURES), generator=g) * (ids > 0).unsqueeze(-1),
    }


@pytest.mark.parametrize("history", [True, False])
def test_fused_grids_stay_exact_with_candidate_terms(history: bool) -> None:
    model, batch = _model(history), _batch()
    with torch.no_grad():
        z = model.state(batch)
        assert_fused_grids_exact(model, z)
        ch, ct, sl = GRID_CH, GRID_CT, GRID_SL
        # Separable: logit(c, s, v) = base[c, s] + content_logits[c, v] (training.policy relies on it).
        base, query = model.response_table(z)
        full = base.unsqueeze(-1) + model.content_logits(z, query).unsqueeze(2)  # [B, C, 28, V]
        got = model.response_logit(z, ch, ct, sl)
        torch.testing.assert_close(full[torch.arange(B), ch, sl, ct], got)


def test_an_items_history_moves_only_that_items_scores() -> None:
    model, batch = _model(), _batch()
    ch, sl = torch.tensor([0, 3, 7, 2]), torch.tensor([1, 27, 4, 0])
    with torch.no_grad():
        before = model.response_logit_all_content(model.state(batch), ch, sl)
        changed = dict(batch, item_feats=batch["item_feats"].clone())
        changed["item_feats"][0, 0] = torch.tensor([0, 0, 5, 9, 20])  # item 2 for row 0: delivered today, often
        delta = model.response_logit_all_content(model.state(changed), ch, sl) - before
    assert delta[0, 2].abs() > 1e-4
    others = torch.ones_like(delta, dtype=torch.bool)
    others[0, 2] = False
    assert delta[others].abs().max() < 1e-5


def test_a_channels_recent_use_moves_only_that_channels_scores() -> None:
    model, batch = _model(), _batch()
    with torch.no_grad():
        z0 = model.state(batch)
        base0, _ = model.response_table(z0)
        changed = dict(batch, contact=batch["contact"].clone())
        changed["contact"][:, 6 * (1 + W) : 7 * (1 + W)] = torch.tensor([0, 3, 3, 3, 3])  # conference: used today, thrice
        base1, _ = model.response_table(model.state(changed))
    delta = (base1 - base0).abs().amax(-1)  # [B, C]
    assert (delta[:, 6] > 1e-4).all()
    assert delta[:, [0, 1, 2, 3, 4, 5, 7]].max() < 1e-5


def test_config_and_input_are_validated() -> None:
    with pytest.raises(ValueError, match="candidates"):
        ModelConfig(n_channels=8, n_content=V, n_static=S, candidates=(4,))
    cfg = ModelConfig(n_channels=8, n_content=V, n_static=S, candidates=(W, M))
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    batch = _batch()
    del batch["contact"]
    with pytest.raises(ValueError, match="candidate history"):
        _model().state(batch)


def test_days_code_is_monotone_and_saturates() -> None:
    codes = days_code(np.array([0.0, 1.0, 7.0, 30.0, 365.0, 1000.0, np.nan]))
    assert codes[0] == 0 and codes[4] == 255 and codes[5] == 255 and codes[6] == 255
    assert (np.diff(codes[:5].astype(int)) > 0).all()


@pytest.mark.slow
def test_a_trained_model_learns_that_a_repeated_item_lands_worse() -> None:
    # Directional behaviour test: in a world where an item delivered in the last four weeks gets a
    # fifth of its response, the trained response head scores a just-delivered item below a fresh one.
    from training.dataset import ContentVocab, StaticScaler, encode_frame, static_feature_columns
    from training.synthetic import synthetic_training_frame
    from training.train import fit

    frame = synthetic_training_frame(n_hcps=160, n_weeks=16, n_content=6, seed=3, repeat_penalty=0.8)
    vocab = ContentVocab.from_ids(frame["label_content_id"])
    scaler = StaticScaler.fit(frame, static_feature_columns(frame))
    data = encode_frame(frame, vocab, scaler, 16)
    torch.manual_seed(0)
    model = NextBestActionModel(
        ModelConfig(8, len(vocab), len(scaler.columns), d_model=16, n_layers=1, n_heads=2, dropout=0.0, max_seq_len=16, history=True, candidates=(4, 12))
    )
    weights = {"channel": 0.0, "content": 0.0, "slot": 0.0, "response": 1.0}
    fit(
        model,
        data,
        None,
        objective="naive",
        ips_clip=20.0,
        loss_weights=weights,
        lr=0.01,
        weight_decay=0.0,
        epochs=8,
        batch_size=256,
        seed=0,
        workers=1,
        progress=False,
    )
    model.eval()
    rows = np.flatnonzero(data.arrays["item_ids"][:, 0] > 0)[:200]
    batch = {k: torch.as_tensor(v[rows]).float() if v.dtype.kind == "f" else torch.as_tensor(v[rows].astype(np.int64)) for k, v in data.arrays.items()}
    with torch.no_grad():
        z = model.state(batch)
        scores = model.response_logit_all_content(z, batch["label_channel"], batch["label_slot"])  # [R, V]
    recent = torch.as_tensor(data.arrays["item_ids"][rows, 0].astype(np.int64))  # delivered last week
    fresh_mask = torch.ones_like(scores, dtype=torch.bool)
    fresh_mask[:, :2] = False
    for slot in range(12):
        ids = torch.as_tensor(data.arrays["item_ids"][rows, slot].astype(np.int64))
        days = torch.as_tensor(data.arrays["item_feats"][rows, slot, 0].astype(np.int64))
        fresh_mask[torch.arange(len(rows))[(ids > 0) & (days < days_code(np.array([40.0]))[0])], ids[(ids > 0) & (days < days_code(np.array([40.0]))[0])]] = (
            False
        )
    has_fresh = fresh_mask.any(1)
    repeated = scores.gather(1, recent.unsqueeze(1)).squeeze(1)[has_fresh]
    fresh = scores.masked_fill(~fresh_mask, float("nan")).nanmean(1)[has_fresh]
    assert has_fresh.sum() > 20
    assert (fresh - repeated).mean() > 0.3
