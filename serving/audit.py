"""The audit trail: every served suggestion and every piece of feedback, append-only.

Compliance asks for an evidence chain: what was suggested to whom (pseudonymous id), when, by
which model version, from which feature values, under which rules, with what probability it was
chosen, which API caller asked, and what came of it. Rows are never updated or deleted: the
database itself refuses (triggers on SQLite and PostgreSQL, on PostgreSQL also ``TRUNCATE``), so a
bug elsewhere cannot rewrite history. On PostgreSQL the schema belongs to an owner role and the
service connects as a role that may only INSERT and SELECT, so it cannot drop the triggers
either (``nba audit init``; docs/audit-roles.md).

A response that never reached its caller is not erased: its request id is appended to the
``undelivered`` table, and readers see ``delivered = False`` on its suggestions.

Start-up never recreates an empty trail over an existing deployment: the ``nba_meta`` table marks
that a trail was created here, and a database holding the marker (or one trail table) without
the others is refused (``AuditTrailMissing``). ``create="never"`` (the serving config's
``audit_create``) creates nothing at all: production initialises with ``nba audit init``.

SQLite by default (a file URL), PostgreSQL in production (``postgresql+psycopg://...``; the URL's
``sslmode`` is used as given, libpq's default ``prefer`` otherwise).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa

metadata = sa.MetaData()

suggestions = sa.Table(
    "suggestions",
    metadata,
    sa.Column("suggestion_id", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.String(64), nullable=False, index=True),
    sa.Column("hcp_id", sa.String(64), nullable=False, index=True),
    sa.Column("rep_id", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("channel", sa.String(32), nullable=False),
    sa.Column("content_id", sa.String(64), nullable=True),
    sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
    sa.Column("window_end", sa.DateTime(timezone=True), nullable=True),
    sa.Column("expected_response", sa.Float, nullable=True),
    # Probability with which this action was served: what off-policy estimators need.
    sa.Column("propensity", sa.Float, nullable=False),
    # model | explore | holdout | fallback
    sa.Column("policy", sa.String(16), nullable=False),
    sa.Column("model_version", sa.String(64), nullable=True),
    sa.Column("degraded", sa.Boolean, nullable=False),
    sa.Column("features_json", sa.Text, nullable=False),
    sa.Column("rules_json", sa.Text, nullable=False),
    sa.Column("reasons_json", sa.Text, nullable=False),
    # The API key's name (serving.auth.KeyRing) of the caller that asked; None off the API.
    sa.Column("caller", sa.String(64), nullable=True),
    # One HCP's history in time order (first_seen, per-HCP windows) without touching other rows.
    sa.Index("ix_suggestions_hcp_as_of", "hcp_id", "as_of"),
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("feedback_id", sa.String(64), primary_key=True),
    sa.Column("suggestion_id", sa.String(64), nullable=False, index=True),
    sa.Column("hcp_id", sa.String(64), nullable=False),
    sa.Column("rep_id", sa.String(64), nullable=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("caller", sa.String(64), nullable=True),
    # The feedback push replays one HCP's outcomes: an index, not a scan of every HCP's.
    sa.Index("ix_feedback_hcp_ts", "hcp_id", "ts"),
)

# Requests whose response did not reach the caller (gone, timed out): appended, never a flag
# updated in place, so the service needs no UPDATE privilege and history stays append-only.
undelivered = sa.Table(
    "undelivered",
    metadata,
    sa.Column("request_id", sa.String(64), primary_key=True),
    sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.String(64), nullable=True),
)

# The deployment marker: written when the trail is created, so a later start can tell a fresh
# database from one whose trail tables went missing.
nba_meta = sa.Table(
    "nba_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Feedback pushes to the online store (serving.feedback.PushLog): append-only like the rest, and
# created here with the others so that a service role without CREATE finds it in place.
feedback_pushes = sa.Table(
    "feedback_pushes",
    metadata,
    sa.Column("push_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("hcp_id", sa.String(64), nullable=False, index=True),
    sa.Column("attempted_at", sa.DateTime(timezone=True), nullable=False),
    # received_at of the newest feedback row the push read (None: the HCP had none).
    sa.Column("through", sa.DateTime(timezone=True), nullable=True),
    sa.Column("pushed", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
)

SCHEMA_VERSION = 2  # 1: suggestions + feedback; 2: caller, time/HCP indexes, undelivered, nba_meta, TRUNCATE guard
_TABLES = ("suggestions", "feedback", "undelivered", "nba_meta", "feedback_pushes")
_TRAIL = ("suggestions", "feedback")
# Added to tables created by an earlier version (column, SQL type); create_all adds no columns.
_ADDED_COLUMNS = {"suggestions": [("caller", "VARCHAR(64)")], "feedback": [("caller", "VARCHAR(64)")]}

_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: {op} on {t} refused'); END"
    for t in _TABLES
    for op in ("UPDATE", "DELETE")
]
# Doubled %: psycopg reads a lone % as a parameter placeholder.
_PG_FUNCTION = """
CREATE OR REPLACE FUNCTION nba_audit_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'audit trail is append-only: %% on %% refused', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql
"""
# Row triggers do not fire on TRUNCATE: a statement-level trigger refuses it.
_PG_TRIGGERS = {
    **{
        f"{t}_append_only": f"CREATE OR REPLACE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION nba_audit_append_only()"
        for t in _TABLES
    },
    **{
        f"{t}_no_truncate": f"CREATE OR REPLACE TRIGGER {t}_no_truncate BEFORE TRUNCATE ON {t} FOR EACH STATEMENT EXECUTE FUNCTION nba_audit_append_only()"
        for t in _TABLES
    },
}


class AuditTrailMissing(RuntimeError):
    """The database shows an earlier audit trail whose tables are gone, or creation is not allowed here."""


# A slate's k rows share one HCP's feature values: the first row keeps the document, the
# others point at it (about a third of the bytes a 1,000-HCP request writes); reads resolve it.
SHARED_PREFIX = '{"same_as":'


def shared_features(first_suggestion_id: str) -> str:
    """The features_json of a suggestion sharing the feature values recorded on ``first_suggestion_id``."""
    return f'{SHARED_PREFIX}"{first_suggestion_id}"}}'


def _shared_target(doc: str | None) -> str | None:
    if isinstance(doc, str) and doc.startswith(SHARED_PREFIX):
        return json.loads(doc)["same_as"]
    return None


_SUGGESTION_COLUMNS = tuple(c.name for c in suggestions.columns)
_TIME_COLUMNS = ("created_at", "as_of", "window_start", "window_end")
_REQUIRED = tuple(c.name for c in suggestions.columns if not c.nullable)


def _scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bytes, int, float, bool, datetime))


def _tolist(v: Any) -> list:
    return v.tolist() if hasattr(v, "tolist") else list(v)


def _db_time(t: Any, sqlite: bool) -> Any:
    """A datetime, pandas Timestamp or int64 ns as the driver stores it (UTC)."""
    if t is None:
        return None
    if isinstance(t, int):
        t = datetime.fromtimestamp(t // 10**9, UTC).replace(microsecond=(t % 10**9) // 1000)
    elif hasattr(t, "to_pydatetime"):
        t = t.to_pydatetime()
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    # SQLAlchemy's SQLite DateTime text format (naive, UTC here), so its reads parse it back.
    return t.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else t


def _db_times(values: Any, sqlite: bool) -> list:
    """``_db_time`` over a column; int64 nanoseconds (the engine's windows) vectorised."""
    arr = np.asarray(values) if not isinstance(values, list) else None
    if arr is not None and arr.dtype.kind in "iu":
        if sqlite:
            text = np.datetime_as_string(arr.astype("datetime64[ns]").astype("datetime64[us]"), unit="us")
            return [t.replace("T", " ") for t in text.tolist()]
        import pandas as pd

        return list(pd.to_datetime(arr, utc=True).to_pydatetime())
    return [_db_time(t, sqlite) for t in _tolist(values)]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: a commit appends to one log and fsyncs it once, and readers never block the writer.
    # synchronous=FULL (not NORMAL): NORMAL in WAL skips the fsync at commit, so a power cut could
    # lose suggestions the CRM already received; a served suggestion must be on disk first.
    dbapi_connection.execute("PRAGMA journal_mode=WAL")
    dbapi_connection.execute("PRAGMA synchronous=FULL")


class FeedbackConflict(ValueError):
    """The same feedback id arrived again with different content."""


class UnknownSuggestion(KeyError):
    """Feedback names a suggestion id the audit trail never served."""


@dataclass(frozen=True)
class FeedbackResult:
    """What recording one piece of feedback did: stored now, or already stored earlier."""

    feedback_id: str
    created: bool


def _now() -> datetime:
    return datetime.now(UTC)


def _json(value: Any) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, datetime):
            return o.isoformat()
        if hasattr(o, "item"):  # numpy scalars
            return o.item()
        if hasattr(o, "tolist"):
            return o.tolist()
        return str(o)

    def clean(o: Any) -> Any:
        # JSON has no NaN: a missing feature is recorded as null, not as an invalid token.
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, Mapping):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(value), default=default, sort_keys=True, separators=(",", ":"))


CREATE_MODES = ("if_missing", "never")
_SETTLE_S = 3.0  # how long a start waits for another worker's schema creation to finish
# pg_advisory_xact_lock key: workers starting together create the schema one at a time.
_SCHEMA_LOCK = 0x6E62_6161  # "nbaa"


def shown_url(url: str) -> str:
    """``url`` with any password masked, for messages and logs."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL has no password to hide
        return url


def _insert_ignore(conn: Any, table: sa.Table, rows: list[dict]) -> int:
    """Insert rows whose primary key is absent (both dialects' ON CONFLICT DO NOTHING); how many were new."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    # RETURNING counts what was inserted: rowcount after ON CONFLICT is not reliable across drivers.
    stmt = insert(table).on_conflict_do_nothing().returning(*table.primary_key.columns)
    return sum(len(conn.execute(stmt, row).all()) for row in rows)


def _schema_version(conn: Any) -> int:
    values = conn.execute(sa.select(nba_meta.c.value).where(nba_meta.c.key.like("schema_version_%"))).scalars().all()
    return max((int(v) for v in values if str(v).isdigit()), default=0)


def _pg_guards_missing(conn: Any) -> list[str]:
    have = set(
        conn.exec_driver_sql(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal AND t.tgenabled <> 'D'"
        ).scalars()
    )
    return sorted(set(_PG_TRIGGERS) - have)


def install_schema(engine: sa.Engine, *, repair: bool = False) -> dict[str, Any]:
    """Create or upgrade the trail's tables, indexes, guards and marker (as the schema's owner); what it did.

    ``repair`` allows recreating trail tables that are missing from an existing deployment:
    only ``nba audit init --repair``, a deliberate act, does that.
    """
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if pg:
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
        insp = sa.inspect(conn)
        present = {t for t in _TABLES if insp.has_table(t)}
        missing = [t for t in _TRAIL if t not in present]
        if present and missing and not repair:
            raise AuditTrailMissing(_missing_message(shown_url(str(engine.url)), missing, present))
        metadata.create_all(conn)  # missing tables only, with their indexes
        added = []
        for table, cols in _ADDED_COLUMNS.items():
            have = {c["name"] for c in sa.inspect(conn).get_columns(table)}
            for name, sql_type in cols:
                if name not in have:
                    conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}")
                    added.append(f"{table}.{name}")
        for t in metadata.sorted_tables:
            for ix in t.indexes:
                ix.create(conn, checkfirst=True)
        if pg:
            conn.exec_driver_sql(_PG_FUNCTION)
            for stmt in _PG_TRIGGERS.values():
                conn.exec_driver_sql(stmt)
            for t in _TABLES:  # a trigger someone disabled is switched back on
                for name in (f"{t}_append_only", f"{t}_no_truncate"):
                    conn.exec_driver_sql(f"ALTER TABLE {t} ENABLE TRIGGER {name}")
        elif engine.dialect.name == "sqlite":
            for stmt in _SQLITE_TRIGGERS:
                conn.exec_driver_sql(stmt)
        now = _now()
        _insert_ignore(
            conn,
            nba_meta,
            [
                {"key": "deployment_created_at", "value": now.isoformat(), "created_at": now},
                {"key": f"schema_version_{SCHEMA_VERSION}", "value": str(SCHEMA_VERSION), "created_at": now},
            ],
        )
    return {"created_tables": sorted(set(_TABLES) - present), "added_columns": added, "schema_version": SCHEMA_VERSION}


_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_SERVICE_WRITES = ("suggestions", "feedback", "undelivered", "feedback_pushes")


def service_role_grants(role: str, schema: str) -> list[str]:
    """The SQL that gives the service role ``role`` only what serving needs: SELECT and INSERT, nothing else.

    No UPDATE, DELETE, TRUNCATE, TRIGGER or REFERENCES, and no ownership: a role that does not
    own a table cannot drop, disable or replace its triggers, nor alter or drop the table.
    """
    for name, value in (("--service-role", role), ("schema", schema)):
        if not _ROLE_NAME.match(value):
            raise ValueError(f"{name}: {value!r} is not a plain SQL identifier (letters, digits, _; at most 63)")
    every = ", ".join(_TABLES)
    return [
        f"REVOKE ALL ON TABLE {every} FROM PUBLIC",
        f'REVOKE ALL ON TABLE {every} FROM "{role}"',
        f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
        f'GRANT SELECT, INSERT ON TABLE {", ".join(_SERVICE_WRITES)} TO "{role}"',
        f'GRANT SELECT ON TABLE nba_meta TO "{role}"',
        # feedback_pushes.push_id draws from a sequence: INSERT needs it.
        f'GRANT USAGE ON SEQUENCE {schema}.feedback_pushes_push_id_seq TO "{role}"',
    ]


def grant_service_role(engine: sa.Engine, role: str) -> list[str]:
    """Apply ``service_role_grants`` on PostgreSQL after checking the role exists and is not privileged; the statements run."""
    if engine.dialect.name != "postgresql":
        raise ValueError("--service-role: database roles exist on PostgreSQL only (a SQLite file is guarded by file permissions)")
    with engine.begin() as conn:
        schema = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        stmts = service_role_grants(role, schema)
        found = conn.exec_driver_sql(
            "SELECT r.rolsuper, r.rolbypassrls, pg_has_role(r.rolname, c.relowner, 'MEMBER') FROM pg_roles r, pg_class c "
            "WHERE r.rolname = %(role)s AND c.oid = 'suggestions'::regclass",
            {"role": role},
        ).first()
        if found is None:
            raise ValueError(f"--service-role: role {role!r} does not exist; create it first (CREATE ROLE {role} LOGIN PASSWORD '...')")
        superuser, bypass, owns = found
        if superuser or bypass:
            raise ValueError(f"--service-role: role {role!r} is a superuser (or bypasses row security): it could drop the guards; use a plain role")
        if owns:
            raise ValueError(
                f"--service-role: role {role!r} owns the audit tables (or is a member of their owner): it could drop the "
                "triggers; connect as a separate owner role to run `nba audit init`"
            )
        for stmt in stmts:
            conn.exec_driver_sql(stmt)
    return stmts


def _marked(conn: Any, present: set[str]) -> bool:
    """Whether the deployment marker row is written (the last step of creating a trail)."""
    if "nba_meta" not in present:
        return False
    return conn.execute(sa.select(nba_meta.c.key).where(nba_meta.c.key == "deployment_created_at")).first() is not None


def _missing_message(shown: str, missing: list[str], present: set[str]) -> str:
    return (
        f"audit trail {shown}: table(s) {missing} are missing while {sorted(present)} exist: this database held an audit "
        "trail, and starting over it with an empty one would hide that. Restore the missing table(s) from a backup; to "
        "start a new trail here on purpose, run `nba audit init --url URL --repair` as the schema's owner"
    )


class AuditTrail:
    """Append-only store of suggestions and feedback behind one SQLAlchemy engine.

    ``create``: ``if_missing`` creates the schema in a database holding no trail at all (and
    upgrades an earlier version's); ``never`` creates and alters nothing (production, where the
    service role may not, and ``nba audit init`` did it). Either way a trail whose tables went
    missing is refused, never silently recreated empty.
    """

    def __init__(self, url: str, create: str = "if_missing") -> None:
        if create not in CREATE_MODES:
            raise ValueError(f"audit_create: {create!r} is not one of {', '.join(CREATE_MODES)}")
        # sslmode comes from the URL: nothing is added (libpq's default, prefer, tries TLS first).
        self.url = url
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._open(create)
        except Exception:
            self.engine.dispose()
            raise

    def _open(self, create: str) -> None:
        shown = shown_url(self.url)
        failures = 0
        # Another worker may be creating the same schema right now (SQLite commits each CREATE on
        # its own): a partial, unmarked state is looked at again for a moment before it is refused.
        settle_until = time.monotonic() + _SETTLE_S
        while True:
            try:
                with self.engine.connect() as conn:
                    insp = sa.inspect(conn)
                    present = {t for t in _TABLES if insp.has_table(t)}
                    missing = [t for t in _TRAIL if t not in present]
                    if present and missing:
                        if not _marked(conn, present) and time.monotonic() < settle_until:
                            time.sleep(0.1)
                            continue
                        raise AuditTrailMissing(_missing_message(shown, missing, present))
                    if present:
                        stale = "nba_meta" not in present or _schema_version(conn) < SCHEMA_VERSION
                        guards = _pg_guards_missing(conn) if self.engine.dialect.name == "postgresql" else []
                        if not stale and not guards:
                            if self.engine.dialect.name == "sqlite":  # the file's owner is the service: re-declare (cheap)
                                for stmt in _SQLITE_TRIGGERS:
                                    conn.exec_driver_sql(stmt)
                                conn.commit()
                            return
                        if create == "never":
                            what = f"guard trigger(s) {guards} missing" if guards else f"schema older than version {SCHEMA_VERSION}"
                            raise AuditTrailMissing(
                                f"audit trail {shown}: {what}, and audit_create is 'never': run `nba audit init --url URL` as the schema's owner"
                            )
                    elif create == "never":
                        raise AuditTrailMissing(
                            f"audit trail {shown}: no audit tables, and audit_create is 'never': "
                            "initialise it with `nba audit init --url URL` as the schema's owner (docs/audit-roles.md)"
                        )
                try:
                    install_schema(self.engine)
                except AuditTrailMissing:
                    if time.monotonic() < settle_until:  # a partial state another worker is still completing
                        time.sleep(0.1)
                        continue
                    raise
                return
            except sa.exc.DBAPIError as exc:
                failures += 1
                if failures > 3:  # not a race with other workers creating the same tables
                    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
                    raise AuditTrailMissing(
                        f"audit trail {shown}: cannot create or upgrade the schema ({first}); run `nba audit init --url URL` as the schema's owner"
                    ) from exc
                time.sleep(0.1)

    def record_suggestions(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Append served suggestions (one mapping each) in one transaction; returns how many were written."""
        rows = list(rows)
        if not rows:
            return 0
        cols: dict[str, list] = {c: [] for c in _SUGGESTION_COLUMNS}
        for r in rows:
            for c in _SUGGESTION_COLUMNS:
                if c.endswith("_json") and c not in r:
                    # Callers scoring many rows pass JSON they serialised column-wise; others pass objects.
                    cols[c].append(_json(r.get(c[: -len("_json")], [] if c != "features_json" else {})))
                else:
                    cols[c].append(r.get(c))
        return self.record_columns(cols)

    def record_columns(self, columns: Mapping[str, Any]) -> int:
        """Append served suggestions given column-wise (arrays or lists; scalars repeat) in one transaction.

        Bypasses SQLAlchemy's per-value type processing, which was most of a 1,000-HCP request:
        one ``executemany`` of plain tuples on SQLite, one ``COPY`` on PostgreSQL. Times may be
        datetimes or int64 UTC nanoseconds; SQLite keeps SQLAlchemy's own text format, so rows
        read back the same whichever path wrote them.
        """
        n = next((len(v) for v in columns.values() if not _scalar(v)), 0)
        if n == 0:
            return 0
        sqlite = self.engine.dialect.name == "sqlite"
        out = []
        for c in _SUGGESTION_COLUMNS:
            v = columns.get(c)
            if c == "created_at":
                now = _now()
                v = now if v is None else v if _scalar(v) else [now if x is None else x for x in _tolist(v)]
            if c in _TIME_COLUMNS:
                v = [_db_time(v, sqlite)] * n if _scalar(v) else _db_times(v, sqlite)
            elif _scalar(v):
                v = [v] * n
            else:
                v = _tolist(v)
                if c in ("rank",):
                    v = [int(x) for x in v]
                elif c in ("expected_response", "propensity"):
                    v = [None if x is None else float(x) for x in v]
                elif c == "degraded":
                    v = [bool(x) for x in v]
            out.append(v)
        missing = [c for c, v in zip(_SUGGESTION_COLUMNS, out) if c in _REQUIRED and any(x is None for x in v)]
        if missing:
            raise ValueError(f"audit trail: suggestions lack required field(s) {missing}")
        tuples = list(zip(*out))
        names = ", ".join(_SUGGESTION_COLUMNS)
        with self.engine.begin() as conn:
            if sqlite:
                conn.exec_driver_sql(f"INSERT INTO suggestions ({names}) VALUES ({', '.join('?' * len(_SUGGESTION_COLUMNS))})", tuples)
            elif self.engine.dialect.name == "postgresql" and hasattr(conn.connection.driver_connection, "pipeline"):
                statement = f"COPY suggestions ({names}) FROM STDIN"
                dbapi_error = conn.dialect.loaded_dbapi.Error
                try:
                    with conn.connection.driver_connection.cursor() as cur, cur.copy(statement) as copy:
                        for t in tuples:
                            copy.write_row(t)
                except dbapi_error as exc:  # the same exception types as the SQLAlchemy paths raise
                    raise sa.exc.DBAPIError.instance(statement, None, exc, dbapi_error, dialect=conn.dialect) from exc
            else:
                conn.execute(suggestions.insert(), [dict(zip(_SUGGESTION_COLUMNS, t)) for t in tuples])
        return n

    def record_feedback(self, item: Mapping[str, Any]) -> FeedbackResult:
        """Store feedback once per feedback id; a replay is a no-op, a changed replay an error."""
        return self.record_feedback_many([item])[0]

    def record_feedback_many(self, items: list[Mapping[str, Any]]) -> list[FeedbackResult]:
        """Store a batch of feedback in one transaction, all or nothing: one result per item (created, or a replay of a stored one).

        Raises ``UnknownSuggestion`` or ``FeedbackConflict`` (with ``index``, the item at fault)
        and stores nothing when any item names a suggestion never served or reuses a feedback id
        with other content. Two writers storing the same new id at once: the loser retries and
        finds it stored.
        """
        rows = [
            {
                "feedback_id": item["feedback_id"],
                "suggestion_id": item["suggestion_id"],
                # UTC: SQLite keeps a datetime's wall time and drops its offset (a +08:00 ts stored 8 h late).
                "ts": _as_utc(item["ts"]),
                "outcome": item["outcome"],
                "reason": item.get("reason"),
                "rep_id": item.get("rep_id"),
                "caller": item.get("caller"),
            }
            for item in items
        ]
        for attempt in range(3):
            try:
                return self._record_feedback_rows(rows)
            except sa.exc.IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _record_feedback_rows(self, rows: list[dict[str, Any]]) -> list[FeedbackResult]:
        chunk = 500  # ids per IN (...): well under SQLite's bound-parameter limit
        with self.engine.begin() as conn:
            sids = sorted({r["suggestion_id"] for r in rows})
            served: dict[str, Any] = {}
            for a in range(0, len(sids), chunk):
                q = sa.select(suggestions.c.suggestion_id, suggestions.c.hcp_id, suggestions.c.rep_id).where(
                    suggestions.c.suggestion_id.in_(sids[a : a + chunk])
                )
                served.update({r.suggestion_id: r for r in conn.execute(q)})
            fids = sorted({r["feedback_id"] for r in rows})
            stored: dict[str, Any] = {}
            for a in range(0, len(fids), chunk):
                q = sa.select(feedback).where(feedback.c.feedback_id.in_(fids[a : a + chunk]))
                stored.update({r["feedback_id"]: dict(r) for r in conn.execute(q).mappings()})
            now = _now()
            results, new = [], []
            for i, row in enumerate(rows):
                if row["suggestion_id"] not in served:
                    exc = UnknownSuggestion(row["suggestion_id"])
                    exc.index = i
                    raise exc
                existing = stored.get(row["feedback_id"])
                if existing is not None:
                    differing = [k for k in ("suggestion_id", "outcome", "reason") if existing[k] != row[k]]
                    if _as_utc(existing["ts"]) != _as_utc(row["ts"]):
                        differing.append("ts")
                    if differing:
                        exc = FeedbackConflict(f"feedback {row['feedback_id']!r} already stored with different {', '.join(differing)}")
                        exc.index = i
                        raise exc
                    results.append(FeedbackResult(row["feedback_id"], created=False))
                    continue
                s = served[row["suggestion_id"]]
                full = {**row, "hcp_id": s.hcp_id, "rep_id": row["rep_id"] or s.rep_id, "received_at": now}
                stored[row["feedback_id"]] = full  # the same id again in this batch is a replay of this one
                new.append(full)
                results.append(FeedbackResult(row["feedback_id"], created=True))
            if new:
                conn.execute(feedback.insert(), new)
        return results

    def feedback_of(self, hcp_id: str):
        """Every feedback row on ``hcp_id``'s suggestions with the served channel, content and propensity (oldest first)."""
        return self.feedback_of_many([hcp_id])

    def feedback_of_many(self, hcp_ids: list[str], conn: Any = None):
        """Every feedback row on these HCPs' suggestions with the served channel, content and propensity (by HCP, oldest first), from the hcp index."""
        import pandas as pd

        ids = sorted(set(hcp_ids))
        cols = [*feedback.columns, suggestions.c.channel, suggestions.c.content_id, suggestions.c.propensity]
        frames = []
        with contextlib.ExitStack() as stack:
            c = conn if conn is not None else stack.enter_context(self.engine.connect())
            for a in range(0, max(len(ids), 1), 500):
                stmt = (
                    sa.select(*cols)
                    .join(suggestions, suggestions.c.suggestion_id == feedback.c.suggestion_id)
                    .where(feedback.c.hcp_id.in_(ids[a : a + 500]))
                    .order_by(feedback.c.hcp_id, feedback.c.ts, feedback.c.feedback_id)
                )
                res = c.execute(stmt)
                frames.append(pd.DataFrame(res.all(), columns=list(res.keys())))
        out = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        for col in ("ts", "received_at"):
            out[col] = pd.to_datetime(out[col], utc=True)
        return out

    def suggestion(self, suggestion_id: str) -> dict[str, Any] | None:
        """One served suggestion with its decoded features (shared documents resolved), rules and reasons."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(suggestions).where(suggestions.c.suggestion_id == suggestion_id)).mappings().first()
            if row is None:
                return None
            out = dict(row)
            target = _shared_target(out["features_json"])
            if target is not None:
                out["features_json"] = conn.execute(sa.select(suggestions.c.features_json).where(suggestions.c.suggestion_id == target)).scalar_one()
        for key in ("features", "rules", "reasons"):
            out[key] = json.loads(out.pop(f"{key}_json"))
        return out

    def read(self, table: str, since: datetime | None = None):
        """A whole audit table (optionally from ``since``) as a DataFrame; suggestions get ``delivered`` and shared feature documents resolved."""
        import pandas as pd

        t = {"suggestions": suggestions, "feedback": feedback}[table]
        stmt = _with_delivered(sa.select(t)) if table == "suggestions" else sa.select(t)
        if since is not None:
            stmt = stmt.where((t.c.created_at if table == "suggestions" else t.c.received_at) >= _as_utc(since))
        with self.engine.connect() as conn:
            df = pd.read_sql(stmt, conn)
            if table == "suggestions":
                df = _resolve_shared(conn, df)
        return df

    def read_window(self, start: datetime | None = None, end: datetime | None = None, *, delivered_only: bool = False):
        """Suggestions with ``as_of`` in [start, end) (an open side is unbounded), selected in SQL on the as_of index; resolved as ``read``."""
        import pandas as pd

        stmt = _in_window(_with_delivered(sa.select(suggestions)), start, end)
        if delivered_only:
            stmt = stmt.where(undelivered.c.request_id.is_(None))
        with self.engine.connect() as conn:
            df = pd.read_sql(stmt.order_by(suggestions.c.as_of, suggestions.c.request_id, suggestions.c.rank), conn)
            return _resolve_shared(conn, df)

    def feedback_in_window(self, start: datetime | None = None, end: datetime | None = None):
        """Feedback rows on the suggestions with ``as_of`` in [start, end), selected in SQL."""
        import pandas as pd

        stmt = _in_window(sa.select(feedback).join(suggestions, suggestions.c.suggestion_id == feedback.c.suggestion_id), start, end)
        with self.engine.connect() as conn:
            return pd.read_sql(stmt.order_by(feedback.c.ts, feedback.c.feedback_id), conn)

    def first_seen(self, start: datetime | None = None, end: datetime | None = None):
        """Per HCP served in [start, end): the ``as_of`` of its first suggestion in the whole trail (UTC Series by hcp_id)."""
        import pandas as pd

        in_window = _in_window(sa.select(suggestions.c.hcp_id), start, end).distinct().scalar_subquery()
        stmt = (
            sa.select(suggestions.c.hcp_id, sa.func.min(suggestions.c.as_of).label("first_seen"))
            .where(suggestions.c.hcp_id.in_(in_window))
            .group_by(suggestions.c.hcp_id)
        )
        with self.engine.connect() as conn:
            df = pd.read_sql(stmt, conn)
        out = pd.to_datetime(df["first_seen"], utc=True)
        out.index = df["hcp_id"].astype(str).to_numpy()
        return out.rename("first_seen")

    def span(self) -> tuple[int, datetime | None, datetime | None]:
        """(suggestions, first as_of, last as_of) of the whole trail, from the as_of index."""
        with self.engine.connect() as conn:
            n, lo, hi = conn.execute(sa.select(sa.func.count(), sa.func.min(suggestions.c.as_of), sa.func.max(suggestions.c.as_of))).one()
        return int(n), None if lo is None else _as_utc(lo), None if hi is None else _as_utc(hi)

    def mark_undelivered(self, request_id: str, reason: str | None = None) -> bool:
        """Record that ``request_id``'s response never reached its caller (appended once); True when newly marked."""
        with self.engine.begin() as conn:
            row = {"request_id": request_id, "marked_at": _now(), "reason": None if reason is None else str(reason)[:64]}
            return _insert_ignore(conn, undelivered, [row]) > 0

    def undelivered_requests(self) -> set[str]:
        """Request ids marked undelivered."""
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(undelivered.c.request_id)).scalars())

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def _as_utc(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes for what we stored as UTC.
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _with_delivered(stmt: Any) -> Any:
    """``stmt`` over suggestions plus ``delivered``: False where the request was marked undelivered."""
    return stmt.add_columns(undelivered.c.request_id.is_(None).label("delivered")).outerjoin(undelivered, undelivered.c.request_id == suggestions.c.request_id)


def _in_window(stmt: Any, start: datetime | None, end: datetime | None) -> Any:
    # Bounds in UTC: SQLite compares the stored UTC text, which ignores a bound's offset.
    if start is not None:
        stmt = stmt.where(suggestions.c.as_of >= _as_utc(_py_time(start)))
    if end is not None:
        stmt = stmt.where(suggestions.c.as_of < _as_utc(_py_time(end)))
    return stmt


def _py_time(t: Any) -> datetime:
    return t.to_pydatetime() if hasattr(t, "to_pydatetime") else t


def _resolve_shared(conn: Any, df: Any) -> Any:
    """Suggestions frame with each ``same_as`` pointer replaced by the document it points at."""
    if "delivered" in df.columns:
        df["delivered"] = df["delivered"].astype(bool)
    if not len(df):
        return df
    shared = df["features_json"].str.startswith(SHARED_PREFIX).to_numpy(dtype=bool)
    if shared.any():
        targets = [_shared_target(doc) for doc in df.loc[shared, "features_json"]]
        docs = dict(zip(df["suggestion_id"], df["features_json"]))
        absent = sorted({tid for tid in targets if tid not in docs})
        if absent:  # the first row fell outside the selection (same request, another window side)
            found = conn.execute(sa.select(suggestions.c.suggestion_id, suggestions.c.features_json).where(suggestions.c.suggestion_id.in_(absent)))
            docs.update(dict(found.all()))
        df.loc[shared, "features_json"] = [docs[tid] for tid in targets]
    return df
