"""Which channels serving sends without content: the champion's (learnt from its data), else the config's."""

from __future__ import annotations

import numpy as np
import pytest

from contract.schema import CHANNELS


def test_champion_decides_and_the_config_covers_rules_only() -> None:
    from serving.scoring import LoadedModel, contentless_channels
    from training.contentless import contentless_mask

    class _Bundle:  # only what the rule reads
        contentless = contentless_mask([])  # this customer's calls carry content

    champion = LoadedModel(_Bundle(), "m", "1", "champion")
    assert not contentless_channels(champion, ["phone"]).any()
    rules_only = contentless_channels(None, ["phone", "conference"])
    assert [c for c, m in zip(CHANNELS, rules_only) if m] == ["conference", "phone"]
    np.testing.assert_array_equal(contentless_channels(None, []), np.zeros(len(CHANNELS), dtype=bool))


def test_config_key_defaults_to_phone_and_names_unknown_channels() -> None:
    from nba.configuration import ConfigError, load_config
    from serving.config import ServingConfig

    assert load_config(ServingConfig, "serving").contentless_channels == ["phone"]
    with pytest.raises(ConfigError, match="contentless_channels"):
        load_config(ServingConfig, "serving", overrides={"contentless_channels": ["fax"]})
