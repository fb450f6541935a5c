"""Feedback -> online features: every outcome recorded since the last feature build, for one HCP.

``features.push_events`` recomputes an HCP's online rows from the stored contract history plus
the events it is given. The contract dataset only holds what the last import brought in, so
pushing the new event alone would drop every earlier feedback on the same HCP that has not
been imported yet (the second "done" would overwrite the first). The audit trail has all of
them: each push therefore replays the HCP's recorded outcomes (push_events ignores those the
contract history already holds, by id) so the online row reflects all of them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

# Rep decisions become contract ``feedback`` rows; channel outcomes become ``touchpoints``.
DECISIONS = ("accepted", "dismissed", "done", "snoozed")
MEETINGS = ("department_meeting", "webinar", "conference")


def outcome_events(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Audit feedback rows joined with their suggestions -> (contract feedback rows, contract touchpoint rows)."""
    ts = pd.to_datetime(rows["ts"], utc=True)
    dec = rows["outcome"].isin(DECISIONS).to_numpy()
    decisions = pd.DataFrame({
        "feedback_id": rows["feedback_id"], "suggestion_id": rows["suggestion_id"], "hcp_id": rows["hcp_id"],
        "rep_id": rows["rep_id"], "ts": ts, "decision": rows["outcome"], "reason": rows["reason"],
    })[dec]
    t = rows[~dec]
    attended = (t["outcome"] == "attended").to_numpy()
    touches = pd.DataFrame({
        "event_id": t["feedback_id"], "hcp_id": t["hcp_id"], "rep_id": t["rep_id"], "ts": ts[~dec], "channel": t["channel"],
        "content_id": t["content_id"], "direction": "outbound", "delivered": True, "opened": True, "read_seconds": 0.0,
        "forwarded": False, "favourited": False, "replied": False,
        "attended": pd.array([bool(a) if c in MEETINGS else None for a, c in zip(attended, t["channel"])], dtype="boolean"),
        "propensity": t["propensity"], "suggestion_id": t["suggestion_id"],
    })
    return decisions.reset_index(drop=True), touches.reset_index(drop=True)


def push_feedback(features_cfg: Any, store: Any, audit: Any, hcp_id: str) -> dict[str, Any]:
    """Recompute and push ``hcp_id``'s online features with every outcome the audit trail holds for it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from contract.io import to_arrow
    from contract.schema import TABLES
    from features import push_events
    from features.push import history_for

    decisions, touches = outcome_events(audit.feedback_of(hcp_id))
    history = history_for(features_cfg, [hcp_id])
    # push_events merges one kind of event; the other kind joins the history here, de-duplicated by id.
    kind, events, other, other_kind, key = (
        ("feedback", decisions, touches, "touchpoints", "event_id") if len(decisions) else ("touchpoints", touches, decisions, "feedback", "feedback_id")
    )
    if len(other):
        new = to_arrow(TABLES[other_kind], other)
        old = history.get(other_kind)
        if old is not None:
            old = old if isinstance(old, pa.Table) else pa.Table.from_pandas(old, preserve_index=False)
            new = new.select(old.column_names).cast(old.schema)  # the history holds only the columns features read
            new = pa.concat_tables([old, new.filter(pc.invert(pc.is_in(new.column(key), value_set=old.column(key).combine_chunks())))])
        history[other_kind] = new
    # As of just after the newest outcome of either kind (push_events alone looks at its own kind).
    newest = max(pd.Timestamp(t).value for t in [*decisions["ts"], *touches["ts"]])
    return push_events(features_cfg, events, store=store, history=history, as_of=pd.Timestamp(newest + 10**9, tz="UTC").to_pydatetime())
