"""On the real PostgreSQL server: `nba audit init` gives the service role INSERT and SELECT only, and the trail holds against it.

The owner (here the test's superuser) creates the schema; the service connects as a plain login
role. That role must not be able to TRUNCATE, UPDATE or DELETE rows, drop or disable the
append-only triggers, replace their function, or switch triggers off for its session; and even
the owner's TRUNCATE is refused by the statement trigger.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from serving.audit import AuditTrail, AuditTrailMissing

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _row(i: int) -> dict:
    return {
        "suggestion_id": f"S{i}",
        "request_id": f"R{i}",
        "hcp_id": f"H{i:05d}",
        "as_of": T0 + timedelta(days=i),
        "rank": 1,
        "channel": "visit",
        "propensity": 0.9,
        "policy": "model",
        "degraded": False,
        "features": {"x": i},
        "caller": "crm-eu",
    }


@pytest.fixture()
def service_role(postgres_db: str):
    """A fresh login role for the service; dropped (with its grants in the test database) after."""
    import psycopg

    role = f"nba_svc_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        yield role
    finally:
        db = sa.engine.make_url(postgres_db).database
        with psycopg.connect(f"host=127.0.0.1 port=5432 user=postgres dbname={db}", autocommit=True) as conn:
            conn.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'")
            conn.execute(f'DROP OWNED BY "{role}"')
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP ROLE IF EXISTS "{role}"')


def _init(url: str, *args: str) -> tuple[int, str]:
    from nba.cli import app

    res = CliRunner().invoke(app, ["audit", "init", "--url", url, *args])
    return res.exit_code, res.output


def _as(url: str, role: str) -> str:
    return sa.engine.make_url(url).set(username=role).render_as_string(hide_password=False)


def test_service_role_can_write_and_read_but_not_rewrite_history(postgres_db: str, service_role: str) -> None:
    code, out = _init(postgres_db, "--service-role", service_role)
    assert code == 0, out
    done = json.loads(out.strip().splitlines()[-1])
    assert "suggestions" in done["created_tables"] and done["granted"]["role"] == service_role

    trail = AuditTrail(_as(postgres_db, service_role), create="never")  # no DDL on start: the role may not
    try:
        assert trail.record_suggestions([_row(1), _row(2)]) == 2
        assert trail.record_feedback({"feedback_id": "F1", "suggestion_id": "S1", "ts": T0, "outcome": "opened", "caller": "crm-eu"}).created
        assert trail.mark_undelivered("R2") is True and trail.mark_undelivered("R2") is False
        from serving.feedback import push_log

        push_log(trail).record("H00001", T0, error=None)  # the push log's sequence is granted too
        df = trail.read("suggestions").set_index("suggestion_id")
        assert df.loc["S1", "caller"] == "crm-eu" and bool(df.loc["S1", "delivered"]) and not bool(df.loc["S2", "delivered"])
        assert trail.read("feedback").iloc[0]["caller"] == "crm-eu"

        refused = {
            "TRUNCATE suggestions": "permission denied",
            "TRUNCATE feedback CASCADE": "permission denied",
            "UPDATE suggestions SET channel = 'email'": "permission denied",
            "DELETE FROM feedback": "permission denied",
            "DELETE FROM undelivered": "permission denied",
            "DROP TRIGGER suggestions_append_only ON suggestions": "must be owner",
            "DROP TRIGGER suggestions_no_truncate ON suggestions": "must be owner",
            "ALTER TABLE suggestions DISABLE TRIGGER ALL": "must be owner",
            "DROP TABLE feedback": "must be owner",
            "CREATE OR REPLACE FUNCTION nba_audit_append_only() RETURNS trigger AS $$ BEGIN RETURN NEW; END; $$ LANGUAGE plpgsql": "must be owner|permission denied",
            "SET session_replication_role = replica": "permission denied",
            "INSERT INTO nba_meta VALUES ('k', 'v', now())": "permission denied",
        }
        for stmt, why in refused.items():
            with pytest.raises(sa.exc.DBAPIError, match=why), trail.engine.begin() as conn:
                conn.exec_driver_sql(stmt)
        assert sorted(trail.read("suggestions")["suggestion_id"]) == ["S1", "S2"]
        assert len(trail.read("feedback")) == 1
    finally:
        trail.close()


def test_even_the_owner_cannot_truncate(postgres_db: str) -> None:
    trail = AuditTrail(postgres_db)  # the owner creates the schema on a fresh database
    try:
        trail.record_suggestions([_row(1)])
        for table in ("suggestions", "feedback", "undelivered", "nba_meta", "feedback_pushes"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only: TRUNCATE"), trail.engine.begin() as conn:
                conn.exec_driver_sql(f"TRUNCATE {table} CASCADE")
        assert len(trail.read("suggestions")) == 1
    finally:
        trail.close()


def test_grant_refuses_a_privileged_or_unknown_role(postgres_db: str) -> None:
    code, out = _init(postgres_db, "--service-role", "postgres")
    assert code == 2 and "superuser" in out
    code, out = _init(postgres_db, "--service-role", f"nba_absent_{uuid.uuid4().hex[:8]}")
    assert code == 2 and "does not exist" in out
    code, out = _init(postgres_db, "--service-role", "bad-name; DROP")
    assert code == 2 and "identifier" in out


def test_never_mode_refuses_an_uninitialised_database(postgres_db: str, service_role: str) -> None:
    with pytest.raises(AuditTrailMissing, match="nba audit init"):
        AuditTrail(_as(postgres_db, service_role), create="never")
    # A service role cannot create the schema either: a clear error, not a half-made trail.
    with pytest.raises(AuditTrailMissing, match="cannot create"):
        AuditTrail(_as(postgres_db, service_role))
    with sa.create_engine(postgres_db).connect() as conn:
        assert not sa.inspect(conn).has_table("suggestions")


def test_dropped_trigger_is_noticed_at_start(postgres_db: str, service_role: str) -> None:
    assert _init(postgres_db, "--service-role", service_role)[0] == 0
    engine = sa.create_engine(postgres_db)
    with engine.begin() as conn:  # the owner (or an attacker with its rights) drops a guard
        conn.exec_driver_sql("DROP TRIGGER feedback_no_truncate ON feedback")
    engine.dispose()
    with pytest.raises(AuditTrailMissing, match="feedback_no_truncate"):
        AuditTrail(_as(postgres_db, service_role), create="never")
    AuditTrail(postgres_db).close()  # the owner's start puts it back
    AuditTrail(_as(postgres_db, service_role), create="never").close()


def test_disabled_trigger_is_noticed_and_switched_back_on(postgres_db: str) -> None:
    AuditTrail(postgres_db).close()
    engine = sa.create_engine(postgres_db)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE suggestions DISABLE TRIGGER suggestions_append_only")
    with pytest.raises(AuditTrailMissing, match="suggestions_append_only"):
        AuditTrail(postgres_db, create="never")
    trail = AuditTrail(postgres_db)  # the owner's start re-enables it
    try:
        trail.record_suggestions([_row(1)])
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), trail.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM suggestions")
    finally:
        trail.close()
        engine.dispose()
