"""Scoring policies on a simulated dataset: the ready policies and the share of the oracle's gain."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from simulator.environment import Environment, Policy, share_of_oracle_gain

READY_POLICIES = ("logged", "rule", "random", "oracle")


def ready_policy(name: str, env: Environment) -> Policy:
    """One of the ready policies, bound to ``env`` (the oracle reads its hidden state)."""
    from simulator.policies import BehaviourPolicy, OraclePolicy, RandomEligiblePolicy, RuleBasedPolicy

    makers: dict[str, Callable[[], Policy]] = {
        "logged": lambda: BehaviourPolicy(env.cfg),
        "rule": lambda: RuleBasedPolicy(env.cfg),
        "random": lambda: RandomEligiblePolicy(),
        "oracle": lambda: OraclePolicy(env),
    }
    if name not in makers:
        raise ValueError(f"unknown policy {name!r}; ready policies: {', '.join(READY_POLICIES)}")
    return makers[name]()


def evaluate(
    data_dir: str | Path, policies: dict[str, Callable[[Environment], Policy]] | None = None, weeks: int | None = None, start: str = "beginning"
) -> dict[str, Any]:
    """Run the ready policies (and any extra ``name -> make_policy(env)``) on fresh environments; values plus shares of the oracle's gain."""
    values: dict[str, dict] = {}
    makers: dict[str, Callable[[Environment], Policy]] = {name: (lambda env, n=name: ready_policy(n, env)) for name in READY_POLICIES}
    makers.update(policies or {})
    for name, make in makers.items():
        env = Environment.from_data_dir(data_dir, start=start)  # type: ignore[arg-type]
        values[name] = env.run(make(env), weeks=weeks).value
    shares = {
        name: {key: share_of_oracle_gain(v, values["logged"], values["oracle"], key) for key in ("expected_positive_responses", "expected_prescriptions")}
        for name, v in values.items()
    }
    return {"values": values, "share_of_oracle_gain": shares}


def logged_states(data_dir: str | Path) -> Iterator[tuple[Any, Any, Any]]:
    """Replay a dataset's logged period, yielding ``(obs, state, oracle)`` at the start of each week.

    The replay regenerates the logs exactly, so ``state`` is the true hidden state behind each
    logged week: evaluate any alternative action there with ``oracle.expected_response(state,
    obs.week, ...)`` (e.g. the true value of a target policy's choice at logged contexts).
    """
    from simulator.policies import BehaviourPolicy

    env = Environment.from_data_dir(data_dir)
    policy = BehaviourPolicy(env.cfg)
    for _ in range(env.public.weeks):
        obs = env.observe()
        yield obs, env.state.copy(), env.oracle
        env.step(policy(obs), obs.eligibility)
