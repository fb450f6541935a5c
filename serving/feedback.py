"""Feedback -> online features: every outcome recorded since the last feature build, for one HCP.

``features.push_events`` recomputes an HCP's online rows from the stored contract history plus
the events it is given. The contract dataset only holds what the last import brought in, so
pushing the new event alone would drop every earlier feedback on the same HCP that has not
been imported yet (the second "done" would overwrite the first). The audit trail has all of
them: each push therefore replays the HCP's recorded outcomes (push_events ignores those the
contract history already holds, by id) so the online row reflects all of them.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import pandas as pd

# Rep decisions become contract ``feedback`` rows; channel outcomes become ``touchpoints``.
DECISIONS = ("accepted", "dismissed", "done", "snoozed")
MEETINGS = ("department_meeting", "webinar", "conference")


def outcome_events(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Audit feedback rows joined with their suggestions -> (contract feedback rows, contract touchpoint rows)."""
    ts = pd.to_datetime(rows["ts"], utc=True)
    dec = rows["outcome"].isin(DECISIONS).to_numpy()
    decisions = pd.DataFrame(
        {
            "feedback_id": rows["feedback_id"],
            "suggestion_id": rows["suggestion_id"],
            "hcp_id": rows["hcp_id"],
            "rep_id": rows["rep_id"],
            "ts": ts,
            "decision": rows["outcome"],
            "reason": rows["reason"],
        }
    )[dec]
    t = rows[~dec]
    attended = (t["outcome"] == "attended").to_numpy()
    touches = pd.DataFrame(
        {
            "event_id": t["feedback_id"],
            "hcp_id": t["hcp_id"],
            "rep_id": t["rep_id"],
            "ts": ts[~dec],
            "channel": t["channel"],
            "content_id": t["content_id"],
            "direction": "outbound",
            "delivered": True,
            "opened": True,
            "read_seconds": 0.0,
            "forwarded": False,
            "favourited": False,
            "replied": False,
            "attended": pd.array([bool(a) if c in MEETINGS else None for a, c in zip(attended, t["channel"])], dtype="boolean"),
            "propensity": t["propensity"],
            "suggestion_id": t["suggestion_id"],
        }
    )
    return decisions.reset_index(drop=True), touches.reset_index(drop=True)


def push_feedback(features_cfg: Any, store: Any, audit: Any, hcp_id: str) -> dict[str, Any]:
    """Recompute and push ``hcp_id``'s online features with every outcome the audit trail holds for it; the attempt is logged."""
    from features import push_events

    rows = audit.feedback_of(hcp_id)
    through = pd.to_datetime(rows["received_at"], utc=True).max() if len(rows) else None
    log = push_log(audit)
    try:
        decisions, touches = outcome_events(rows)
        # Both kinds in one push: the rows are recomputed as of just after the newest outcome of either.
        out = push_events(features_cfg, [decisions, touches], store=store)
    except Exception as exc:
        log.record(hcp_id, through, error=f"{type(exc).__name__}: {exc}")
        raise
    log.record(hcp_id, through, error=None)
    return out


class PushLog:
    """Append-only log of feedback pushes in the audit database: which HCP, through which received feedback, and whether it landed.

    A feedback is online once a successful push of its HCP read it (``through`` at or after its
    ``received_at``); a replay of one that is not gets pushed again, so a push lost to an outage
    or a crash between the audit commit and the push is never left behind.
    """

    def __init__(self, engine: Any) -> None:
        from serving.audit import feedback_pushes

        self.engine = engine
        # Defined with the audit schema (serving.audit), which creates it with its guards and grants;
        # created here only for a trail opened before it existed.
        self.table = feedback_pushes
        self.table.create(engine, checkfirst=True)
        if engine.dialect.name == "sqlite":
            with engine.begin() as conn:
                for op in ("UPDATE", "DELETE"):
                    conn.exec_driver_sql(
                        f"CREATE TRIGGER IF NOT EXISTS feedback_pushes_no_{op.lower()} BEFORE {op} ON feedback_pushes "
                        f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only: {op} on feedback_pushes refused'); END"
                    )

    def record(self, hcp_id: str, through: Any, *, error: str | None) -> None:
        """Log one push attempt (``error`` None: it landed)."""
        from datetime import datetime

        through = None if through is None or pd.isna(through) else pd.Timestamp(through).to_pydatetime()
        with self.engine.begin() as conn:
            conn.execute(
                self.table.insert().values(
                    hcp_id=hcp_id, attempted_at=datetime.now(UTC), through=through, pushed=error is None, error=None if error is None else error[:500]
                )
            )

    def is_pushed(self, hcp_id: str, received_at: Any) -> bool:
        """Whether a successful push of ``hcp_id`` read feedback received at ``received_at``."""
        import sqlalchemy as sa

        t = self.table
        with self.engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(t.c.through)).where((t.c.hcp_id == hcp_id) & t.c.pushed)).scalar()
        return newest is not None and _utc(newest) >= _utc(received_at)

    def unpushed_hcps(self, feedback_table: Any, limit: int = 100) -> list[str]:
        """HCPs with feedback no successful push has read yet (what a background retry pushes again)."""
        import sqlalchemy as sa

        t, f = self.table, feedback_table
        done = sa.select(t.c.hcp_id, sa.func.max(t.c.through).label("through")).where(t.c.pushed).group_by(t.c.hcp_id).subquery()
        stmt = (
            sa.select(f.c.hcp_id)
            .outerjoin(done, done.c.hcp_id == f.c.hcp_id)
            .where(done.c.through.is_(None) | (f.c.received_at > done.c.through))
            .distinct()
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [r[0] for r in conn.execute(stmt)]


def _utc(ts: Any) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def push_log(audit: Any) -> PushLog:
    """The audit trail's push log (created on first use, kept on the audit object)."""
    log = audit.__dict__.get("_nba_push_log")
    if log is None:
        log = audit.__dict__["_nba_push_log"] = PushLog(audit.engine)
    return log


def retry_unpushed(features_cfg: Any, store: Any, audit: Any, limit: int = 100) -> dict[str, Any]:
    """Push again every HCP whose feedback no successful push has read (at most ``limit``): the background catch-up."""
    from serving.audit import feedback as feedback_table

    hcps = push_log(audit).unpushed_hcps(feedback_table, limit)
    failed = {}
    for h in hcps:
        try:
            push_feedback(features_cfg, store, audit, h)
        except Exception as exc:  # logged in the push log; the next round tries again
            failed[h] = f"{type(exc).__name__}: {exc}"
    return {"hcps": len(hcps), "pushed": len(hcps) - len(failed), "failed": failed}


def stored_feedback(audit: Any, feedback_id: str) -> tuple[str, Any]:
    """(hcp_id, received_at) of a stored feedback row."""
    import sqlalchemy as sa

    from serving.audit import feedback as feedback_table

    with audit.engine.connect() as conn:
        row = conn.execute(sa.select(feedback_table.c.hcp_id, feedback_table.c.received_at).where(feedback_table.c.feedback_id == feedback_id)).one()
    return row[0], row[1]
