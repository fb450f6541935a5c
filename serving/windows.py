"""Suggested time windows: a preferred (weekday, daypart) turned into the next such slot in local time."""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from contract.schema import DAYPART_HOURS, DAYPARTS

_START = np.array([DAYPART_HOURS[d][0] for d in DAYPARTS], dtype=np.int64)
_END = np.array([DAYPART_HOURS[d][1] for d in DAYPARTS], dtype=np.int64)


def next_windows(as_of: datetime, timezones: np.ndarray, weekday: np.ndarray, daypart: np.ndarray) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray]:
    """The next window on ``weekday`` (0 = Monday) in ``daypart`` not yet over at ``as_of``: UTC start/end Series and local ISO strings."""
    s, e, si, ei = window_table(as_of, timezones, weekday, daypart)
    return pd.Series(pd.to_datetime(s, utc=True)), pd.Series(pd.to_datetime(e, utc=True)), si, ei


def window_table(as_of: datetime, timezones: np.ndarray, weekday: np.ndarray, daypart: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As ``next_windows`` with UTC times as int64 nanoseconds, computed once per distinct (zone, weekday, daypart).

    A plain loop over the distinct keys (at most zones x 28): pandas' per-call overhead was
    most of a single-HCP request here, and a batch has few distinct keys.
    """
    n = len(weekday)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.empty(0, dtype=object), np.empty(0, dtype=object)
    now = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=timezone.utc)
    keys = list(zip(np.asarray(timezones, dtype=object).tolist(), np.asarray(weekday, dtype=np.int64).tolist(), np.asarray(daypart, dtype=np.int64).tolist()))
    index: dict[tuple, int] = {}
    table: list[tuple[int, int, str, str]] = []
    for key in keys:
        if key not in index:
            index[key] = len(table)
            table.append(_window(now, *key))
    codes = np.fromiter((index[key] for key in keys), dtype=np.int64, count=n) if len(table) > 1 else np.zeros(n, dtype=np.int64)
    s_ns, e_ns, s_iso, e_iso = (np.asarray(col, dtype=object if j >= 2 else np.int64) for j, col in enumerate(zip(*table)))
    return s_ns[codes], e_ns[codes], s_iso[codes], e_iso[codes]


def _window(now: datetime, zone: str, wd: int, dp: int) -> tuple[int, int, str, str]:
    tz = ZoneInfo(str(zone))
    local = now.astimezone(tz)
    day = local.date() + timedelta(days=(wd - local.weekday()) % 7)
    start = datetime.combine(day, time(int(_START[dp])), tzinfo=tz)
    end = datetime.combine(day, time(0), tzinfo=tz) + timedelta(hours=int(_END[dp]))
    if end <= local:
        start, end = start + timedelta(days=7), end + timedelta(days=7)
    # Whole hours: the epoch seconds are exact integers.
    return int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9, start.isoformat(), end.isoformat()
