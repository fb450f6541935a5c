"""Point-in-time correctness: nothing at or after t can change a feature as of t."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_contract import T0, make_tables

from contract.schema import CHANNELS
from features.config import FeaturesConfig
from features.snapshots import compute_features_asof

CFG = FeaturesConfig(sequence_length=4, engagement_windows_days=[3, 10], visits_window_days=10, outcome_windows_weeks=[1, 2])

event = st.fixed_dictionaries({
    "hcp": st.sampled_from(["h1", "h2", "h3"]),
    "days": st.floats(0, 40, allow_nan=False),
    "channel": st.sampled_from(CHANNELS),
    "opened": st.booleans(),
    "read": st.floats(0, 300, allow_nan=False),
    "inbound": st.booleans(),
})


def _with_events(tables, events, prefix):
    rows = []
    for i, e in enumerate(events):
        rows.append({
            "event_id": f"{prefix}{i}", "hcp_id": e["hcp"], "rep_id": "r1", "ts": T0 + timedelta(days=e["days"]),
            "channel": e["channel"], "content_id": "c1", "direction": "inbound" if e["inbound"] else "outbound",
            "delivered": True, "opened": e["opened"], "read_seconds": e["read"] if e["opened"] else 0.0,
            "forwarded": False, "favourited": e["opened"], "replied": False,
            "attended": e["opened"] if e["channel"] in ("department_meeting", "webinar", "conference") else None,
            "propensity": 0.5, "suggestion_id": None,
        })
    out = dict(tables)
    out["touchpoints"] = pd.concat([tables["touchpoints"], pd.DataFrame(rows)], ignore_index=True)
    return out


def _future_outcome(tables, cut):
    # A prescription week that starts before the cut but ends after it is not yet known at the cut.
    week = (cut - timedelta(days=cut.weekday())).date()
    extra = pd.DataFrame({"hcp_id": ["h3"], "week_start": [week], "product_id": ["p1"], "prescriptions": [7], "market_boxes": [9], "share": [7 / 9]})
    out = dict(tables)
    out["outcomes"] = pd.concat([tables["outcomes"], extra], ignore_index=True)
    return out


def _same(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        return False
    for c in a.columns:
        x, y = a[c].tolist(), b[c].tolist()
        if x and isinstance(x[0], np.ndarray):
            if any(list(p) != list(q) for p, q in zip(x, y)):
                return False
        elif x != y:
            return False
    return True


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.lists(event, max_size=12), later=st.lists(event, min_size=1, max_size=6), cut_days=st.floats(5, 35, allow_nan=False))
def test_events_at_or_after_t_never_change_features_at_t(base, later, cut_days):
    cut = (T0 + timedelta(days=cut_days)).replace(microsecond=0)
    tables = _with_events(make_tables(), base, "b")
    before = compute_features_asof(tables, cut, CFG)
    shifted = [{**e, "days": cut_days + e["days"] / 4} for e in later]  # all at or after the cut
    shifted[0]["days"] = (cut - T0).total_seconds() / 86400  # exactly at t: must not count either
    after = compute_features_asof(_future_outcome(_with_events(tables, shifted, "l"), cut), cut, CFG)
    assert _same(before, after)


@settings(max_examples=20, deadline=None)
@given(base=st.lists(event, max_size=8), cut_days=st.floats(5, 35, allow_nan=False))
def test_an_event_just_before_t_does_change_features(base, cut_days):
    # The converse, so the property above cannot pass by ignoring events altogether.
    cut = (T0 + timedelta(days=cut_days)).replace(microsecond=0)
    tables = _with_events(make_tables(), base, "b")
    before = compute_features_asof(tables, cut, CFG)
    just_before = {"hcp": "h3", "days": (cut - T0).total_seconds() / 86400 - 1 / 86400, "channel": "email",
                   "opened": False, "read": 0.0, "inbound": False}
    after = compute_features_asof(_with_events(tables, [just_before], "x"), cut, CFG)
    h3_before = before.set_index("hcp_id").loc["h3"]
    h3_after = after.set_index("hcp_id").loc["h3"]
    assert h3_after["touches_total"] == h3_before["touches_total"] + 1
    assert h3_after["days_since_last_touch"] < 1e-4
