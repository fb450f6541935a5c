"""Partial oracles: what each piece of hidden knowledge is worth, on a tiny simulated world."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "simulator"))
from sim_fixtures import build  # noqa: E402

from experiments.oracle_gap import PARTIAL_ORACLES, belief_hidden, gap_figures, logs_posterior_hidden, oracle_gap  # noqa: E402


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


@pytest.fixture(scope="module")
def year_world(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("gap_year") / "w", hcps=300, days=364, seed=5)


def test_logs_posterior_learns_each_hcp_from_its_logs(year_world) -> None:
    """Each HCP's posterior from a year of its logs beats the population prior on every estimated part."""
    from simulator.environment import Environment

    env = Environment.from_data_dir(year_world)
    h, pub = env.hidden, env.public
    est = logs_posterior_hidden(year_world)
    prior = belief_hidden(pub, h, ("fatigue",))
    truth_ch = h.channel_affinity + h.responsiveness[:, None]

    def err(a: np.ndarray, b: np.ndarray) -> float:
        return float(((a - b) ** 2).mean())

    assert err(est.channel_affinity, truth_ch) < err(prior.channel_affinity + prior.responsiveness[:, None], truth_ch)
    assert err(est.topic_affinity, h.topic_affinity) < err(prior.topic_affinity, h.topic_affinity)
    assert (est.pref_daypart == h.pref_daypart).mean() > (prior.pref_daypart == h.pref_daypart).mean() + 0.05
    assert (est.pref_weekday == h.pref_weekday).mean() >= (prior.pref_weekday == h.pref_weekday).mean()
    # Estimating one part leaves the others at the truth.
    only_timing = logs_posterior_hidden(year_world, ("timing",))
    np.testing.assert_allclose(only_timing.topic_affinity, h.topic_affinity)
    assert (only_timing.pref_daypart == h.pref_daypart).mean() >= (est.pref_daypart == h.pref_daypart).mean() - 0.02
    with pytest.raises(ValueError, match="unknown parts"):
        logs_posterior_hidden(year_world, ("mood",))


def test_oracle_from_logs_sits_between_population_and_oracle(year_world) -> None:
    share = oracle_gap(year_world, weeks=4, start="end")["share"]
    assert share["population"] < share["oracle_from_logs"] < share["oracle_timing_from_logs"] < 1.0
    assert "oracle_from_logs" not in oracle_gap(year_world, weeks=2)["share"]  # from the first week there are no logs to learn from
