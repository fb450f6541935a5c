"""Partial oracles: what each piece of hidden knowledge is worth, on a tiny simulated world."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulator"))
from sim_fixtures import build  # noqa: E402

from training.oracle_gap import PARTIAL_ORACLES, belief_hidden, gap_figures, oracle_gap  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("gap") / "w", hcps=300, days=56, seed=5)


def test_belief_replaces_only_what_is_unknown(world) -> None:
    from simulator.environment import Environment

    env = Environment.from_data_dir(world)
    h, pub = env.hidden, env.public
    b = belief_hidden(pub, h, ("fatigue", "channel"))
    np.testing.assert_array_equal(b.channel_affinity, h.channel_affinity)
    assert len(np.unique(b.pref_daypart)) == 1 and len(np.unique(b.pref_weekday)) == 1
    for dept in np.unique(pub.hcp_dept):  # topic affinity: the department's mean, the same for all its HCPs
        rows = pub.hcp_dept == dept
        np.testing.assert_allclose(b.topic_affinity[rows], np.broadcast_to(h.topic_affinity[rows].mean(0), b.topic_affinity[rows].shape))
    with pytest.raises(ValueError, match="unknown hidden parts"):
        belief_hidden(pub, h, ("mood",))


def test_partial_oracles_sit_between_logged_and_oracle(world) -> None:
    gap = oracle_gap(world, weeks=6)
    share = gap["share"]
    assert share["oracle"] == pytest.approx(1.0) and share["logged"] == pytest.approx(0.0)
    for name in PARTIAL_ORACLES:
        assert share[name] < 1.02, name  # knowing less never beats the oracle (noise aside)
    assert share["population"] < share["oracle_no_fatigue"] + 0.05
    assert share["population_timing"] > share["population"]  # timing is worth something in this world
    figs = gap_figures(gap)
    assert figs["gap_worth_timing_share"] == pytest.approx(share["population_timing"] - share["population"])
