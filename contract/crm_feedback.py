"""Feedback exports of the CRMs -> our feedback items (the ``/feedback`` body): Vault CRM and Salesforce Life Sciences Cloud.

Vault CRM records what a rep did with a suggestion as ``suggestion_feedback__v`` rows whose
object type says what happened (dismiss, activity execution, mark as complete). Salesforce Life
Sciences Cloud keeps a status and a skip reason on the ``TerritoryAcctRcmdAction`` row. Both are
mapped onto our outcomes (``contract.schema.FEEDBACK_DECISIONS``) and coded reasons
(``FEEDBACK_REASONS``). Dismiss/skip reasons are picklists each customer configures, so the
mapping of their values is a table (``DEFAULT_REASONS``) a customer extends with a YAML file.

Pure parsing: every row is checked and mapped before anything is returned; the first value
that cannot be mapped raises ``CrmFeedbackError`` naming the file, line, field and value.
Posting the items (idempotent by feedback id) is the serving stage's job
(``serving.feedback_import``).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contract.schema import FEEDBACK_REASONS

SOURCES = ("veeva", "salesforce")
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")

# --- Vault CRM suggestion_feedback__v ----------------------------------------------------------
# Object types of the feedback (Veeva CRM record types Dismiss_vod, Activity_Execution_vod,
# Mark_As_Complete_vod under the Vault rename rule). Executing the suggestion (scheduling the call,
# creating the call objective) is an acceptance; "mark as complete" says it was done.
VEEVA_OUTCOMES: dict[str, str] = {"dismiss__v": "dismissed", "activity_execution__v": "accepted", "mark_as_complete__v": "done"}
VEEVA_COLUMNS = {
    "feedback_id": "id",
    "suggestion_id": "suggestion__vr.suggestion_external_id__v",
    "kind": "object_type__vr.api_name__v",
    "ts": "created_date__v",
    "reason": "dismiss_reason__c",  # the customer's own dismiss-reason field (feedback dialog)
}

# --- Salesforce Life Sciences Cloud TerritoryAcctRcmdAction ------------------------------------
# Completed: the rep did it; Skipped: dismissed with a skip reason. Open states are no feedback yet.
SF_OUTCOMES: dict[str, str] = {"completed": "done", "skipped": "dismissed"}
SF_OPEN_STATUSES = ("new", "upcoming", "current", "actionable", "overdue", "in progress", "open")
SF_COLUMNS = {
    "feedback_id": "Id",
    "suggestion_id": "NBA_Suggestion_Id__c",
    "kind": "Status",
    "ts": "LastModifiedDate",
    "reason": "SkipReason",
}

# Dismiss / skip reason labels as customers configure them -> our reason codes (matched without
# case, surrounding space, a leading "1." numbering or a trailing full stop). Our codes map to themselves.
DEFAULT_REASONS: dict[str, str] = {
    **{code: code for code in FEEDBACK_REASONS},
    **{code.replace("_", " "): code for code in FEEDBACK_REASONS},
    "not relevant for this customer": "not_relevant",
    "not applicable": "not_relevant",
    "disagree": "not_relevant",
    "already planned interaction with customer": "already_contacted",
    "already planned": "already_contacted",
    "already done": "already_contacted",
    "already contacted": "already_contacted",
    "recently contacted": "already_contacted",
    "hcp not reachable": "hcp_unavailable",
    "hcp not available": "hcp_unavailable",
    "customer not available": "hcp_unavailable",
    "customer unavailable": "hcp_unavailable",
    "hcp on leave": "hcp_unavailable",
    "prefers another channel": "wrong_channel",
    "prefer another channel": "wrong_channel",
    "channel not appropriate": "wrong_channel",
    "content not appropriate": "wrong_content",
    "content not relevant": "wrong_content",
    "bad timing": "wrong_time",
    "not the right time": "wrong_time",
    "timing not right": "wrong_time",
    "no time": "capacity",
    "no capacity": "capacity",
    "too busy": "capacity",
    "workload": "capacity",
}


class CrmFeedbackError(ValueError):
    """A CRM feedback export the importer cannot map; the message names the file, line and field."""


@dataclass
class ParsedFeedback:
    """Feedback items ready for ``/feedback`` and what was left out (open recommendations, blank rows)."""

    source: str
    path: str
    items: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the file line of each item (the header is line 1)
    skipped_open: int = 0


def normalise_label(value: str) -> str:
    """A reason label as matched: lower case, inner spaces collapsed, numbering and trailing full stop removed."""
    v = re.sub(r"^\s*\d+[.)]\s*", "", str(value)).strip().rstrip(".").strip().lower()
    return re.sub(r"\s+", " ", v)


def reason_table(extra: dict[str, str] | None = None) -> dict[str, str]:
    """``DEFAULT_REASONS`` extended by a customer's own ``{label: code}`` (checked: codes must be ours)."""
    table = {normalise_label(k): v for k, v in DEFAULT_REASONS.items()}
    for label, code in (extra or {}).items():
        if code not in FEEDBACK_REASONS:
            raise CrmFeedbackError(f"reason map: {label!r} -> {code!r} is not a reason code; codes: {', '.join(FEEDBACK_REASONS)}")
        table[normalise_label(label)] = code
    return table


def load_reason_map(path: str | Path) -> dict[str, str]:
    """A YAML or JSON file of ``label: reason_code`` lines (the customer's picklist values)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise CrmFeedbackError(f"{path}: expected a mapping of CRM reason label -> reason code ({', '.join(FEEDBACK_REASONS)})")
    reason_table(data)  # refuses a code that is not ours, naming the label
    return dict(data)


def _ts(value: str, where: str) -> datetime:
    text = value.strip()
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CrmFeedbackError(f"{where}: {value!r} is not an ISO 8601 date-time") from None
    if ts.tzinfo is None:
        raise CrmFeedbackError(f"{where}: {value!r} has no UTC offset (CRM exports write UTC, e.g. 2026-05-02T08:15:00.000Z)")
    return ts.astimezone(UTC)


def parse_feedback(path: str | Path, source: str, *, reasons: dict[str, str] | None = None, columns: dict[str, str] | None = None) -> ParsedFeedback:
    """Map a CRM feedback export (CSV with a header row) onto feedback items; raise on the first value that cannot be mapped.

    ``source``: veeva (Vault ``suggestion_feedback__v``) or salesforce (LSC ``TerritoryAcctRcmdAction``).
    ``reasons``: extra ``{label: code}`` for the customer's reason picklist. ``columns``: other
    column names for our fields (feedback_id, suggestion_id, kind, ts, reason). The rep is the one
    the suggestion was served to (the CRM's user ids are not our rep ids). Feedback ids are ``<source>:<the CRM record id>``, so a re-imported export is recognised.
    """
    if source not in SOURCES:
        raise CrmFeedbackError(f"--source: must be one of {', '.join(SOURCES)}, got {source!r}")
    path = Path(path)
    cols = {**(VEEVA_COLUMNS if source == "veeva" else SF_COLUMNS), **(columns or {})}
    outcomes = VEEVA_OUTCOMES if source == "veeva" else SF_OUTCOMES
    table = reason_table(reasons)
    out = ParsedFeedback(source, str(path))
    if not path.exists():
        raise CrmFeedbackError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8-sig") as fh:  # Excel and Data Loader write a BOM
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        required = [cols[k] for k in ("feedback_id", "suggestion_id", "kind", "ts")]
        missing = [c for c in required if c not in header]
        if missing:
            raise CrmFeedbackError(
                f"{path}: missing column(s) {', '.join(missing)} of a {source} feedback export; the header has {', '.join(header) or 'nothing'}"
            )
        seen: dict[str, int] = {}
        for line, row in enumerate(reader, start=2):

            def get(key: str, row: dict = row) -> str:
                return (row.get(cols[key]) or "").strip()

            if not any((v or "").strip() for v in row.values()):
                continue
            where = f"{path} line {line}"
            kind_raw = get("kind")
            kind = kind_raw.lower() if source == "salesforce" else kind_raw
            if source == "salesforce" and kind in SF_OPEN_STATUSES:
                out.skipped_open += 1
                continue
            if kind not in outcomes:
                known = ", ".join([*outcomes, *(SF_OPEN_STATUSES if source == "salesforce" else ())])
                raise CrmFeedbackError(f"{where}, field {cols['kind']}: {kind_raw!r} is not a known value; known: {known}")
            record_id, suggestion_id = get("feedback_id"), get("suggestion_id")
            fid = f"{source}:{record_id}"
            if not record_id or not _ID.match(fid):
                raise CrmFeedbackError(
                    f"{where}, field {cols['feedback_id']}: {record_id!r} is not a record id (letters, digits, _ . : -; "
                    f"at most {64 - len(source) - 1} characters)"
                )
            if not _ID.match(suggestion_id):
                raise CrmFeedbackError(
                    f"{where}, field {cols['suggestion_id']}: {suggestion_id!r} is not one of our suggestion ids (the nightly file's external id)"
                )
            if fid in seen:
                raise CrmFeedbackError(f"{where}, field {cols['feedback_id']}: {record_id!r} appears twice (first on line {seen[fid]})")
            seen[fid] = line
            outcome = outcomes[kind]
            reason = None
            label = get("reason") if cols["reason"] in header else ""
            if label:
                reason = table.get(normalise_label(label))
                if reason is None:
                    raise CrmFeedbackError(
                        f"{where}, field {cols['reason']}: {label!r} is not a known dismiss reason; map it to one of "
                        f"{', '.join(FEEDBACK_REASONS)} with --reason-map"
                    )
            if reason is not None and outcome != "dismissed":
                reason = None  # a reason field left filled on a completed action says nothing about it
            out.items.append(
                {"feedback_id": fid, "suggestion_id": suggestion_id, "outcome": outcome, "reason": reason, "ts": _ts(get("ts"), f"{where}, field {cols['ts']}")}
            )
            out.lines.append(line)
    return out
