"""Time and compliance: the server's clock judges, offsets are stored as UTC, plans fall on their day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from serving.clock import approval_basis, decision_time, feedback_time, plan_time, server_now
from serving.engine import RequestError
from serving.sandbox import AS_OF

NOW = datetime(2026, 5, 1, 4, 0, tzinfo=UTC)
SKEW, AHEAD = 300.0, 7.0


def test_as_of_defaults_to_the_server_clock_and_is_bounded() -> None:
    assert decision_time(None, NOW, skew_s=SKEW, lookahead_days=AHEAD) == NOW
    shanghai = (NOW + timedelta(days=2)).astimezone(ZoneInfo("Asia/Shanghai"))
    got = decision_time(shanghai, NOW, skew_s=SKEW, lookahead_days=AHEAD)
    assert got == NOW + timedelta(days=2) and got.utcoffset() == timedelta(0)
    assert decision_time(NOW - timedelta(seconds=200), NOW, skew_s=SKEW, lookahead_days=AHEAD) == NOW - timedelta(seconds=200)  # within the skew
    with pytest.raises(RequestError, match=r"^as_of: .*backtest: true"):
        decision_time(NOW - timedelta(days=1), NOW, skew_s=SKEW, lookahead_days=AHEAD)
    assert decision_time(NOW - timedelta(days=400), NOW, skew_s=SKEW, lookahead_days=AHEAD, backtest=True) == NOW - timedelta(days=400)
    for backtest in (False, True):  # looking ahead is bounded in both modes
        with pytest.raises(RequestError, match=r"^as_of: .*more than 7 days after"):
            decision_time(NOW + timedelta(days=8), NOW, skew_s=SKEW, lookahead_days=AHEAD, backtest=backtest)


def test_feedback_ts_in_the_future_is_refused_and_offsets_become_utc() -> None:
    local = datetime(2026, 5, 1, 10, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
    got = feedback_time(local, NOW, skew_s=SKEW)
    assert got == datetime(2026, 5, 1, 2, 30, tzinfo=UTC) and got.tzinfo == UTC
    assert feedback_time(NOW + timedelta(seconds=299), NOW, skew_s=SKEW)
    with pytest.raises(RequestError, match=r"^ts: .*in the future"):
        feedback_time(NOW + timedelta(days=400), NOW, skew_s=SKEW)


def test_the_server_clock_can_be_pinned_for_a_sandbox() -> None:
    class Cfg:
        fixed_clock = datetime(2025, 5, 6, 8, 0, tzinfo=ZoneInfo("Asia/Shanghai"))

    assert server_now(Cfg()) == datetime(2025, 5, 6, 0, 0, tzinfo=UTC)
    assert abs(server_now(object()) - datetime.now(UTC)) < timedelta(seconds=5)


def test_approval_is_judged_at_the_server_clock_not_the_callers_as_of() -> None:
    assert approval_basis(NOW - timedelta(days=30), 7.0, None) == (NOW - timedelta(days=30), 7.0)  # backtest: as_of judges
    at, days = approval_basis(NOW - timedelta(days=30), 7.0, NOW)
    assert at == NOW and days == 7.0  # a past as_of cannot bring back expired content
    at, days = approval_basis(NOW + timedelta(days=2), 7.0, NOW)
    assert at == NOW and days == pytest.approx(9.0)  # approved now and through the later window


def test_plan_time() -> None:
    day = NOW.date() + timedelta(days=2)
    assert plan_time(day, NOW) == NOW
    assert plan_time(day, None) == datetime.combine(day - timedelta(days=1), datetime.min.time(), tzinfo=UTC) + timedelta(hours=12)


def test_feedback_with_an_offset_is_stored_as_utc_and_replays(tmp_path) -> None:
    from serving.audit import AuditTrail

    trail = AuditTrail(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        trail.record_suggestions(
            [
                {
                    "suggestion_id": "S1",
                    "request_id": "R1",
                    "hcp_id": "H1",
                    "rep_id": "REP1",
                    "as_of": NOW,
                    "rank": 1,
                    "channel": "visit",
                    "content_id": None,
                    "window_start": NOW,
                    "window_end": NOW + timedelta(hours=4),
                    "expected_response": 0.3,
                    "propensity": 1.0,
                    "policy": "model",
                    "model_version": "m/1",
                    "degraded": False,
                    "features": {},
                    "rules": [],
                    "reasons": [],
                }
            ]
        )
        local = datetime(2026, 5, 1, 10, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
        item = {"feedback_id": "F1", "suggestion_id": "S1", "outcome": "accepted", "reason": None, "ts": local}
        assert trail.record_feedback(item).created
        stored = pd.Timestamp(trail.read("feedback")["ts"].iloc[0])
        stored = stored.tz_localize("UTC") if stored.tzinfo is None else stored.tz_convert("UTC")
        assert stored == pd.Timestamp("2026-05-01T02:30:00Z")  # not 10:30 UTC, 8 h late
        assert not trail.record_feedback(item).created  # the exact replay is a replay, not a 409
        assert not trail.record_feedback({**item, "ts": local.astimezone(UTC)}).created
    finally:
        trail.close()


@pytest.fixture()
def engine(serving_cfg):
    from serving.engine import Recommender

    rec = Recommender.from_config(serving_cfg)
    yield rec
    rec.audit.close()


@pytest.mark.slow
def test_engine_judges_content_by_the_clock_it_is_given(engine, world) -> None:
    until = pd.to_datetime(engine.reference.content["approved_until"], utc=True).max()
    after_all = until.to_pydatetime() + timedelta(days=1)
    ids = world.hcp_ids[:30]
    by_as_of = engine.recommend(ids, as_of=AS_OF, record=False).frame
    by_clock = engine.recommend(ids, as_of=AS_OF, record=False, clock=after_all).frame
    assert by_as_of["content_id"].notna().any()  # content was approved at the caller's as_of
    assert by_clock["content_id"].isna().all()  # by the server's clock every item has expired: none is suggested


@pytest.mark.slow
def test_a_plan_holds_contacts_of_its_day_only(engine, busy_rep) -> None:
    from serving.planning import plan_day

    for now, offset in ((None, 0), (None, 2), (AS_OF, 0), (AS_OF, 3)):
        day = AS_OF.date() + timedelta(days=offset)
        plan, res, *_ = plan_day(engine, busy_rep, day, visit_capacity=5, message_capacity=10, now=now)
        assert len(plan), (now, day)
        local_days = [ts.tz_convert(ZoneInfo(tz)).date() for ts, tz in zip(plan["window_start"], plan["timezone"])]
        assert set(local_days) == {day}, (now, day, local_days)
    with pytest.raises(RequestError, match=r"^date: "):
        plan_day(engine, busy_rep, AS_OF.date() + timedelta(days=20), now=AS_OF)
