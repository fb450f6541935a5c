"""Tiny simulated worlds shared by the simulator tests (each built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sim_fixtures import build


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 HCPs x 12 weeks: contract, determinism and environment checks."""
    return build(tmp_path_factory.mktemp("sim") / "small", hcps=400, days=84, seed=3)


@pytest.fixture(scope="session")
def year_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 HCPs x 52 weeks: enough rows for trends, fatigue and calibration."""
    return build(tmp_path_factory.mktemp("sim") / "year", hcps=1500, days=364, seed=11)


@pytest.fixture(scope="session")
def policy_runs(small_world: Path) -> dict:
    """The four ready policies run over the small world's logged period."""
    from simulator.environment import Environment
    from simulator.policies import BehaviourPolicy, OraclePolicy, RandomEligiblePolicy, RuleBasedPolicy

    runs = {}
    for name in ("logged", "rule", "random", "oracle"):
        env = Environment.from_data_dir(small_world)
        policy = {
            "logged": lambda env=env: BehaviourPolicy(env.cfg),
            "rule": lambda env=env: RuleBasedPolicy(env.cfg),
            "random": lambda: RandomEligiblePolicy(),
            "oracle": lambda env=env: OraclePolicy(env),
        }[name]()
        runs[name] = env.run(policy)
    return runs
