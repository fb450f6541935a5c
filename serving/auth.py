"""API keys for CRM callers, kept only as SHA-256 hashes.

Keys come from config (hashes) or from the environment: ``NBA_API_KEY_HASHES`` holds
``name:sha256hex`` pairs, ``NBA_API_KEYS`` holds ``name:plaintext`` pairs that are hashed at
load and never kept. Comparison is constant-time so a caller cannot time its way to a key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

_HEX = set("0123456789abcdef")


def hash_key(key: str) -> str:
    """The SHA-256 hex digest under which a key is stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    """A fresh random API key (URL-safe, 256 bits)."""
    return "nba_" + secrets.token_urlsafe(32)


def _pairs(text: str, var: str) -> list[tuple[str, str]]:
    out = []
    for i, item in enumerate(filter(None, (p.strip() for p in text.split(","))), start=1):
        name, sep, value = item.partition(":")
        if not sep or not name or not value:
            raise ValueError(f"{var}: entry {i} must look like name:value")
        out.append((name, value))
    return out


@dataclass(frozen=True)
class KeyRing:
    """Caller names by key hash; ``verify`` answers which caller a presented key belongs to."""

    hashes: Mapping[str, str]  # sha256 hex -> caller name

    @classmethod
    def load(cls, configured: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None) -> KeyRing:
        """Merge configured ``{name: sha256}`` with the environment variables described above."""
        env = os.environ if environ is None else environ
        by_hash: dict[str, str] = {}
        entries = list((configured or {}).items())
        entries += _pairs(env.get("NBA_API_KEY_HASHES", ""), "NBA_API_KEY_HASHES")
        for name, digest in entries:
            digest = digest.lower()
            if len(digest) != 64 or not set(digest) <= _HEX:
                raise ValueError(f"api key hash for {name!r} is not a SHA-256 hex digest")
            by_hash[digest] = name
        for name, plain in _pairs(env.get("NBA_API_KEYS", ""), "NBA_API_KEYS"):
            by_hash[hash_key(plain)] = name
        return cls(by_hash)

    def verify(self, presented: str | None) -> str | None:
        """The caller's name if ``presented`` is a known key, else None."""
        if not presented:
            return None
        digest = hash_key(presented)
        found = None
        for known, name in self.hashes.items():
            # Check every entry so the time taken does not reveal which one matched.
            if hmac.compare_digest(known, digest):
                found = name
        return found
