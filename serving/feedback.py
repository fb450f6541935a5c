"""Feedback -> online features: every outcome recorded since the last feature build, for the HCPs it names.

The audit trail is the event log: a feedback item is stored there first (one transaction per
batch, idempotent by feedback id), then the online rows of each affected HCP are recomputed from
that HCP's stored contract history (read through the per-HCP index, ``contract.by_hcp``, not a
scan) plus every outcome the trail holds for it, and pushed; a batch makes one push for all its
HCPs. The contract dataset only holds what the last import brought in, so pushing the new event
alone would drop every earlier feedback on the same HCP that has not been imported yet: each
push therefore replays the HCP's recorded outcomes, and ``push_events`` ignores those the
contract history already holds.

No double counting: a channel outcome becomes the touch whose ``event_id`` is the feedback id
(the first one on its suggestion: ``delivered`` then ``opened`` on one suggestion are one touch,
opened); a touch of the CRM export with that event id, or carrying the same ``suggestion_id``,
is the same touch and replaces it; a rep decision counts once per (suggestion, decision). The
push of an HCP holds its lock (``serving.hcp_locks``) from reading the trail to logging the push,
so workers and replicas never overwrite each other's newer rows.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import numpy as np
import pandas as pd

# Rep decisions become contract ``feedback`` rows; channel outcomes become ``touchpoints``.
DECISIONS = ("accepted", "dismissed", "done", "snoozed")
# Channel outcomes: delivered (not opened, so far), opened, attended (meetings).
CHANNEL_OUTCOMES = ("delivered", "opened", "attended")
MEETINGS = ("department_meeting", "webinar", "conference")


def outcome_events(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Audit feedback rows joined with their suggestions -> (contract feedback rows, contract touchpoint rows).

    Channel outcomes on one suggestion are one touch (delivered, opened when any outcome says
    opened or attended), with the first outcome's feedback id and time.
    """
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
    # One pass in Python: a push reads one HCP's few outcomes, where pandas' groupby costs milliseconds of overhead.
    idx = np.flatnonzero(~dec)
    ts_ns = ts.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    fids, sids, outs = rows["feedback_id"].to_numpy(), rows["suggestion_id"].to_numpy(), rows["outcome"].to_numpy()
    first: dict[Any, list] = {}  # suggestion -> [row of its first outcome, opened, attended]
    for i in sorted(idx.tolist(), key=lambda i: (ts_ns[i], fids[i])):
        hit = first.get(sids[i])
        if hit is None:
            hit = first[sids[i]] = [i, False, False]
        hit[1] |= outs[i] in ("opened", "attended")
        hit[2] |= outs[i] == "attended"
    pick = np.array([v[0] for v in first.values()], dtype=np.int64)
    channel = rows["channel"].to_numpy()[pick]
    touches = pd.DataFrame(
        {
            "event_id": fids[pick],
            "hcp_id": rows["hcp_id"].to_numpy()[pick],
            "rep_id": rows["rep_id"].to_numpy()[pick],
            "ts": ts.iloc[pick].to_numpy(),
            "channel": channel,
            "content_id": rows["content_id"].to_numpy()[pick],
            "direction": "outbound",
            "delivered": True,
            "opened": np.array([v[1] for v in first.values()], dtype=bool),
            "read_seconds": 0.0,
            "forwarded": False,
            "favourited": False,
            "replied": False,
            "attended": pd.array([v[2] if c in MEETINGS else None for v, c in zip(first.values(), channel)], dtype="boolean"),
            "propensity": rows["propensity"].to_numpy()[pick],
            "suggestion_id": sids[pick],
        }
    )
    touches["ts"] = pd.to_datetime(touches["ts"], utc=True)
    return decisions.reset_index(drop=True), touches.reset_index(drop=True)


# The columns ``outcome_tables`` reads, in this order (the audit feedback row joined with its suggestion).
OUTCOME_COLUMNS = ("feedback_id", "suggestion_id", "hcp_id", "rep_id", "ts", "received_at", "outcome", "reason", "channel", "content_id", "propensity")


def outcome_records(audit: Any, hcp_ids: list[str], conn: Any = None) -> list[tuple]:
    """The trail's outcome rows of ``hcp_ids`` as tuples in ``OUTCOME_COLUMNS`` order (by HCP, oldest first), on ``conn`` if given.

    What ``AuditTrail.feedback_of_many`` selects, without its DataFrame: a push of one HCP reads
    a handful of rows, where building and converting frames cost more than the query.
    """
    import contextlib

    import sqlalchemy as sa

    from serving.audit import feedback, suggestions

    ids = sorted(set(hcp_ids))
    cols = [*(feedback.c[c] for c in OUTCOME_COLUMNS[:8]), suggestions.c.channel, suggestions.c.content_id, suggestions.c.propensity]
    out: list[tuple] = []
    with contextlib.ExitStack() as stack:
        c = conn if conn is not None else stack.enter_context(audit.engine.connect())
        for a in range(0, len(ids), 500):
            stmt = (
                sa.select(*cols)
                .join(suggestions, suggestions.c.suggestion_id == feedback.c.suggestion_id)
                .where(feedback.c.hcp_id.in_(ids[a : a + 500]))
                .order_by(feedback.c.hcp_id, feedback.c.ts, feedback.c.feedback_id)
            )
            out.extend(tuple(r) for r in c.execute(stmt))
    return out


def _utc_dt(t: Any) -> Any:
    """A stored time as an aware UTC datetime (SQLite hands back naive UTC, PostgreSQL aware)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def outcome_tables(records: list[tuple]) -> tuple[Any, Any]:
    """``outcome_records`` rows -> (contract feedback rows, contract touchpoint rows) as Arrow tables: ``outcome_events`` without pandas.

    The same rules: a decision is a feedback row; the channel outcomes on one suggestion are
    one touch (delivered; opened when any says opened or attended; attended for meetings when
    any says attended) with the first outcome's feedback id and time (by time, then id).
    """
    import pyarrow as pa

    from contract.io import arrow_schema
    from contract.schema import TABLES

    fid, sid, hcp, rep, ts, _recv, outcome, reason, channel, content, prop = range(len(OUTCOME_COLUMNS))
    dec = [r for r in records if r[outcome] in DECISIONS]
    decisions = pa.table(
        {
            "feedback_id": [r[fid] for r in dec],
            "suggestion_id": [r[sid] for r in dec],
            "hcp_id": [r[hcp] for r in dec],
            "rep_id": [r[rep] for r in dec],
            "ts": pa.array([_utc_dt(r[ts]) for r in dec], pa.timestamp("us", tz="UTC")),
            "decision": [r[outcome] for r in dec],
            "reason": pa.array([r[reason] for r in dec], pa.string()),
        },
        schema=arrow_schema(TABLES["feedback"]),
    )
    first: dict[Any, list] = {}  # suggestion -> [row of its first outcome, opened, attended]
    for r in sorted((r for r in records if r[outcome] not in DECISIONS), key=lambda r: (_utc_dt(r[ts]), r[fid])):
        hit = first.get(r[sid])
        if hit is None:
            hit = first[r[sid]] = [r, False, False]
        hit[1] |= r[outcome] in ("opened", "attended")
        hit[2] |= r[outcome] == "attended"
    picks = list(first.values())
    n = len(picks)
    touches = pa.table(
        {
            "event_id": [v[0][fid] for v in picks],
            "hcp_id": [v[0][hcp] for v in picks],
            "rep_id": pa.array([v[0][rep] for v in picks], pa.string()),
            "ts": pa.array([_utc_dt(v[0][ts]) for v in picks], pa.timestamp("us", tz="UTC")),
            "channel": [v[0][channel] for v in picks],
            "content_id": pa.array([v[0][content] for v in picks], pa.string()),
            "direction": ["outbound"] * n,
            "delivered": [True] * n,
            "opened": [v[1] for v in picks],
            "read_seconds": pa.array([0.0] * n, pa.float64()),
            "forwarded": [False] * n,
            "favourited": [False] * n,
            "replied": [False] * n,
            "attended": pa.array([v[2] if v[0][channel] in MEETINGS else None for v in picks], pa.bool_()),
            "propensity": pa.array([v[0][prop] for v in picks], pa.float64()),
            "suggestion_id": pa.array([v[0][sid] for v in picks], pa.string()),
        },
        schema=arrow_schema(TABLES["touchpoints"]),
    )
    return decisions, touches


def push_feedback(features_cfg: Any, store: Any, audit: Any, hcp_id: str) -> dict[str, Any]:
    """Recompute and push ``hcp_id``'s online features with every outcome the audit trail holds for it; the attempt is logged."""
    return push_feedback_many(features_cfg, store, audit, [hcp_id])


def push_feedback_many(features_cfg: Any, store: Any, audit: Any, hcp_ids: list[str]) -> dict[str, Any]:
    """One push for all of ``hcp_ids``, each with every outcome the trail holds for it, under their HCP locks; the attempt is logged per HCP."""
    from features import push_events
    from serving.hcp_locks import hcp_locks

    hcps = sorted(set(hcp_ids))
    log = push_log(audit)
    with hcp_locks(audit.engine, hcps) as conn:
        records = outcome_records(audit, hcps, conn=conn)
        through: dict[str, Any] = {}
        for r in records:  # HCP -> the newest received_at this push reads
            h, t = r[2], _utc_dt(r[5])
            if h not in through or t > through[h]:
                through[h] = t
        try:
            decisions, touches = outcome_tables(records)
            # Both kinds in one push: the rows are recomputed as of just after the newest outcome of either.
            out = push_events(features_cfg, [decisions, touches], store=store)
        except Exception as exc:
            log.record_many(hcps, through, error=f"{type(exc).__name__}: {exc}")
            raise
        # In the lock's transaction (PostgreSQL): the next writer of these HCPs sees this push logged.
        log.record_many(hcps, through, error=None, conn=conn)
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
        self.record_many([hcp_id], {hcp_id: through}, error=error)

    def record_many(self, hcp_ids: list[str], through: dict[str, Any], *, error: str | None, conn: Any = None) -> None:
        """Log one push attempt of several HCPs (``through``: HCP -> newest received_at it read; ``error`` None: it landed), in ``conn``'s transaction if given."""
        from contextlib import nullcontext
        from datetime import datetime

        def when(t: Any) -> Any:
            return None if t is None or pd.isna(t) else pd.Timestamp(t).to_pydatetime()

        now = datetime.now(UTC)
        rows = [
            {"hcp_id": h, "attempted_at": now, "through": when(through.get(h)), "pushed": error is None, "error": None if error is None else error[:500]}
            for h in hcp_ids
        ]
        if not rows:
            return
        if conn is None and self.engine.dialect.name == "sqlite":
            self._insert_unsynced(rows)
            return
        with nullcontext(conn) if conn is not None else self.engine.begin() as c:
            c.execute(self.table.insert(), rows)

    def _insert_unsynced(self, rows: list[dict[str, Any]]) -> None:
        """Insert on SQLite without the fsync at commit (``synchronous=NORMAL`` for this one commit, in WAL mode).

        The trail's own commits fsync (``serving.audit``: a served suggestion or a stored feedback
        must be on disk). A push-log row need not: a power cut that loses one only makes its
        feedback look unpushed, and the catch-up or a replay pushes it again, which is idempotent.
        In WAL the log is appended in order, so the next fsync'd commit makes this one durable too.
        The fsync was one of the two a feedback item waited for (2 ms, up to 13 ms on a busy disk).
        """
        with self.engine.connect() as c:
            raw = c.connection.dbapi_connection
            wal = str(raw.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
            before = raw.execute("PRAGMA synchronous").fetchone()[0]
            if wal:
                raw.execute("PRAGMA synchronous=NORMAL")  # outside a transaction: SQLite refuses it inside one
            try:
                with c.begin():
                    c.execute(self.table.insert(), rows)
            finally:
                if wal:
                    raw.execute(f"PRAGMA synchronous={int(before)}")

    def is_pushed(self, hcp_id: str, received_at: Any) -> bool:
        """Whether a successful push of ``hcp_id`` read feedback received at ``received_at``."""
        import sqlalchemy as sa

        t = self.table
        with self.engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(t.c.through)).where((t.c.hcp_id == hcp_id) & t.c.pushed)).scalar()
        return newest is not None and _utc(newest) >= _utc(received_at)

    def pushed_through(self, hcp_ids: list[str]) -> dict[str, pd.Timestamp]:
        """HCP -> the newest received_at a successful push of it read (HCPs never pushed absent)."""
        import sqlalchemy as sa

        t, ids, out = self.table, sorted(set(hcp_ids)), {}
        with self.engine.connect() as conn:
            for a in range(0, len(ids), 500):
                q = sa.select(t.c.hcp_id, sa.func.max(t.c.through)).where(t.c.hcp_id.in_(ids[a : a + 500]) & t.c.pushed).group_by(t.c.hcp_id)
                out.update({h: _utc(v) for h, v in conn.execute(q) if v is not None})
        return out

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
    failed = {h: e for h, e in push_grouped(features_cfg, store, audit, hcps).items() if e is not None}
    return {"hcps": len(hcps), "pushed": len(hcps) - len(failed), "failed": failed}


def push_grouped(features_cfg: Any, store: Any, audit: Any, hcp_ids: list[str], *, is_outage: Any = None) -> dict[str, str | None]:
    """Push ``hcp_ids`` in one go; when that fails for a reason other than an outage (``is_outage(exc)``), each HCP alone, so one bad HCP holds up no other. HCP -> error or None."""
    hcps = sorted(set(hcp_ids))
    if not hcps:
        return {}
    try:
        push_feedback_many(features_cfg, store, audit, hcps)
        return dict.fromkeys(hcps)
    except Exception as exc:  # logged in the push log; a replay or the catch-up tries again
        if (is_outage is not None and is_outage(exc)) or len(hcps) == 1:
            return dict.fromkeys(hcps, f"{type(exc).__name__}: {exc}")
    out: dict[str, str | None] = {}
    for h in hcps:
        try:
            push_feedback_many(features_cfg, store, audit, [h])
            out[h] = None
        except Exception as exc:
            out[h] = f"{type(exc).__name__}: {exc}"
    return out


def stored_feedback_many(audit: Any, feedback_ids: list[str]) -> dict[str, tuple[str, Any]]:
    """feedback id -> (hcp_id, received_at) of stored feedback rows."""
    import sqlalchemy as sa

    from serving.audit import feedback as feedback_table

    ids, out = sorted(set(feedback_ids)), {}
    f = feedback_table
    with audit.engine.connect() as conn:
        for a in range(0, len(ids), 500):
            q = sa.select(f.c.feedback_id, f.c.hcp_id, f.c.received_at).where(f.c.feedback_id.in_(ids[a : a + 500]))
            out.update({r[0]: (r[1], r[2]) for r in conn.execute(q)})
    return out


def stored_feedback(audit: Any, feedback_id: str) -> tuple[str, Any]:
    """(hcp_id, received_at) of a stored feedback row."""
    import sqlalchemy as sa

    from serving.audit import feedback as feedback_table

    with audit.engine.connect() as conn:
        row = conn.execute(sa.select(feedback_table.c.hcp_id, feedback_table.c.received_at).where(feedback_table.c.feedback_id == feedback_id)).one()
    return row[0], row[1]


def not_yet_imported(data_dir: Any, audit: Any, hcp_ids: list[str], chunk: int = 500) -> list[str]:
    """HCPs among ``hcp_ids`` with audit feedback the contract dataset at ``data_dir`` does not hold yet (by feedback id, or suggestion and decision).

    A channel outcome is in the contract when a touch carries its feedback id as ``event_id`` or
    its ``suggestion_id``; a decision when a feedback row carries its id or the same (suggestion,
    decision) pair: the rules by which ``push_events`` de-duplicates.
    """
    import sqlalchemy as sa

    from contract.by_hcp import rows_of
    from serving.audit import feedback as feedback_table

    f, ids, out = feedback_table, sorted(set(hcp_ids)), []
    for a in range(0, len(ids), chunk):
        part = ids[a : a + chunk]
        q = sa.select(f.c.hcp_id, f.c.feedback_id, f.c.suggestion_id, f.c.outcome).where(f.c.hcp_id.in_(part))
        with audit.engine.connect() as conn:
            rows = pd.DataFrame(conn.execute(q).all(), columns=["hcp_id", "feedback_id", "suggestion_id", "outcome"])
        if rows.empty:
            continue
        stored = rows_of(data_dir, sorted(set(rows["hcp_id"])), tables=("touchpoints", "feedback"))
        tp, fb = stored.get("touchpoints"), stored.get("feedback")
        touch_ids: set[str] = set()
        if tp is not None:
            touch_ids = set(tp.column("event_id").drop_null().to_pylist()) | set(tp.column("suggestion_id").drop_null().to_pylist())
        fb_ids: set[str] = set()
        if fb is not None:
            fb_ids = set(fb.column("feedback_id").drop_null().to_pylist())
            fb_ids |= {f"{s}\x1f{d}" for s, d in zip(fb.column("suggestion_id").to_pylist(), fb.column("decision").to_pylist()) if s is not None}
        dec = rows["outcome"].isin(DECISIONS).to_numpy()
        in_touches = rows["feedback_id"].isin(touch_ids) | rows["suggestion_id"].isin(touch_ids)
        in_feedback = rows["feedback_id"].isin(fb_ids) | (rows["suggestion_id"] + "\x1f" + rows["outcome"]).isin(fb_ids)
        missing = rows[(dec & ~in_feedback.to_numpy()) | (~dec & ~in_touches.to_numpy())]
        out.extend(sorted(set(missing["hcp_id"])))
    return out


def repush_not_imported(features_cfg: Any, store: Any, audit: Any, hcp_ids: list[str], chunk: int = 1000) -> dict[str, Any]:
    """After a sync rewrote ``hcp_ids``' online rows from the contract alone: push again those with audit feedback the contract lacks; a summary."""
    hcps = not_yet_imported(features_cfg.data_dir, audit, hcp_ids)
    failed: dict[str, str] = {}
    for a in range(0, len(hcps), chunk):
        failed.update({h: e for h, e in push_grouped(features_cfg, store, audit, hcps[a : a + chunk]).items() if e is not None})
    return {"hcps_checked": len(set(hcp_ids)), "hcps_repushed": len(hcps) - len(failed), "failed": dict(list(failed.items())[:20]), "failed_count": len(failed)}
