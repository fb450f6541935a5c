"""The config loader: YAML + overrides into typed stage configs, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from nba.configuration import ConfigError, StageConfig, load_config, parse_override


class _Inner(StageConfig):
    url: str = "sqlite://"
    pool: int = Field(4, ge=1)


class _Cfg(StageConfig):
    seed: int = 0
    hcps: int = Field(100, gt=0)
    inner: _Inner = _Inner()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "stage.yaml"
    p.write_text(text)
    return p


def test_yaml_values_and_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "seed: 3\nhcps: 50\ninner:\n  pool: 2\n")
    cfg = load_config(_Cfg, "stage", path, overrides={"hcps": 70, "inner.url": "redis://x", "seed": None})
    assert (cfg.seed, cfg.hcps, cfg.inner.pool, cfg.inner.url) == (3, 70, 2, "redis://x")


def test_invalid_value_names_file_and_key(tmp_path: Path) -> None:
    path = _write(tmp_path, "hcps: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(_Cfg, "stage", path)
    assert str(path) in str(err.value) and "hcps" in str(err.value) and "greater than 0" in str(err.value)


def test_unknown_nested_key_is_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, "inner:\n  poool: 3\n")
    with pytest.raises(ConfigError, match=r"inner\.poool: unknown key"):
        load_config(_Cfg, "stage", path)


def test_missing_explicit_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(_Cfg, "stage", tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_Cfg, "stage", _write(tmp_path, "- a\n- b\n"))


def test_parse_override_reads_yaml_scalars() -> None:
    assert parse_override("a.b=3") == ("a.b", 3)
    assert parse_override("flag=true") == ("flag", True)
    assert parse_override("xs=[1, 2]") == ("xs", [1, 2])
    with pytest.raises(ConfigError):
        parse_override("novalue")
