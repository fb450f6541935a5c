"""Production backends against the real servers: Redis online store, PostgreSQL SQL registry."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest
from tiny_contract import T0, features_config

from features import apply, build_sources, compute_features_asof, get_online_features, materialize, open_store, push_events
from features.build import read_build_manifest

pytestmark = pytest.mark.slow


def _with_sslmode(url: str) -> str:
    return url + ("&" if "?" in url else "?") + "sslmode=disable"


@pytest.mark.redis
@pytest.mark.postgres
def test_redis_online_store_with_postgres_registry(tmp_path, dataset, tables, redis_url, postgres_db):
    import redis

    cfg = features_config(
        dataset, tmp_path / "ws", online_store={"type": "redis", "url": redis_url}, registry={"type": "sql", "url": _with_sslmode(postgres_db)}
    )
    build_sources(cfg, progress=False)
    apply(cfg)
    store = open_store(cfg)
    materialize(cfg, store=store)
    assert redis.Redis.from_url(redis_url).dbsize() > 0  # rows really live in Redis
    online = get_online_features(store, ["h1", "ghost"])
    assert online["is_missing"].tolist() == [False, True]
    last = pd.Timestamp(read_build_manifest(cfg)["last_snapshot_s"], unit="s", tz="UTC")
    pure = compute_features_asof(tables, last, cfg).set_index("hcp_id").loc["h1"]
    assert online.iloc[0]["touches_total"] == pure["touches_total"]
    assert list(online.iloc[0]["seq_channel"]) == list(pure["seq_channel"])
    fresh = tables["touchpoints"].iloc[[0]].copy()
    fresh["event_id"], fresh["ts"] = "fresh-r", pd.Timestamp(T0 + timedelta(days=40))
    push_events(cfg, fresh, store=store)
    assert get_online_features(store, ["h1"]).iloc[0]["touches_total"] == pure["touches_total"] + 1


@pytest.mark.postgres
def test_sql_registry_is_shared_and_checked(tmp_path, dataset, postgres_db):
    from features import FeatureRepoMismatch

    url = _with_sslmode(postgres_db)
    cfg = features_config(dataset, tmp_path / "ws", registry={"type": "sql", "url": url})
    build_sources(cfg, progress=False)
    apply(cfg)
    # A second process (fresh store object) sees the same definitions through PostgreSQL.
    names = sorted(fv.name for fv in open_store(cfg).list_feature_views())
    assert "hcp_touch_sequence" in names and "hcp_engagement_90d" in names
    with pytest.raises(FeatureRepoMismatch, match="hcp_outcomes_8w"):
        open_store(features_config(dataset, tmp_path / "ws", registry={"type": "sql", "url": url}, outcome_windows_weeks=[4, 8]))


@pytest.mark.redis
def test_redis_unknown_ids_default(tmp_path, dataset, redis_url):
    cfg = features_config(dataset, tmp_path / "ws", online_store={"type": "redis", "url": redis_url})
    build_sources(cfg, progress=False)
    apply(cfg)
    out = get_online_features(cfg, ["nobody", "nobody-else"])  # nothing materialized yet
    assert out["is_missing"].all() and (out["seq_len"] == 0).all() and (out["segment"] == -1).all()
