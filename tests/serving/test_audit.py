"""The audit trail is append-only, idempotent on feedback ids, and the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.audit import AuditTrail, FeedbackConflict, UnknownSuggestion

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)


def _suggestion(i: int, **over) -> dict:
    row = {
        "suggestion_id": f"S{i}",
        "request_id": "R1",
        "hcp_id": f"H{i:05d}",
        "rep_id": "REP001",
        "as_of": T0,
        "rank": 1,
        "channel": "visit",
        "content_id": "C001",
        "window_start": T0 + timedelta(days=1),
        "window_end": T0 + timedelta(days=1, hours=4),
        "expected_response": 0.41,
        "propensity": 0.9,
        "policy": "model",
        "model_version": "nba-next-best-action/3",
        "features": {"open_rate_30d": 0.25, "seq_len": 12, "missing": float("nan")},
        "rules": ["consent", "frequency_cap"],
        "reasons": ["3 WeChat pushes unopened -> visit"],
    }
    row.update(over)
    return row


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def trail(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        url = request.getfixturevalue("postgres_db")
    t = AuditTrail(url)
    yield t
    t.close()


def test_suggestion_round_trip_keeps_evidence(trail: AuditTrail) -> None:
    assert trail.record_suggestions([_suggestion(1), _suggestion(2, channel="email", policy="explore", propensity=0.05)]) == 2
    s = trail.suggestion("S1")
    assert s["hcp_id"] == "H00001" and s["model_version"] == "nba-next-best-action/3"
    assert s["features"] == {"open_rate_30d": 0.25, "seq_len": 12, "missing": None}
    assert s["rules"] == ["consent", "frequency_cap"] and s["reasons"][0].startswith("3 WeChat")
    df = trail.read("suggestions")
    assert sorted(df["policy"]) == ["explore", "model"]
    assert trail.suggestion("nope") is None


def test_feedback_is_idempotent_and_conflicts_are_refused(trail: AuditTrail) -> None:
    trail.record_suggestions([_suggestion(1)])
    fb = {"feedback_id": "F1", "suggestion_id": "S1", "ts": T0 + timedelta(hours=2), "outcome": "accepted", "reason": None}
    assert trail.record_feedback(fb).created is True
    assert trail.record_feedback(fb).created is False
    assert len(trail.read("feedback")) == 1
    with pytest.raises(FeedbackConflict, match="outcome"):
        trail.record_feedback({**fb, "outcome": "dismissed"})
    with pytest.raises(UnknownSuggestion):
        trail.record_feedback({**fb, "feedback_id": "F2", "suggestion_id": "S404"})
    stored = trail.read("feedback").iloc[0]
    assert stored["hcp_id"] == "H00001" and stored["rep_id"] == "REP001"


def test_history_cannot_be_rewritten(trail: AuditTrail) -> None:
    from serving.audit import suggestions

    trail.record_suggestions([_suggestion(1)])
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with trail.engine.begin() as conn:
            conn.execute(suggestions.update().values(channel="email"))
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        with trail.engine.begin() as conn:
            conn.execute(suggestions.delete())
    assert trail.suggestion("S1")["channel"] == "visit"


def test_duplicate_suggestion_id_fails_whole_batch(trail: AuditTrail) -> None:
    trail.record_suggestions([_suggestion(1)])
    with pytest.raises(sa.exc.IntegrityError):
        trail.record_suggestions([_suggestion(2), _suggestion(1)])
    assert sorted(trail.read("suggestions")["suggestion_id"]) == ["S1"], "a failed batch must leave nothing behind"


def test_reopening_keeps_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    AuditTrail(url).record_suggestions([_suggestion(1)])
    assert AuditTrail(url).suggestion("S1") is not None
