"""CRM feedback exports (Vault CRM, Salesforce LSC) posted through the ``/feedback`` path: audit trail first, then online features.

``contract.crm_feedback`` maps the file; here the whole file is checked against the audit
trail before anything is written (every suggestion id was served by us, no feedback id already
stored with other content), so a bad row leaves nothing half imported. The items are then stored
with ``AuditTrail.record_feedback_many``, the call behind ``/feedback/batch`` (one transaction,
idempotent by feedback id: a re-imported file stores nothing twice), and each HCP's online features are pushed once, with all
of its outcomes, as ``/feedback`` does per item. Should the process stop midway, running the
same import again completes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contract.crm_feedback import CrmFeedbackError, ParsedFeedback

_CHUNK = 500  # ids per IN (...) query: well under SQLite's bound-parameter limit


def _utc(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def check_against_trail(audit: Any, parsed: ParsedFeedback) -> tuple[dict[str, str], set[str]]:
    """(suggestion id -> HCP id, feedback ids already stored the same); raise naming the line of the first item the trail refuses."""
    import sqlalchemy as sa

    from serving.audit import feedback, suggestions
    from serving.schemas import FeedbackItem

    for item, line in zip(parsed.items, parsed.lines):
        try:
            FeedbackItem.model_validate(item)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise CrmFeedbackError(f"{parsed.path} line {line}: {' '.join(str(exc).split())}") from None
    sids = sorted({i["suggestion_id"] for i in parsed.items})
    fids = [i["feedback_id"] for i in parsed.items]
    served: dict[str, str] = {}
    stored: dict[str, Any] = {}
    with audit.engine.connect() as conn:
        for a in range(0, len(sids), _CHUNK):
            q = sa.select(suggestions.c.suggestion_id, suggestions.c.hcp_id).where(suggestions.c.suggestion_id.in_(sids[a : a + _CHUNK]))
            served.update({r.suggestion_id: r.hcp_id for r in conn.execute(q)})
        for a in range(0, len(fids), _CHUNK):
            q = sa.select(feedback.c.feedback_id, feedback.c.suggestion_id, feedback.c.outcome, feedback.c.reason, feedback.c.ts).where(
                feedback.c.feedback_id.in_(fids[a : a + _CHUNK])
            )
            stored.update({r.feedback_id: r for r in conn.execute(q)})
    same: set[str] = set()
    for item, line in zip(parsed.items, parsed.lines):
        if item["suggestion_id"] not in served:
            raise CrmFeedbackError(
                f"{parsed.path} line {line}: suggestion {item['suggestion_id']!r} was never served by this deployment (audit trail {audit.url.split('@')[-1]})"
            )
        old = stored.get(item["feedback_id"])
        if old is not None:
            differing = [k for k in ("suggestion_id", "outcome", "reason") if getattr(old, k) != item[k]]
            if _utc(old.ts) != _utc(item["ts"]):
                differing.append("ts")
            if differing:
                raise CrmFeedbackError(
                    f"{parsed.path} line {line}: feedback {item['feedback_id']!r} is already stored with a different "
                    f"{', '.join(differing)}; a CRM record's feedback cannot change once imported"
                )
            same.add(item["feedback_id"])
    return served, same


def import_feedback(audit: Any, parsed: ParsedFeedback, *, push: Any = None, dry_run: bool = False) -> dict[str, Any]:
    """Store ``parsed`` in the audit trail (all or nothing on bad input), then ``push(hcp_id)`` once per HCP with new outcomes."""
    served, same = check_against_trail(audit, parsed)
    counts: dict[str, int] = {}
    for item in parsed.items:
        counts[item["outcome"]] = counts.get(item["outcome"], 0) + 1
    summary: dict[str, Any] = {
        "file": parsed.path,
        "source": parsed.source,
        "rows": len(parsed.items),
        "outcomes": dict(sorted(counts.items())),
        "open_not_imported": parsed.skipped_open,
        "already_stored": len(same),
        "dry_run": dry_run,
    }
    if dry_run:
        return {**summary, "created": 0, "pushed_hcps": 0, "push_errors": []}
    created, hcps = 0, []
    caller = f"crm-import:{parsed.source}"
    new = [{**item, "caller": caller} for item in parsed.items if item["feedback_id"] not in same]
    # One transaction for the file (checked whole above): a crash leaves all of it or none, and a rerun completes it.
    for item, res in zip(new, audit.record_feedback_many(new) if new else []):
        if res.created:
            created += 1
            hcps.append(served[item["suggestion_id"]])
    pushed, errors = 0, []
    if push is not None:
        for hcp in dict.fromkeys(hcps):
            try:
                push(hcp)
                pushed += 1
            except Exception as exc:  # stored already: the nightly feature build catches up, as for /feedback
                errors.append(f"{hcp}: {type(exc).__name__}: {exc}")
    return {**summary, "created": created, "pushed_hcps": pushed, "push_errors": errors[:20]}
