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

CFG = FeaturesConfig(
    sequence_length=4,
    engagement_windows_days=[3, 10],
    visits_window_days=10,
    outcome_windows_weeks=[1, 2],
    contact_windows_days=[3, 10],
    item_history_items=2,
    item_history_days=30,
)

event = st.fixed_dictionaries(
    {
        "hcp": st.sampled_from(["h1", "h2", "h3"]),
        "days": st.floats(0, 40, allow_nan=False),
        "channel": st.sampled_from(CHANNELS),
        "opened": st.booleans(),
        "read": st.floats(0, 300, allow_nan=False),
        "inbound": st.booleans(),
        "content": st.sampled_from(["c1", "c2", None]),
    }
)


def _with_events(tables, events, prefix):
    rows = []
    for i, e in enumerate(events):
        rows.append(
            {
                "event_id": f"{prefix}{i}",
                "hcp_id": e["hcp"],
                "rep_id": "r1",
                "ts": T0 + timedelta(days=e["days"]),
                "channel": e["channel"],
                "content_id": e.get("content", "c1"),
                "direction": "inbound" if e["inbound"] else "outbound",
                "delivered": True,
                "opened": e["opened"],
                "read_seconds": e["read"] if e["opened"] else 0.0,
                "forwarded": False,
                "favourited": e["opened"],
                "replied": False,
                "attended": e["opened"] if e["channel"] in ("department_meeting", "webinar", "conference") else None,
                "propensity": 0.5,
                "suggestion_id": None,
            }
        )
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
    just_before = {
        "hcp": "h3",
        "days": (cut - T0).total_seconds() / 86400 - 1 / 86400,
        "channel": "email",
        "opened": False,
        "read": 0.0,
        "inbound": False,
        "content": "c1",
    }
    after = compute_features_asof(_with_events(tables, [just_before], "x"), cut, CFG)
    h3_before = before.set_index("hcp_id").loc["h3"]
    h3_after = after.set_index("hcp_id").loc["h3"]
    assert h3_after["touches_total"] == h3_before["touches_total"] + 1
    assert h3_after["days_since_last_touch"] < 1e-4
    # The candidate views see it too: the channel's recency and window count, the item's history.
    assert h3_after["cr_email_days_since"] < 1e-4 and h3_after["cr_email_sent_3d"] == h3_before["cr_email_sent_3d"] + 1
    assert h3_after["cr_days_since_any"] < 1e-4
    assert list(h3_after["item_hist_content_id"])[:1] == ["c1"] and h3_after["item_hist_days_since_delivered"][0] < 1e-4
    assert h3_after["cr_topic_guideline_days_since"] < 1e-4 and h3_after["cr_type_article_days_since"] < 1e-4


dated = st.fixed_dictionaries(
    {
        "hcp": st.sampled_from(["h1", "h2", "h3"]),
        "days": st.floats(-20, 40, allow_nan=False),
        "segment": st.sampled_from(["A", "B", "C", "D", None]),
        "completeness": st.floats(0, 1, allow_nan=False),
        "email": st.booleans(),
    }
)


def _with_history(tables, rows):
    if not rows:
        return tables
    hist = pd.DataFrame(
        [
            {
                "hcp_id": r["hcp"],
                "valid_from": T0 + timedelta(days=r["days"]),
                "potential_boxes_month": 10.0,
                "support_share": 0.5,
                "segment": r["segment"],
                "profile_completeness": r["completeness"],
                **{f"consent_{c}": r["email"] if c == "email" else True for c in CHANNELS},
            }
            for r in rows
        ]
    ).drop_duplicates(["hcp_id", "valid_from"])
    out = dict(tables)
    out["hcp_profile_history"] = pd.concat([tables["hcp_profile_history"], hist]) if "hcp_profile_history" in tables else hist
    return out


DATED = ["segment", "potential_boxes_month", "support_share", "profile_completeness", "profile_qualified", *[f"consent_{c}" for c in CHANNELS], "profile_known"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    base=st.lists(dated, max_size=6),
    later=st.lists(dated, min_size=1, max_size=4),
    cut_days=st.floats(5, 35, allow_nan=False),
    export_after=st.floats(0, 30, allow_nan=False),
)
def test_profile_values_dated_after_t_never_change_features_at_t(base, later, cut_days, export_after):
    # The export's (hcps) segment/consent and history rows valid after t are unknown at t.
    cut = (T0 + timedelta(days=cut_days)).replace(microsecond=0)
    export = cut + timedelta(days=export_after, seconds=1)
    tables = _with_history(make_tables(), base)
    before = compute_features_asof(tables, cut, CFG, profile_as_of=export)
    changed = dict(tables)
    hcps = tables["hcps"].copy()
    hcps["segment"] = ["D", "A", "B"]
    hcps["profile_completeness"] = [0.99, 0.01, 0.5]
    hcps["consent_email"] = ~hcps["consent_email"]
    changed["hcps"] = hcps
    future = [{**r, "days": cut_days + 1e-3 + abs(r["days"])} for r in later]
    after = compute_features_asof(_with_history(changed, future), cut, CFG, profile_as_of=export)
    assert _same(before, after)
    # Once the export is known, its values are what the features say.
    at_export = compute_features_asof(changed, export, CFG, profile_as_of=export).set_index("hcp_id")
    assert at_export["segment"].tolist() == [3, 0, 1] and at_export["profile_known"].all()


@settings(max_examples=20, deadline=None)
@given(cut_days=st.floats(5, 35, allow_nan=False), segment=st.sampled_from(["A", "B", "C", "D"]))
def test_a_history_row_valid_at_t_does_change_features(cut_days, segment):
    # The converse: a dated value valid at t is used, so the property above cannot pass vacuously.
    cut = (T0 + timedelta(days=cut_days)).replace(microsecond=0)
    export = cut + timedelta(days=10)
    before = compute_features_asof(make_tables(), cut, CFG, profile_as_of=export).set_index("hcp_id")
    assert not before["profile_known"].any() and (before["segment"] == -1).all()
    row = {"hcp": "h2", "days": (cut - T0).total_seconds() / 86400, "segment": segment, "completeness": 0.8, "email": False}
    after = compute_features_asof(_with_history(make_tables(), [row]), cut, CFG, profile_as_of=export).set_index("hcp_id")
    assert after.loc["h2", "profile_known"] and after.loc["h2", "segment"] == "ABCD".index(segment)
    assert after.loc["h2", "profile_qualified"] and not after.loc["h2", "consent_email"]
    assert not after.loc["h1", "profile_known"]
