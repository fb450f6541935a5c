"""Holdout is stable and sized; exploration's logged probabilities match how often actions are served."""

from __future__ import annotations

import numpy as np
import pytest

from serving.exploration import explore_slate, in_holdout, unit_hash


def test_holdout_is_stable_per_hcp_and_close_to_share() -> None:
    ids = [f"H{i:06d}" for i in range(20000)]
    a = in_holdout(ids, 0.1, salt="2026")
    assert np.array_equal(a, in_holdout(ids[::-1], 0.1, salt="2026")[::-1]), "membership depends on order"
    assert abs(a.mean() - 0.1) < 0.01
    assert (a != in_holdout(ids, 0.1, salt="other")).any(), "salt must re-randomise"
    with pytest.raises(ValueError, match="holdout share"):
        in_holdout(ids, 1.0, salt="x")


def test_no_exploration_serves_the_ranking() -> None:
    ranked = np.array([[4, 2, 0, 1, 3]])
    slate, prob = explore_slate(ranked, k=3, epsilon=0.0, top_m=4, u=np.array([0.01]))
    assert slate.tolist() == [[4, 2, 0]] and prob.tolist() == [[1.0, 1.0, 1.0]]


@pytest.mark.parametrize("k, top_m", [(1, 3), (2, 4), (3, 3), (2, 6)])
def test_logged_probabilities_equal_empirical_inclusion(k: int, top_m: int) -> None:
    n, a, eps = 200_000, 6, 0.3
    ranked = np.tile(np.arange(a), (n, 1))
    u = np.random.default_rng(0).random(n)
    slate, prob = explore_slate(ranked, k=k, epsilon=eps, top_m=top_m, u=u)
    assert all(len(set(row)) == k for row in slate[:1000]), "a slate never repeats an action"
    for action in range(a):
        served = (slate == action).any(axis=1)
        empirical = served.mean()
        logged = prob[slate == action]
        if served.any():
            assert np.allclose(logged, logged[0]), "an action's probability must not depend on the draw"
            assert abs(logged[0] - empirical) < 0.005, (action, logged[0], empirical)
        else:
            assert empirical == 0.0


def test_unit_hash_is_uniformish_and_deterministic() -> None:
    v = unit_hash([str(i) for i in range(10000)], "s")
    assert np.array_equal(v, unit_hash([str(i) for i in range(10000)], "s"))
    assert 0.0 <= v.min() and v.max() < 1.0 and abs(v.mean() - 0.5) < 0.02
