"""The audit trail: every served suggestion and every piece of feedback, append-only.

Compliance asks for an evidence chain: what was suggested to whom (pseudonymous id), when, by
which model version, from which feature values, under which rules, with what probability it was
chosen, and what came of it. Rows are never updated or deleted: the database itself refuses
(triggers on SQLite and PostgreSQL), so a bug elsewhere cannot rewrite history.

SQLite by default (a file URL), PostgreSQL in production (``postgresql+psycopg://...``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
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
    sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
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
)

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("feedback_id", sa.String(64), primary_key=True),
    sa.Column("suggestion_id", sa.String(64), nullable=False, index=True),
    sa.Column("hcp_id", sa.String(64), nullable=False),
    sa.Column("rep_id", sa.String(64), nullable=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("reason", sa.String(32), nullable=True),
)

_TABLES = ("suggestions", "feedback")

_SQLITE_TRIGGERS = [
    f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
    f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: {op} on {t} refused'); END"
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
_PG_TRIGGERS = [
    f"CREATE OR REPLACE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} "
    f"FOR EACH ROW EXECUTE FUNCTION nba_audit_append_only()"
    for t in _TABLES
]


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
        t = datetime.fromtimestamp(t // 10**9, timezone.utc).replace(microsecond=(t % 10**9) // 1000)
    elif hasattr(t, "to_pydatetime"):
        t = t.to_pydatetime()
    t = t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t.astimezone(timezone.utc)
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
    return datetime.now(timezone.utc)


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


class AuditTrail:
    """Append-only store of suggestions and feedback behind one SQLAlchemy engine."""

    def __init__(self, url: str) -> None:
        if url.startswith("postgresql") and "sslmode" not in url:
            # The local server refuses SSL; production URLs can still say sslmode=require.
            url += ("&" if "?" in url else "?") + "sslmode=disable"
        self.url = url
        self.engine = sa.create_engine(url, future=True, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._create()

    def _create(self) -> None:
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            if self.engine.dialect.name == "sqlite":
                for stmt in _SQLITE_TRIGGERS:
                    conn.exec_driver_sql(stmt)
            elif self.engine.dialect.name == "postgresql":
                conn.exec_driver_sql(_PG_FUNCTION)
                for stmt in _PG_TRIGGERS:
                    conn.exec_driver_sql(stmt)

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
        row = {
            "feedback_id": item["feedback_id"],
            "suggestion_id": item["suggestion_id"],
            "ts": item["ts"],
            "outcome": item["outcome"],
            "reason": item.get("reason"),
        }
        with self.engine.begin() as conn:
            served = conn.execute(
                sa.select(suggestions.c.hcp_id, suggestions.c.rep_id).where(suggestions.c.suggestion_id == row["suggestion_id"])
            ).first()
            if served is None:
                raise UnknownSuggestion(row["suggestion_id"])
            existing = conn.execute(sa.select(feedback).where(feedback.c.feedback_id == row["feedback_id"])).mappings().first()
            if existing is not None:
                differing = [k for k in ("suggestion_id", "outcome", "reason") if existing[k] != row[k]]
                if _as_utc(existing["ts"]) != _as_utc(row["ts"]):
                    differing.append("ts")
                if differing:
                    raise FeedbackConflict(f"feedback {row['feedback_id']!r} already stored with different {', '.join(differing)}")
                return FeedbackResult(row["feedback_id"], created=False)
            conn.execute(
                feedback.insert().values(**row, hcp_id=served.hcp_id, rep_id=item.get("rep_id") or served.rep_id, received_at=_now())
            )
        return FeedbackResult(row["feedback_id"], created=True)

    def feedback_of(self, hcp_id: str):
        """Every feedback row on ``hcp_id``'s suggestions with the served channel, content and propensity (oldest first)."""
        import pandas as pd

        stmt = (
            sa.select(feedback, suggestions.c.channel, suggestions.c.content_id, suggestions.c.propensity)
            .join(suggestions, suggestions.c.suggestion_id == feedback.c.suggestion_id)
            .where(feedback.c.hcp_id == hcp_id)
            .order_by(feedback.c.ts, feedback.c.feedback_id)
        )
        with self.engine.connect() as conn:
            return pd.read_sql(stmt, conn)

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
        """A whole audit table (optionally from ``since``) as a DataFrame, for monitoring and lift; shared feature documents resolved."""
        import pandas as pd

        t = {"suggestions": suggestions, "feedback": feedback}[table]
        stmt = sa.select(t)
        if since is not None:
            stmt = stmt.where((t.c.created_at if table == "suggestions" else t.c.received_at) >= since)
        with self.engine.connect() as conn:
            df = pd.read_sql(stmt, conn)
            if table == "suggestions" and len(df):
                shared = df["features_json"].str.startswith(SHARED_PREFIX).to_numpy(dtype=bool)
                if shared.any():
                    targets = [_shared_target(doc) for doc in df.loc[shared, "features_json"]]
                    docs = dict(zip(df["suggestion_id"], df["features_json"]))
                    absent = sorted({tid for tid in targets if tid not in docs})
                    if absent:  # the first row fell outside ``since`` (same request, same second)
                        found = conn.execute(sa.select(suggestions.c.suggestion_id, suggestions.c.features_json).where(suggestions.c.suggestion_id.in_(absent)))
                        docs.update(dict(found.all()))
                    df.loc[shared, "features_json"] = [docs[tid] for tid in targets]
        return df

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def _as_utc(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes for what we stored as UTC.
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
