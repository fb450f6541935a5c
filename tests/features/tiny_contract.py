"""A tiny hand-made contract dataset whose features are easy to compute by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd

from contract.schema import CHANNELS

T0 = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def _touch(
    rows: list,
    hcp: str,
    days: float,
    channel: str,
    content: str | None = None,
    *,
    opened=False,
    read=0.0,
    forwarded=False,
    replied=False,
    attended=None,
    delivered=True,
    inbound=False,
    propensity=0.5,
) -> None:
    rows.append(
        {
            "event_id": f"e{len(rows):04d}",
            "hcp_id": hcp,
            "rep_id": "r1",
            "ts": T0 + timedelta(days=days),
            "channel": channel,
            "content_id": content,
            "direction": "inbound" if inbound else "outbound",
            "delivered": delivered,
            "opened": opened,
            "read_seconds": read,
            "forwarded": forwarded,
            "favourited": False,
            "replied": replied,
            "attended": attended,
            "propensity": propensity,
            "suggestion_id": None,
        }
    )


def make_tables() -> dict[str, pd.DataFrame]:
    """Three HCPs, two content pieces, a handful of events whose features are easy to hand-compute."""
    hcps = pd.DataFrame(
        {
            "hcp_id": ["h1", "h2", "h3"],
            "hospital_id": "hosp1",
            "hospital_tier": ["tertiary_a", "secondary", "primary"],
            "department": "cardiology",
            "title": ["chief_physician", "resident", "pharmacist"],
            "is_kol": [True, False, False],
            "rep_id": "r1",
            "region": "east",
            "timezone": ["Asia/Shanghai", "UTC", "Asia/Shanghai"],
            "main_product_id": "p1",
            "beds": pd.array([10, None, 5], dtype="Int64"),
            "potential_boxes_month": [864.0, None, 2.0],
            "support_share": [0.5, 0.1, None],
            "segment": ["A", None, "C"],
            "profile_completeness": [0.7, 0.2, None],
            **{f"consent_{c}": c != "phone" for c in CHANNELS},
        }
    )
    products = pd.DataFrame({"product_id": ["p1"], "therapeutic_area": ["cardiology"], "lifecycle": ["growth"]})
    reps = pd.DataFrame({"rep_id": ["r1"], "region": ["east"], "rep_type": ["chronic"], "visit_capacity_per_day": [8], "message_capacity_per_day": [50]})
    content = pd.DataFrame(
        {
            "content_id": ["c1", "c2"],
            "product_id": "p1",
            "topic": ["guideline", "case_study"],
            "content_type": "article",
            "form": "long_read",
            "approval_code": ["MLR-1", "MLR-2"],
            "approved_from": [T0 - timedelta(days=30), T0 + timedelta(days=10)],
            "approved_until": [T0 + timedelta(days=30), T0 + timedelta(days=100)],
        }
    )
    rows: list = []
    _touch(rows, "h1", 1, "wechat_push", "c1", opened=True, read=90.0)  # Tue 08:00 Shanghai, engaged
    _touch(rows, "h1", 3, "wechat_push", "c2")  # unopened
    _touch(rows, "h1", 8, "wechat_push", "c1")  # unopened (week 2)
    _touch(rows, "h1", 9, "visit", None, opened=True, propensity=None)
    _touch(rows, "h1", 10.5, "webinar", "c2", opened=True, attended=True)  # Thu 20:00 Shanghai
    _touch(rows, "h2", 2, "email", "c1", delivered=False)  # Wed 00:00 UTC
    _touch(rows, "h2", 4, "wecom_1to1", None, inbound=True, opened=True, replied=True)
    outcomes = pd.DataFrame(
        {
            "hcp_id": ["h1", "h1", "h2"],
            "week_start": [T0.date(), (T0 + timedelta(days=7)).date(), T0.date()],
            "product_id": "p1",
            "prescriptions": [3, 5, 1],
            "market_boxes": [10, 10, 4],
            "share": [0.3, 0.5, 0.25],
        }
    )
    feedback = pd.DataFrame(
        {
            "feedback_id": ["f1", "f2"],
            "suggestion_id": ["s1", "s2"],
            "hcp_id": ["h1", "h1"],
            "rep_id": "r1",
            "ts": [T0 + timedelta(days=2), T0 + timedelta(days=9)],
            "decision": ["accepted", "dismissed"],
            "reason": [None, "wrong_time"],
        }
    )
    return {"products": products, "reps": reps, "hcps": hcps, "content": content, "touchpoints": pd.DataFrame(rows), "outcomes": outcomes, "feedback": feedback}


def features_config(data_dir, workspace, **kw):
    """A resolved FeaturesConfig for a dataset and a workspace."""
    from features.config import FeaturesConfig

    return FeaturesConfig(data_dir=data_dir, workspace_dir=workspace, **kw).resolved()
