"""The time split counts weeks, whatever the examples' grain (features.examples.grain: day stamps every day)."""

from __future__ import annotations

import numpy as np

from training.dataset import time_split


def test_day_stamps_split_on_the_same_weeks_as_their_mondays():
    days = np.arange(np.datetime64("2026-01-05"), np.datetime64("2026-03-02"), 1).astype("datetime64[ns]")  # 8 weeks, Monday to Sunday
    mondays = days.astype("datetime64[D]") - (days.astype("datetime64[D]") - np.datetime64("2026-01-05")).astype(np.int64) % 7
    by_day = time_split(days, 2, 1)
    by_week = time_split(mondays.astype("datetime64[ns]"), 2, 1)
    for a, b in zip(by_day, by_week):
        assert (a == b).all()
    train, val, test = by_day
    assert train.sum() == 5 * 7 and val.sum() == 2 * 7 and test.sum() == 7
    assert days[test].min() == np.datetime64("2026-02-23") and days[val].min() == np.datetime64("2026-02-09")
