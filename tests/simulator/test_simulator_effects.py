"""Structural effects of the hidden world, each directional on a tiny world, and the oracle knows every one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sim_fixtures import build_world, make_config

from contract.schema import CHANNELS
from simulator.actions import Actions
from simulator.environment import Environment
from simulator.metrics import repeat_share
from simulator.oracle import NEVER_DAY, WorldState, sigmoid
from simulator.policies import BehaviourPolicy, OraclePolicy, best_actions, best_per_channel
from simulator.worlds import world_config

CH = {c: i for i, c in enumerate(CHANNELS)}
TINY = {"hcps": 60, "days": 28, "seed": 5}


def _env(**overrides) -> Environment:
    return Environment.from_config(make_config(**{**TINY, **overrides}))


def _touch(hcp: int, channel: str, content: int = -1, weekday: int = 0, delivered: bool = True, opened: bool = False) -> dict:
    return {
        k: np.array([v])
        for k, v in {"hcp": hcp, "channel": CH[channel], "content": content, "weekday": weekday, "delivered": delivered, "opened": opened}.items()
    }


def _advance(env: Environment, state: WorldState, week: int, executed: dict | None = None) -> WorldState:
    n = env.public.n_hcps
    return env.oracle.advance(state, np.zeros(n), np.zeros((n, len(CHANNELS))), week=week, executed=executed)


def _logit(env: Environment, state: WorldState, week: int, hcp: int, channel: str, content: int = -1, weekday: int = 1, daypart: int = 0) -> float:
    return float(env.oracle.logit(state, week, [hcp], [CH[channel]], [content], [weekday], [daypart])[0])


def _item(env: Environment, hcp: int, channel: str, nth: int = 0) -> int:
    elig = env.observe().eligibility
    return int(np.flatnonzero(elig.content[env.public.hcp_product[hcp], CH[channel]])[nth])


def test_a_repeated_item_loses_to_a_fresh_one_of_equal_quality() -> None:
    env = _env(**{"repetition.per_exposure_logit": 0.7, "repetition.half_life_days": 14})
    h = 3
    a, b = _item(env, h, "email", 0), _item(env, h, "email", 1)
    # Make the two items alike for this HCP: same topic, same quality.
    env.public.content_topic[b] = env.public.content_topic[a]
    env.hidden.content_quality[b] = env.hidden.content_quality[a]
    s0 = env.state
    assert _logit(env, s0, 1, h, "email", a) == _logit(env, s0, 1, h, "email", b)
    s1 = _advance(env, s0, 0, _touch(h, "email", a))  # Monday of week 0
    p = env.oracle.expected_response(s1, 1, [h, h], [CH["email"]] * 2, [a, b], [1, 1], [0, 0])
    assert p[0] < p[1]
    # One exposure, 7 days old on a 14-day half-life; other HCPs and items untouched.
    assert _logit(env, s1, 1, h, "email", b) - _logit(env, s1, 1, h, "email", a) == pytest.approx(0.7 * 0.5**0.5, rel=1e-6)
    assert _logit(env, s1, 1, h + 1, "email", a) == _logit(env, s0, 1, h + 1, "email", a)
    # Undelivered touches do not count; the exposure keeps decaying without new ones.
    assert _advance(env, s0, 0, _touch(h, "email", a, delivered=False)).exposure[h, a] == 0
    s3 = _advance(env, _advance(env, s1, 1), 2)
    assert s3.exposure[h, a] == pytest.approx(0.5**1.5, rel=1e-6)


def test_repetition_off_keeps_no_exposure_and_changes_nothing() -> None:
    env = _env()
    h, a = 3, _item(env, 3, "email")
    s1 = _advance(env, env.state, 0, _touch(h, "email", a))
    assert s1.exposure is None and _logit(env, s1, 1, h, "email", a) == _logit(env, env.state, 1, h, "email", a)


def test_wearout_penalises_only_inside_the_window() -> None:
    env = _env(**{"wearout.window_days": {"conference": 60, "visit": 7}, "wearout.penalty_logit": 1.1})
    h = 5
    touched = _advance(env, env.state, 0, _touch(h, "conference", weekday=5))  # day 5
    fresh = _advance(env, env.state, 0)
    assert touched.last_day[h, CH["conference"]] == 5 and fresh.last_day[h, CH["conference"]] == NEVER_DAY

    def diff(week: int, weekday: int, channel: str = "conference") -> float:
        return _logit(env, touched, week, h, channel, weekday=weekday) - _logit(env, fresh, week, h, channel, weekday=weekday)

    assert diff(1, 0) == pytest.approx(-1.1)  # 2 days later
    assert diff(9, 1) == pytest.approx(-1.1)  # day 64: 59 days later
    assert diff(9, 2) == 0.0  # day 65: 60 days later, outside
    assert diff(1, 0, "visit") == 0.0  # another channel's clock
    # An undelivered touch does not start the window.
    missed = _advance(env, env.state, 0, _touch(h, "conference", weekday=5, delivered=False))
    assert missed.last_day[h, CH["conference"]] == NEVER_DAY


def test_warmup_raises_visit_response_after_digital_opens() -> None:
    env = _env(**{"warmup.max_logit": 0.9, "warmup.scale": 1.0, "warmup.half_life_days": 7})
    h = 7
    opened = _advance(env, env.state, 0, _touch(h, "wechat_push", content=_item(env, h, "wechat_push"), opened=True))
    unopened = _advance(env, env.state, 0, _touch(h, "wechat_push", content=_item(env, h, "wechat_push"), opened=False))
    p = lambda s, ch: env.oracle.expected_response(s, 1, [h], [CH[ch]], [-1 if ch == "phone" else _item(env, h, ch)], [1], [0])[0]  # noqa: E731
    assert p(opened, "visit") > p(unopened, "visit") and p(opened, "wecom_1to1") > p(unopened, "wecom_1to1")
    assert p(opened, "email") == p(unopened, "email")  # not a target channel
    # One open 7 days before next Monday on a 7-day half-life counts 0.5, then fades.
    assert opened.warm[h] == pytest.approx(0.5) and _advance(env, opened, 1).warm[h] == pytest.approx(0.25)
    boost = _logit(env, opened, 1, h, "visit", _item(env, h, "visit")) - _logit(env, unopened, 1, h, "visit", _item(env, h, "visit"))
    assert boost == pytest.approx(0.9 * (1 - np.exp(-0.5)))


def test_saturating_link_stays_within_delivery_and_keeps_rates_realistic() -> None:
    env = _env(**{"response.link": "saturating"})
    x = np.linspace(-30, 30, 601)
    for c in range(len(CHANNELS)):
        ch = np.full(len(x), c)
        p = env.oracle.link(x, ch)
        assert (p >= 0).all() and (p <= env.oracle.delivery[c]).all() and (np.diff(p) >= 0).all()
        # The default offset makes the links agree at logit 0; the saturating one is higher above it.
        assert p[300] == pytest.approx(env.oracle.delivery[c] * sigmoid(0.0), abs=1e-4)
        assert p[320] > env.oracle.delivery[c] * sigmoid(2.0)
    base, sat = (
        Environment.from_config(make_config(hcps=300, days=56, seed=2)),
        Environment.from_config(world_config("warmup_saturating", hcps=300, days=56, seed=2)),
    )
    rates = [e.run(BehaviourPolicy(e.cfg)).p_response for e in (base, sat)]
    means = [float(np.nanmean(r)) for r in rates]
    assert 0.15 < means[1] < 0.5 and abs(means[1] - means[0]) < 0.1, means


def test_timing_heterogeneity_scales_each_hcps_timing_terms() -> None:
    assert _env().hidden.timing_strength is None
    cfgs = {name: world_config(name, hcps=2000, days=28, seed=1) for name in ("default", "timing_strong", "timing_weak")}
    envs = {name: Environment.from_config(cfg) for name, cfg in cfgs.items()}
    s = envs["timing_strong"].hidden.timing_strength
    assert s.mean() == pytest.approx(1.0, abs=0.05) and 0.4 < s.std() < 0.9 and (s > 0).all()

    def spread(env: Environment) -> float:
        n = env.public.n_hcps
        h = np.arange(n)
        best = env.oracle.time_logit(h, env.hidden.pref_weekday, env.hidden.pref_daypart)
        worst = env.oracle.time_logit(h, (env.hidden.pref_weekday + 3) % 7, (env.hidden.pref_daypart + 1) % 4)
        return float((best - worst).mean())

    assert spread(envs["timing_strong"]) > 1.5 * spread(envs["default"]) > 2.25 * spread(envs["timing_weak"])
    # Same seed, same world otherwise: timing strength has its own random stream.
    assert np.array_equal(envs["timing_strong"].hidden.pref_weekday, envs["default"].hidden.pref_weekday)


def test_calls_carry_content_where_the_world_says_so(tmp_path: Path) -> None:
    from contract.io import read_frame

    data = build_world(tmp_path / "w", "other_reps", hcps=200, days=56, seed=2)
    tp = read_frame(data, "touchpoints")
    calls = tp[(tp["channel"] == "phone") & (tp["direction"] == "outbound")]
    assert len(calls) > 20 and calls["content_id"].notna().all()
    env = Environment.from_data_dir(data)
    elig = env.observe().eligibility
    assert not elig.contentless.any() and elig.content[:, CH["phone"]].any()
    # A contentless call is now a wrong action, and the world can make email contentless instead.
    h = int(np.flatnonzero(env.public.consent[:, CH["phone"]])[0])
    assert env.step(Actions([h], [CH["phone"]], [-1], [1], [0])).violations["content_not_eligible"] == 1
    other = _env(contentless_channels=["phone", "email"])
    e = other.observe().eligibility
    assert e.contentless[CH["email"]] and not e.content[:, CH["email"]].any()
    acts = OraclePolicy(other)(other.observe())
    assert (acts.content[acts.channel == CH["email"]] == -1).all()


def test_behaviour_habits_show_in_the_logs_and_keep_exact_propensities() -> None:
    stock, other = (Environment.from_config(world_config(n, hcps=300, days=84, seed=2)) for n in ("default", "other_reps"))
    runs = {name: env.run(BehaviourPolicy(env.cfg)) for name, env in (("default", stock), ("other_reps", other))}
    assert repeat_share(runs["other_reps"].history.touches()) > repeat_share(runs["default"].history.touches()) + 0.1
    t = runs["other_reps"].history.touches().cols
    push = (t["channel"] == CH["wechat_push"]) & ~t["inbound"]
    assert ((t["weekday"][push] == 3) & (t["daypart"][push] == 1)).mean() > 0.3  # the preset's campaign slot

    # Exact propensities under the repeat habit: the sampled rows match the stated distribution.
    env = Environment.from_config(world_config("other_reps", hcps=300, days=84, seed=2))
    policy = BehaviourPolicy(env.cfg)
    for _ in range(5):
        obs = env.observe()
        env.step(policy(obs), obs.eligibility)
    obs = env.observe()
    acts = policy(obs)
    dist = policy.content_distribution(obs, acts.hcp, acts.channel)
    np.testing.assert_allclose(dist.sum(axis=1), 1.0)
    rep_p, mk_p = policy.channel_distributions(obs)
    from simulator.policies import REP_SLOT

    p_channel = np.where(np.isin(acts.channel, REP_SLOT), rep_p[acts.hcp, acts.channel], mk_p[acts.hcp, acts.channel])
    np.testing.assert_allclose(acts.propensity, p_channel * dist[np.arange(len(acts)), acts.content])
    last = obs.observed.last_content[acts.hcp, acts.channel]
    assert (acts.content == last).mean() > 0.3


def test_oracle_avoids_an_item_the_hcp_has_seen() -> None:
    env = _env(**{"repetition.per_exposure_logit": 1.0})
    elig = env.observe().eligibility
    content, _, _, p = best_per_channel(env.oracle, env.state, 0, elig)
    c = CH["email"]
    n_items = elig.content[env.public.hcp_product, c].sum(axis=1)
    who = np.flatnonzero((content[:, c] >= 0) & (n_items >= 2))
    state = env.state.copy()
    state.exposure[who, content[who, c]] = 5.0
    again, _, _, p2 = best_per_channel(env.oracle, state, 0, elig)
    assert len(who) > 10 and (again[who, c] != content[who, c]).all()
    assert (p2[who, c] <= p[who, c]).all()
    # Over weeks the oracle rotates content where repetition costs, and repeats where it does not.
    shares = {}
    for per in (0.0, 1.0):
        e = _env(days=84, **{"repetition.per_exposure_logit": per})
        shares[per] = repeat_share(e.run(OraclePolicy(e)).history.touches())
    assert shares[1.0] < shares[0.0] - 0.2, shares


@pytest.mark.parametrize("name", ["habituating", "warmup_saturating", "timing_strong", "combined"])
def test_oracle_best_action_is_truly_best_in_each_world(name: str) -> None:
    env = Environment.from_config(world_config(name, hcps=120, days=84, seed=3))
    policy = BehaviourPolicy(env.cfg)
    for _ in range(6):  # build up exposures, wear-out clocks and warm-up
        obs = env.observe()
        env.step(policy(obs), obs.eligibility)
    elig = env.observe().eligibility
    week, orc, state = env.week, env.oracle, env.state
    content, weekday, daypart, p = best_per_channel(orc, state, week, elig)
    acts = best_actions(orc, state, week, elig, k=2)
    np.testing.assert_allclose(orc.expected_response(state, week, acts.hcp, acts.channel, acts.content, acts.weekday, acts.daypart), p[acts.hcp, acts.channel])
    rng = np.random.default_rng(0)
    for h in rng.choice(env.public.n_hcps, 12, replace=False):
        for c in np.flatnonzero(elig.channel[h]):
            items = np.array([-1]) if elig.contentless[c] else np.flatnonzero(elig.content[env.public.hcp_product[h], c])
            days = 5 if CHANNELS[c] in ("visit", "department_meeting", "phone") else 7
            grid = np.array(np.meshgrid(items, np.arange(days), np.arange(3 if days == 5 else 4))).reshape(3, -1)
            alt = orc.expected_response(state, week, np.full(grid.shape[1], h), np.full(grid.shape[1], c), *grid)
            assert alt.max() <= p[h, c] + 1e-9


def test_touch_memory_is_saved_and_a_world_continues_from_its_end(tmp_path: Path) -> None:
    cfg = world_config("combined", hcps=150, days=56, seed=4)
    from simulator.generate import simulate

    simulate(cfg, out=tmp_path / "d", progress=False)
    live = Environment.from_config(cfg)
    policy = BehaviourPolicy(cfg)
    for _ in range(cfg.weeks):
        obs = live.observe()
        live.step(policy(obs), obs.eligibility)
    end = Environment.from_data_dir(tmp_path / "d", start="end")
    for field in ("adoption", "fatigue", "last_day", "warm", "exposure"):
        np.testing.assert_array_equal(getattr(end.state, field), getattr(live.state, field), err_msg=field)
    assert end.state.exposure.sum() > 0 and (end.state.last_day > NEVER_DAY).any() and end.state.warm.sum() > 0
    a = end.run(OraclePolicy(end), weeks=2)
    b = live.run(OraclePolicy(live), weeks=2)
    assert a.value == b.value
    np.testing.assert_array_equal(a.p_response, b.p_response[-len(a.p_response) :])


def test_catalogue_growth_extends_the_exposure_memory() -> None:
    env = Environment.from_config(world_config("habituating", hcps=80, days=56, seed=2))
    policy = BehaviourPolicy(env.cfg)
    env.run(policy, weeks=2)
    k = len(env.public.content_ids)
    env.inject_drift({"content": [{"week": 0, "topic": "guideline", "items_per_product": 2}]})
    env.run(OraclePolicy(env), weeks=2)
    assert env.state.exposure.shape == (80, k + 12) and env.state.exposure[:, k:].sum() > 0


def test_default_world_has_no_effect_terms() -> None:
    env = _env()
    env.run(BehaviourPolicy(env.cfg), weeks=3)
    s, week, n = env.state, env.week, env.public.n_hcps
    rng = np.random.default_rng(1)
    h, c = rng.integers(0, n, 500), rng.integers(0, len(CHANNELS), 500)
    k = np.where(c == CH["phone"], -1, rng.integers(0, len(env.public.content_ids), 500))
    wd, dp = rng.integers(0, 7, 500), rng.integers(0, 4, 500)
    orc = env.oracle
    plain = orc.channel_logit(s, week, h, c) + orc.content_logit(h, k) + orc.time_logit(h, wd, dp)
    assert np.array_equal(orc.logit(s, week, h, c, k, wd, dp), plain)
    assert np.array_equal(orc.expected_response(s, week, h, c, k, wd, dp), orc.delivery[c] * sigmoid(plain))
    assert s.exposure is None and env.hidden.timing_strength is None and (s.last_day > NEVER_DAY).any()
