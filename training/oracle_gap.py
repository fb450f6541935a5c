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

Evaluation code: it reads the simulator's ground truth (training never does).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

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


class PartialOraclePolicy:
    """The oracle's ranking with a belief about the hidden truth; the environment scores it with the truth."""

    def __init__(self, env: Any, known: tuple[str, ...], touches_per_week: int | None = None) -> None:
        from simulator.oracle import Oracle

        self.env = env
        self.known = tuple(known)
        self.belief = Oracle(env.public, belief_hidden(env.public, env.hidden, self.known), env.cfg)
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


def oracle_gap(data_dir: str | Path, *, weeks: int | None = None, policies: dict[str, Callable[[Any], Any]] | None = None,
               key: str = "expected_positive_responses") -> dict[str, Any]:
    """True value and share of the oracle's gain over logged of the ready policies, every partial oracle and ``policies``.

    Returns ``{"values": {name: RunResult.value}, "share": {name: share}, "worth": {part: share
    gained by knowing it on top of the population oracle}}``.
    """
    from simulator.evaluation import evaluate

    res = evaluate(data_dir, policies={**partial_oracle_makers(), **(policies or {})}, weeks=weeks)
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
