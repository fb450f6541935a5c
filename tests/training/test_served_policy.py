"""The served policy per logged decision: exact first-pick probabilities, feasible first, support."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from training.model import ModelConfig, NextBestActionModel
from training.served_policy import first_pick_probabilities, product_support, served_policy_rows, support_rows


def _model(vocab, scaler) -> NextBestActionModel:
    torch.manual_seed(1)
    return NextBestActionModel(ModelConfig(8, len(vocab), len(scaler.columns), "gru", 16, 1, 2, 0.0, 8)).eval()


def test_first_pick_probabilities_hand_computed() -> None:
    inf = -np.inf
    score = np.array([[0.1, 0.9, 0.5, inf], [inf, inf, 0.2, inf], [inf, inf, inf, inf], [1.0, 1.0, 0.0, -1.0]])
    p = first_pick_probabilities(score, epsilon=0.3, top_m=2)
    # Row 0: ranks 1 > 2 > 0; m=2: best gets 0.7 + 0.15, second 0.15, others 0.
    np.testing.assert_allclose(p[0], [0.0, 0.85, 0.15, 0.0])
    # Row 1: one channel allowed: no exploration, it is served for sure.
    np.testing.assert_allclose(p[1], [0.0, 0.0, 1.0, 0.0])
    # Row 2: nothing allowed: nothing served.
    np.testing.assert_allclose(p[2], 0.0)
    # Row 3: a tie ranks in channel order (stable), like serving's choose_slate.
    np.testing.assert_allclose(p[3], [0.85, 0.15, 0.0, 0.0])
    np.testing.assert_allclose(p[:2].sum(1), 1.0)


def test_served_rows_are_feasible_first_and_exact(encoded) -> None:
    data, vocab, scaler = encoded
    model = _model(vocab, scaler)
    n, v = len(data), model.config.n_content
    rng = np.random.default_rng(0)
    channel_allowed = rng.random((n, 8)) < 0.6
    item_allowed = rng.random((n, v)) < 0.7
    rows = served_policy_rows(model, data, 32, epsilon=0.1, top_m=3, channel_allowed=channel_allowed, item_allowed=item_allowed, working_hours=False)
    ok = rows["any_feasible"]
    assert ok.any()
    ch, ct = rows["chosen_channel"][ok], rows["chosen_content"][ok]
    # Nothing infeasible is ever chosen first.
    assert channel_allowed[np.flatnonzero(ok), ch].all()
    real = ct != 1
    assert item_allowed[np.flatnonzero(ok)[real], ct[real]].all()
    # pi of the logged action is 0 where the logged action was infeasible, and a valid probability elsewhere.
    assert (rows["pi_logged"][~rows["feasible_logged"]] == 0).all()
    assert ((rows["pi_logged"] >= 0) & (rows["pi_logged"] <= 1)).all()
    assert ((rows["q_target"] >= 0) & (rows["q_target"] <= 1)).all()
    np.testing.assert_allclose(rows["support_mass"], 1.0)
    assert list(rows["hcp_id"]) == list(data.hcp_id)


def test_greedy_target_puts_all_mass_on_the_best_feasible_action(encoded) -> None:
    data, vocab, scaler = encoded
    model = _model(vocab, scaler)
    sub = data.subset(np.arange(16))
    rows = served_policy_rows(model, sub, 8, epsilon=0.0, top_m=3, working_hours=False)
    batch = next(sub.batches(16))
    with torch.no_grad():
        z = model.state(batch)
        logits = torch.stack([model.response_logit_all_content(z, torch.full((16,), c), batch["label_slot"].long()) for c in range(8)], 1)
    logits[:, :, 0] = float("-inf")  # padding never
    logits[:, :, 1] = float("-inf")  # real items exist, so NONE is not offered
    flat = logits.reshape(16, -1).argmax(-1)
    np.testing.assert_array_equal(rows["chosen_channel"], (flat // logits.shape[2]).numpy())
    np.testing.assert_array_equal(rows["chosen_content"], (flat % logits.shape[2]).numpy())
    hit = (rows["chosen_channel"] == sub.arrays["label_channel"]) & (rows["chosen_content"] == sub.arrays["label_content"])
    np.testing.assert_array_equal(rows["pi_logged"], hit.astype(float))
    # The greedy target's expected response is its chosen action's.
    q = torch.sigmoid(logits.reshape(16, -1).max(-1).values).double().numpy()
    np.testing.assert_allclose(rows["q_target"], q, rtol=1e-5)


def test_support_mass_counts_only_pairs_the_reps_logged_for_the_product(encoded) -> None:
    data, vocab, scaler = encoded
    model = _model(vocab, scaler)
    products = pd.Series({h: ("P1" if i % 2 else "P2") for i, h in enumerate(pd.unique(data.hcp_id))})
    by_product, union = product_support(data, products, 8, model.config.n_content)
    assert set(by_product) == {"P1", "P2"} and (union >= by_product["P1"]).all()
    codes, tables = support_rows(by_product, union, products, data.hcp_id)
    rows = served_policy_rows(model, data, 64, epsilon=0.2, top_m=3, working_hours=False, support=(codes, tables))
    assert ((rows["support_mass"] >= 0) & (rows["support_mass"] <= 1 + 1e-9)).all()
    # A feasible logged action is always a supported pair: the reps logged it.
    feasible = rows["feasible_logged"] & (rows["pi_logged"] > 0)
    assert (rows["support_mass"][feasible] > 0).all()
    none = served_policy_rows(model, data, 64, epsilon=0.2, top_m=3, working_hours=False, support=np.zeros((8, model.config.n_content), bool))
    np.testing.assert_allclose(none["support_mass"], 0.0)
