"""Network invariants: shapes, padding, causality, content masking, determinism by seed."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import LONG, B, L, S, V, assert_fused_grids_exact
from model_fixtures import token_batch as _batch

from training.model import N_SLOTS, ModelConfig, NextBestActionModel


def _model(encoder: str, seed: int = 0) -> NextBestActionModel:
    torch.manual_seed(seed)
    return NextBestActionModel(
        ModelConfig(n_channels=8, n_content=V, n_static=S, encoder=encoder, d_model=16, n_layers=2, n_heads=2, dropout=0.0, max_seq_len=L)
    ).eval()


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_head_shapes(encoder: str) -> None:
    out = _model(encoder)(_batch())
    assert out["state"].shape == (B, 16)
    assert out["channel"].shape == (B, 8)
    assert out["content"].shape == (B, V)
    assert out["slot"].shape == (B, N_SLOTS)
    assert out["response"].shape == (B,)
    assert torch.isfinite(out["channel"]).all() and torch.isfinite(out["response"]).all()


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_padding_never_changes_the_output(encoder: str) -> None:
    model, batch = _model(encoder), _batch()
    ref = model(batch)
    junk = dict(batch)
    pad = torch.arange(L)[None, :] >= batch["length"][:, None]
    for key in ("channel", "content", "response", "weekday", "daypart"):
        junk[key] = torch.where(pad, torch.ones_like(batch[key]), batch[key])  # real-looking tokens in the padding
    for key in ("gap_days", "read_seconds"):
        junk[key] = torch.where(pad, torch.full_like(batch[key], 99.0), batch[key])
    out = model(junk)
    for key in ("channel", "content", "slot", "response"):
        torch.testing.assert_close(out[key], ref[key])


@pytest.mark.parametrize("encoder", ["transformer", "gru"])
def test_position_t_never_sees_later_positions(encoder: str) -> None:
    model, batch = _model(encoder), _batch()
    batch["length"] = torch.full((B,), L)
    for key in ("channel", "content", "response", "weekday", "daypart"):
        batch[key] = batch[key].clamp_min(1)
    hidden = model.encode(batch)
    changed = dict(batch)
    changed["channel"] = batch["channel"].clone()
    changed["channel"][:, 3:] = batch["channel"][:, 3:] % 8 + 1  # rewrite touches 3.. (positions 4.. after the start token)
    after = model.encode(changed)
    torch.testing.assert_close(after[:, :4], hidden[:, :4])
    assert not torch.allclose(after[:, 4:], hidden[:, 4:])


def test_content_mask_removes_unapproved_items() -> None:
    model, batch = _model("transformer"), _batch()
    mask = torch.zeros(V, dtype=torch.bool)
    mask[[2, 5]] = True
    out = model(batch, content_mask=mask)
    allowed = torch.isfinite(out["content"])
    assert allowed.sum(-1).tolist() == [2] * B
    assert allowed[:, [2, 5]].all()
    per_row = torch.zeros(B, V, dtype=torch.bool)
    per_row[0, 3] = True
    per_row[1:, 4] = True
    best = model(batch, content_mask=per_row)["content"].argmax(-1)
    assert best.tolist() == [3, 4, 4, 4]
    assert not torch.isfinite(model(batch)["content"][:, 0]).any()  # padding id is never suggestible


def test_response_scores_candidate_grids_consistently() -> None:
    model, batch = _model("gru"), _batch()
    z = model.state(batch)
    ch = torch.tensor([[0, 3], [1, 2], [7, 7], [4, 5]])
    ct = torch.full((B, 2), 4)
    sl = torch.tensor([[0, 27], [5, 5], [1, 2], [3, 3]])
    grid = model.response_logit(z, ch, ct, sl)
    assert grid.shape == (B, 2)
    single = model.response_logit(z, ch[:, 1], ct[:, 1], sl[:, 1])
    torch.testing.assert_close(grid[:, 1], single)


def test_same_seed_same_weights_and_outputs() -> None:
    a, b, c = _model("transformer", 1), _model("transformer", 1), _model("transformer", 2)
    batch = _batch()
    torch.testing.assert_close(a(batch)["channel"], b(batch)["channel"])
    assert not torch.allclose(a(batch)["channel"], c(batch)["channel"])


def test_config_round_trip_and_errors() -> None:
    cfg = ModelConfig(n_channels=8, n_content=V, n_static=S, encoder="gru")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="encoder"):
        ModelConfig(n_channels=8, n_content=V, n_static=S, encoder="lstm")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(n_channels=8, n_content=V, n_static=S, d_model=10, n_heads=4)


def test_all_content_scores_match_one_by_one() -> None:
    model, batch = _model("transformer"), _batch()
    z = model.state(batch)
    ch, sl = torch.tensor([0, 3, 7, 2]), torch.tensor([1, 27, 4, 0])
    grid = model.response_logit_all_content(z, ch, sl)
    assert grid.shape == (B, V)
    one = model.response_logit(z, ch.unsqueeze(1).expand(-1, V), torch.arange(V).expand(B, -1), sl.unsqueeze(1).expand(-1, V))
    torch.testing.assert_close(grid, one)


@pytest.mark.parametrize("history", [False, True])
def test_all_slot_scores_match_one_by_one(history: bool) -> None:
    torch.manual_seed(1)
    model = NextBestActionModel(
        ModelConfig(n_channels=8, n_content=V, n_static=S, d_model=16, n_layers=1, n_heads=2, dropout=0.0, max_seq_len=L, history=history)
    ).eval()
    batch = _batch()
    z = model.state(batch)
    ch, ct = torch.tensor([0, 3, 7, 2]), torch.tensor([2, 1, 5, V - 1])
    grid = model.response_logit_all_slots(z, ch, ct)
    assert grid.shape == (B, N_SLOTS)
    one = model.response_logit(z, ch.unsqueeze(1).expand(-1, N_SLOTS), ct.unsqueeze(1).expand(-1, N_SLOTS), torch.arange(N_SLOTS).expand(B, -1))
    torch.testing.assert_close(grid, one)


def _tagged(seed: int = 0) -> NextBestActionModel:
    torch.manual_seed(seed)
    model = NextBestActionModel(
        ModelConfig(
            n_channels=8, n_content=V, n_static=S, d_model=16, n_layers=1, n_heads=2, dropout=0.0, max_seq_len=L, history=True, content_attributes=(3, 2)
        )
    )
    codes = torch.zeros(V, 2, dtype=torch.long)
    codes[2:, 0] = torch.tensor([1, 1, 2, 2, 3, 3, 1, 0])  # items 2 and 3 share topic 1; item 9 is untagged
    codes[2:, 1] = torch.tensor([1, 2, 1, 2, 1, 2, 1, 2])
    model.set_content_attributes(codes)
    return model.eval()


def test_content_tags_tie_items_that_share_them() -> None:
    model = _tagged()
    table = model.content_table()
    torch.testing.assert_close(table[0], torch.zeros(16))  # padding stays a zero vector, tags or not
    with torch.no_grad():
        model.content.tag_emb[0].weight[1] += 1.0  # move topic 1 only
    moved = (model.content_table() - table).norm(dim=1)
    assert torch.all(moved[[2, 3, 8]] > 0) and torch.all(moved[[0, 1, 4, 5, 6, 7, 9]] == 0)
    # Tags change scores the same way everywhere: the fused grids still match one-by-one scoring.
    batch = _batch()
    z = model.state(batch)
    ch, sl = torch.tensor([0, 3, 7, 2]), torch.tensor([1, 27, 4, 0])
    one = model.response_logit(z, ch.unsqueeze(1).expand(-1, V), torch.arange(V).expand(B, -1), sl.unsqueeze(1).expand(-1, V))
    torch.testing.assert_close(model.response_logit_all_content(z, ch, sl), one)


def test_content_tag_codes_are_validated() -> None:
    model = _tagged()
    with pytest.raises(ValueError, match="expected shape"):
        model.set_content_attributes(torch.zeros(V - 1, 2, dtype=torch.long))
    bad = torch.zeros(V, 2, dtype=torch.long)
    bad[3, 1] = 3  # attribute 1 has 2 values: codes 0..2
    with pytest.raises(ValueError, match="out of range"):
        model.set_content_attributes(bad)
    cfg = ModelConfig.from_dict(model.config.to_dict() | {"content_attributes": [3, 2]})  # JSON gives lists
    assert cfg == model.config


def _long_model(seed: int = 0) -> NextBestActionModel:
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
            history=True,
            content_attributes=(6, 2),
            long_history=LONG,
        )
    )
    codes = torch.zeros(V, 2, dtype=torch.long)
    codes[2:, 0] = torch.tensor([1, 1, 2, 2, 3, 3, 4, 0])
    model.set_content_attributes(codes)
    return model.eval()


def _long_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    batch = _batch(seed)
    batch["history_long"] = torch.randint(0, 30, (B, 2 * sum(LONG)), generator=torch.Generator().manual_seed(seed))
    return batch


def test_long_history_keeps_the_fused_grids_exact() -> None:
    model, batch = _long_model(), _long_batch()
    z = model.state(batch)
    assert_fused_grids_exact(model, z)


def test_long_history_blocks_reach_the_scores_they_describe() -> None:
    model, batch = _long_model(), _long_batch()
    ch, sl = torch.tensor([0, 3, 7, 2]), torch.tensor([1, 27, 4, 0])
    with torch.no_grad():
        base = model.response_logit_all_content(model.state(batch), ch, sl)
        topic = dict(batch, history_long=batch["history_long"].clone())
        topic["history_long"][:, 2 * (8 + 7 + 4) + 6] += 20  # opened count of topic code 1 (items 2 and 3)
        moved = model.response_logit_all_content(model.state(topic), ch, sl) - base
        # A topic record steers the content query, so the content scores move.
        assert moved[:, 2:].abs().max() > 1e-4
        weekday = dict(batch, history_long=batch["history_long"].clone())
        weekday["history_long"][:, 2 * 8 + 7 + 2] += 20  # opened count on Wednesdays
        ct = torch.tensor([2, 2, 2, 2])
        delta = model.response_logit_all_slots(model.state(weekday), ch, ct) - model.response_logit_all_slots(model.state(batch), ch, ct)
    assert delta.abs().max() > 1e-4
    with pytest.raises(ValueError, match="response-history counts"):
        model.state(_batch())


def test_long_history_config_is_validated() -> None:
    with pytest.raises(ValueError, match="long_history"):
        ModelConfig(n_channels=8, n_content=V, n_static=S, history=False, long_history=LONG)
    with pytest.raises(ValueError, match="long_history"):
        ModelConfig(n_channels=8, n_content=V, n_static=S, history=True, long_history=(8, 7, 6))
    cfg = ModelConfig(n_channels=8, n_content=V, n_static=S, history=True, long_history=LONG)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "history,long_history,tags,candidates",
    [
        (False, False, False, False),
        (True, False, False, False),
        (True, True, False, False),
        (False, False, True, False),
        (False, False, False, True),
        (True, True, True, True),
    ],
)
def test_a_model_holds_only_the_modules_its_config_asks_for(history: bool, long_history: bool, tags: bool, candidates: bool) -> None:
    from training.model import (
        N_HISTORY_FEATURES,
        N_LONG_HISTORY_FEATURES,
        N_RELATIVE_TIMING_FEATURES,
        CandidateTerms,
        ContentTable,
        HistoryTerms,
        PolicyHeads,
        ResponseHead,
        StateEncoder,
    )

    cfg = ModelConfig(
        n_channels=8,
        n_content=V,
        n_static=S,
        d_model=16,
        n_layers=1,
        n_heads=2,
        dropout=0.0,
        max_seq_len=L,
        history=history,
        content_attributes=(6, 5) if tags else (),
        long_history=LONG if long_history else (),
        candidates=(4, 5) if candidates else (),
    )
    model = NextBestActionModel(cfg)
    present = {name: type(module) for name, module in model.named_children()}
    expected = {"content": ContentTable, "encoder": StateEncoder, "policy": PolicyHeads, "response": ResponseHead}
    if history:
        expected["history"] = HistoryTerms
    if candidates:
        expected["candidates"] = CandidateTerms
    assert present == expected
    assert (model.history is None) is not history and (model.candidates is None) is not candidates
    # Switched-off parts leave no weights behind: no tag embeddings or codes, no long-history or topic layers.
    keys = set(model.state_dict())
    assert any(k.startswith("content.tag_emb.") for k in keys) is tags and ("content.codes" in keys) is tags
    assert ("history.topic_query.weight" in keys) is long_history
    assert all(k.split(".")[0] in expected for k in keys)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for m in model.children() for p in m.parameters())
    if history:  # the history MLP reads the long-history triples (and relative rates) only when they are there
        relative = N_RELATIVE_TIMING_FEATURES if long_history and cfg.relative_rates else 0
        assert model.history.mlp[0].in_features == 2 * 16 + N_HISTORY_FEATURES + (N_LONG_HISTORY_FEATURES if long_history else 0) + relative
        assert (model.history.topic_mlp is not None) is bool(long_history and cfg.relative_rates)
    # The state carries exactly the blocks the modules read: [B, D + history record + candidate terms (C + V)].
    width = 16 + (model.history.width if history else 0) + (model.candidates.width(model.config.n_content) if candidates else 0)
    assert model.history_width == (model.history.width if history else 0)
    batch = _batch()
    batch["history_long"] = torch.zeros(B, 2 * sum(LONG), dtype=torch.long)
    if candidates:
        from training.model.candidates import N_ITEM_FEATURES, contact_width

        batch |= {
            "contact": torch.zeros(B, contact_width(4, 8), dtype=torch.long),
            "item_ids": torch.zeros(B, 5, dtype=torch.long),
            "item_feats": torch.zeros(B, 5, N_ITEM_FEATURES, dtype=torch.long),
        }
    assert model.state(batch).shape == (B, width)
    assert (model.item_logits(model.state(batch)) is None) is not candidates
