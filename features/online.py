"""Direct online reads: all ids at once from Feast's online store, decoded in bulk.

Feast's ``FeatureStore.get_online_features`` builds a response proto value by value and then
converts every value (each of ~200 floats in a packed vector) to a Python object: several
times our whole budget for 1,000 HCPs. This module reads the same Feast online store, written
by Feast's materialisation and push: on SQLite one query per view on Feast's own table, on
Redis one HMGET per id over Feast's hash fields (every view of an entity shares one hash),
otherwise the store's ``online_read``. Values are decoded into numpy, giving the columns Feast's
``to_dict()`` would (values, or None where the store holds nothing); the tests compare both.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

import numpy as np

# ValueProto oneof field per stored kind (features.catalog KINDS).
_FIELD = {
    "int32": "int32_val",
    "int64": "int64_val",
    "float32": "float_val",
    "bool": "bool_val",
    "string": "string_val",
    "array_int64": "int64_list_val",
    "array_float32": "float_list_val",
    "array_string": "string_list_val",
}
_LIST_DTYPE = {"array_int64": np.int64, "array_float32": np.float32}
# Ids per SQLite query: two bound parameters each, well under SQLite's 32,766 limit.
_SQLITE_BATCH = 5_000


def entity_keys(key: str, ids: list[str]) -> list:
    """EntityKeyProtos for string ids of a single-key entity (what Feast builds for entity_rows)."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return [EntityKey(join_keys=[key], entity_values=[Value(string_val=i)]) for i in ids]


def serialized_keys(key: str, ids: list[str], version: int) -> list[bytes]:
    """Feast's serialised entity keys for string ids of a single-key entity.

    Feast's ``serialize_entity_key`` builds each key through a proto (~10 us an id); for one
    string join key the v3 layout is a fixed prefix and the id's length-prefixed UTF-8 (tested
    equal to Feast's). Other versions go through Feast.
    """
    import struct

    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.Value_pb2 import ValueType

    if version != 3:
        return [serialize_entity_key(p, entity_key_serialization_version=version) for p in entity_keys(key, ids)]
    name = key.encode("utf8")
    prefix = struct.pack("<III", 1, ValueType.STRING, len(name)) + name
    tag = struct.pack("<I", ValueType.STRING)
    out = []
    for i in ids:
        b = i.encode("utf8")
        out.append(prefix + tag + struct.pack("<I", len(b)) + b)
    return out


def registered_views(store, names: list[str]) -> list:
    """The registered FeatureView objects for ``names``, cached on the store (immutable between applies)."""
    cache = store.__dict__.setdefault("_nba_feature_views", {})
    missing = [n for n in names if n not in cache]
    if missing:
        for fv in store.list_feature_views(allow_cache=True):
            cache[fv.name] = fv
    return [cache[n] for n in names]


def _packed_floats(values: list, k: int) -> np.ndarray:
    """Float lists of ``k`` items each -> an (n, k) float32 matrix, without a Python float per item."""
    if not values:
        return np.zeros((0, k), dtype=np.float32)
    # A FloatList serialises as tag 0x0a, a varint byte length, then packed little-endian float32s;
    # one bytes join + frombuffer replaces n*k Python float objects (the cost of Feast's to_dict).
    blobs = [v.SerializeToString() for v in values]
    body = 4 * k
    head = len(blobs[0]) - body
    if k and all(len(b) == head + body for b in blobs) and blobs[0][:1] == b"\x0a":
        flat = np.frombuffer(b"".join(b[head:] for b in blobs), dtype="<f4")
        return flat.reshape(len(values), k).astype(np.float32, copy=False)
    return np.array([np.fromiter(v.val, dtype=np.float32, count=len(v.val)) for v in values], dtype=np.float32).reshape(len(values), k)


def _float_list(v) -> np.ndarray:
    """One FloatList as float32 numpy, read straight from its packed wire bytes."""
    count = len(v.val)
    blob = v.SerializeToString()
    head = len(blob) - 4 * count
    if count and blob[:1] == b"\x0a" and 1 < head <= 11:
        return np.frombuffer(blob, dtype="<f4", offset=head).astype(np.float32)
    return np.fromiter(v.val, dtype=np.float32, count=count)


def decode_packed_blobs(blobs: list, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Serialised ValueProtos of a packed vector -> (valid mask, rows), without parsing each proto.

    A ``float_list_val`` of ``width`` floats always serialises as the same header followed by the
    packed float32s, so the floats are the last 4*width bytes; a blob with any other header
    (never written by this package) goes through the proto parser instead.
    """
    from feast.protos.feast.types.Value_pb2 import Value

    body = 4 * width
    header = Value(float_list_val={"val": [0.0] * width}).SerializeToString()[:-body] if width else b""
    valid = np.array([b is not None for b in blobs], dtype=bool)
    present = [blobs[i] for i in np.flatnonzero(valid)]
    size = len(header) + body
    # Checked for every blob, with C-level loops (a generator here cost ~30 ms per 1,000 ids).
    if width and all(map(size.__eq__, map(len, present))) and all(map(bytes.startswith, present, repeat(header))):
        flat = np.frombuffer(b"".join(b[-body:] for b in present), dtype="<f4")
        return valid, flat.reshape(len(present), width).astype(np.float32)
    return decode_packed([None if b is None else Value.FromString(b) for b in blobs], width)


def decode_packed(protos: list, width: int) -> tuple[np.ndarray, np.ndarray]:
    """ValueProtos of a packed vector -> (valid mask, (n_valid, width) float32 rows)."""
    valid = np.array([p is not None and p.WhichOneof("val") == "float_list_val" for p in protos], dtype=bool)
    rows = _packed_floats([protos[i].float_list_val for i in np.flatnonzero(valid)], width)
    return valid, rows


def decode_column(kind: str, protos: list) -> list:
    """ValueProtos of one feature -> Python/numpy values, None where the value is unset."""
    field = _FIELD[kind]
    present = [p is not None and p.WhichOneof("val") == field for p in protos]
    out: list[Any] = [None] * len(protos)
    for i, ok in enumerate(present):
        if not ok:
            continue
        v = getattr(protos[i], field)
        if kind == "array_float32":
            out[i] = _float_list(v)
        elif kind in _LIST_DTYPE:
            out[i] = np.fromiter(v.val, dtype=_LIST_DTYPE[kind], count=len(v.val))
        elif kind == "array_string":
            out[i] = list(v.val)
        else:
            out[i] = v
    return out


def _sqlite_blobs(online_store, config, fvs: list, names: list[list[str]], keys: list[bytes]) -> list[dict[str, np.ndarray]]:
    # Feast's own SQLite table (same name and layout its online_read uses), but one key
    # serialisation for all views, no per-row timestamp parsing, and each feature's blobs
    # scattered into place by numpy rather than row by row in Python.
    from feast.infra.online_stores.sqlite import _quote_id, _table_id

    conn = online_store._get_conn(config)
    out = []
    for fv, wanted in zip(fvs, names):
        table = _quote_id(_table_id(config.project, fv, config.registry.enable_online_feature_view_versioning))
        rows = []
        # The ids travel as a VALUES list carrying their position, so rows come back already
        # indexed; batches stay under SQLite's bound-parameter limit.
        for a in range(0, len(keys), _SQLITE_BATCH):
            part = keys[a : a + _SQLITE_BATCH]
            ids_cte = "WITH ids(i, k) AS (VALUES " + ",".join(["(?,?)"] * len(part)) + ")"
            params = [x for i, k in enumerate(part, start=a) for x in (i, k)]
            rows += conn.execute(f"{ids_cte} SELECT t.feature_name, ids.i, t.value FROM ids JOIN {table} t ON t.entity_key = ids.k", params).fetchall()
        cols = {n: np.full(len(keys), None, dtype=object) for n in wanted}
        if rows:
            fname, pos, blob = zip(*rows)
            fname, pos = np.asarray(fname, dtype=object), np.asarray(pos, dtype=np.int64)
            blob_arr = np.empty(len(blob), dtype=object)
            blob_arr[:] = blob
            for n in wanted:
                sel = fname == n
                cols[n][pos[sel]] = blob_arr[sel]
        out.append(cols)
    return out


def _redis_blobs(online_store, config, fvs: list, names: list[list[str]], keys: list[bytes]) -> list[dict[str, Any]]:
    # Feast keeps every view of an entity in one Redis hash: one HMGET per id fetches all views.
    from feast.infra.online_stores.redis import _versioned_fv_name

    fields: list = []
    spans = []
    for fv, wanted in zip(fvs, names):
        _, hset = online_store._generate_hset_keys_for_features(fv, list(wanted), fv_name_override=_versioned_fv_name(fv, config))
        hset = hset[: len(wanted)]  # drop the view's timestamp field, not needed here
        spans.append((len(fields), wanted))
        fields += hset
    project = config.project.encode("utf-8")
    replies = online_store._read_hash_fields(config, [(k + project, fields) for k in keys])
    grid = np.empty((len(keys), len(fields)), dtype=object)
    for i, r in enumerate(replies):
        grid[i] = r
    return [{n: grid[:, a + j] for j, n in enumerate(wanted)} for a, wanted in spans]


def _generic_blobs(provider, config, fvs: list, names: list[list[str]], protos: list) -> list[dict[str, Any]]:
    out = []
    for fv, wanted in zip(fvs, names):
        rows = provider.online_read(config=config, table=fv, entity_keys=protos, requested_features=list(wanted))
        out.append({n: [None if feats is None else feats.get(n) for _, feats in rows] for n in wanted})
    return out


def read_online(store, views: list, key: str, ids: list[str]) -> dict[str, Any]:
    """Stored feature name -> one value per id (None where missing), read from the store's online store.

    A packed view's vector comes as (valid mask, rows of the valid ids), which
    ``retrieval.unpack_rows`` takes as is.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore
    from feast.infra.online_stores.sqlite import SqliteOnlineStore
    from feast.protos.feast.types.Value_pb2 import Value

    names = [[n for n, _ in v.stored_features] for v in views]
    if not ids:
        return {n: [] for ns in names for n in ns}
    uniq, inverse = np.unique(np.asarray(ids, dtype=object), return_inverse=True)
    uniq = [str(u) for u in uniq]
    fvs = registered_views(store, [v.name for v in views])
    config = store.config
    provider = store._get_provider()
    online_store = provider.online_store
    if isinstance(online_store, (SqliteOnlineStore, RedisOnlineStore)):
        keys = serialized_keys(key, uniq, config.entity_key_serialization_version)
        fetch = _sqlite_blobs if isinstance(online_store, SqliteOnlineStore) else _redis_blobs
        blobs = fetch(online_store, config, fvs, names, keys)
        parsed = True
    else:
        blobs = _generic_blobs(provider, config, fvs, names, entity_keys(key, uniq))
        parsed = False
    data: dict[str, Any] = {}
    for view, rows in zip(views, blobs):
        for name, kind in view.stored_features:
            cells = rows[name]
            if view.packed:
                width = len(view.features)
                valid, packed = decode_packed_blobs(list(cells), width) if parsed else decode_packed(cells, width)
                # Back from unique ids to the caller's ids (repeats included).
                slot = np.cumsum(valid) - 1
                data[name] = (valid[inverse], packed[slot[inverse][valid[inverse]]])
                continue
            if parsed:
                cells = [None if b is None else Value.FromString(b) for b in cells]
            col = decode_column(kind, cells)
            data[name] = [col[j] for j in inverse]
    return data


def bound_redis_client(store, *, connect_timeout_s: float, read_timeout_s: float) -> bool:
    """Give the store's Redis online store a client with short timeouts and no retries (False: not a plain Redis store).

    Feast builds redis-py's client from the connection string alone, and redis-py 7 retries a
    refused connection 3 times with jittered back-off: 3-6 s per call while Redis is down. A
    fallback is only useful if it comes fast, so the engine fails in tens of milliseconds and
    lets its circuit breaker decide when to try again. Reads and pushes share this client.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore, RedisType
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    online_store = store._get_provider().online_store
    osc = store.config.online_store
    if not isinstance(online_store, RedisOnlineStore) or osc.redis_type != RedisType.redis:
        return False
    nodes, kwargs = RedisOnlineStore._parse_connection_string(osc.connection_string)
    kwargs.update(
        host=nodes[0]["host"],
        port=int(nodes[0]["port"]),
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=read_timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=0,
    )
    online_store._client = Redis(**kwargs)
    return True


def stored_event_times(store, view_names: list[str], key: str, ids: list[str]) -> dict[str, np.ndarray] | None:
    """Per view, the event time (ns since the epoch, 0 where none) of each id's row in a Redis online store; None on other stores.

    Feast's Redis writer keeps a row only if it is stamped later than the stored one; a push
    stamped just after these times is never dropped, whatever the order its events came in.
    """
    from feast.infra.online_stores.redis import RedisOnlineStore, _versioned_fv_name
    from google.protobuf.timestamp_pb2 import Timestamp

    config = store.config
    online_store = store._get_provider().online_store
    if not isinstance(online_store, RedisOnlineStore) or not ids:
        return None
    fvs = registered_views(store, view_names)
    fields = [f"_ts:{_versioned_fv_name(fv, config)}" for fv in fvs]
    project = config.project.encode("utf-8")
    keys = serialized_keys(key, [str(i) for i in ids], config.entity_key_serialization_version)
    replies = online_store._read_hash_fields(config, [(k + project, fields) for k in keys])
    out = {n: np.zeros(len(ids), dtype=np.int64) for n in view_names}
    for i, reply in enumerate(replies):
        for n, raw in zip(view_names, reply):
            if raw:
                ts = Timestamp()
                ts.ParseFromString(raw)
                out[n][i] = ts.seconds * 1_000_000_000 + ts.nanos
    return out
