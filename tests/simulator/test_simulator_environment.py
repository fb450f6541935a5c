"""The environment scores any policy against the hidden truth, and every ready policy keeps the rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from contract.io import read_frame
from contract.schema import CHANNELS
from simulator.actions import Actions
from simulator.environment import Environment, share_of_oracle_gain
from simulator.policies import MARKETING_SLOT, REP_SLOT, BehaviourPolicy, RuleBasedPolicy, best_actions, best_per_channel

KEY = "expected_positive_responses"
TZ_OFFSET_H = {"Asia/Shanghai": 8, "Asia/Hong_Kong": 8, "Asia/Urumqi": 6}


def test_policy_values_are_ordered(policy_runs: dict) -> None:
    v = {name: run.value[KEY] for name, run in policy_runs.items()}
    assert v["oracle"] > 1.5 * max(v["logged"], v["rule"], v["random"]), v
    assert v["rule"] >= 0.9 * v["logged"], v
    assert v["random"] < v["oracle"]
    rx = {name: run.value["expected_prescriptions"] for name, run in policy_runs.items()}
    assert rx["oracle"] > rx["logged"], rx
    share = share_of_oracle_gain(policy_runs["rule"].value, policy_runs["logged"].value, policy_runs["oracle"].value)
    assert -0.2 < share < 1.0


def test_value_matches_the_logs(small_world: Path, policy_runs: dict) -> None:
    tp = read_frame(small_world, "touchpoints")
    out = tp[tp["direction"] == "outbound"]
    v = policy_runs["logged"].value
    assert v["touches"] == len(out)
    assert v["positive_responses"] == int(out["opened"].sum())
    assert v["prescriptions"] == int(read_frame(small_world, "outcomes")["prescriptions"].sum())
    # Expected and realised positives agree within sampling noise.
    assert abs(v[KEY] - v["positive_responses"]) < 4 * np.sqrt(v[KEY])
    seg = v["by_segment"]
    assert sum(s["touches"] for s in seg.values()) == v["touches"]
    assert sum(s["hcps"] for s in seg.values()) == 400


@pytest.mark.parametrize("name", ["logged", "rule", "random", "oracle"])
def test_ready_policies_keep_every_rule(small_world: Path, policy_runs: dict, name: str) -> None:
    run = policy_runs[name]
    assert not any(run.value["violations"].values()), run.value["violations"]
    tp = run.touchpoints().to_pandas()
    out = tp[tp["direction"] == "outbound"].copy()
    hcps = read_frame(small_world, "hcps").set_index("hcp_id")
    consent = hcps.loc[out["hcp_id"], [f"consent_{c}" for c in CHANNELS]].to_numpy()
    col = out["channel"].map({c: i for i, c in enumerate(CHANNELS)}).to_numpy()
    assert consent[np.arange(len(out)), col].all()
    env = Environment.from_data_dir(small_world)
    offset = pd.to_timedelta(out["hcp_id"].map(hcps["timezone"].map(TZ_OFFSET_H)), "h")
    out["week"] = ((out["ts"] + offset) - pd.Timestamp(env.public.start_date, tz="UTC")).dt.days // 7
    per_channel = out.groupby(["hcp_id", "week", "channel"]).size()
    assert per_channel.max() <= env.cfg.constraints.channel_cap_per_week
    assert out.groupby(["hcp_id", "week"]).size().max() <= env.cfg.constraints.max_touches_per_week
    rep_time = out[out["channel"].isin(["visit", "department_meeting", "phone"])]
    load = rep_time.groupby(["rep_id", "week"]).size().rename("n").reset_index()
    cap = read_frame(small_world, "reps").set_index("rep_id")["visit_capacity_per_day"] * 5
    assert (load["n"].to_numpy() <= cap.loc[load["rep_id"]].to_numpy()).all()
    conf = out[out["channel"] == "conference"].sort_values("week").groupby("hcp_id")["week"].diff().dropna()
    assert (conf >= env.cfg.constraints.min_weeks_between["conference"]).all()


def test_environment_drops_and_counts_violations(small_world: Path) -> None:
    env = Environment.from_data_dir(small_world)
    no_email = np.flatnonzero(~env.public.consent[:, CHANNELS.index("email")])[:5]
    k = int(np.flatnonzero(env.observe().eligibility.content[env.public.hcp_product[no_email[0]], CHANNELS.index("email")])[0])
    acts = Actions(no_email[:1], [CHANNELS.index("email")], [k], [1], [0])
    step = env.step(acts)
    assert step.violations["no_consent"] == 1 and len(step.touches) == int((step.touches.cols["inbound"]).sum())
    strict = Environment.from_data_dir(small_world, strict=True)
    with pytest.raises(ValueError, match="no_consent"):
        strict.step(acts)
    with pytest.raises(ValueError, match="actions row 0: channel 99"):
        strict.step(Actions([0], [99], [-1], [0], [0]))


def test_visits_outside_working_hours_are_dropped(small_world: Path) -> None:
    env = Environment.from_data_dir(small_world)
    h = int(np.flatnonzero(env.public.consent[:, 0])[0])
    k = int(np.flatnonzero(env.observe().eligibility.content[env.public.hcp_product[h], 0])[0])
    step = env.step(Actions([h, h], [0, 0], [k, k], [6, 2], [0, 3]))
    assert step.violations["outside_working_hours"] == 2


def test_oracle_calibrates_against_logged_responses(year_world: Path) -> None:
    """The oracle's probability of the logged touches matches what the logs show, by decile."""
    from simulator.ground_truth import read_touch_truth

    tp = read_frame(year_world, "touchpoints")
    truth = read_touch_truth(year_world).to_pandas()
    df = tp.merge(truth, on="event_id")
    df = df[df["direction"] == "outbound"]
    assert abs(df["p_response"].mean() - df["opened"].mean()) < 0.01
    df["decile"] = pd.qcut(df["p_response"], 10, labels=False, duplicates="drop")
    cal = df.groupby("decile").agg(p=("p_response", "mean"), hit=("opened", "mean"))
    assert (cal["p"] - cal["hit"]).abs().max() < 0.03, cal
    assert cal["hit"].is_monotonic_increasing


def test_oracle_recomputes_logged_probabilities_from_the_tables(small_world: Path) -> None:
    """expected_response on (hcp, channel, content, local weekday, daypart) read back from the logs equals the stored truth."""
    from simulator.ground_truth import read_touch_truth

    env = Environment.from_data_dir(small_world)
    policy = BehaviourPolicy(env.cfg)
    for _ in range(3):
        obs = env.observe()
        env.step(policy(obs), obs.eligibility)
    state, week = env.state, env.week
    tp = read_frame(small_world, "touchpoints").merge(read_touch_truth(small_world).to_pandas(), on="event_id")
    hcps = read_frame(small_world, "hcps")
    tz = hcps.set_index("hcp_id")["timezone"].map(TZ_OFFSET_H)
    local = tp["ts"] + pd.to_timedelta(tp["hcp_id"].map(tz), "h")
    tp["week"] = (local - pd.Timestamp(env.public.start_date, tz="UTC")).dt.days // 7
    rows = tp[(tp["week"] == week) & (tp["direction"] == "outbound")]
    loc = local[rows.index]
    daypart = np.searchsorted([7, 11, 14, 18], loc.dt.hour.to_numpy(), side="right") - 1
    p = env.oracle.expected_response(
        state,
        week,
        rows["hcp_id"].map({h: i for i, h in enumerate(env.public.hcp_ids)}).to_numpy(),
        rows["channel"].map({c: i for i, c in enumerate(CHANNELS)}).to_numpy(),
        rows["content_id"].map({c: i for i, c in enumerate(env.public.content_ids)}).fillna(-1).astype(int).to_numpy(),
        loc.dt.weekday.to_numpy(),
        daypart,
    )
    assert len(rows) > 100
    np.testing.assert_allclose(p, rows["p_response"].to_numpy(), rtol=1e-9)


def test_oracle_best_action_beats_every_alternative(small_world: Path) -> None:
    env = Environment.from_data_dir(small_world)
    elig = env.observe().eligibility
    content, weekday, daypart, p = best_per_channel(env.oracle, env.state, 0, elig)
    acts = best_actions(env.oracle, env.state, 0, elig, k=1)
    chosen = env.oracle.expected_response(env.state, 0, acts.hcp, acts.channel, acts.content, acts.weekday, acts.daypart)
    np.testing.assert_allclose(chosen, p[acts.hcp, acts.channel])
    # Any other eligible content/time on the same channel is no better.
    rng = np.random.default_rng(0)
    for _ in range(20):
        h = int(rng.choice(acts.hcp))
        c = int(acts.channel[acts.hcp == h][0])
        options = np.flatnonzero(elig.content[env.public.hcp_product[h], c]) if CHANNELS[c] != "phone" else np.array([-1])
        for k in options:
            for wd in range(5):
                alt = env.oracle.expected_response(env.state, 0, [h], [c], [k], [wd], [0])[0]
                assert alt <= p[h, c] + 1e-12


def test_behaviour_propensities_are_a_distribution(small_world: Path) -> None:
    env = Environment.from_data_dir(small_world)
    policy = BehaviourPolicy(env.cfg)
    for _ in range(4):
        obs = env.observe()
        env.step(policy(obs), obs.eligibility)
    obs = env.observe()
    rep_p, mk_p = policy.channel_distributions(obs)
    for probs, slot in ((rep_p, REP_SLOT), (mk_p, MARKETING_SLOT)):
        np.testing.assert_allclose(probs.sum(axis=1), 1.0)
        elig = np.zeros_like(probs, dtype=bool)
        elig[:, list(slot)] = obs.eligibility.channel[:, list(slot)]
        elig[:, -1] = True  # no contact is always possible
        assert (probs[elig] > 0).all() and (probs[~elig] == 0).all()
    acts = policy(obs)
    dist = policy.content_distribution(obs, acts.hcp, acts.channel)
    sums = dist.sum(axis=1)
    phone = acts.channel == CHANNELS.index("phone")
    np.testing.assert_allclose(sums[~phone], 1.0)
    p_content = np.where(phone, 1.0, dist[np.arange(len(acts)), np.maximum(acts.content, 0)])
    p_channel = np.where(np.isin(acts.channel, REP_SLOT), rep_p[acts.hcp, acts.channel], mk_p[acts.hcp, acts.channel])
    np.testing.assert_allclose(acts.propensity, p_channel * p_content)
    assert (acts.propensity > 0).all()
    # Eligible content never gets zero probability.
    e = obs.eligibility.content[env.public.hcp_product[acts.hcp], acts.channel]
    assert (dist[e] > 0).all() and (dist[~e] == 0).all()


def test_behaviour_is_confounded_towards_a_segment_and_old_channels(small_world: Path) -> None:
    env = Environment.from_data_dir(small_world)
    rep_p, mk_p = BehaviourPolicy(env.cfg).channel_distributions(env.observe())
    seg = env.public.hcp_segment
    visit = rep_p[:, CHANNELS.index("visit")]
    assert visit[seg == 0].mean() > 2 * visit[seg == 3].mean()
    push, email = mk_p[:, CHANNELS.index("wechat_push")], mk_p[:, CHANNELS.index("email")]
    assert push.mean() > 4 * email.mean()


def test_environment_continues_after_the_logs(small_world: Path) -> None:
    env = Environment.from_data_dir(small_world, start="end")
    assert env.week == 12 and env.observed.sent.sum() > 0
    run = env.run(RuleBasedPolicy(env.cfg), weeks=3)
    ts = run.touchpoints()["ts"].to_pandas()
    last_logged = read_frame(small_world, "touchpoints")["ts"].max()
    assert ts.min() > last_logged - pd.Timedelta(hours=8)
    logged_ids = set(read_frame(small_world, "touchpoints")["event_id"])
    assert not logged_ids & set(run.touchpoints()["event_id"].to_pylist())
    assert run.value["weeks"] == 3 and run.value["touches"] > 0


def test_history_tables_follow_the_logged_ones(small_world: Path) -> None:
    from contract.io import read_table

    logged = {name: read_table(small_world, name) for name in ("touchpoints", "outcomes")}
    env = Environment.from_data_dir(small_world, start="end")
    assert env.history.contract_tables(logged) == logged  # nothing new yet: the logs as they are
    env.run(RuleBasedPolicy(env.cfg), weeks=2)
    both = env.history.contract_tables(logged)
    new = env.history.contract_tables()
    for name in ("touchpoints", "outcomes"):
        assert both[name].schema == logged[name].schema
        assert both[name].num_rows == logged[name].num_rows + new[name].num_rows > logged[name].num_rows
        assert both[name].slice(0, logged[name].num_rows).equals(logged[name])  # the logs first, unchanged
    ids = both["touchpoints"]["event_id"].to_pylist()
    assert len(set(ids)) == len(ids)  # the continuation's event ids never collide with the logs'


def test_actions_from_frame_names_the_bad_row(small_world: Path) -> None:
    env = Environment.from_data_dir(small_world)
    frame = pd.DataFrame(
        {
            "hcp_id": [env.public.hcp_ids[0], "H9999999"],
            "channel": ["email", "email"],
            "content_id": [None, None],
            "weekday": [0, 0],
            "daypart": ["morning", "morning"],
        }
    )
    with pytest.raises(ValueError, match="row 1: unknown hcp_id 'H9999999'"):
        Actions.from_frame(frame, env.public.hcp_ids, env.public.content_ids)
    ok = Actions.from_frame(frame.iloc[:1], env.public.hcp_ids, env.public.content_ids)
    assert ok.content[0] == -1 and ok.channel[0] == CHANNELS.index("email")


def test_drift_event_shifts_a_channel_from_its_week() -> None:
    from sim_fixtures import make_config

    base = Environment.from_config(make_config(hcps=200, days=56, seed=2))
    event = {"week": 4, "channel": "email", "delta_logit": -2.0}
    drifted = Environment.from_config(make_config(hcps=200, days=56, seed=2, **{"drift.events": [event]}))
    h = np.arange(200)
    email = np.full(200, CHANNELS.index("email"))
    k = int(np.flatnonzero(base.observe().eligibility.content[0, CHANNELS.index("email")])[0])
    content = np.where(base.public.hcp_product == 0, k, -1)
    args = (h, email, content, np.ones(200, int), np.zeros(200, int))
    for week in (3, 4, 6):
        p0 = base.oracle.expected_response(base.state, week, *args)
        p1 = drifted.oracle.expected_response(drifted.state, week, *args)
        if week < 4:
            np.testing.assert_allclose(p0, p1)
        else:
            assert (p1 < p0).all()


def test_logged_states_replay_the_hidden_state_behind_each_week(small_world: Path) -> None:
    from simulator.evaluation import logged_states
    from simulator.ground_truth import read_ground_truth

    weeks = list(logged_states(small_world))
    assert [obs.week for obs, _, _ in weeks] == list(range(12))
    _, first, oracle = weeks[0]
    np.testing.assert_allclose(first.adoption, oracle.hidden.adoption0)
    assert first.fatigue.sum() == 0 and weeks[-1][1].fatigue.sum() > 0
    # Stepping past the last week lands on the final state saved with the dataset.
    _, _, final = read_ground_truth(small_world)
    env = Environment.from_data_dir(small_world)
    env.run(BehaviourPolicy(env.cfg))
    np.testing.assert_allclose(env.state.adoption, final.adoption)
    np.testing.assert_allclose(env.state.fatigue, final.fatigue)


def test_observed_summaries_are_computable_from_the_export(small_world: Path) -> None:
    """What policies see is a function of the contract touchpoints table alone."""
    from dataclasses import fields

    from contract.io import read_table
    from simulator.observed import observed_from_touchpoints

    env = Environment.from_data_dir(small_world)
    env.run(BehaviourPolicy(env.cfg))
    rebuilt = observed_from_touchpoints(env.public, read_table(small_world, "touchpoints"))
    for f in fields(rebuilt):
        np.testing.assert_allclose(getattr(rebuilt, f.name), getattr(env.observed, f.name), err_msg=f.name)
    assert env.observed.topic_opens.sum() > 0 and env.observed.unopened_push_streak.max() > 0
