"""Randomised holdout and exploration, so tomorrow's evaluation of today's suggestions is honest.

A fixed share of HCPs is held out (served the rule-based policy): comparing them with the rest
measures lift. Among the others, with probability ``epsilon`` the first suggestion is drawn
uniformly from the top ``top_m`` actions instead of the best one. Every served action carries
the exact probability it had of being served, which off-policy estimators need.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def unit_hash(keys: Sequence[str], salt: str) -> np.ndarray:
    """A stable uniform draw in [0, 1) per key: same key and salt, same value, on any machine."""
    out = np.empty(len(keys), dtype=np.float64)
    for i, k in enumerate(keys):
        digest = hashlib.blake2b(f"{salt}|{k}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def in_holdout(hcp_ids: Sequence[str], share: float, salt: str) -> np.ndarray:
    """Which HCPs belong to the randomised holdout (stable per HCP for a given salt)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout share must be in [0, 1), got {share}")
    return unit_hash(hcp_ids, f"holdout|{salt}") < share


def explore_slate(ranked: np.ndarray, k: int, epsilon: float, top_m: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pick a slate of ``k`` actions per row from best-first ``ranked`` action indices.

    ranked: [N, A] action indices, best first (A >= k). u: [N] uniform draws.
    The first slot is epsilon-greedy over the top ``top_m``; the rest follow in rank order.
    Returns (slate [N, k] action indices, inclusion probability [N, k] of each served action).
    """
    n, a = ranked.shape
    if k > a:
        raise ValueError(f"k={k} exceeds the {a} eligible actions")
    m = max(1, min(top_m, a))
    eps = float(epsilon) if m > 1 else 0.0
    # Which of the top-m positions is drawn first: position 0 with the greedy mass.
    greedy = u >= eps
    explored_pos = np.minimum((u / max(eps, 1e-12) * m).astype(np.int64), m - 1)
    first_pos = np.where(greedy, 0, explored_pos)  # [N]
    p_first = np.full(m, eps / m)
    p_first[0] += 1.0 - eps  # probability that rank position j is served first

    rows = np.arange(n)[:, None]
    positions = np.broadcast_to(np.arange(k - 1), (n, k - 1))
    # Fill the other k-1 slots with the best positions, skipping the one already served first.
    rest = positions + (positions >= first_pos[:, None])
    slate_pos = np.concatenate([first_pos[:, None], rest], axis=1)  # [N, k]
    slate = ranked[rows, slate_pos]

    # Inclusion probability by rank position j. j < k-1: always served (removing the first
    # pick only shifts later positions). j == k-1: served unless the first pick came from
    # beyond it. j >= k: served only when drawn first.
    incl = np.zeros(a)
    incl[: k - 1] = 1.0
    incl[k - 1] = p_first[:k].sum()
    if m > k:
        incl[k:m] = p_first[k:m]
    return slate, incl[slate_pos]
