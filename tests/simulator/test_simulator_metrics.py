"""Habit metrics: repeat share and channel window share, computed by hand on a few touches."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from contract.schema import CHANNELS
from simulator.metrics import repeat_share, touch_arrays, window_share, window_shares

DAY_US = 86_400 * 1_000_000
CH = {c: i for i, c in enumerate(CHANNELS)}

# (hcp, channel, content or -1, day, inbound)
ROWS = [
    (0, "email", 5, 0, False),
    (0, "wechat_push", 5, 10, False),  # item 5 again after 10 days: a repeat
    (0, "phone", -1, 11, False),  # no content: not judged for repeats
    (1, "email", 5, 12, False),  # item 5, but another HCP
    (1, "visit", 7, 20, False),
    (1, "wecom_1to1", 7, 40, True),  # inbound: neither judged nor history
    (0, "email", 5, 45, False),  # 35 days after day 10: not within 30
    (1, "visit", 7, 50, False),  # 30 days after day 20: within 30 (inclusive)
    (0, "visit", -1, 3, False),
    (0, "visit", -1, 8, False),  # 5 days after the previous visit
]


def _cols() -> dict[str, np.ndarray]:
    hcp, ch, content, day, inbound = zip(*ROWS)
    return {
        "hcp": np.array(hcp),
        "channel": np.array([CH[c] for c in ch]),
        "content": np.array(content),
        "ts_us": np.array(day, dtype=np.int64) * DAY_US + 9 * 3_600_000_000,
        "inbound": np.array(inbound),
    }


def _table() -> pd.DataFrame:
    hcp, ch, content, day, inbound = zip(*ROWS)
    return pd.DataFrame(
        {
            "hcp_id": [f"H{h:03d}" for h in hcp],
            "channel": list(ch),
            "content_id": [None if k < 0 else f"C{k:05d}" for k in content],
            "ts": pd.Timestamp("2025-01-06", tz="UTC") + pd.to_timedelta(np.array(day), "D"),
            "direction": ["inbound" if i else "outbound" for i in inbound],
        }
    )


@pytest.mark.parametrize("source", ["cols", "frame", "arrow"])
def test_repeat_share_by_hand(source: str) -> None:
    import pyarrow as pa

    touches = {"cols": _cols(), "frame": _table(), "arrow": pa.Table.from_pandas(_table())}[source]
    # Judged: 6 outbound touches with content; repeats: day 10 (item 5, h0) and day 50 (item 7, h1).
    assert repeat_share(touches) == pytest.approx(2 / 6)
    assert repeat_share(touches, days=9) == pytest.approx(0.0)
    assert repeat_share(touches, days=35) == pytest.approx(3 / 6)
    # From day 11 on only 4 touches are judged; the earlier ones still count as history.
    since = 11 * DAY_US if source == "cols" else pd.Timestamp("2025-01-17", tz="UTC")
    assert repeat_share(touches, since=since) == pytest.approx(1 / 4)


def test_window_share_by_hand() -> None:
    cols = _cols()
    # Visits: h0 day 3, h0 day 8 (5 days later), h1 day 20, h1 day 50 (30 days later).
    assert window_share(cols, "visit", 21) == pytest.approx(1 / 4)
    assert window_share(cols, "visit", 30) == pytest.approx(2 / 4)
    # Emails: h0 day 0, h0 day 45, h1 day 12.
    assert window_share(cols, "email", 40) == pytest.approx(0.0)
    assert window_share(cols, CH["email"], 45) == pytest.approx(1 / 3)
    assert math.isnan(window_share(cols, "conference", 60))
    assert window_shares(_table(), {"visit": 21, "email": 45}) == pytest.approx({"visit": 1 / 4, "email": 1 / 3})


def test_week_and_weekday_give_the_time() -> None:
    cols = _cols()
    day = cols.pop("ts_us") // DAY_US
    cols["week"], cols["weekday"] = day // 7, day % 7
    assert repeat_share(cols) == pytest.approx(2 / 6)
    assert touch_arrays(cols)["t_us"].max() == 50 * DAY_US


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="channel"):
        window_share(_cols(), "fax", 7)
    with pytest.raises(ValueError, match="days must be"):
        repeat_share(_cols(), days=-1)
    with pytest.raises(ValueError, match="content_id"):
        repeat_share(_table().drop(columns=["content_id"]))


def test_repeat_share_matches_a_plain_loop_on_simulated_logs(small_world) -> None:
    from contract.io import read_frame

    tp = read_frame(small_world, "touchpoints")
    out = tp[(tp["direction"] == "outbound") & tp["content_id"].notna()].sort_values("ts")
    last: dict[tuple, pd.Timestamp] = {}
    hits = 0
    for h, k, ts in zip(out["hcp_id"], out["content_id"], out["ts"]):
        prev = last.get((h, k))
        hits += prev is not None and (ts - prev) <= pd.Timedelta(days=30)
        last[(h, k)] = ts
    assert repeat_share(tp) == pytest.approx(hits / len(out))
