"""Time-ordered ids (UUIDv7 layout, RFC 9562) for requests and suggestions.

The first 48 bits are the Unix time in milliseconds, so ids sort by creation time: an index on
them (the audit trail's primary keys) appends at its right edge instead of splitting random pages,
and a range of ids is a range of time. The remaining 74 bits are random (collision odds as uuid4's
within one millisecond). Written here rather than pulled from a package: it is a dozen lines.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import numpy as np

_VARIANT = "89ab"  # the two top bits of byte 8 are 10: one of these hex digits


def uuid7_hex(n: int, now_ms: int | None = None) -> np.ndarray:
    """``n`` UUIDv7 ids as 32 lowercase hex digits (uuid.hex's shape), all stamped with one millisecond."""
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    stamp = f"{ms & 0xFFFF_FFFF_FFFF:012x}7"
    raw = os.urandom(10 * n).hex()  # 20 hex digits per id: 3 for rand_a, 1 for the variant, 16 for rand_b
    out = [None] * n
    for i in range(n):
        r = raw[20 * i : 20 * (i + 1)]
        out[i] = stamp + r[:3] + _VARIANT[int(r[3], 16) & 3] + r[4:19]
    return np.asarray(out, dtype=object)


def uuid7_time(hex_id: str) -> datetime:
    """The creation time (UTC, millisecond precision) stamped in a UUIDv7 hex id."""
    return datetime.fromtimestamp(int(hex_id[:12], 16) / 1000, UTC)
