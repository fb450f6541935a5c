"""Seeded, vectorised, contract-valid synthetic datasets for feature benchmarks and tests.

Not a world model (that is the simulator's job): just enough realistic volume and variety,
generated in seconds at 100k HCPs, so the feature store can be measured without the simulator.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from contract.schema import (
    CHANNELS, CONTENT_FORMS, CONTENT_TYPES, DEPARTMENTS, FEEDBACK_DECISIONS, HOSPITAL_TIERS, LIFECYCLES,
    MEETING_CHANNELS, SEGMENTS, TITLES, TOPICS,
)

# Relative channel volumes: broadcast pushes dominate, conferences are rare.
_CHANNEL_P = np.array([0.14, 0.04, 0.40, 0.16, 0.12, 0.06, 0.02, 0.06])
_TIMEZONES = np.array(["Asia/Shanghai", "Asia/Urumqi", "Asia/Hong_Kong"], dtype=object)


def synthetic_tables(n_hcps: int = 1000, days: int = 120, touches_per_week: float = 2.0, seed: int = 0,
                     start: datetime = datetime(2025, 1, 6, tzinfo=timezone.utc), n_content: int = 200) -> dict[str, pd.DataFrame]:
    """Contract tables for ``n_hcps`` HCPs over ``days`` days starting ``start``."""
    rng = np.random.default_rng(seed)
    n_reps = max(1, n_hcps // 100)
    products = pd.DataFrame({"product_id": ["p1", "p2", "p3"], "therapeutic_area": ["cardiology", "oncology", "nephrology"],
                             "lifecycle": [LIFECYCLES[1], LIFECYCLES[2], LIFECYCLES[3]]})
    reps = pd.DataFrame({"rep_id": [f"r{i:05d}" for i in range(n_reps)], "region": "east", "rep_type": "chronic",
                         "visit_capacity_per_day": 8, "message_capacity_per_day": 60})
    hcp_ids = np.array([f"h{i:07d}" for i in range(n_hcps)], dtype=object)
    seg = rng.integers(0, len(SEGMENTS) + 1, n_hcps)
    hcps = pd.DataFrame({
        "hcp_id": hcp_ids,
        "hospital_id": [f"hosp{i:05d}" for i in rng.integers(0, max(1, n_hcps // 50), n_hcps)],
        "hospital_tier": np.array(HOSPITAL_TIERS, dtype=object)[rng.integers(0, len(HOSPITAL_TIERS), n_hcps)],
        "department": np.array(DEPARTMENTS, dtype=object)[rng.integers(0, len(DEPARTMENTS), n_hcps)],
        "title": np.array(TITLES, dtype=object)[rng.integers(0, len(TITLES), n_hcps)],
        "is_kol": rng.random(n_hcps) < 0.05,
        "rep_id": reps["rep_id"].to_numpy()[rng.integers(0, n_reps, n_hcps)],
        "region": "east",
        "timezone": _TIMEZONES[rng.integers(0, len(_TIMEZONES), n_hcps)],
        "main_product_id": products["product_id"].to_numpy()[rng.integers(0, 3, n_hcps)],
        "beds": pd.array(np.where(rng.random(n_hcps) < 0.2, -1, rng.integers(10, 200, n_hcps)), dtype="Int64"),
        "potential_boxes_month": rng.gamma(2.0, 200.0, n_hcps),
        "support_share": rng.beta(2, 5, n_hcps),
        "segment": np.array([*SEGMENTS, None], dtype=object)[seg],
        "profile_completeness": rng.random(n_hcps),
        **{f"consent_{ch}": rng.random(n_hcps) < 0.9 for ch in CHANNELS},
    })
    hcps.loc[hcps["beds"] < 0, "beds"] = pd.NA
    content_ids = np.array([f"c{i:04d}" for i in range(n_content)], dtype=object)
    approved_from = start - timedelta(days=30) + pd.to_timedelta(rng.integers(0, days, n_content), unit="D")
    content = pd.DataFrame({
        "content_id": content_ids,
        "product_id": products["product_id"].to_numpy()[rng.integers(0, 3, n_content)],
        "topic": np.array(TOPICS, dtype=object)[rng.integers(0, len(TOPICS), n_content)],
        "content_type": np.array(CONTENT_TYPES, dtype=object)[rng.integers(0, len(CONTENT_TYPES), n_content)],
        "form": np.array(CONTENT_FORMS, dtype=object)[rng.integers(0, len(CONTENT_FORMS), n_content)],
        "approval_code": [f"MLR-{i:05d}" for i in range(n_content)],
        "approved_from": approved_from,
        "approved_until": approved_from + pd.to_timedelta(rng.integers(60, 400, n_content), unit="D"),
    })
    n_tp = int(rng.poisson(n_hcps * days / 7 * touches_per_week))
    h = rng.integers(0, n_hcps, n_tp)
    ch = rng.choice(len(CHANNELS), n_tp, p=_CHANNEL_P / _CHANNEL_P.sum())
    secs = rng.integers(0, days * 86_400, n_tp)
    delivered = rng.random(n_tp) < 0.95
    opened = delivered & (rng.random(n_tp) < 0.35)
    is_meeting = np.isin(ch, [CHANNELS.index(c) for c in MEETING_CHANNELS])
    has_content = ~np.isin(ch, [CHANNELS.index("phone")])
    ts = pd.to_datetime(start) + pd.to_timedelta(secs, unit="s")
    touchpoints = pd.DataFrame({
        "event_id": [f"e{i:09d}" for i in range(n_tp)],
        "hcp_id": hcp_ids[h],
        "rep_id": hcps["rep_id"].to_numpy()[h],
        "ts": ts,
        "channel": np.array(CHANNELS, dtype=object)[ch],
        "content_id": np.where(has_content, content_ids[rng.integers(0, n_content, n_tp)], None),
        "direction": np.where(rng.random(n_tp) < 0.03, "inbound", "outbound"),
        "delivered": delivered,
        "opened": opened,
        "read_seconds": np.where(opened, rng.exponential(50.0, n_tp), 0.0),
        "forwarded": opened & (rng.random(n_tp) < 0.1),
        "favourited": opened & (rng.random(n_tp) < 0.1),
        "replied": opened & (rng.random(n_tp) < 0.05),
        "attended": pd.array(np.where(is_meeting, opened, False), dtype="boolean"),
        "propensity": np.where(rng.random(n_tp) < 0.8, rng.uniform(0.05, 1.0, n_tp), np.nan),
        "suggestion_id": None,
    })
    touchpoints.loc[~is_meeting, "attended"] = pd.NA
    weeks = days // 7
    week_starts = [(start + timedelta(days=7 * w)).date() for w in range(weeks)]
    oh = np.repeat(np.arange(n_hcps), weeks)
    market = rng.poisson(30, len(oh))
    rx = rng.binomial(market, 0.3)
    outcomes = pd.DataFrame({
        "hcp_id": hcp_ids[oh], "week_start": np.tile(np.array(week_starts, dtype=object), n_hcps),
        "product_id": hcps["main_product_id"].to_numpy()[oh], "prescriptions": rx, "market_boxes": market,
        "share": np.where(market > 0, rx / np.maximum(market, 1), np.nan),
    })
    n_fb = max(1, n_tp // 20)
    fh = rng.integers(0, n_hcps, n_fb)
    feedback = pd.DataFrame({
        "feedback_id": [f"f{i:08d}" for i in range(n_fb)], "suggestion_id": [f"s{i:08d}" for i in range(n_fb)],
        "hcp_id": hcp_ids[fh], "rep_id": hcps["rep_id"].to_numpy()[fh],
        "ts": pd.to_datetime(start) + pd.to_timedelta(rng.integers(0, days * 86_400, n_fb), unit="s"),
        "decision": np.array(FEEDBACK_DECISIONS, dtype=object)[rng.integers(0, len(FEEDBACK_DECISIONS), n_fb)],
        "reason": None,
    })
    return {"products": products, "reps": reps, "hcps": hcps, "content": content, "touchpoints": touchpoints,
            "outcomes": outcomes, "feedback": feedback}
