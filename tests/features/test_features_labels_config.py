"""Decision labels by hand, and config validation naming the key."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from tiny_contract import T0

from features import decision_labels
from features.catalog import catalog, expected_schema, schema_diff
from features.config import FeaturesConfig, load_features_config
from nba.configuration import ConfigError


def test_labels_one_row_per_outbound_touch(tables, dataset):
    labels = decision_labels(dataset, T0, T0 + pd.Timedelta(days=14))
    assert len(labels) == 6  # the inbound message is not a decision
    assert labels["event_timestamp"].dt.dayofweek.eq(0).all()  # Mondays
    assert (labels["event_timestamp"] <= labels["label_ts"]).all()
    webinar = labels[labels["label_channel"] == 5].iloc[0]
    assert webinar["hcp_id"] == "h1" and webinar["label_content_id"] == "c2"
    assert webinar["event_timestamp"] == pd.Timestamp(T0 + pd.Timedelta(days=7))
    assert (webinar["label_day_offset"], webinar["label_daypart"], webinar["label_response"]) == (3, 3, 1)
    visit = labels[labels["label_channel"] == 0].iloc[0]
    assert visit["label_content_id"] == "" and np.isnan(visit["label_propensity"])
    email = labels[labels["label_channel"] == 4].iloc[0]
    assert email["label_response"] == 0 and email["label_propensity"] == 0.5
    # Same answer from in-memory tables as from the dataset directory.
    pd.testing.assert_frame_equal(labels, decision_labels(tables, T0, T0 + pd.Timedelta(days=14)))


def test_labels_window_is_half_open(tables):
    first_day = decision_labels(tables, T0 + pd.Timedelta(days=1), T0 + pd.Timedelta(days=3))
    assert len(first_day) == 2  # day 1 push and day 2 email; the day-3 push is excluded


def test_redis_without_url_names_the_key(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("online_store:\n  type: redis\n")
    with pytest.raises(ConfigError, match="online_store"):
        load_features_config(path)


def test_unknown_key_and_bad_window(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("sequence_lenght: 5\n")
    with pytest.raises(ConfigError, match="sequence_lenght: unknown key"):
        load_features_config(path)
    with pytest.raises(ConfigError, match="engagement_windows_days"):
        load_features_config(None, {"engagement_windows_days": [7, 7]})


def test_stock_config_paths_resolve_absolute():
    cfg = load_features_config()
    assert cfg.data_dir.is_absolute() and cfg.workspace_dir.is_absolute()
    assert cfg.sequence_length == 20 and cfg.online_store.type == "sqlite"


def test_catalog_follows_config_and_diff_explains():
    small = FeaturesConfig(engagement_windows_days=[7], visits_window_days=30)
    views = catalog(small)
    assert "hcp_engagement_7d" in views and "hcp_visits_30d" in views
    assert "wechat_push_sent_7d" in views["hcp_engagement_7d"].feature_names
    diff = schema_diff(expected_schema(FeaturesConfig()), expected_schema(small))
    assert any("views missing" in d and "hcp_engagement_90d" in d for d in diff)
    assert schema_diff(expected_schema(small), expected_schema(small)) == []
