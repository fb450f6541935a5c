"""The serving config: stock YAML loads, new keys validate and name the offending key."""

from __future__ import annotations

import pytest

from nba.configuration import ConfigError, load_config
from serving.config import ServingConfig


def test_stock_config_loads_with_rules_and_model_settings() -> None:
    cfg = load_config(ServingConfig, "serving")
    assert cfg.rules.unopened_pushes == 3 and cfg.require_model and cfg.degraded_channels == ["visit"]
    assert cfg.torch_threads == 1 and cfg.tracking_uri.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [("degraded_channels", ["fax"], "degraded_channels"), ("rules.unopened_pushes", 0, "rules.unopened_pushes"), ("batch_chunk", 0, "batch_chunk")],
)
def test_invalid_values_name_the_key(key, value, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(ServingConfig, "serving", overrides={key: value})
