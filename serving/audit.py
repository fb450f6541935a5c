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
        """Append served suggestions in one transaction; returns how many were written."""
        now = _now()
        payload = []
        for r in rows:
            payload.append(
                {
                    "suggestion_id": r["suggestion_id"],
                    "request_id": r["request_id"],
                    "hcp_id": r["hcp_id"],
                    "rep_id": r.get("rep_id"),
                    "created_at": r.get("created_at", now),
                    "as_of": r["as_of"],
                    "rank": int(r["rank"]),
                    "channel": r["channel"],
                    "content_id": r.get("content_id"),
                    "window_start": r.get("window_start"),
                    "window_end": r.get("window_end"),
                    "expected_response": r.get("expected_response"),
                    "propensity": float(r["propensity"]),
                    "policy": r["policy"],
                    "model_version": r.get("model_version"),
                    "degraded": bool(r.get("degraded", False)),
                    # Callers scoring many rows may pass JSON they serialised column-wise.
                    "features_json": r["features_json"] if "features_json" in r else _json(r.get("features", {})),
                    "rules_json": r["rules_json"] if "rules_json" in r else _json(r.get("rules", [])),
                    "reasons_json": r["reasons_json"] if "reasons_json" in r else _json(r.get("reasons", [])),
                }
            )
        if not payload:
            return 0
        with self.engine.begin() as conn:
            conn.execute(suggestions.insert(), payload)
        return len(payload)

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

    def suggestion(self, suggestion_id: str) -> dict[str, Any] | None:
        """One served suggestion with its decoded features, rules and reasons."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(suggestions).where(suggestions.c.suggestion_id == suggestion_id)).mappings().first()
        if row is None:
            return None
        out = dict(row)
        for key in ("features", "rules", "reasons"):
            out[key] = json.loads(out.pop(f"{key}_json"))
        return out

    def read(self, table: str, since: datetime | None = None):
        """A whole audit table (optionally from ``since``) as a DataFrame, for monitoring and lift."""
        import pandas as pd

        t = {"suggestions": suggestions, "feedback": feedback}[table]
        stmt = sa.select(t)
        if since is not None:
            stmt = stmt.where((t.c.created_at if table == "suggestions" else t.c.received_at) >= since)
        with self.engine.connect() as conn:
            return pd.read_sql(stmt, conn)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()


def _as_utc(ts: datetime) -> datetime:
    # SQLite hands back naive datetimes for what we stored as UTC.
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
