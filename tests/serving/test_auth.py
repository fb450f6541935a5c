"""API keys: hashed at rest, from config or environment, verified by hash."""

from __future__ import annotations

import pytest

from serving.auth import KeyRing, hash_key, new_key


def test_keys_from_config_and_environment() -> None:
    crm, batch = new_key(), new_key()
    ring = KeyRing.load({"crm-veeva": hash_key(crm)}, {"NBA_API_KEYS": f"nightly:{batch}"})
    assert ring.verify(crm) == "crm-veeva"
    assert ring.verify(batch) == "nightly"
    assert ring.verify(crm + "x") is None and ring.verify("") is None and ring.verify(None) is None
    assert batch not in repr(ring) and crm not in repr(ring), "plaintext keys must not be kept"


def test_hash_list_in_environment() -> None:
    key = new_key()
    ring = KeyRing.load(None, {"NBA_API_KEY_HASHES": f"a:{hash_key(key).upper()}"})
    assert ring.verify(key) == "a"


@pytest.mark.parametrize(
    "configured, environ, message",
    [
        ({"crm": "abc"}, {}, "'crm' is not a SHA-256"),
        (None, {"NBA_API_KEYS": "justakey"}, "NBA_API_KEYS: entry 1"),
        (None, {"NBA_API_KEY_HASHES": "a:" + "0" * 64 + ",b:"}, "NBA_API_KEY_HASHES: entry 2"),
    ],
)
def test_malformed_keys_fail_at_load(configured, environ, message) -> None:
    with pytest.raises(ValueError, match=message):
        KeyRing.load(configured, environ)
