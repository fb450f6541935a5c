"""Empirical-Bayes relative rates (ModelConfig.relative_rates): the arithmetic, shapes, bundle compatibility, and a tiny trained model."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import LONG, B, L, S, V, assert_fused_grids_exact
from model_fixtures import token_batch as _batch

from training.model import N_DAYPARTS, N_SLOTS, ModelConfig, NextBestActionModel
from training.model.history import overall_rate, relative_rate

TOPIC_CODES = [1, 1, 2, 2, 3, 3, 4, 0]  # items 2..9; the last is untagged
# Offsets of the long-history blocks in batch["history_long"]: sent then opened per block.
WD_SENT, WD_OPEN = 2 * 8, 2 * 8 + 7
TOPIC_SENT, TOPIC_OPEN = 2 * (8 + 7 + 4), 2 * (8 + 7 + 4) + 6


def _model(relative: bool = True, seed: int = 0, d: int = 16) -> NextBestActionModel:
    torch.manual_seed(seed)
    cfg = ModelConfig(
        n_channels=8,
        n_content=V,
        n_static=S,
        d_model=d,
        n_layers=1,
        n_heads=2,
        dropout=0.0,
        max_seq_len=L,
        history=True,
        content_attributes=(6, 2),
        long_history=LONG,
        relative_rates=relative,
    )
    model = NextBestActionModel(cfg)
    codes = torch.zeros(V, 2, dtype=torch.long)
    codes[2:, 0] = torch.tensor(TOPIC_CODES)
    model.set_content_attributes(codes)
    return model.eval()


def _long_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    batch = _batch(seed)
    batch["history_long"] = torch.randint(0, 30, (B, 2 * sum(LONG)), generator=torch.Generator().manual_seed(seed))
    return batch


def test_relative_rate_is_zero_at_the_average_and_shrinks_small_samples() -> None:
    rate = torch.tensor(0.25)
    at_average = relative_rate(torch.tensor([8.0, 80.0]), torch.tensor([2.0, 20.0]), rate)
    assert all(torch.allclose(x, torch.zeros(2)) for x in at_average)
    # Twice the average rate: positive, and larger with more touches behind it (less shrinkage).
    few, many = (relative_rate(torch.tensor(n), torch.tensor(n / 2), rate) for n in (4.0, 40.0))
    assert 0 < few[0] < many[0] and 0 < few[1] < many[1]
    below = relative_rate(torch.tensor(40.0), torch.tensor(2.0), rate)
    assert below[0] < 0 and below[1] < 0
    # The HCP's own overall rate: a weak prior of 1 in 4 for an HCP with no touches.
    assert torch.allclose(overall_rate(torch.zeros(1, 3), torch.zeros(1, 3)), torch.tensor([[0.25]]))
    assert torch.allclose(overall_rate(torch.tensor([[10.0, 10.0]]), torch.tensor([[5.0, 5.0]])), torch.tensor([[11.0 / 24.0]]))


def test_relative_terms_keep_shapes_and_fused_grids_exact() -> None:
    from training.model import N_HISTORY_FEATURES, N_LONG_HISTORY_FEATURES, N_RELATIVE_TIMING_FEATURES

    model, batch = _model(), _long_batch()
    assert model.history.mlp[0].in_features == 2 * 16 + N_HISTORY_FEATURES + N_LONG_HISTORY_FEATURES + N_RELATIVE_TIMING_FEATURES
    with torch.no_grad():
        model.history.topic_mlp[-1].bias.fill_(0.3)  # a non-zero topic term, so the grids are checked with it
        z = model.state(batch)
        assert z.shape == (B, 16 + model.history.width)  # no new state columns: the terms read the record
        items = model.item_logits(z)
        assert items.shape == (B, V)
        assert torch.all(items[:, -1] == 0) and torch.all(items[:, :2] == 0)  # untagged, pad and none items get no topic term
        assert_fused_grids_exact(model, z)
        out = model(batch)
    assert out["response"].shape == (B,) and torch.isfinite(out["response"]).all()


def test_untrained_topic_term_is_zero_and_switched_off_models_have_none() -> None:
    model, batch = _model(), _long_batch()
    with torch.no_grad():
        assert torch.all(model.item_logits(model.state(batch)) == 0)
    assert "history.topic_mlp.0.weight" in model.state_dict()
    off = _model(relative=False)
    assert off.history.topic_mlp is None and off.item_logits(off.state(batch)) is None
    assert not any("topic_mlp" in k for k in off.state_dict())
    # Without the long history there is nothing to be relative to: the flag has no effect.
    short = NextBestActionModel(ModelConfig(n_channels=8, n_content=V, n_static=S, d_model=16, n_heads=2, history=True, relative_rates=True))
    assert short.history.topic_mlp is None


def test_bundles_saved_before_the_field_load_with_it_off() -> None:
    cfg = _model().config
    old = {k: v for k, v in cfg.to_dict().items() if k != "relative_rates"}
    assert ModelConfig.from_dict(old).relative_rates is False
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def _taste_data(n: int, seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Rows whose response depends on a preferred topic (1 or 2) and weekday (1 or 4) that only the year's counts show."""
    g = torch.Generator().manual_seed(seed)
    batch = {k: v.repeat((n + B - 1) // B, *([1] * (v.dim() - 1)))[:n] for k, v in _batch(seed).items()}
    pref_topic = torch.randint(1, 3, (n,), generator=g)
    pref_day = torch.where(torch.rand(n, generator=g) < 0.5, 1, 4)
    hist = torch.zeros(n, 2 * sum(LONG), dtype=torch.long)
    hist[:, :8] = 6  # 6 touches per channel, 2 opened
    hist[:, 8:16] = 2
    hist[:, WD_SENT : WD_SENT + 7] = 6
    hist[:, WD_OPEN : WD_OPEN + 7] = 1
    hist[torch.arange(n), WD_OPEN + pref_day] = 5
    hist[:, TOPIC_SENT : TOPIC_SENT + 6] = 8
    hist[:, TOPIC_OPEN : TOPIC_OPEN + 6] = 1
    hist[torch.arange(n), TOPIC_OPEN + pref_topic - 1] = 6
    batch["history_long"] = hist
    content = torch.randint(2, 6, (n,), generator=g)  # items 2, 3 (topic 1), 4, 5 (topic 2)
    slot = torch.randint(0, N_SLOTS, (n,), generator=g)
    topic = torch.tensor([0, 0, *TOPIC_CODES])[content]
    logit = -1.5 + 2.0 * (topic == pref_topic) + 1.5 * (slot // N_DAYPARTS == pref_day)
    batch |= {"label_channel": torch.randint(0, 8, (n,), generator=g), "label_content": content, "label_slot": slot}
    y = (torch.rand(n, generator=g) < torch.sigmoid(logit)).float()
    return batch, y, torch.stack([pref_topic, pref_day], 1)


def test_a_tiny_trained_model_follows_each_hcps_relative_record() -> None:
    torch.set_num_threads(1)  # tiny ops: more threads only contend
    model = _model(seed=1, d=8).train()
    batch, y, _ = _taste_data(2048, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for step in range(60):
        rows = torch.randperm(len(y), generator=torch.Generator().manual_seed(step))[:256]
        part = {k: v[rows] for k, v in batch.items()}
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(part)["response"], y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test, _, pref = _taste_data(400, seed=1)
    with torch.no_grad():
        z = model.state(test)
        ch = torch.zeros(len(pref), dtype=torch.long)
        items = model.response_logit_all_content(z, ch, torch.full_like(ch, 8))  # [N, V]
        topic_gap = items[:, 2:4].mean(1) - items[:, 4:6].mean(1)  # topic 1 items minus topic 2 items
        slots = model.response_logit_all_slots(z, ch, torch.full_like(ch, 2))  # [N, 28]
        own = model.item_logits(z)  # the topic term alone, without the content query's share
        own_gap = own[:, 2:4].mean(1) - own[:, 4:6].mean(1)
        day_gap = slots[:, N_DAYPARTS : 2 * N_DAYPARTS].mean(1) - slots[:, 4 * N_DAYPARTS : 5 * N_DAYPARTS].mean(1)  # day 1 minus day 4
    likes_1, likes_day_1 = pref[:, 0] == 1, pref[:, 1] == 1
    print(f"own {own_gap[likes_1].mean():.2f} / {own_gap[~likes_1].mean():.2f}")
    print(
        f"topic gap {topic_gap[likes_1].mean():.2f} / {topic_gap[~likes_1].mean():.2f}, day gap {day_gap[likes_day_1].mean():.2f} / {day_gap[~likes_day_1].mean():.2f}"
    )
    assert topic_gap[likes_1].mean() > 0.3 and topic_gap[~likes_1].mean() < -0.3
    assert own_gap[likes_1].mean() > 0.1 and own_gap[~likes_1].mean() < -0.1  # the relative term itself learnt the taste
    assert day_gap[likes_day_1].mean() > 0.3 and day_gap[~likes_day_1].mean() < -0.3


@pytest.mark.parametrize("relative", [False, True])
def test_config_round_trip(relative: bool) -> None:
    cfg = _model(relative).config
    assert ModelConfig.from_dict(cfg.to_dict()).relative_rates is relative


@pytest.mark.parametrize("relative", [True, False])
def test_the_training_config_key_reaches_the_model(relative: bool) -> None:
    """``training.model.relative_rates`` (configs/training.yaml, --set) decides whether the built model has the terms."""
    from nba.configuration import load_config
    from training.config import TrainingConfig
    from training.jobs import build_model

    cfg = load_config(TrainingConfig, "training", overrides={"model": {"relative_rates": relative}})
    model = build_model(cfg, n_content=12, n_static=4, response_history=True)
    assert model.config.relative_rates is relative
    assert model.history is not None and model.history.relative is relative
