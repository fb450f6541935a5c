"""Habit metrics of a policy's touches: how often it repeats an item, how often it re-uses a channel too soon.

Both read either the simulator's touch arrays (``TouchBatch`` or its ``cols`` dict: hcp,
channel index, content index or -1, inbound, and ts_us or week + weekday) or a contract
``touchpoints`` table (Arrow or pandas: hcp_id, channel, content_id, ts, direction). Only
outbound touches count. Earlier touches are history for later ones; ``since`` (a timestamp, or
microseconds since the epoch) restricts which touches are judged, so a served period can be
judged against the logs before it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from contract.schema import CHANNELS

_DAY_US = 86_400 * 1_000_000


def _codes(values: Any) -> np.ndarray:
    """Integer codes of a column (strings or numbers), -1 for null."""
    import pandas as pd

    codes, _ = pd.factorize(pd.Series(values), use_na_sentinel=True)
    return codes.astype(np.int64)


def _us(value: Any) -> int:
    import pandas as pd

    if isinstance(value, (int, np.integer)):
        return int(value)
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1000)


def touch_arrays(touches: Any) -> dict[str, np.ndarray]:
    """Outbound touches as arrays: hcp, channel (``CHANNELS`` index), content (-1 none), t_us (time, microseconds)."""
    cols = getattr(touches, "cols", touches)
    if isinstance(cols, dict):
        missing = [k for k in ("hcp", "channel", "content") if k not in cols]
        if missing:
            raise ValueError(f"touches: missing array(s) {missing}")
        if "ts_us" in cols:
            t = np.asarray(cols["ts_us"], dtype=np.int64)
        elif "week" in cols and "weekday" in cols:
            t = (7 * np.asarray(cols["week"], dtype=np.int64) + np.asarray(cols["weekday"], dtype=np.int64)) * _DAY_US
        else:
            raise ValueError("touches: need ts_us, or week and weekday, for the time of each touch")
        out = np.ones(len(t), dtype=bool) if "inbound" not in cols else ~np.asarray(cols["inbound"], dtype=bool)
        arrays = {
            "hcp": np.asarray(cols["hcp"], dtype=np.int64),
            "channel": np.asarray(cols["channel"], dtype=np.int64),
            "content": np.asarray(cols["content"], dtype=np.int64),
            "t_us": t,
        }
        return {k: v[out] for k, v in arrays.items()}
    frame = touches.to_pandas() if hasattr(touches, "to_pandas") and not hasattr(touches, "loc") else touches
    missing = [k for k in ("hcp_id", "channel", "content_id", "ts") if k not in frame.columns]
    if missing:
        raise ValueError(f"touchpoints: missing column(s) {missing}")
    out = (frame["direction"] == "outbound").to_numpy() if "direction" in frame.columns else np.ones(len(frame), dtype=bool)
    index = {c: i for i, c in enumerate(CHANNELS)}
    channel = frame["channel"].map(index)
    if channel.isna().any():
        raise ValueError(f"touchpoints: unknown channel(s) {sorted(set(frame['channel'][channel.isna()]))}")
    import pandas as pd

    ts = pd.to_datetime(frame["ts"], utc=True)
    arrays = {
        "hcp": _codes(frame["hcp_id"]),
        "channel": channel.to_numpy(dtype=np.int64),
        "content": _codes(frame["content_id"]),
        "t_us": ts.dt.as_unit("us").astype("int64").to_numpy(),
    }
    return {k: v[out] for k, v in arrays.items()}


def _previous_gap_days(key: np.ndarray, t_us: np.ndarray) -> np.ndarray:
    """Per row, days since the previous row with the same key (earlier in time; inf if none)."""
    order = np.lexsort((t_us, key))
    k, t = key[order], t_us[order]
    same = np.r_[False, k[1:] == k[:-1]]
    gap = np.full(len(order), np.inf)
    gap[1:] = np.where(same[1:], (t[1:] - t[:-1]) / _DAY_US, np.inf)
    out = np.empty(len(order))
    out[order] = gap
    return out


def _judged(arrays: dict[str, np.ndarray], since: Any) -> np.ndarray:
    return np.ones(len(arrays["t_us"]), dtype=bool) if since is None else arrays["t_us"] >= _us(since)


def repeat_share(touches: Any, days: float = 30, since: Any = None) -> float:
    """Share of outbound touches with content that repeat an item the same HCP was sent within ``days`` days before (NaN if none)."""
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    a = touch_arrays(touches)
    has = a["content"] >= 0
    judged = _judged(a, since)[has]
    if not judged.any():
        return float("nan")
    n_items = int(a["content"].max()) + 1 if has.any() else 1
    key = a["hcp"][has] * n_items + a["content"][has]
    gap = _previous_gap_days(key, a["t_us"][has])
    return float((gap[judged] <= days).mean())


def window_share(touches: Any, channel: str | int, days: float, since: Any = None) -> float:
    """Share of a channel's outbound touches within ``days`` days of the HCP's previous touch on that channel (NaN if none)."""
    if days < 0:
        raise ValueError(f"days must be >= 0, got {days}")
    c = CHANNELS.index(channel) if isinstance(channel, str) and channel in CHANNELS else -1 if isinstance(channel, str) else int(channel)
    if not 0 <= c < len(CHANNELS):
        raise ValueError(f"channel: unknown channel {channel!r}; known: {', '.join(CHANNELS)}")
    a = touch_arrays(touches)
    on = a["channel"] == c
    judged = _judged(a, since)[on]
    if not judged.any():
        return float("nan")
    gap = _previous_gap_days(a["hcp"][on], a["t_us"][on])
    return float((gap[judged] <= days).mean())


def window_shares(touches: Any, windows: dict[str, float], since: Any = None) -> dict[str, float]:
    """``window_share`` for each channel of ``windows`` (channel -> days)."""
    return {ch: window_share(touches, ch, d, since) for ch, d in windows.items()}


__all__ = ["repeat_share", "touch_arrays", "window_share", "window_shares"]
