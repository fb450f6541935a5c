"""Propensity-corrected objectives: weights, hand-computed values, and what they learn."""

from __future__ import annotations

import math

import pytest
import torch

from training import losses


def test_inverse_propensity_clips_and_fills_unknown() -> None:
    w = losses.inverse_propensity(torch.tensor([0.5, 0.01, float("nan"), 0.25]), clip=20.0)
    # 1/0.5 = 2, 1/0.01 clipped to 20, 1/0.25 = 4; unknown gets the mean known weight (26/3)
    torch.testing.assert_close(w, torch.tensor([2.0, 20.0, 26.0 / 3.0, 4.0]))
    assert losses.inverse_propensity(torch.tensor([float("nan")]), 5.0).item() == 1.0


def test_ips_policy_loss_by_hand() -> None:
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # pi = [.5, .5] and [.75, .25]
    action, reward, weight = torch.tensor([0, 1]), torch.tensor([1.0, 1.0]), torch.tensor([2.0, 4.0])
    expected = -(2 * math.log(0.5) + 4 * math.log(0.25)) / 6
    assert losses.ips_policy_loss(logits, action, reward, weight).item() == pytest.approx(expected, rel=1e-6)
    # a zero reward contributes nothing to the gradient
    logits.requires_grad_(True)
    losses.ips_policy_loss(logits, action, torch.tensor([0.0, 1.0]), weight).backward()
    assert logits.grad[0].abs().sum() == 0 and logits.grad[1].abs().sum() > 0


def test_dr_loss_by_hand_and_with_a_perfect_model() -> None:
    logits = torch.tensor([[math.log(3.0), 0.0]])  # pi = [.75, .25]
    q = torch.tensor([[0.2, 0.6]])
    # DM = .75*.2 + .25*.6 = .3 ; residual on logged action 1 with w normalised to 1: .25 * (1 - .6) = .1
    value = -losses.dr_policy_loss(logits, torch.tensor([1]), torch.tensor([1.0]), torch.tensor([5.0]), q)
    assert value.item() == pytest.approx(0.4)
    # when the reward model is exact (r == q on the logged action) DR reduces to the direct method
    value = -losses.dr_policy_loss(logits, torch.tensor([1]), torch.tensor([0.6]), torch.tensor([5.0]), q)
    assert value.item() == pytest.approx(0.3)


def test_ips_undoes_the_logging_bias_that_naive_imitation_learns() -> None:
    # Behaviour logs action 0 90% of the time; action 1 has the higher reward (0.6 vs 0.3).
    n = 4000
    g = torch.Generator().manual_seed(0)
    action = (torch.rand(n, generator=g) > 0.9).long()
    propensity = torch.where(action == 0, 0.9, 0.1)
    reward = (torch.rand(n, generator=g) < torch.where(action == 0, 0.3, 0.6)).float()
    results = {}
    for objective in ("naive", "ips"):
        logits = torch.zeros(1, 2, requires_grad=True)
        opt = torch.optim.SGD([logits], lr=0.5)
        for _ in range(300):
            opt.zero_grad()
            full = logits.expand(n, 2)
            if objective == "naive":
                loss = losses.weighted_cross_entropy(full, action, torch.ones(n))
            else:
                loss = losses.ips_policy_loss(full, action, reward, losses.inverse_propensity(propensity, 20.0))
            loss.backward()
            opt.step()
        results[objective] = torch.softmax(logits, -1)[0, 1].item()
    assert results["naive"] < 0.2  # copies the reps' habit
    assert results["ips"] > 0.6  # prefers the action that works


def test_unknown_objective_is_named() -> None:
    with pytest.raises(ValueError, match="loss.objective"):
        losses.training_loss(
            lambda b: {"response": torch.zeros(1)},
            {
                "label_response": torch.zeros(1),
                "label_channel": torch.zeros(1, dtype=torch.long),
                "label_content": torch.zeros(1, dtype=torch.long),
                "label_slot": torch.zeros(1, dtype=torch.long),
                "propensity": torch.ones(1),
            },
            "bogus",
            10.0,
            {},
        )


def test_response_weighting_is_separate_from_the_policy_objective() -> None:
    logit = torch.tensor([0.0, 0.0, 2.0])
    batch = {
        "label_response": torch.tensor([1.0, 0.0, 1.0]),
        "label_channel": torch.zeros(3, dtype=torch.long),
        "label_content": torch.zeros(3, dtype=torch.long),
        "label_slot": torch.zeros(3, dtype=torch.long),
        "propensity": torch.tensor([0.5, 0.1, 0.25]),
    }
    model = lambda b: {"response": logit, "channel": torch.zeros(3, 2), "content": torch.zeros(3, 2), "slot": torch.zeros(3, 2)}  # noqa: E731
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logit, batch["label_response"], reduction="none")
    _, none = losses.training_loss(model, batch, "ips", 20.0, {}, response_weighting="none")
    assert none["response"] == pytest.approx(float(bce.mean()), rel=1e-6)  # every touch counts once
    _, ips = losses.training_loss(model, batch, "naive", 20.0, {}, response_weighting="ips")
    w = torch.tensor([2.0, 10.0, 4.0])
    assert ips["response"] == pytest.approx(float((w * bce).sum() / w.sum()), rel=1e-6)
    _, follows = losses.training_loss(model, batch, "ips", 20.0, {})  # None: the objective decides (ips)
    assert follows["response"] == pytest.approx(ips["response"], rel=1e-6)
    with pytest.raises(ValueError, match="response_weighting"):
        losses.training_loss(model, batch, "ips", 20.0, {}, response_weighting="dr")
