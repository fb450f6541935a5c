"""Training objectives that correct for the behaviour policy that produced the logs.

Logged touches are what reps chose, not what works: imitating them (``naive``) learns the reps'
habits. ``ips`` reweights every row by its clipped inverse logged propensity, so actions reps
rarely take count as much as frequent ones, and trains each head towards the actions that drew
a positive response. ``dr`` trains the heads on a doubly robust estimate of their value: the
response model's prediction for every alternative plus the propensity-weighted residual on the
logged one. Rows without a logged propensity get the batch's mean weight: no correction, no
domination.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def inverse_propensity(propensity: Tensor, clip: float) -> Tensor:
    """min(1/p, clip) per row; rows with unknown (NaN) propensity get the mean known weight."""
    known = ~torch.isnan(propensity)
    w = torch.where(known, 1.0 / propensity.clamp_min(1.0 / clip), torch.zeros_like(propensity))
    fill = w[known].mean() if known.any() else torch.ones((), dtype=w.dtype, device=w.device)
    return torch.where(known, w, fill)


def weighted_cross_entropy(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Self-normalised weighted cross-entropy: sum(w * CE) / sum(w)."""
    ce = F.cross_entropy(logits, target, reduction="none")
    return (weight * ce).sum() / weight.sum().clamp_min(1e-12)


def weighted_bce(logits: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Self-normalised weighted binary cross-entropy on logits."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return (weight * bce).sum() / weight.sum().clamp_min(1e-12)


def ips_policy_loss(logits: Tensor, action: Tensor, reward: Tensor, weight: Tensor) -> Tensor:
    """Negative self-normalised IPS value surrogate: -sum(w r log pi(a)) / sum(w)."""
    logp = F.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1)).squeeze(-1)
    return -(weight * reward * logp).sum() / weight.sum().clamp_min(1e-12)


def dr_policy_loss(logits: Tensor, action: Tensor, reward: Tensor, weight: Tensor, q_all: Tensor) -> Tensor:
    """Negative doubly robust value of softmax(logits): DM term over all actions + weighted residual.

    ``q_all`` [B, K] holds the response model's predicted reward for each alternative (held
    fixed: gradients flow only into the policy); ``weight`` is normalised to mean 1 in the batch.
    """
    probs = F.softmax(logits, -1)
    q_all = q_all.detach()
    direct = (probs * torch.nan_to_num(q_all, nan=0.0)).sum(-1)  # unreachable actions (-inf logits) have prob 0
    q_logged = q_all.gather(-1, action.unsqueeze(-1)).squeeze(-1)
    p_logged = probs.gather(-1, action.unsqueeze(-1)).squeeze(-1)
    w = weight / weight.mean().clamp_min(1e-12)
    return -(direct + p_logged * w * (reward - q_logged)).mean()


# The loss parts training_loss reports, for every objective.
PART_NAMES = ("response", "channel", "content", "slot")


def training_loss(
    model: Any, batch: dict[str, Tensor], objective: str, clip: float, weights: dict[str, float], *, response_weighting: str | None = None
) -> tuple[Tensor, dict[str, float]]:
    """Total multi-head loss for one batch under ``objective`` (naive | ips | dr), and its parts.

    ``response_weighting`` (none | ips) weights the response head's loss; None follows the
    objective (ips unless naive).
    """
    total, parts = loss_tensors(model, batch, objective, clip, weights, response_weighting)
    return total, {k: float(v.detach()) for k, v in parts.items()}


def loss_tensors(
    model: Any, batch: dict[str, Tensor], objective: str, clip: float, weights: dict[str, float], response_weighting: str | None = None
) -> tuple[Tensor, dict[str, Tensor]]:
    """``training_loss`` with its parts left as tensors: no host sync, so torch.compile sees one graph."""
    out = model(batch)
    r = batch["label_response"]
    a_ch, a_ct, a_sl = batch["label_channel"], batch["label_content"], batch["label_slot"]
    ones = torch.ones_like(r)
    ipw = inverse_propensity(batch["propensity"], clip)
    w = ones if objective == "naive" else ipw
    by_name = {None: w, "none": ones, "ips": ipw}
    if response_weighting not in by_name:
        raise ValueError(f"loss.response_weighting must be none or ips, got {response_weighting!r}")
    w_response = by_name[response_weighting]
    parts: dict[str, Tensor] = {"response": weighted_bce(out["response"], r, w_response)}
    if objective == "naive":
        parts["channel"] = weighted_cross_entropy(out["channel"], a_ch, ones)
        parts["content"] = weighted_cross_entropy(out["content"], a_ct, ones)
        parts["slot"] = weighted_cross_entropy(out["slot"], a_sl, ones)
    elif objective == "ips":
        parts["channel"] = ips_policy_loss(out["channel"], a_ch, r, w)
        parts["content"] = ips_policy_loss(out["content"], a_ct, r, w)
        parts["slot"] = ips_policy_loss(out["slot"], a_sl, r, w)
    elif objective == "dr":
        z = out["state"].detach()
        b = z.shape[0]
        dev = z.device
        with torch.no_grad():
            q_ch = torch.sigmoid(
                model.response_logit(
                    z,
                    torch.arange(model.config.n_channels, device=dev).expand(b, -1),
                    a_ct.unsqueeze(1).expand(-1, model.config.n_channels),
                    a_sl.unsqueeze(1).expand(-1, model.config.n_channels),
                )
            )
            q_ct = torch.sigmoid(model.response_logit_all_content(z, a_ch, a_sl))
            q_sl = torch.sigmoid(model.response_logit_all_slots(z, a_ch, a_ct))
        parts["channel"] = dr_policy_loss(out["channel"], a_ch, r, w, q_ch)
        parts["content"] = dr_policy_loss(out["content"], a_ct, r, w, q_ct)
        parts["slot"] = dr_policy_loss(out["slot"], a_sl, r, w, q_sl)
    else:
        raise ValueError(f"loss.objective must be naive, ips or dr, got {objective!r}")
    total = sum(weights.get(k, 1.0) * v for k, v in parts.items())
    return total, parts
