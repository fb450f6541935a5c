"""The direct online reader returns exactly the frame Feast's own get_online_features gives."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from tiny_contract import T0, features_config

from features import apply, build_sources, get_online_features, materialize, open_store, push_events

pytestmark = pytest.mark.slow

IDS = ["h2", "ghost", "h1", "h3", "h1", "nobody"]  # unknown ids and a repeat, in a scrambled order


def assert_same_frame(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Same columns, dtypes and values; array cells compared element by element with their dtype."""
    assert list(a.columns) == list(b.columns)
    assert a.dtypes.tolist() == b.dtypes.tolist()
    assert len(a) == len(b)
    for c in a.columns:
        for x, y in zip(a[c].tolist(), b[c].tolist()):
            if isinstance(x, np.ndarray):
                assert isinstance(y, np.ndarray) and x.dtype == y.dtype and x.tolist() == y.tolist(), c
            else:
                assert type(x) is type(y) and x == y, (c, x, y)


def _compare(store) -> pd.DataFrame:
    direct = get_online_features(store, IDS)
    assert_same_frame(direct, get_online_features(store, IDS, via="feast"))
    content = get_online_features(store, ["c2", "zz", "c1"], service="nba_content_v1")
    assert_same_frame(content, get_online_features(store, ["c2", "zz", "c1"], service="nba_content_v1", via="feast"))
    assert content["is_missing"].tolist() == [False, True, False]
    return direct


def test_direct_read_equals_feast_on_sqlite(built_store):
    cfg, store, _ = built_store
    out = _compare(store)
    assert out["hcp_id"].tolist() == IDS
    assert out["is_missing"].tolist() == [False, True, False, False, False, True]
    # The values are real, not defaults everywhere: h1 has touches and a sequence.
    assert out.iloc[2]["touches_total"] > 0 and out.iloc[2]["seq_len"] > 0
    one = get_online_features(store, ["h1"])
    assert_same_frame(one, get_online_features(store, ["h1"], via="feast"))


def test_direct_read_rejects_unknown_mode(built_store):
    _, store, _ = built_store
    with pytest.raises(ValueError, match="via must be"):
        get_online_features(store, ["h1"], via="fast")


@pytest.mark.redis
def test_direct_read_equals_feast_on_redis(tmp_path, dataset, tables, redis_url):
    cfg = features_config(dataset, tmp_path / "ws", online_store={"type": "redis", "url": redis_url})
    build_sources(cfg, progress=False)
    apply(cfg)
    store = open_store(cfg)
    assert get_online_features(store, IDS)["is_missing"].all()  # nothing materialised yet
    materialize(cfg, store=store)
    before = _compare(store)
    # Pushed rows (written by Feast's push path, not materialisation) read the same way.
    fresh = tables["touchpoints"].iloc[[0]].copy()
    fresh["event_id"], fresh["hcp_id"], fresh["ts"] = "fresh-o", "h3", pd.Timestamp(T0 + timedelta(days=40))
    push_events(cfg, fresh, store=store)
    after = _compare(store)
    assert after.iloc[3]["touches_total"] == before.iloc[3]["touches_total"] + 1


def test_serialized_keys_match_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key

    from features.online import entity_keys, serialized_keys

    ids = ["h1", "H0000001", "", "医生-7", "x" * 300]
    feast_keys = [serialize_entity_key(p, entity_key_serialization_version=3) for p in entity_keys("hcp_id", ids)]
    assert serialized_keys("hcp_id", ids, 3) == feast_keys


def test_packed_blobs_decode_without_the_parser_and_fall_back_when_odd(monkeypatch):
    from feast.protos.feast.types.Value_pb2 import Value

    from features import online

    rows = [np.array([1.5, -2.0, 3.25], dtype=np.float32), None, np.array([0.0, 7.0, 1e-3], dtype=np.float32)]
    blobs = [None if r is None else Value(float_list_val={"val": r.tolist()}).SerializeToString() for r in rows]
    calls = []
    monkeypatch.setattr(online, "decode_packed", lambda *a: calls.append(a) or (_ for _ in ()).throw(AssertionError("parser used")))
    valid, mat = online.decode_packed_blobs(blobs, 3)
    assert valid.tolist() == [True, False, True] and mat.dtype == np.float32
    assert mat.tolist() == [rows[0].tolist(), rows[2].tolist()] and not calls
    monkeypatch.undo()
    # A vector of another width has another header: it goes to the parser, which refuses it
    # rather than misreading bytes.
    odd = blobs[:2] + [Value(float_list_val={"val": [1.0, 2.0]}).SerializeToString()]
    with pytest.raises(ValueError):
        online.decode_packed_blobs(odd, 3)
