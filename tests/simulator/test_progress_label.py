"""A simulated run's progress bar keeps its label on stderr when stdout is redirected (`nba evaluate` shows one per policy)."""

from __future__ import annotations

from simulator.environment import Environment
from simulator.policies import BehaviourPolicy


def test_run_labels_its_bar_on_stderr(small_world, capsys) -> None:
    env = Environment.from_data_dir(small_world, start="end")
    env.run(BehaviourPolicy(env.cfg), weeks=2, progress=True, desc="simulate policy logged")
    out, err = capsys.readouterr()
    assert "simulate policy logged" in err and "2/2" in err
    assert out == ""  # stdout stays for results and the JSON line
