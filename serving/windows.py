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
    """As ``_next_windows``, computed once per distinct (time zone, weekday, daypart) and broadcast."""
    if len(weekday) == 0:
        empty = pd.Series([], dtype="datetime64[ns, UTC]")
        return empty, empty.copy(), np.empty(0, dtype=object), np.empty(0, dtype=object)
    keys = pd.DataFrame({"tz": np.asarray(timezones, dtype=object), "wd": np.asarray(weekday, dtype=np.int64), "dp": np.asarray(daypart, dtype=np.int64)})
    codes, uniq = pd.MultiIndex.from_frame(keys).factorize()
    u = pd.DataFrame(list(uniq), columns=["tz", "wd", "dp"])
    s, e, si, ei = _next_windows(as_of, u["tz"].to_numpy(dtype=object), u["wd"].to_numpy(), u["dp"].to_numpy())
    # take() keeps the tz-aware dtype; to_numpy() would box every value as a Timestamp.
    return (pd.Series(s.array.take(codes)), pd.Series(e.array.take(codes)), si[codes], ei[codes])


def _next_windows(as_of: datetime, timezones: np.ndarray, weekday: np.ndarray, daypart: np.ndarray) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray]:
    """The next window on ``weekday`` (0 = Monday) in ``daypart`` that has not ended at ``as_of``.

    Called once per distinct (zone, weekday, daypart), so a plain loop is bounded by
    zones x 28 slots whatever the number of HCPs (pandas per-call overhead dominated here).
    """
    now = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=timezone.utc)
    starts, ends, s_iso, e_iso = [], [], [], []
    for zone, wd, dp in zip(timezones, weekday, daypart):
        tz = ZoneInfo(str(zone))
        local = now.astimezone(tz)
        day = local.date() + timedelta(days=(int(wd) - local.weekday()) % 7)
        start = datetime.combine(day, time(int(_START[dp])), tzinfo=tz)
        end = datetime.combine(day, time(0), tzinfo=tz) + timedelta(hours=int(_END[dp]))
        if end <= local:
            start, end = start + timedelta(days=7), end + timedelta(days=7)
        starts.append(start.astimezone(timezone.utc))
        ends.append(end.astimezone(timezone.utc))
        s_iso.append(start.isoformat())
        e_iso.append(end.isoformat())
    return (pd.Series(pd.to_datetime(starts, utc=True)), pd.Series(pd.to_datetime(ends, utc=True)),
            np.asarray(s_iso, dtype=object), np.asarray(e_iso, dtype=object))


def _iso(stamps: pd.DatetimeIndex) -> np.ndarray:
    """ISO 8601 with a ``+08:00`` offset (strftime only gives ``+0800``)."""
    s = pd.Series(stamps.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return (s.str[:-2] + ":" + s.str[-2:]).to_numpy(dtype=object)
