"""Feature transforms against values computed by hand from the tiny dataset in conftest."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from tiny_contract import T0

from features.config import FeaturesConfig
from features.events import prepare, run_lengths
from features.snapshots import compute_features_asof, content_table, weekly_times


def _row(df: pd.DataFrame, hcp: str) -> pd.Series:
    return df.set_index("hcp_id").loc[hcp]


def test_engagement_recency_and_streak_by_hand(tables):
    h1 = _row(compute_features_asof(tables, T0 + timedelta(days=14)), "h1")
    assert h1["wechat_push_sent_7d"] == 1  # day 8 only; window is [day 7, day 14)
    assert h1["wechat_push_sent_30d"] == 3
    assert h1["wechat_push_opened_30d"] == 1
    assert h1["wechat_push_open_rate_30d"] == pytest.approx(1 / 3)
    assert h1["wechat_push_read_seconds_30d"] == pytest.approx(90.0)
    assert h1["webinar_attended_7d"] == 1 and h1["visit_sent_7d"] == 1
    assert h1["touches_7d"] == 3 and h1["touches_total"] == 5
    assert h1["engaged_30d"] == 1  # the 90-second read
    assert h1["days_since_last_touch"] == pytest.approx(3.5)
    assert h1["days_since_last_wechat_push"] == pytest.approx(6.0)
    assert h1["days_since_last_open"] == pytest.approx(3.5)
    assert h1["consecutive_unopened_pushes"] == 2


def test_inbound_and_undelivered(tables):
    h2 = _row(compute_features_asof(tables, T0 + timedelta(days=7)), "h2")
    assert h2["email_sent_7d"] == 1 and h2["email_opened_7d"] == 0
    assert h2["inbound_7d"] == 1 and h2["wecom_1to1_sent_7d"] == 0  # inbound is not "sent"
    assert h2["days_since_last_touch"] == pytest.approx(3.0)


def test_never_touched_hcp_gets_caps_and_zeros(tables):
    cfg = FeaturesConfig(days_since_cap=100.0)
    h3 = _row(compute_features_asof(tables, T0 + timedelta(days=14), cfg), "h3")
    assert h3["days_since_last_touch"] == 100.0 and h3["touches_total"] == 0 and h3["seq_len"] == 0
    assert h3["is_missing"] == False  # noqa: E712 - known HCP, just no history


def test_visits_feedback_and_outcomes(tables):
    df = compute_features_asof(tables, T0 + timedelta(days=14))
    h1 = _row(df, "h1")
    assert h1["visits_90d"] == 1 and h1["meetings_attended_90d"] == 1
    assert h1["suggestions_accepted_90d"] == 1 and h1["suggestions_dismissed_90d"] == 1
    assert h1["suggestion_acceptance_rate_90d"] == pytest.approx(0.5)
    assert h1["rx_4w"] == 8 and h1["market_4w"] == 20 and h1["share_4w"] == pytest.approx(0.4)
    assert h1["rx_trend_per_week"] == pytest.approx(8 / 4 - 8 / 12)
    assert h1["weeks_with_rx_12w"] == 2
    # The week starting Jan 12 is not over on Jan 12 + 6 days: only the first week counts.
    early = _row(compute_features_asof(tables, T0 + timedelta(days=13)), "h1")
    assert early["rx_4w"] == 3


def test_profile_codes(tables):
    df = compute_features_asof(tables, T0)
    h1, h2 = _row(df, "h1"), _row(df, "h2")
    assert (h1["segment"], h1["hospital_tier"], h1["title"], h1["lifecycle"]) == (0, 0, 0, 1)
    assert h1["is_kol"] and h1["profile_qualified"] and h1["beds"] == 10
    assert h1["potential_boxes_month"] == pytest.approx(864.0)
    assert not h1["consent_phone"] and h1["consent_email"]
    assert h2["segment"] == -1 and h2["beds"] == 0 and not h2["profile_qualified"]


def test_sequence_oldest_first_with_local_time(tables):
    df = compute_features_asof(tables, T0 + timedelta(days=14), FeaturesConfig(sequence_length=20))
    h1 = _row(df, "h1")
    assert h1["seq_len"] == 5
    assert list(h1["seq_channel"]) == [2, 2, 2, 0, 5]  # wechat_push x3, visit, webinar
    assert list(h1["seq_content_id"]) == ["c1", "c2", "c1", "", "c2"]
    assert list(h1["seq_response"]) == [3, 1, 1, 2, 2]
    assert list(h1["seq_read_seconds"]) == [90.0, 0, 0, 0, 0]
    assert list(h1["seq_gap_days"]) == [365.0, 2.0, 5.0, 1.0, 1.5]
    assert list(h1["seq_weekday"]) == [1, 3, 1, 2, 3]  # Asia/Shanghai local weekdays
    assert list(h1["seq_daypart"]) == [0, 0, 0, 0, 3]  # 08:00 mornings, one 20:00 evening
    h2 = _row(df, "h2")
    assert list(h2["seq_response"]) == [0, 3]  # undelivered email, then an inbound reply


def test_sequence_keeps_last_n(tables):
    h1 = _row(compute_features_asof(tables, T0 + timedelta(days=14), FeaturesConfig(sequence_length=2)), "h1")
    assert h1["seq_len"] == 2 and list(h1["seq_channel"]) == [0, 5]


def test_content_popularity_and_approval(tables):
    cfg = FeaturesConfig()
    prep = prepare(tables)
    t = np.array([int((T0 + timedelta(days=7)).timestamp()), int((T0 + timedelta(days=14)).timestamp())])
    df = content_table(prep, cfg, t, as_source=False).to_pandas().set_index(["content_id", "event_timestamp"])
    c1 = df.loc[("c1", pd.Timestamp(T0 + timedelta(days=14)))]
    assert c1["sent_30d"] == 3 and c1["opened_30d"] == 1 and c1["is_approved"]
    c2_early = df.loc[("c2", pd.Timestamp(T0 + timedelta(days=7)))]
    c2_late = df.loc[("c2", pd.Timestamp(T0 + timedelta(days=14)))]
    assert not c2_early["is_approved"] and c2_late["is_approved"]
    assert c2_late["days_since_approval"] == pytest.approx(4.0)


def test_run_lengths_reset_at_groups():
    flag = np.array([True, True, False, True, True, True, True])
    group = np.array([0, 0, 0, 0, 1, 1, 2])
    assert run_lengths(flag, group).tolist() == [1, 2, 0, 1, 1, 2, 1]


def test_weekly_times_cover_all_events(tables):
    times = weekly_times(prepare(tables))
    assert pd.Timestamp(times[0], unit="s", tz="UTC") == pd.Timestamp(T0)
    assert (times[1:] - times[:-1] == 7 * 86400).all()
    assert times[-1] > prepare(tables).events.t.max()


def test_unknown_hcp_in_touchpoints_names_row(tables):
    tables["touchpoints"].loc[3, "hcp_id"] = "ghost"
    with pytest.raises(ValueError, match=r"touchpoints: row 3: hcp_id 'ghost'"):
        prepare(tables)


def test_missing_table_is_named(tables):
    del tables["outcomes"]
    with pytest.raises(ValueError, match="'outcomes' is missing"):
        prepare(tables)


def test_naive_as_of_refused(tables):
    with pytest.raises(ValueError, match="timezone-aware"):
        compute_features_asof(tables, "2026-01-19T00:00:00")


def test_response_history_counts_delivered_outbound_by_channel_weekday_daypart_topic(tables):
    h = compute_features_asof(tables, T0 + timedelta(days=14)).set_index("hcp_id")
    h1 = h.loc["h1"]
    # h1 (Shanghai): pushes Tue 08:00 (c1 guideline, opened), Thu 08:00 (c2 case study), Tue 08:00 (c1);
    # a visit Wed 08:00 (met); a webinar Thu 20:00 (c2, attended).
    assert (h1["hist_channel_wechat_push_sent_365d"], h1["hist_channel_wechat_push_opened_365d"]) == (3, 1)
    assert (h1["hist_channel_visit_sent_365d"], h1["hist_channel_webinar_opened_365d"]) == (1, 1)
    assert (h1["hist_weekday_tue_sent_365d"], h1["hist_weekday_tue_opened_365d"]) == (2, 1)
    assert (h1["hist_weekday_thu_sent_365d"], h1["hist_weekday_thu_opened_365d"]) == (2, 1)
    assert (h1["hist_weekday_wed_sent_365d"], h1["hist_weekday_mon_sent_365d"]) == (1, 0)
    assert (h1["hist_daypart_morning_sent_365d"], h1["hist_daypart_morning_opened_365d"]) == (4, 2)
    assert (h1["hist_daypart_evening_sent_365d"], h1["hist_daypart_evening_opened_365d"]) == (1, 1)
    assert (h1["hist_topic_guideline_sent_365d"], h1["hist_topic_guideline_opened_365d"]) == (2, 1)
    assert (h1["hist_topic_case_study_sent_365d"], h1["hist_topic_case_study_opened_365d"]) == (2, 1)
    # h2's email was not delivered and its WeCom message was inbound: neither is a sent touch.
    assert (h.loc["h2"].filter(regex="^hist_") == 0).all()


def test_response_history_window_and_point_in_time(tables):
    h1 = _row(compute_features_asof(tables, T0 + timedelta(days=9), FeaturesConfig(response_history_days=5)), "h1")
    # [day 4, day 9): only the day-8 push; the day-9 visit is at the snapshot time, not before it.
    assert (h1["hist_channel_wechat_push_sent_5d"], h1["hist_channel_wechat_push_opened_5d"]) == (1, 0)
    assert h1["hist_channel_visit_sent_5d"] == 0 and h1["hist_topic_guideline_sent_5d"] == 1


def test_candidate_views_by_hand(tables):
    # h1: c1 pushed day 1 (opened), c2 pushed day 3, c1 pushed day 8, c2 webinar day 10.5 (attended).
    cfg = FeaturesConfig(contact_windows_days=[7, 21], item_history_items=5, item_history_days=30)
    h = compute_features_asof(tables, T0 + timedelta(days=12), cfg).set_index("hcp_id").loc["h1"]
    assert list(h["item_hist_content_id"]) == ["c2", "c1"]  # newest first
    np.testing.assert_allclose(h["item_hist_days_since_delivered"], [1.5, 4.0])
    np.testing.assert_allclose(h["item_hist_days_since_opened"], [1.5, 11.0])
    np.testing.assert_allclose(h["item_hist_n30"], [2, 2])
    assert h["item_hist_len"] == 2
    assert h["cr_wechat_push_sent_7d"] == 1 and h["cr_wechat_push_sent_21d"] == 3
    assert h["cr_wechat_push_days_since"] == pytest.approx(4.0) and h["cr_webinar_days_since"] == pytest.approx(1.5)
    assert h["cr_visit_days_since"] == pytest.approx(3.0) and h["cr_phone_days_since"] == cfg.days_since_cap  # never: the cap
    assert h["cr_topic_case_study_days_since"] == pytest.approx(1.5) and h["cr_topic_guideline_days_since"] == pytest.approx(4.0)
    # Outside the item window an item drops out of the history.
    late = compute_features_asof(tables, T0 + timedelta(days=35), cfg).set_index("hcp_id").loc["h1"]
    assert list(late["item_hist_content_id"]) == ["c2", "c1"][: sum(d < 30 for d in (35 - 10.5, 35 - 8))]
