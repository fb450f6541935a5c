"""Training examples at the decision grain (features.examples): labels per day, state as of each row's own time, no leakage."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_contract import T0, make_tables

from contract.schema import CHANNELS
from features.config import FeaturesConfig, load_features_config
from features.events import prepare
from features.examples import build_examples
from features.labels import decision_labels
from features.snapshots import compute_features_asof, decision_times, weekly_times
from nba.configuration import ConfigError

CFG = FeaturesConfig(
    sequence_length=4,
    engagement_windows_days=[3, 10],
    visits_window_days=10,
    outcome_windows_weeks=[1, 2],
    contact_windows_days=[3, 10],
    item_history_items=2,
    item_history_days=30,
)
MEETINGS = ("department_meeting", "webinar", "conference")

event = st.fixed_dictionaries(
    {
        "hcp": st.sampled_from(["h1", "h2", "h3"]),
        "days": st.floats(0, 40, allow_nan=False),
        "channel": st.sampled_from(CHANNELS),
        "opened": st.booleans(),
        "inbound": st.booleans(),
        "content": st.sampled_from(["c1", "c2", None]),
    }
)


def _with_events(tables: dict, events: list[dict], prefix: str) -> dict:
    rows = [
        {
            "event_id": f"{prefix}{i}",
            "hcp_id": e["hcp"],
            "rep_id": "r1",
            "ts": (T0 + timedelta(days=e["days"])).replace(microsecond=0),
            "channel": e["channel"],
            "content_id": e["content"],
            "direction": "inbound" if e["inbound"] else "outbound",
            "delivered": True,
            "opened": e["opened"],
            "read_seconds": 75.0 if e["opened"] else 0.0,
            "forwarded": False,
            "favourited": False,
            "replied": False,
            "attended": e["opened"] if e["channel"] in MEETINGS else None,
            "propensity": 0.5,
            "suggestion_id": None,
        }
        for i, e in enumerate(events)
    ]
    out = dict(tables)
    out["touchpoints"] = pd.concat([tables["touchpoints"], pd.DataFrame(rows)], ignore_index=True) if rows else tables["touchpoints"]
    return out


def _export(tables: dict, cfg: FeaturesConfig = CFG) -> pd.Timestamp:
    """Where a build stamps the hcps table: its last weekly snapshot."""
    return pd.Timestamp(int(weekly_times(prepare(tables, cfg.days_since_cap))[-1]), unit="s", tz="UTC")


def _cells_equal(a, b) -> bool:
    if isinstance(a, (np.ndarray, list)):
        return list(a) == list(b)
    return a == b or (a != a and b != b)


def _rows_equal(a: pd.Series, b: pd.Series, columns) -> list[str]:
    return [c for c in columns if not _cells_equal(a[c], b[c])]


def test_decision_times_per_grain():
    t = np.array([int(pd.Timestamp("2026-01-08 13:45", tz="UTC").timestamp()), int(pd.Timestamp("2026-01-05 00:00", tz="UTC").timestamp())])
    assert pd.to_datetime(decision_times(t, "day"), unit="s").strftime("%Y-%m-%d %H:%M").tolist() == ["2026-01-08 00:00", "2026-01-05 00:00"]
    assert pd.to_datetime(decision_times(t, "week"), unit="s").strftime("%Y-%m-%d %H:%M").tolist() == ["2026-01-05 00:00", "2026-01-05 00:00"]
    with pytest.raises(ValueError, match="grain must be one of week, day; got 'month'"):
        decision_times(t, "month")


def test_grain_option_is_typed_and_week_by_default(tmp_path):
    assert FeaturesConfig().examples.grain == "week"
    assert load_features_config(None, {"examples.grain": "day"}).examples.grain == "day"
    with pytest.raises(ConfigError, match="examples.grain"):
        load_features_config(None, {"examples.grain": "month"})
    with pytest.raises(ConfigError, match="examples.chunk_cells"):
        load_features_config(None, {"examples.chunk_cells": 0})
    with pytest.raises(ValueError, match="grain"):
        decision_labels(make_tables(), grain="hour")


def test_day_labels_keyed_to_the_touch_day_and_strictly_not_before_it():
    tables = make_tables()
    week, day = decision_labels(tables), decision_labels(tables, grain="day")
    assert len(day) == len(week) == 6
    assert (day["event_timestamp"] == day["label_ts"].dt.floor("D")).all()
    assert (day["event_timestamp"] <= day["label_ts"]).all() and (day["label_ts"] < day["event_timestamp"] + pd.Timedelta(days=1)).all()
    # Same touches, same labels: only the decision time differs.
    key = ["label_ts", "hcp_id"]
    cols = [c for c in week.columns if c != "event_timestamp"]
    pd.testing.assert_frame_equal(week.sort_values(key)[cols].reset_index(drop=True), day.sort_values(key)[cols].reset_index(drop=True))
    # Day grain sees more days than weeks: the h1 touches of days 8, 9 and 10.5 are three decisions, one week.
    h1 = day[day["hcp_id"] == "h1"]["event_timestamp"]
    assert h1.nunique() == 5 and week[week["hcp_id"] == "h1"]["event_timestamp"].nunique() == 2


@pytest.mark.parametrize("grain", ["week", "day"])
def test_every_row_equals_the_pure_asof_state_at_its_own_time(grain):
    tables = _with_events(
        make_tables(),
        [
            {"hcp": h, "days": d, "channel": c, "opened": d % 2 > 1, "inbound": False, "content": "c1"}
            for h, d, c in [("h3", 3.2, "email"), ("h3", 12.7, "visit"), ("h2", 9.99, "wechat_push")]
        ],
        "x",
    )
    labels = decision_labels(tables, grain=grain)
    rows = build_examples(CFG, labels, tables=tables, progress=False)
    assert len(rows) == len(labels) and rows["hcp_id"].tolist() == labels["hcp_id"].tolist()
    assert rows["label_ts"].tolist() == labels["label_ts"].tolist() and not rows["is_missing"].any()
    export = _export(tables)
    for i in range(len(rows)):
        at = rows.iloc[i]
        pure = compute_features_asof(tables, at["event_timestamp"], CFG, profile_as_of=export).set_index("hcp_id").loc[at["hcp_id"]]
        assert _rows_equal(at, pure, [c for c in pure.index if c != "event_timestamp"]) == [], (grain, i)
    # One HCP x time cell per chunk computes the same rows.
    small = build_examples(CFG.model_copy(update={"examples": CFG.examples.model_copy(update={"chunk_cells": 1})}), labels, tables=tables, progress=False)
    pd.testing.assert_frame_equal(rows, small)


def test_day_grain_sees_the_week_s_earlier_events_the_week_grain_does_not():
    tables = make_tables()
    week = build_examples(CFG, decision_labels(tables), tables=tables, progress=False)
    day = build_examples(CFG, decision_labels(tables, grain="day"), tables=tables, progress=False)
    # h1's webinar (day 10.5) follows a push on day 8 and a visit on day 9 in the same week.
    w = week[(week["hcp_id"] == "h1") & (week["label_channel"] == CHANNELS.index("webinar"))].iloc[0]
    d = day[(day["hcp_id"] == "h1") & (day["label_channel"] == CHANNELS.index("webinar"))].iloc[0]
    assert w["touches_total"] == 2 and d["touches_total"] == 4
    assert list(d["seq_channel"])[-2:] == [CHANNELS.index("wechat_push"), CHANNELS.index("visit")]
    assert d["days_since_last_touch"] == pytest.approx(1.0) and w["days_since_last_touch"] == pytest.approx(4.0)


def test_bad_label_rows_are_named():
    tables = make_tables()
    labels = decision_labels(tables, grain="day")
    ghost = labels.copy()
    ghost.loc[2, "hcp_id"] = "ghost"
    with pytest.raises(ValueError, match="row 2: hcp_id 'ghost' is not in table 'hcps'"):
        build_examples(CFG, ghost, tables=tables, progress=False)
    naive = labels.assign(event_timestamp=labels["event_timestamp"].dt.tz_localize(None))
    with pytest.raises(ValueError, match="timezone-aware"):
        build_examples(CFG, naive, tables=tables, progress=False)
    with pytest.raises(ValueError, match="clash"):
        build_examples(CFG, labels.assign(touches_total=1), tables=tables, progress=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.lists(event, min_size=1, max_size=14), extra=event, at_a_row=st.booleans())
def test_nothing_at_or_after_a_row_s_time_changes_it_and_anything_before_does(base, extra, at_a_row):
    tables = _with_events(make_tables(), base, "b")
    labels = decision_labels(tables, grain="day")
    before = build_examples(CFG, labels, tables=tables, progress=False)
    t = labels["event_timestamp"]
    # The extra event lands at a row's decision time exactly (must not count there) or anywhere.
    when = t.iloc[len(t) // 2] if at_a_row else pd.Timestamp(T0 + timedelta(days=extra["days"])).floor("s")
    tables_after = _with_events(tables, [{**extra, "days": (when - T0).total_seconds() / 86_400}], "x")
    tables_after["outcomes"] = pd.concat(
        [
            tables["outcomes"],
            pd.DataFrame(
                {
                    "hcp_id": [extra["hcp"]],
                    "week_start": [(when - pd.Timedelta(days=when.dayofweek)).date()],
                    "product_id": "p1",
                    "prescriptions": [7],
                    "market_boxes": [9],
                    "share": [7 / 9],
                }
            ),
        ],
        ignore_index=True,
    )  # a prescription week that ends after the event: known only once it is over
    after = build_examples(CFG, labels, tables=tables_after, progress=False)
    columns = [c for c in before.columns if c not in ("event_timestamp", "label_ts")]
    for i in range(len(labels)):
        changed = _rows_equal(before.iloc[i], after.iloc[i], columns)
        if t.iloc[i] <= when or labels["hcp_id"].iloc[i] != extra["hcp"]:
            assert changed == [], (i, changed)
        else:  # the converse: an event strictly before the row's time is in its state
            assert after.iloc[i]["touches_total"] == before.iloc[i]["touches_total"] + 1


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.lists(event, min_size=1, max_size=14))
def test_a_row_s_state_holds_exactly_its_hcp_s_events_before_its_time_never_its_label(base):
    tables = _with_events(make_tables(), base, "b")
    labels = decision_labels(tables, grain="day")
    rows = build_examples(CFG, labels, tables=tables, progress=False)
    tp = tables["touchpoints"]
    ts = pd.to_datetime(tp["ts"], utc=True).dt.floor("s")
    for i in range(len(rows)):
        r = rows.iloc[i]
        assert r["label_ts"] >= r["event_timestamp"]  # the label follows the decision time
        assert r["touches_total"] == int(((tp["hcp_id"] == r["hcp_id"]) & (ts < r["event_timestamp"])).sum())
