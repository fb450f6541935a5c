"""The composition root hands the simulator to the stages that may not import it."""

from __future__ import annotations

import datetime as dt

import pytest


def test_simulated_data_source_writes_a_valid_contract_dataset(tmp_path) -> None:
    from contract.importer import validate_dataset
    from contract.io import read_frame
    from nba.wiring import simulate_dataset

    manifest = simulate_dataset(tmp_path / "d", hcps=50, days=28, seed=3, start_date=dt.date(2025, 3, 3))
    assert manifest["tables"]["touchpoints"]["rows"] > 0
    issues, _ = validate_dataset(tmp_path / "d")
    assert not [i for i in issues if getattr(i, "severity", "error") == "error"]
    # start_date reaches the simulator (its default is 2025-01-06); local UTC+8 mornings may fall on the 2nd in UTC.
    assert read_frame(tmp_path / "d", "touchpoints")["ts"].min() >= dt.datetime(2025, 3, 2, 12, tzinfo=dt.UTC)


def test_each_stage_gets_what_it_may_not_import() -> None:
    from nba.wiring import simulate_dataset, simulator_judge, stage_wiring

    assert stage_wiring("features") == {"simulate": simulate_dataset} == stage_wiring("serving")
    judge = stage_wiring("training")["judge"]()
    assert judge is simulator_judge() and callable(judge.evaluate) and callable(judge.policy_value)
    assert stage_wiring("contract") == {}


def test_benchmarks_without_data_or_simulator_say_what_to_pass(tmp_path) -> None:
    from features.bench import run_bench

    with pytest.raises(ValueError, match="data_dir"):
        run_bench(hcps=10, weeks=1, data_dir=None, reads=1, redis_url="redis://127.0.0.1:1/0", workdir=tmp_path, seed=0, parts=("build",))
