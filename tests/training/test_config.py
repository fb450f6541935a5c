"""The training config: the stock YAML loads, bad values fail naming the key."""

from __future__ import annotations

import pytest

from nba.configuration import ConfigError, load_config
from training.config import TrainingConfig


def test_stock_yaml_matches_the_defaults() -> None:
    assert load_config(TrainingConfig, "training") == TrainingConfig()


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("model.encoder", "lstm", "model.encoder"),
        ("loss.objective", "magic", "loss.objective"),
        ("loss.ips_clip", 0.5, "loss.ips_clip"),
        ("modle.d_model", 8, "modle"),
    ],
)
def test_bad_values_name_the_key(key, value, named) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(TrainingConfig, "training", overrides={key: value})


def test_heads_must_divide_width() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        load_config(TrainingConfig, "training", overrides={"model.d_model": 30, "model.n_heads": 4})
