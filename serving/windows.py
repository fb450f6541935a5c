"""Suggested time windows: a preferred (weekday, daypart) turned into the next such slot in local time.

A slot is ``weekday * 4 + daypart`` (28 a week, the model's layout). Two planning horizons:
the coming week (the next occurrence of the chosen slot), or one local day (``window: today`` or
a ``decision_date``), where only that day's slots not yet over are allowed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from contract.schema import DAYPART_HOURS, DAYPARTS, WEEKDAYS

_START = np.array([DAYPART_HOURS[d][0] for d in DAYPARTS], dtype=np.int64)
_END = np.array([DAYPART_HOURS[d][1] for d in DAYPARTS], dtype=np.int64)
N_DAYPARTS = len(DAYPARTS)
N_SLOTS = len(WEEKDAYS) * N_DAYPARTS


def working_hours_mask() -> np.ndarray:
    """[C, 28] True where the channel may use the slot: in-person channels only in working hours, others any slot."""
    from features.rules import working_hours_mask as per_day

    mask = per_day()  # [C, 7, 4], the one definition (features.rules)
    return mask.reshape(mask.shape[0], N_SLOTS)


def local_days(as_of: datetime, timezones: np.ndarray, decision_date: date | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: the planned local date (``decision_date``, else the local date at ``as_of``), each zone's local today,
    and the first daypart of the planned date not yet over (0 for a later date, 4 when the day is over)."""
    now = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    zones = np.asarray(timezones, dtype=object)
    table: dict[str, tuple[date, float]] = {}
    for z in pd.unique(zones).tolist():
        local = now.astimezone(ZoneInfo(str(z)))
        table[z] = (local.date(), local.hour + local.minute / 60 + local.second / 3600)
    today = np.array([table[z][0] for z in zones.tolist()], dtype=object)
    hour = np.array([table[z][1] for z in zones.tolist()], dtype=np.float64)
    day = today.copy() if decision_date is None else np.full(len(zones), decision_date, dtype=object)
    over = (_END[None, :] <= hour[:, None]).sum(1)
    first = np.where(day == today, over, 0).astype(np.int64)
    return day, today, first


def day_slot_mask(days: np.ndarray, first_daypart: np.ndarray) -> np.ndarray:
    """[N, 28] True for the slots of each row's day from ``first_daypart`` on."""
    weekday = np.fromiter((d.weekday() for d in np.asarray(days, dtype=object).tolist()), dtype=np.int64, count=len(days))
    slot = np.arange(N_SLOTS)
    return (slot[None, :] // N_DAYPARTS == weekday[:, None]) & (slot[None, :] % N_DAYPARTS >= np.asarray(first_daypart)[:, None])


def nearest_slot(weekday: np.ndarray, daypart: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preferred [N, C] slots moved to the nearest allowed one ([N or 1, C, 28]): the same day first, then the days after.

    Returns (weekday, daypart, ok); ``ok`` is False where the channel has no allowed slot (the preferred slot is kept).
    """
    wd, dp = np.asarray(weekday, dtype=np.int64), np.asarray(daypart, dtype=np.int64)
    slot = np.arange(N_SLOTS)
    cost = ((slot // N_DAYPARTS - wd[..., None]) % len(WEEKDAYS)) * N_DAYPARTS * 2 + np.abs(slot % N_DAYPARTS - dp[..., None])
    cost = np.where(allowed, cost, np.iinfo(np.int64).max)
    best = cost.argmin(-1)
    ok = np.broadcast_to(allowed, cost.shape).any(-1)
    return np.where(ok, best // N_DAYPARTS, wd), np.where(ok, best % N_DAYPARTS, dp), ok


def next_windows(as_of: datetime, timezones: np.ndarray, weekday: np.ndarray, daypart: np.ndarray) -> tuple[pd.Series, pd.Series, np.ndarray, np.ndarray]:
    """The next window on ``weekday`` (0 = Monday) in ``daypart`` not yet over at ``as_of``: UTC start/end Series and local ISO strings."""
    s, e, si, ei = window_table(as_of, timezones, weekday, daypart)
    return pd.Series(pd.to_datetime(s, utc=True)), pd.Series(pd.to_datetime(e, utc=True)), si, ei


def window_table(
    as_of: datetime, timezones: np.ndarray, weekday: np.ndarray, daypart: np.ndarray, days: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As ``next_windows`` with UTC times as int64 nanoseconds, computed once per distinct (zone, weekday, daypart).

    ``days``: per row a local date to place the window on instead (a one-day horizon; ``weekday``
    is then that date's). A plain loop over the distinct keys (at most zones x 28): pandas'
    per-call overhead was most of a single-HCP request here, and a batch has few distinct keys.
    """
    n = len(weekday)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.empty(0, dtype=object), np.empty(0, dtype=object)
    now = as_of if as_of.tzinfo is not None else as_of.replace(tzinfo=UTC)
    on = [None] * n if days is None else np.asarray(days, dtype=object).tolist()
    keys = list(
        zip(np.asarray(timezones, dtype=object).tolist(), np.asarray(weekday, dtype=np.int64).tolist(), np.asarray(daypart, dtype=np.int64).tolist(), on)
    )
    index: dict[tuple, int] = {}
    table: list[tuple[int, int, str, str]] = []
    for key in keys:
        if key not in index:
            index[key] = len(table)
            table.append(_window(now, *key))
    codes = np.fromiter((index[key] for key in keys), dtype=np.int64, count=n) if len(table) > 1 else np.zeros(n, dtype=np.int64)
    s_ns, e_ns, s_iso, e_iso = (np.asarray(col, dtype=object if j >= 2 else np.int64) for j, col in enumerate(zip(*table)))
    return s_ns[codes], e_ns[codes], s_iso[codes], e_iso[codes]


def _window(now: datetime, zone: str, wd: int, dp: int, on: date | None = None) -> tuple[int, int, str, str]:
    tz = ZoneInfo(str(zone))
    local = now.astimezone(tz)
    day = on if on is not None else local.date() + timedelta(days=(wd - local.weekday()) % 7)
    start = datetime.combine(day, time(int(_START[dp])), tzinfo=tz)
    end = datetime.combine(day, time(0), tzinfo=tz) + timedelta(hours=int(_END[dp]))
    if on is None and end <= local:
        start, end = start + timedelta(days=7), end + timedelta(days=7)
    # Whole hours: the epoch seconds are exact integers.
    return int(start.timestamp()) * 10**9, int(end.timestamp()) * 10**9, start.isoformat(), end.isoformat()
