"""Exact serving probabilities of our own suggestions, read from the serving audit trail's database.

Where a logged touch acted on a suggestion we served (``touchpoints.suggestion_id``), the audit
trail recorded the probability with which that action was drawn: the propensity exploration
exists to provide, better than any estimate. This reads the ``suggestions`` table directly with
SQLAlchemy core (a read of a database, never an import of ``serving``: training sits upstream of
serving), and reads nothing else. An absent trail is an expected condition: the result is then
empty and says why in its message.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SUGGESTIONS_TABLE = "suggestions"
ID_COLUMN = "suggestion_id"
PROPENSITY_COLUMN = "propensity"
# Read when present, so a caller can check that the touch took the action that was served.
ACTION_COLUMNS: tuple[str, ...] = ("channel", "content_id", "policy", "model_version")
# Ids per IN (...) query: below SQLite's oldest bound-parameter limit (999).
CHUNK_SIZE = 500


def _clean_ids(suggestion_ids: Sequence[Any]) -> list[str]:
    ids = pd.Series(list(suggestion_ids), dtype=object).dropna().astype(str)
    return sorted(set(ids[ids != ""]))


def _empty(columns: Sequence[str] = ()) -> pd.DataFrame:
    frame = pd.DataFrame({PROPENSITY_COLUMN: pd.Series(dtype=np.float64), **{c: pd.Series(dtype=object) for c in columns}})
    frame.index = pd.Index([], dtype=object, name=ID_COLUMN)
    return frame


def served_suggestions(audit_url: str | None, suggestion_ids: Sequence[Any], *, chunk_size: int = CHUNK_SIZE) -> tuple[pd.DataFrame, str]:
    """(frame indexed by suggestion_id with propensity and the served action, message) for the ids found in the audit trail.

    Rows whose stored propensity is not in (0, 1] are dropped and counted in the message.
    """
    import sqlalchemy as sa

    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if audit_url is None or not str(audit_url).strip():
        return _empty(), "no audit trail configured (audit_url is empty): served propensities not used"
    try:
        url = sa.engine.make_url(str(audit_url))
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"audit_url: not a SQLAlchemy database URL ({exc})") from None
    where = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:") and not Path(url.database).is_file():
        # Connecting would create an empty database file: a read must leave no trace.
        return _empty(), f"audit trail {where}: no such database file; served propensities not used"
    # sslmode is the URL's own, as serving's (serving.audit): nothing is added.
    ids = _clean_ids(suggestion_ids)
    engine = sa.create_engine(url)
    try:
        try:
            inspector = sa.inspect(engine)
            if not inspector.has_table(SUGGESTIONS_TABLE):
                return _empty(), f"audit trail {where}: no {SUGGESTIONS_TABLE!r} table (not a serving audit database?); served propensities not used"
            present = {c["name"] for c in inspector.get_columns(SUGGESTIONS_TABLE)}
            if missing := [c for c in (ID_COLUMN, PROPENSITY_COLUMN) if c not in present]:
                return _empty(), f"audit trail {where}: table {SUGGESTIONS_TABLE!r} lacks column(s) {missing}; served propensities not used"
            extra = [c for c in ACTION_COLUMNS if c in present]
            table = sa.table(SUGGESTIONS_TABLE, *(sa.column(c) for c in (ID_COLUMN, PROPENSITY_COLUMN, *extra)))
            parts = []
            with engine.connect() as conn:
                for start in range(0, len(ids), chunk_size):
                    chunk = ids[start : start + chunk_size]
                    rows = conn.execute(sa.select(*table.columns).where(table.c[ID_COLUMN].in_(chunk))).all()
                    parts.append(pd.DataFrame(rows, columns=[ID_COLUMN, PROPENSITY_COLUMN, *extra]))
        except sa.exc.OperationalError as exc:
            first = str(exc.orig if exc.orig is not None else exc).strip().splitlines()[0]
            return _empty(), f"audit trail {where}: cannot read ({first}); served propensities not used"
    finally:
        engine.dispose()
    if not parts:
        return _empty(extra), f"audit trail {where}: no suggestion ids given"
    frame = pd.concat(parts, ignore_index=True)
    frame[PROPENSITY_COLUMN] = pd.to_numeric(frame[PROPENSITY_COLUMN], errors="coerce").astype(np.float64)
    ok = np.isfinite(frame[PROPENSITY_COLUMN]) & (frame[PROPENSITY_COLUMN] > 0) & (frame[PROPENSITY_COLUMN] <= 1)
    frame = frame[ok].set_index(ID_COLUMN).sort_index()
    frame.index = frame.index.astype(object)
    message = f"audit trail {where}: {int(ok.sum())} of {len(ids)} suggestion ids found with their serving propensity"
    if dropped := int((~ok).sum()):
        message += f"; {dropped} with a stored propensity outside (0, 1] ignored"
    return frame, message


def served_propensities(audit_url: str | None, suggestion_ids: Sequence[Any], *, chunk_size: int = CHUNK_SIZE) -> pd.Series:
    """suggestion_id -> exact serving propensity for the ids found in the audit trail; ``.attrs["message"]`` says what was found or why none."""
    frame, message = served_suggestions(audit_url, suggestion_ids, chunk_size=chunk_size)
    out = frame[PROPENSITY_COLUMN].rename(PROPENSITY_COLUMN)
    out.attrs["message"] = message
    return out


def served_for_rows(served: pd.Series, row_suggestion_ids: Sequence[Any]) -> np.ndarray:
    """[N] serving propensity per training row (NaN where the row names no served suggestion), for ``fill_propensities``'s ``served``."""
    ids = pd.Series(list(row_suggestion_ids), dtype=object)
    ids = ids.where(ids.isna(), ids.astype(str))
    return ids.map(served).astype(np.float64).to_numpy()
