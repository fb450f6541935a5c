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
    from features import push_events

    decisions, touches = outcome_events(audit.feedback_of(hcp_id))
    # Both kinds in one push: the rows are recomputed as of just after the newest outcome of either.
    return push_events(features_cfg, [decisions, touches], store=store)
