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


def test_sqlite_is_durable_at_commit(tmp_path: Path) -> None:
    t = AuditTrail(f"sqlite:///{tmp_path / 'audit.db'}")
    with t.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: fsync at every commit
    t.close()


def test_column_wise_insert_reads_back_like_row_wise(trail: AuditTrail) -> None:
    import numpy as np

    from serving.audit import shared_features

    start = T0 + timedelta(days=1)
    ns = np.array([int(start.timestamp()) * 10**9] * 2, dtype=np.int64)
    n = trail.record_columns({
        "suggestion_id": np.array(["C1", "C2"], dtype=object), "request_id": "R9", "hcp_id": ["H1", "H1"], "rep_id": None, "as_of": T0,
        "rank": np.array([1, 2]), "channel": np.array(["visit", "email"], dtype=object), "content_id": [None, "C001"],
        "window_start": ns, "window_end": ns + 4 * 3600 * 10**9, "expected_response": np.array([0.4, 0.2]), "propensity": np.array([1.0, 0.9]),
        "policy": "model", "model_version": "m/1", "degraded": np.array([False, False]),
        "features_json": ['{"seq_len":3}', shared_features("C1")], "rules_json": "[]", "reasons_json": ["[]", "[]"],
    })
    trail.record_suggestions([_suggestion(1)])  # the row-wise path, same window
    df = trail.read("suggestions").set_index("suggestion_id")
    assert n == 2 and len(df) == 3
    as_utc = lambda v: pd_ts(v)  # noqa: E731
    assert as_utc(df.loc["C1", "window_start"]) == as_utc(df.loc["S1", "window_start"]) == pd_ts(start)
    assert as_utc(df.loc["C2", "window_end"]) == pd_ts(start + timedelta(hours=4))
    # The second row shares the first row's feature values; reads resolve the pointer.
    assert df.loc["C2", "features_json"] == '{"seq_len":3}'
    assert trail.suggestion("C2")["features"] == {"seq_len": 3}
    with pytest.raises(ValueError, match="propensity"):
        trail.record_columns({**{c: None for c in ("rep_id",)}, "suggestion_id": ["C3"], "request_id": "R9", "hcp_id": ["H1"], "as_of": T0,
                              "rank": [1], "channel": ["visit"], "policy": "model", "degraded": [False], "features_json": ["{}"],
                              "rules_json": "[]", "reasons_json": "[]"})


def pd_ts(v):
    import pandas as pd

    t = pd.Timestamp(v)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
