"""Drift injection: a new content topic appears and the population shifts, on schedule and by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sim_fixtures import build, make_config

from contract.schema import CHANNELS, HOSPITAL_TIERS, TOPICS
from nba.configuration import ConfigError
from simulator.environment import Environment
from simulator.policies import BehaviourPolicy

EMAIL = CHANNELS.index("email")


def test_new_topic_campaign_appends_items_eligible_from_its_week() -> None:
    plain = Environment.from_config(make_config(hcps=120, days=56, seed=3))
    camp = {"week": 4, "topic": "guideline", "items_per_product": 5, "quality": 1.5}
    env = Environment.from_config(make_config(hcps=120, days=56, seed=3, **{"drift.content": [camp]}))
    n0, n1 = len(plain.public.content_ids), len(env.public.content_ids)
    n_prod = len(env.public.product_ids)
    assert n1 == n0 + 5 * n_prod
    # The old catalogue and the hidden world are untouched: the campaign draws from its own stream.
    assert env.public.content_ids[:n0] == plain.public.content_ids
    np.testing.assert_array_equal(env.hidden.content_quality[:n0], plain.hidden.content_quality)
    np.testing.assert_array_equal(env.hidden.channel_affinity, plain.hidden.channel_affinity)
    new = np.arange(n0, n1)
    assert (env.public.content_topic[new] == TOPICS.index("guideline")).all()
    assert env.hidden.content_quality[new].mean() > 1.2
    from simulator.constraints import eligible_content

    before = eligible_content(env.public, 3)[:, :, new].any()
    after = eligible_content(env.public, 4)[:, :, new].any(axis=(0, 2))
    assert not before
    assert after.sum() >= 5  # every content channel can carry some campaign item


def test_new_topic_campaign_is_served_and_written(tmp_path: Path) -> None:
    camp = {"week": 3, "topic": "patient_management", "items_per_product": 4, "quality": 2.0}
    data = build(tmp_path / "d", hcps=150, days=56, seed=4, **{"drift.content": [camp]})
    import pyarrow.compute as pc

    from contract.io import read_table

    content = read_table(data, "content")
    tp = read_table(data, "touchpoints")
    first_new = content.num_rows - 4 * 6
    new_ids = set(content["content_id"].to_pylist()[first_new:])
    used = tp.filter(pc.is_in(tp["content_id"], value_set=__import__("pyarrow").array(sorted(new_ids))))
    assert used.num_rows > 0
    start_week3 = np.datetime64("2025-01-06") + np.timedelta64(21, "D")
    assert (used["ts"].to_numpy().astype("datetime64[D]") >= start_week3 - np.timedelta64(1, "D")).all()


def test_population_shift_holds_a_tier_skewed_cohort_back_until_its_week() -> None:
    shift = {"week": 5, "share": 0.3, "tier_weights": [0.0, 0.0, 1.0, 3.0]}
    env = Environment.from_config(make_config(hcps=300, days=70, seed=5, **{"drift.population": [shift]}))
    cohort = env.onboarded_from == 5
    # 30% of HCPs, capped by how many work in the tiers that may join.
    allowed = np.isin(env.public.hcp_tier, [HOSPITAL_TIERS.index("secondary"), HOSPITAL_TIERS.index("primary")]).sum()
    assert cohort.sum() == min(90, allowed) > 0 and (env.onboarded_from[~cohort] == 0).all()
    tiers = env.public.hcp_tier[cohort]
    assert not np.isin(tiers, [HOSPITAL_TIERS.index("tertiary_a"), HOSPITAL_TIERS.index("tertiary_b")]).any()
    # Primary weighs three times secondary: the cohort leans primary beyond the world's mix.
    primary = HOSPITAL_TIERS.index("primary")
    assert (tiers == primary).mean() > (env.public.hcp_tier == primary).mean()
    assert not env.active_hcps()[cohort].any()
    result = env.run(BehaviourPolicy(env.cfg), weeks=8)
    touches = result.history.touches().cols
    in_cohort = cohort[touches["hcp"]]
    assert (touches["week"][in_cohort] >= 5).all()
    assert (touches["week"][in_cohort] >= 5).sum() > 0
    assert sum(result.value["violations"].values()) == 0
    assert env.active_hcps()[cohort].all()


def test_same_seed_same_drifted_world() -> None:
    kw = {"drift.population": [{"week": 2, "share": 0.2}], "drift.content": [{"week": 1, "topic": "case_study"}]}
    a = Environment.from_config(make_config(hcps=100, days=28, seed=9, **kw))
    b = Environment.from_config(make_config(hcps=100, days=28, seed=9, **kw))
    np.testing.assert_array_equal(a.onboarded_from, b.onboarded_from)
    np.testing.assert_array_equal(a.hidden.content_quality, b.hidden.content_quality)
    c = Environment.from_config(make_config(hcps=100, days=28, seed=10, **kw))
    assert not np.array_equal(a.onboarded_from, c.onboarded_from)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"drift.content": [{"week": 1, "topic": "gossip"}]}, "drift.content.0.topic"),
        ({"drift.population": [{"week": 1, "share": 1.5}]}, "drift.population.0.share"),
        ({"drift.population": [{"week": 1, "tier_weights": [0, 0, 0, 0]}]}, "drift.population.0.tier_weights"),
    ],
)
def test_invalid_drift_config_names_the_key(override: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        make_config(**override)


def test_inject_drift_into_a_world_continued_after_its_logs(tmp_path: Path) -> None:
    data = build(tmp_path / "d", hcps=150, days=42, seed=6)
    env = Environment.from_data_dir(data, start="end")
    start, n0 = env.week, len(env.public.content_ids)
    env.inject_drift(
        {
            "events": [{"week": 1, "channel": "email", "delta_logit": -3.0}],
            "content": [{"week": 2, "topic": "guideline", "items_per_product": 3}],
            "population": [{"week": 2, "share": 0.2, "tier_weights": [0, 0, 1, 1]}],
        }
    )
    assert env.cfg.drift.events[0].week == start + 1
    assert len(env.public.content_ids) == n0 + 3 * 6 == env.tables["content"].num_rows == len(env.hidden.content_quality)
    cohort = env.onboarded_from == start + 2
    assert cohort.sum() > 0 and not env.active_hcps()[cohort].any()
    assert env.oracle.drift_logit(start)[EMAIL] == 0 and env.oracle.drift_logit(start + 1)[EMAIL] == -3.0
    result = env.run(BehaviourPolicy(env.cfg), weeks=4)
    c = result.history.touches().cols
    assert (c["week"][cohort[c["hcp"]]] >= start + 2).all()
    new_used = c["content"] >= n0
    assert new_used.any() and (c["week"][new_used] >= start + 2).all()
    assert sum(result.value["violations"].values()) == 0
