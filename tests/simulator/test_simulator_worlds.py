"""World presets: each loads, is deterministic by seed, and ``nba simulate --world`` writes it or names the known ones."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from sim_fixtures import build, build_world
from typer.testing import CliRunner

from contract.io import read_manifest
from nba.cli import app
from nba.configuration import ConfigError, load_config
from simulator.config import SimulatorConfig
from simulator.worlds import WORLD_NAMES, deep_merge, world_config, world_names

runner = CliRunner()
TINY = {"hcps": 60, "days": 28}


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shipped_presets_are_the_listed_ones() -> None:
    assert set(WORLD_NAMES) == set(world_names()) and len(WORLD_NAMES) >= 5


def test_presets_have_distinct_structure() -> None:
    def structure(cfg: SimulatorConfig) -> str:
        d = cfg.model_dump(mode="json")
        return json.dumps(
            {k: d[k] for k in ("response", "repetition", "wearout", "warmup", "behaviour", "contentless_channels", "constraints")}, sort_keys=True
        )

    cfgs = {name: world_config(name) for name in WORLD_NAMES}
    assert len({structure(c) for c in cfgs.values()}) == len(WORLD_NAMES)
    assert cfgs["habituating"].repetition.enabled and cfgs["habituating"].wearout.enabled
    assert cfgs["warmup_saturating"].warmup.enabled and cfgs["warmup_saturating"].response.link == "saturating"
    strong, weak = cfgs["timing_strong"].response, cfgs["timing_weak"].response
    assert strong.daypart_match > cfgs["default"].response.daypart_match > weak.daypart_match and strong.timing_sd > 0
    assert cfgs["other_reps"].contentless_channels == [] and cfgs["other_reps"].behaviour.repeat_last_item > 0


def test_default_preset_is_the_stock_world() -> None:
    assert world_config("default") == load_config(SimulatorConfig, "simulator")


def test_preset_merges_deeply_and_flags_override() -> None:
    cfg = world_config("habituating", hcps=300, seed=4, **{"wearout.penalty_logit": 2.0})
    stock = load_config(SimulatorConfig, "simulator")
    assert (cfg.hcps, cfg.seed, cfg.wearout.penalty_logit) == (300, 4, 2.0)
    # Keys the preset does not name keep the stock values (a partial mapping merges, not replaces).
    assert cfg.constraints.min_weeks_between["conference"] == 4 and cfg.fatigue == stock.fatigue
    other = world_config("other_reps")
    assert other.behaviour.visit_weight_by_segment == stock.behaviour.visit_weight_by_segment
    assert deep_merge({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}}) == {"a": {"b": 1, "c": [2]}, "d": 1}


def test_unknown_or_bad_preset_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown world 'nope'; known: .*habituating"):
        world_config("nope")
    with pytest.raises(ConfigError, match="unknown world"):
        world_config("../simulator")
    (tmp_path / "broken.yaml").write_text("wearout:\n  window_days: {fax: 3}\n")
    with pytest.raises(ConfigError, match=re.escape("broken.yaml: wearout.window_days: ")):
        world_config("broken", directory=tmp_path)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"response.link": "probit"}, "response.link"),
        ({"response.timing_sd": -0.1}, "response.timing_sd"),
        ({"repetition.per_exposure_logit": -1}, "repetition.per_exposure_logit"),
        ({"repetition.half_life_days": 0}, "repetition.half_life_days"),
        ({"wearout.window_days": {"conference": -5}}, "wearout.window_days"),
        ({"warmup.target_channels": ["fax"]}, "warmup.target_channels"),
        ({"behaviour.campaign_slots": {"visit": [1, 0]}}, "behaviour.campaign_slots"),
        ({"behaviour.campaign_slots": {"email": [7, 0]}}, "behaviour.campaign_slots"),
        ({"behaviour.repeat_last_item": 1.0}, "behaviour.repeat_last_item"),
        ({"contentless_channels": ["fax"]}, "contentless_channels"),
    ],
)
def test_invalid_effect_knobs_fail_naming_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"simulator.yaml: {key}: ")):
        load_config(SimulatorConfig, "simulator", overrides=overrides)
    with pytest.raises(ConfigError, match=re.escape(f"other_reps.yaml: {key}: ")):
        world_config("other_reps", **overrides)


def test_future_dates_are_still_refused_in_a_world() -> None:
    with pytest.raises(ConfigError, match="lies in the future"):
        world_config("habituating", start_date="2026-11-02", days=365)


@pytest.mark.parametrize("name", WORLD_NAMES)
def test_preset_is_deterministic_by_seed(name: str, tmp_path: Path) -> None:
    a = build_world(tmp_path / "a", name, seed=3, **TINY)
    b = build_world(tmp_path / "b", name, seed=3, **TINY)
    assert _digests(a) == _digests(b)
    c = build_world(tmp_path / "c", name, seed=4, **TINY)
    ta, tc = read_manifest(a)["tables"], read_manifest(c)["tables"]
    assert ta["touchpoints"]["sha256"] != tc["touchpoints"]["sha256"]


def test_default_preset_writes_the_stock_dataset(tmp_path: Path) -> None:
    assert _digests(build_world(tmp_path / "w", "default", seed=3, **TINY)) == _digests(build(tmp_path / "s", seed=3, **TINY))


def test_simulate_command_takes_a_world(tmp_path: Path) -> None:
    out = tmp_path / "data"
    result = runner.invoke(app, ["simulate", "--world", "habituating", "--hcps", "80", "--days", "28", "--seed", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["world"] == "habituating" and figures["hcps_rows"] == 80 and figures["seed"] == 2
    world = json.loads((out / "_ground_truth" / "world.json").read_text())
    assert world["config"]["repetition"]["per_exposure_logit"] == world_config("habituating").repetition.per_exposure_logit > 0
    result = runner.invoke(app, ["simulate", "--world", "atlantis", "--hcps", "80", "--days", "28", "--out", str(tmp_path / "x"), "--quiet"])
    assert result.exit_code != 0 and isinstance(result.exception, ConfigError)
    assert "unknown world 'atlantis'" in str(result.exception) and "other_reps" in str(result.exception)
    assert not (tmp_path / "x").exists()
