"""Baselines measured beside the model in every evaluation: popularity and a non-sequential model.

(The logged behaviour policy and the brief's rule-based engine live in ``simulator.policies``
and are run in the environment by the simulator's judge, ``experiments.sim_judge``.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.schema import CHANNELS
from training.dataset import EncodedData
from training.model import N_SLOTS


@dataclass
class Popularity:
    """What was logged most, and the response rate per channel, from the training weeks."""

    channel_probs: np.ndarray  # [C]
    content_counts: np.ndarray  # [V]
    slot_probs: np.ndarray  # [28]
    channel_slot_counts: np.ndarray  # [C, 28]
    channel_response_rate: np.ndarray  # [C]

    @classmethod
    def fit(cls, data: EncodedData, n_content: int) -> Popularity:
        """Counts over the training rows (add-one smoothed)."""
        a = data.arrays
        ch = a["label_channel"].astype(np.int64)
        n_ch = len(CHANNELS)
        ch_counts = np.bincount(ch, minlength=n_ch) + 1.0
        pos = np.bincount(ch, weights=a["label_response"], minlength=n_ch)
        slots = a["label_slot"].astype(np.int64)
        cs = np.zeros((n_ch, N_SLOTS))
        np.add.at(cs, (ch, slots), 1.0)
        return cls(
            ch_counts / ch_counts.sum(),
            np.bincount(a["label_content"].astype(np.int64), minlength=n_content).astype(np.float64),
            (cs.sum(0) + 1.0) / (cs.sum() + N_SLOTS),
            cs,
            (pos + 0.5) / ch_counts,
        )

    def predict(self, data: EncodedData) -> dict[str, np.ndarray]:
        """Predictions in ``training.train.predict``'s layout (same for every row)."""
        n = len(data)
        a = data.arrays
        scores = self.content_counts
        own = scores[a["label_content"].astype(np.int64)]
        rank = (scores[None, :] >= own[:, None]).sum(-1) if n else np.zeros(0)
        return {
            "channel_probs": np.tile(self.channel_probs, (n, 1)),
            "slot_probs": np.tile(self.slot_probs, (n, 1)),
            "response_prob": self.channel_response_rate[a["label_channel"].astype(np.int64)],
            "content_rank": rank,
        }


class AggregateModel:
    """Non-sequential baseline: linear models on the static (aggregate) features only.

    Channel logits = X W_c; P(response | x, channel) = sigmoid(X W_r[:, channel] + b). Fitted
    full-batch with L-BFGS, seeded, in torch (no extra dependency).
    """

    def __init__(self, n_static: int, seed: int = 0) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        n_ch = len(CHANNELS)
        self.w_channel = (torch.randn(n_static + 1, n_ch, generator=g) * 0.01).requires_grad_(True)
        self.w_response = (torch.randn(n_static + 1, n_ch, generator=g) * 0.01).requires_grad_(True)

    @staticmethod
    def _x(static: np.ndarray):
        import torch

        x = torch.from_numpy(static.astype(np.float32))
        return torch.cat([x, torch.ones(len(x), 1)], 1)

    def fit(self, data: EncodedData, steps: int = 50, l2: float = 1e-3) -> AggregateModel:
        """Maximum likelihood with a small L2 penalty."""
        import torch
        import torch.nn.functional as F

        x = self._x(data.arrays["static"])
        ch = torch.from_numpy(data.arrays["label_channel"].astype(np.int64))
        r = torch.from_numpy(data.arrays["label_response"].astype(np.float32))
        opt = torch.optim.LBFGS([self.w_channel, self.w_response], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logit_r = (x @ self.w_response).gather(1, ch[:, None]).squeeze(1)
            loss = F.cross_entropy(x @ self.w_channel, ch) + F.binary_cross_entropy_with_logits(logit_r, r)
            loss = loss + l2 * (self.w_channel.pow(2).sum() + self.w_response.pow(2).sum())
            loss.backward()
            return loss

        opt.step(closure)
        return self

    def response_probs(self, static: np.ndarray) -> np.ndarray:
        """P(response) for every channel: [N, C]."""
        import torch

        with torch.no_grad():
            return torch.sigmoid(self._x(static) @ self.w_response).numpy()

    def predict(self, data: EncodedData, popularity: Popularity) -> dict[str, np.ndarray]:
        """Predictions in ``training.train.predict``'s layout (content and slot from popularity)."""
        import torch

        x = self._x(data.arrays["static"])
        with torch.no_grad():
            probs = torch.softmax(x @ self.w_channel, -1).numpy()
        pop = popularity.predict(data)
        resp = self.response_probs(data.arrays["static"])[np.arange(len(data)), data.arrays["label_channel"].astype(np.int64)]
        return {**pop, "channel_probs": probs, "response_prob": resp}
