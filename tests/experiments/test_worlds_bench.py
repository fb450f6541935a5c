"""`nba bench worlds`: honest splits, the summary's arithmetic, and one tiny world end to end."""

from __future__ import annotations

import math

import pytest

from experiments.worlds_bench import summarise
from experiments.worlds_config import WorldsBenchConfig, WorldSplit
from nba.configuration import ConfigError


def test_report_and_select_seeds_may_not_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        WorldsBenchConfig(select=WorldSplit(worlds=["default"], seeds=[1, 2]), report=WorldSplit(worlds=["default"], seeds=[2, 3]))
    with pytest.raises(ValueError, match="unknown world"):
        WorldSplit(worlds=["nowhere"], seeds=[1])
    cfg = WorldsBenchConfig()
    assert not set(cfg.select.seeds) & set(cfg.report.seeds)
    assert set(cfg.report.worlds) - set(cfg.select.worlds), "some reported worlds must never have been selected on"


def test_the_shipped_config_loads_and_rejects_bad_keys(tmp_path) -> None:
    from experiments.worlds_config import load_worlds_bench_config

    cfg = load_worlds_bench_config()
    assert cfg.report.pairs()[0] == (cfg.report.worlds[0], cfg.report.seeds[0])
    with pytest.raises(ConfigError, match="hcps"):
        load_worlds_bench_config(overrides={"hcps": 3})


def _row(world: str, seed: int, model: float, rules: float, **kw) -> dict:
    return {
        "world": world,
        "seed": seed,
        "model_share_of_oracle_gain": model,
        "rules_share_of_oracle_gain": rules,
        "model_repeat_share_30d": kw.get("rep", 0.1),
        "logged_repeat_share_30d": 0.2,
        "model_override_share": kw.get("ovr", 0.0),
        "model_calibration_gap": kw.get("gap", 0.01),
        "rules_value": kw.get("rv", 10.0),
        "logged_value": 9.0,
    }


def test_summary_by_hand() -> None:
    rows = [_row("a", 1, 0.7, 0.1), _row("a", 2, 0.5, 0.2), _row("b", 1, 0.3, -0.1, rep=0.3, gap=0.05, rv=8.0), _row("b", 2, 0.4, 0.0)]
    s = summarise(rows, held_out_worlds={"b"})
    assert s["model_share_median"] == pytest.approx(0.45)
    assert s["model_share_worst_world_median"] == pytest.approx(0.35)  # world b: median of 0.3, 0.4
    assert s["model_share_worst_pair"] == pytest.approx(0.3)
    assert s["model_share_median_unselected_worlds"] == pytest.approx(0.35)
    assert s["pairs_repeat_le_logged"] == 3 and s["pairs_calibration_gap_le_0_03"] == 3 and s["pairs_rules_ge_logged"] == 3
    assert s["pairs_override_le_2pct"] == 4 and s["pairs"] == 4


def test_world_checks_by_hand() -> None:
    from experiments.worlds_bench import world_checks

    ok = world_checks(_row("a", 1, 0.5, 0.1))
    assert ok == {"repeat_le_logged": True, "override_le_2pct": True, "calibration_gap_le_0_03": True, "rules_ge_logged": True}
    bad = world_checks({**_row("a", 1, 0.5, 0.1, rep=0.3, gap=0.05, rv=8.0), "model_override_share": 0.03})
    assert not any(bad.values())
    # A figure that was never measured fails its check rather than passing silently.
    assert world_checks({k: v for k, v in _row("a", 1, 0.5, 0.1).items() if k != "model_calibration_gap"})["calibration_gap_le_0_03"] is False


@pytest.mark.slow
def test_one_tiny_world_end_to_end(tmp_path) -> None:
    from experiments.worlds_bench import run_world

    cfg = WorldsBenchConfig(hcps=120, days=98, weeks=1, epochs=1, workdir=tmp_path)
    row = run_world("habituating", 101, cfg)
    for arm in ("model", "rules"):
        assert math.isfinite(row[f"{arm}_share_of_oracle_gain"])
        assert row[f"{arm}_override_share"] == 0.0  # feasible first: no served first choice breaks a rule
        assert row[f"{arm}_violations"] == 0  # and the world never had to drop one
    assert row["oracle_value"] > row["logged_value"]
    assert 0.0 <= row["model_mean_expected"] <= 1.0 and row["model_calibration_rows"] > 0
