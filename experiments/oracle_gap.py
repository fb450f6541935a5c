"""Where the oracle's gain comes from: partial oracles that know only some of the hidden truth.

The oracle (``simulator.policies.OraclePolicy``) picks each HCP's best touches with everything
hidden: per-HCP channel affinity, topic affinity, preferred weekday/daypart, responsiveness, and
the contact load (fatigue). A *partial oracle* ranks actions with the same code but believes
population values for what it is not told: channel affinity at its mean for the HCP's title,
topic affinity at its mean for the department, the most common weekday and daypart, average
responsiveness and trend following. Each runs in the same simulated year; the environment
scores what it chose with the true response model. The step from one partial oracle to the
next is what that piece of hidden knowledge is worth, which tells how far a policy that learns
from logs (the model, imitation of the reps) falls short and on what.

Judging code, so it lives in ``experiments``: it reads the simulator's ground truth (production
packages never do; tests/nba/test_layering.py holds them to it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

# What each partial oracle is told beyond the population values (fatigue is the contact load:
# observable from the touch history, so every partial oracle but "no_fatigue" knows it).
HIDDEN_PARTS = ("channel", "topic", "timing", "fatigue")
PARTIAL_ORACLES: dict[str, tuple[str, ...]] = {
    "population": ("fatigue",),
    "population_channel": ("fatigue", "channel"),
    "population_topic": ("fatigue", "topic"),
    "population_timing": ("fatigue", "timing"),
    "oracle_no_timing": ("fatigue", "channel", "topic"),
    "oracle_no_fatigue": ("channel", "topic", "timing"),
}


def _group_mean(values: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Each row replaced by the mean of its group's rows ([n, k] -> [n, k])."""
    out = np.empty_like(values, dtype=np.float64)
    for g in np.unique(group):
        rows = group == g
        out[rows] = values[rows].mean(axis=0)
    return out


def belief_hidden(public: Any, hidden: Any, known: tuple[str, ...]) -> Any:
    """The hidden truth as a policy that knows only ``known`` (see HIDDEN_PARTS) would believe it."""
    unknown = set(HIDDEN_PARTS) - set(known)
    bad = set(known) - set(HIDDEN_PARTS)
    if bad:
        raise ValueError(f"partial oracle: unknown hidden parts {sorted(bad)}; known parts are {HIDDEN_PARTS}")
    n = public.n_hcps
    kw: dict[str, np.ndarray] = {}
    if "channel" in unknown:
        kw["channel_affinity"] = _group_mean(hidden.channel_affinity, public.hcp_title)
        kw["trend_multiplier"] = np.full(n, float(hidden.trend_multiplier.mean()))
        kw["responsiveness"] = _group_mean(hidden.responsiveness[:, None], public.hcp_segment)[:, 0]
    if "topic" in unknown:
        kw["topic_affinity"] = _group_mean(hidden.topic_affinity, public.hcp_dept)
    if "timing" in unknown:
        kw["pref_weekday"] = np.full(n, int(np.bincount(hidden.pref_weekday).argmax()))
        kw["pref_daypart"] = np.full(n, int(np.bincount(hidden.pref_daypart).argmax()))
    return replace(hidden, **kw)


def _logged_touches(data_dir: str | Path) -> tuple[Any, dict[str, np.ndarray], np.ndarray]:
    """Replay a dataset's logged year: (environment at its end, delivered outbound touches, their true logits)."""
    from simulator.environment import Environment
    from simulator.policies import BehaviourPolicy

    env = Environment.from_data_dir(data_dir)
    run = env.run(BehaviourPolicy(env.cfg))
    t = run.history.touches().cols
    keep = ~t["inbound"].astype(bool) & t["delivered"].astype(bool)
    cols = {k: np.asarray(t[k])[keep].astype(np.int64) for k in ("week", "hcp", "channel", "content", "weekday", "daypart")}
    cols["opened"] = np.asarray(t["opened"])[keep].astype(bool)
    # Opened given delivered is sigmoid(logit): the true logit of each touch from its recorded probability.
    p = np.clip(run.p_response[keep] / env.oracle.delivery[cols["channel"]], 1e-9, 1 - 1e-9)
    return env, cols, np.log(p / (1 - p))


def logs_posterior_hidden(
    data_dir: str | Path,
    estimate: tuple[str, ...] = ("channel", "topic", "timing"),
    iterations: int = 6,
    replay: tuple[Any, dict[str, np.ndarray], np.ndarray] | None = None,
) -> Any:
    """The hidden truth with the ``estimate`` parts replaced by each HCP's posterior mode given its logged touches.

    The estimator is told everything a log-learning policy could at best learn from the whole
    population: the response model's form, content quality, the contact-load state, and the
    population distribution of every per-HCP parameter (title/department means and spreads,
    weekday/daypart frequencies) as priors. Per HCP it then fits, from that HCP's logged
    opens alone, Gaussian-prior channel offsets (affinity + responsiveness), topic affinities and
    the preferred (weekday, daypart) by coordinate ascent. Plugged into the oracle's ranking it
    bounds what any policy learning these logs can reach (without exploring during the horizon).
    ``replay`` reuses a ``_logged_touches(data_dir)`` result.
    """
    from simulator.oracle import Oracle

    bad = set(estimate) - {"channel", "topic", "timing"}
    if bad:
        raise ValueError(f"logs posterior: unknown parts {sorted(bad)}; estimable parts are channel, topic, timing")
    env, t, logit = replay if replay is not None else _logged_touches(data_dir)
    pub, hid, orc = env.public, env.hidden, env.oracle
    n = pub.n_hcps
    h, ch, wd, dp, op = t["hcp"], t["channel"], t["weekday"], t["daypart"], t["opened"]
    has = t["content"] >= 0
    topic = np.where(has, pub.content_topic[np.maximum(t["content"], 0)], 0)
    years = t["week"] / 52.0
    # Per-HCP parts of the true logit; what remains is known to the estimator.
    chan_true = hid.channel_affinity[h, ch] + hid.responsiveness[h] + orc.trend[ch] * years * (hid.trend_multiplier[h] - hid.trend_multiplier.mean())
    topic_true = np.where(has, hid.topic_affinity[h, topic], 0.0)
    time_true = orc.time_logit(h, wd, dp)
    rest = logit - chan_true - topic_true - time_true

    chan_sum = hid.channel_affinity + hid.responsiveness[:, None]
    chan_mu = _group_mean(hid.channel_affinity, pub.hcp_title) + _group_mean(hid.responsiveness[:, None], pub.hcp_segment)
    chan_var = np.maximum(((chan_sum - chan_mu) ** 2).mean(0), 1e-3)  # [C]
    top_mu = _group_mean(hid.topic_affinity, pub.hcp_dept)
    top_var = np.maximum(((hid.topic_affinity - top_mu) ** 2).mean(0), 1e-3)  # [T]
    a = chan_mu.copy() if "channel" in estimate else chan_sum.copy()
    b = top_mu.copy() if "topic" in estimate else hid.topic_affinity.copy()
    wd_prior = np.log(np.bincount(hid.pref_weekday, minlength=7) / n + 1e-6)
    dp_prior = np.log(np.bincount(hid.pref_daypart, minlength=4) / n + 1e-6)
    pref_w, pref_d = (np.full(n, int(wd_prior.argmax())), np.full(n, int(dp_prior.argmax()))) if "timing" in estimate else (hid.pref_weekday, hid.pref_daypart)

    def time_term(w: np.ndarray, d: np.ndarray) -> np.ndarray:  # time logit of every touch if the HCP preferred (w, d)
        return Oracle(pub, replace(hid, pref_weekday=w, pref_daypart=d), env.cfg).time_logit(h, wd, dp)

    def newton(value: np.ndarray, idx: np.ndarray, mu: np.ndarray, var: np.ndarray, z: np.ndarray, rows: np.ndarray) -> np.ndarray:
        # One Newton step of the Gaussian-prior logistic log posterior per (HCP, level).
        k = value.shape[1]
        pr = 1.0 / (1.0 + np.exp(-z[rows]))
        cell = h[rows] * k + idx[rows]
        grad = np.bincount(cell, op[rows] - pr, n * k).reshape(n, k) - (value - mu) / var
        hess = np.bincount(cell, pr * (1 - pr), n * k).reshape(n, k) + 1.0 / var
        return value + grad / hess

    every = np.arange(len(h))
    for _ in range(iterations):
        tt = time_term(pref_w, pref_d)
        if "channel" in estimate:
            a = newton(a, ch, chan_mu, chan_var, rest + a[h, ch] + np.where(has, b[h, topic], 0.0) + tt, every)
        if "topic" in estimate:
            a_t = a[h, ch] + rest + tt
            b = newton(b, topic, top_mu, top_var, a_t + b[h, topic], np.flatnonzero(has))
        if "timing" in estimate:
            base = rest + a[h, ch] + np.where(has, b[h, topic], 0.0)
            post = np.empty((n, 28))
            for w in range(7):
                for d in range(4):
                    z = base + time_term(np.full(n, w), np.full(n, d))
                    post[:, w * 4 + d] = np.bincount(h, np.where(op, -np.logaddexp(0, -z), -np.logaddexp(0, z)), n) + wd_prior[w] + dp_prior[d]
            best = post.argmax(1)
            pref_w, pref_d = best // 4, best % 4
    return replace(
        hid,
        channel_affinity=a,
        responsiveness=np.zeros(n),
        trend_multiplier=np.full(n, float(hid.trend_multiplier.mean())),
        topic_affinity=b,
        pref_weekday=pref_w.astype(np.int64),
        pref_daypart=pref_d.astype(np.int64),
    )


class PartialOraclePolicy:
    """The oracle's ranking with a belief about the hidden truth; the environment scores it with the truth."""

    def __init__(self, env: Any, known: tuple[str, ...], touches_per_week: int | None = None, belief: Any = None) -> None:
        from simulator.oracle import Oracle

        self.env = env
        self.known = tuple(known)
        self.belief = Oracle(env.public, belief_hidden(env.public, env.hidden, self.known) if belief is None else belief, env.cfg)
        self.k = env.cfg.oracle_touches_per_week if touches_per_week is None else touches_per_week

    def __call__(self, obs: Any) -> Any:
        """This week's actions: the best k per HCP under the belief."""
        from simulator.oracle import WorldState
        from simulator.policies import best_actions

        state = self.env.state
        if "fatigue" not in self.known:
            state = WorldState(state.adoption, np.zeros_like(state.fatigue))
        return best_actions(self.belief, state, obs.week, obs.eligibility, self.k)


def partial_oracle_makers() -> dict[str, Callable[[Any], Any]]:
    """``name -> make_policy(env)`` for every partial oracle (for ``simulator.evaluation.evaluate``)."""
    return {name: (lambda env, known=known: PartialOraclePolicy(env, known)) for name, known in PARTIAL_ORACLES.items()}


# Oracles that believe each HCP's posterior mode given its logged year (``logs_posterior_hidden``);
# they only make sense after the logs (``start="end"``).
LOGS_POSTERIOR_ORACLES: dict[str, tuple[str, ...]] = {
    "oracle_from_logs": ("channel", "topic", "timing"),
    "oracle_timing_from_logs": ("timing",),
}


def logs_posterior_makers(data_dir: str | Path) -> dict[str, Callable[[Any], Any]]:
    """``name -> make_policy(env)`` for the oracles that learn every per-HCP part (or timing only) from the logs."""
    replay = _logged_touches(data_dir)
    beliefs = {name: logs_posterior_hidden(data_dir, parts, replay=replay) for name, parts in LOGS_POSTERIOR_ORACLES.items()}
    return {name: (lambda env, b=b: PartialOraclePolicy(env, ("fatigue",), belief=b)) for name, b in beliefs.items()}


def oracle_gap(
    data_dir: str | Path,
    *,
    weeks: int | None = None,
    policies: dict[str, Callable[[Any], Any]] | None = None,
    key: str = "expected_positive_responses",
    start: str = "beginning",
) -> dict[str, Any]:
    """True value and share of the oracle's gain over logged of the ready policies, every partial oracle and ``policies``.

    From ``start="end"`` (after the logs) the oracles that learn from the logs
    (``LOGS_POSTERIOR_ORACLES``) are measured too.

    Returns ``{"values": {name: RunResult.value}, "share": {name: share}, "worth": {part: share
    gained by knowing it on top of the population oracle}}``.
    """
    from simulator.evaluation import evaluate

    from_logs = logs_posterior_makers(data_dir) if start == "end" else {}
    res = evaluate(data_dir, policies={**partial_oracle_makers(), **from_logs, **(policies or {})}, weeks=weeks, start=start)  # type: ignore[arg-type]
    share = {name: s[key] for name, s in res["share_of_oracle_gain"].items()}
    worth = {
        "channel": share["population_channel"] - share["population"],
        "topic": share["population_topic"] - share["population"],
        "timing": share["population_timing"] - share["population"],
        "timing_given_rest": share["oracle"] - share["oracle_no_timing"],
        "fatigue_given_rest": share["oracle"] - share["oracle_no_fatigue"],
    }
    return {"values": res["values"], "share": share, "worth": worth}


def gap_figures(gap: dict[str, Any], prefix: str = "gap_") -> dict[str, float]:
    """Flat figures of ``oracle_gap`` output: each policy's share and each hidden part's worth."""
    out = {f"{prefix}{name}_share_of_oracle_gain": float(v) for name, v in gap["share"].items()}
    out.update({f"{prefix}worth_{part}_share": float(v) for part, v in gap["worth"].items()})
    return out
