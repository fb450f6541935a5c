"""The audit trail is append-only, idempotent on feedback ids, and the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from serving.audit import AuditTrail, FeedbackConflict, UnknownSuggestion

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


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
    n = trail.record_columns(
        {
            "suggestion_id": np.array(["C1", "C2"], dtype=object),
            "request_id": "R9",
            "hcp_id": ["H1", "H1"],
            "rep_id": None,
            "as_of": T0,
            "rank": np.array([1, 2]),
            "channel": np.array(["visit", "email"], dtype=object),
            "content_id": [None, "C001"],
            "window_start": ns,
            "window_end": ns + 4 * 3600 * 10**9,
            "expected_response": np.array([0.4, 0.2]),
            "propensity": np.array([1.0, 0.9]),
            "policy": "model",
            "model_version": "m/1",
            "degraded": np.array([False, False]),
            "features_json": ['{"seq_len":3}', shared_features("C1")],
            "rules_json": "[]",
            "reasons_json": ["[]", "[]"],
        }
    )
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
        trail.record_columns(
            {
                **{c: None for c in ("rep_id",)},
                "suggestion_id": ["C3"],
                "request_id": "R9",
                "hcp_id": ["H1"],
                "as_of": T0,
                "rank": [1],
                "channel": ["visit"],
                "policy": "model",
                "degraded": [False],
                "features_json": ["{}"],
                "rules_json": "[]",
                "reasons_json": "[]",
            }
        )


def pd_ts(v):
    import pandas as pd

    t = pd.Timestamp(v)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _urls(trail: AuditTrail) -> str:
    return trail.engine.url.render_as_string(hide_password=False)


def test_caller_and_delivery_are_recorded(trail: AuditTrail) -> None:
    trail.record_suggestions([_suggestion(1, caller="crm-eu"), _suggestion(2, request_id="R2")])
    trail.record_feedback({"feedback_id": "F1", "suggestion_id": "S1", "ts": T0, "outcome": "opened", "caller": "crm-eu"})
    assert trail.mark_undelivered("R2", reason="client gone") is True
    assert trail.mark_undelivered("R2") is False, "a second mark is a no-op, not a second row"
    df = trail.read("suggestions").set_index("suggestion_id")
    assert df.loc["S1", "caller"] == "crm-eu" and df.loc["S2", "caller"] is None
    assert df["delivered"].to_dict() == {"S1": True, "S2": False}
    assert trail.read("feedback").iloc[0]["caller"] == "crm-eu"
    assert list(trail.read_window(delivered_only=True)["suggestion_id"]) == ["S1"]
    assert trail.undelivered_requests() == {"R2"}
    from serving.audit import undelivered

    with pytest.raises(sa.exc.DBAPIError, match="append-only"), trail.engine.begin() as conn:
        conn.execute(undelivered.delete())


def test_windows_are_selected_in_sql(trail: AuditTrail) -> None:
    from datetime import timedelta as td

    rows = [_suggestion(i, hcp_id=f"H{i % 2}", request_id=f"R{i}", as_of=T0 + td(days=i)) for i in range(6)]
    trail.record_suggestions(rows)
    for i in (1, 4):
        trail.record_feedback({"feedback_id": f"F{i}", "suggestion_id": f"S{i}", "ts": T0 + td(days=i, hours=1), "outcome": "opened"})
    w = trail.read_window(T0 + td(days=2), T0 + td(days=5))
    assert list(w["suggestion_id"]) == ["S2", "S3", "S4"]
    # A bound with an offset means the same instant as in UTC.
    from datetime import timezone as tz

    shifted = (T0 + td(days=2)).astimezone(tz(td(hours=8)))
    assert list(trail.read_window(shifted, None)["suggestion_id"]) == ["S2", "S3", "S4", "S5"]
    assert list(trail.feedback_in_window(T0 + td(days=2), T0 + td(days=5))["feedback_id"]) == ["F4"]
    first = trail.first_seen(T0 + td(days=4), None)
    assert sorted(first.index) == ["H0", "H1"]
    assert first["H0"] == pd_ts(T0) and first["H1"] == pd_ts(T0 + td(days=1)), "first suggestion in the whole trail, not in the window"


def test_missing_trail_is_refused_not_recreated(trail: AuditTrail) -> None:
    from serving.audit import AuditTrailMissing

    trail.record_suggestions([_suggestion(1)])
    url = _urls(trail)
    trail.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # a restore that forgot a table, or a DROP by the owner
        conn.exec_driver_sql("DROP TABLE suggestions" + (" CASCADE" if engine.dialect.name == "postgresql" else ""))
    engine.dispose()
    for mode in ("if_missing", "never"):
        with pytest.raises(AuditTrailMissing, match=r"\['suggestions'\] are missing"):
            AuditTrail(url, create=mode)
    with sa.create_engine(url).connect() as conn:
        assert not sa.inspect(conn).has_table("suggestions"), "nothing was recreated"


def test_never_creates_nothing(tmp_path: Path) -> None:
    from serving.audit import AuditTrailMissing

    url = f"sqlite:///{tmp_path / 'audit.db'}"
    with pytest.raises(AuditTrailMissing, match="audit_create is 'never'"):
        AuditTrail(url, create="never")
    with pytest.raises(ValueError, match="audit_create"):
        AuditTrail(url, create="always")
    AuditTrail(url).close()
    AuditTrail(url, create="never").close()  # initialised: opens without DDL


def test_a_trail_of_the_previous_version_is_upgraded_in_place(tmp_path: Path) -> None:
    """Tables written before caller, undelivered and nba_meta existed keep their rows and gain the new parts."""
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE suggestions (suggestion_id VARCHAR(64) PRIMARY KEY, request_id VARCHAR(64) NOT NULL, hcp_id VARCHAR(64) NOT NULL, "
            "rep_id VARCHAR(64), created_at DATETIME NOT NULL, as_of DATETIME NOT NULL, rank INTEGER NOT NULL, channel VARCHAR(32) NOT NULL, "
            "content_id VARCHAR(64), window_start DATETIME, window_end DATETIME, expected_response FLOAT, propensity FLOAT NOT NULL, "
            "policy VARCHAR(16) NOT NULL, model_version VARCHAR(64), degraded BOOLEAN NOT NULL, features_json TEXT NOT NULL, "
            "rules_json TEXT NOT NULL, reasons_json TEXT NOT NULL)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE feedback (feedback_id VARCHAR(64) PRIMARY KEY, suggestion_id VARCHAR(64) NOT NULL, hcp_id VARCHAR(64) NOT NULL, "
            "rep_id VARCHAR(64), ts DATETIME NOT NULL, received_at DATETIME NOT NULL, outcome VARCHAR(32) NOT NULL, reason VARCHAR(32))"
        )
        conn.exec_driver_sql(
            "INSERT INTO suggestions VALUES ('OLD', 'R0', 'H1', NULL, '2026-03-01 09:00:00.000000', '2026-03-01 09:00:00.000000', 1, "
            "'visit', NULL, NULL, NULL, NULL, 1.0, 'model', NULL, 0, '{}', '[]', '[]')"
        )
    engine.dispose()
    from serving.audit import AuditTrailMissing

    with pytest.raises(AuditTrailMissing, match="older than version"):
        AuditTrail(url, create="never")  # a service that may not alter the schema says so
    t = AuditTrail(url)
    t.record_suggestions([_suggestion(1, caller="crm")])
    df = t.read("suggestions").set_index("suggestion_id")
    assert df.loc["OLD", "caller"] is None and df.loc["S1", "caller"] == "crm"
    with t.engine.connect() as conn:
        indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("suggestions")}
    assert {"ix_suggestions_as_of", "ix_suggestions_hcp_as_of"} <= indexes
    t.close()


def test_ids_are_time_ordered_uuid7() -> None:
    import time
    import uuid

    from serving.engine import new_ids
    from serving.ids import uuid7_time

    first = new_ids(1000)
    time.sleep(0.002)
    later = new_ids(3)
    assert len(set(first)) == 1000
    parsed = uuid.UUID(hex=first[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122 and len(first[0]) == 32
    assert max(first) < min(later), "ids of a later millisecond sort after"
    assert abs((uuid7_time(later[0]) - datetime.now(UTC)).total_seconds()) < 5


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_workers_starting_together_create_one_trail(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Several processes opening a fresh database at once: every one starts, none refuses a half-created schema."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'audit.db'}" if backend == "sqlite" else request.getfixturevalue("postgres_db")
    import time

    # Each process imports first, then waits for one shared instant, so the schema creations overlap.
    code = (
        "import sys, time; from serving.audit import AuditTrail\n"
        "while time.time() < float(sys.argv[3]): pass\n"
        "t = AuditTrail(sys.argv[1]); t.mark_undelivered(sys.argv[2]); t.close()"
    )
    root = Path(__file__).resolve().parents[2]
    start = str(time.time() + 4)
    procs = [subprocess.Popen([sys.executable, "-c", code, url, f"R{i}", start], cwd=root, stderr=subprocess.PIPE) for i in range(4)]
    errors = [p.communicate(timeout=120)[1].decode()[-400:] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    t = AuditTrail(url)
    assert t.undelivered_requests() == {"R0", "R1", "R2", "R3"}
    t.close()
