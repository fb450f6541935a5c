"""Merging an incoming table into the rows already in a dataset, by primary key.

"snapshot" tables upsert (a re-export replaces the row); "events" tables are immutable facts:
the same row again is a no-op, a new key is appended, and a different row under a known key
is an error naming the key and the columns that differ. ``plan_merge`` decides on pandas
frames; ``apply_merge`` builds the rows in Arrow, sorted by primary key so the same content
always gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from contract.io import to_arrow
from contract.issues import RULE_CHANGED_EVENT, SourceFile, ValidationIssue, issues_from_mask
from contract.schema import Table


@dataclass(frozen=True)
class MergeStats:
    """Row counts of one table's merge."""

    rows_read: int
    inserted: int
    unchanged: int
    updated: int
    rows_total: int


def _key_index(df: pd.DataFrame, key: list[str]) -> pd.Index:
    if len(key) == 1:
        return pd.Index(df[key[0]])
    return pd.MultiIndex.from_frame(df[key])


def _same(a: pd.Series, b: pd.Series) -> np.ndarray:
    """Null-aware equality of two aligned columns."""
    eq = a.to_numpy(dtype=object) == b.to_numpy(dtype=object) if a.dtype == object else (a == b)
    eq = pd.Series(eq).fillna(False).to_numpy(dtype=bool)
    return eq | (a.isna().to_numpy() & b.isna().to_numpy())


@dataclass(frozen=True)
class MergePlan:
    """Which existing rows survive and which incoming rows are added, with counts and conflicts."""

    keep_existing: np.ndarray | None  # None: keep all
    take_incoming: np.ndarray
    stats: MergeStats
    issues: list[ValidationIssue]
    # Incoming rows that are new or differ from the stored row: what an incremental sync must redo.
    touched: np.ndarray | None = None


def plan_merge(table: Table, existing: pd.DataFrame | None, incoming: pd.DataFrame, source: SourceFile, *, cap: int = 1000) -> MergePlan:
    """Decide the merge of ``incoming`` into ``existing`` by the table's rule, by primary key.

    Both frames must be contract-typed with unique keys (validation guarantees it).
    """
    key = list(table.primary_key)
    n = len(incoming)
    if existing is None or existing.empty:
        return MergePlan(None, np.ones(n, dtype=bool), MergeStats(n, n, 0, 0, n), [], np.ones(n, dtype=bool))
    incoming = incoming.reset_index(drop=True)
    at = _key_index(existing, key).get_indexer(_key_index(incoming, key))
    matched = at >= 0
    m_pos = np.flatnonzero(matched)
    value_cols = [c for c in table.column_names if c not in key]
    differs: dict[str, np.ndarray] = {}
    for c in value_cols:
        a = incoming[c].iloc[m_pos].reset_index(drop=True)
        b = existing[c].iloc[at[m_pos]].reset_index(drop=True)
        differs[c] = ~_same(a, b)
    changed_m = np.zeros(len(m_pos), dtype=bool)
    for d in differs.values():
        changed_m |= d
    changed = np.zeros(n, dtype=bool)
    changed[m_pos[changed_m]] = True
    inserted, n_changed, n_matched = int((~matched).sum()), int(changed.sum()), int(matched.sum())
    if table.merge == "events":
        issues: list[ValidationIssue] = []
        if n_changed:
            where_in_m = np.full(n, -1)
            where_in_m[m_pos] = np.arange(len(m_pos))

            def messages(shown: np.ndarray) -> list[str]:
                out = []
                for p in shown:
                    k = ", ".join(f"{c}={incoming[c].iloc[p]!r}" for c in key)
                    cols = [c for c in value_cols if differs[c][where_in_m[p]]]
                    out.append(f"event ({k}) is already in the dataset with different values in: {', '.join(cols)} (events are immutable)")
                return out

            issues = issues_from_mask(
                source, table.name, changed, rule=RULE_CHANGED_EVENT, column=",".join(key), values=incoming[key[0]], message=messages, cap=cap
            )
        stats = MergeStats(n, inserted, n_matched - n_changed, 0, len(existing) + inserted)
        return MergePlan(None, ~matched, stats, issues, ~matched)
    replaced = np.zeros(len(existing), dtype=bool)
    replaced[at[m_pos]] = True
    stats = MergeStats(n, inserted, n_matched - n_changed, n_changed, len(existing) + inserted)
    return MergePlan(~replaced, np.ones(n, dtype=bool), stats, [], ~matched | changed)


def apply_merge(table: Table, plan: MergePlan, existing: pa.Table | None, incoming: pa.Table) -> pa.Table:
    """The merged rows as Arrow in primary-key order (concatenated in Arrow: pandas is slow here)."""
    parts = []
    if existing is not None:
        existing = to_arrow(table, existing)
        parts.append(existing if plan.keep_existing is None else existing.filter(pa.array(plan.keep_existing)))
    incoming = to_arrow(table, incoming)
    parts.append(incoming if plan.take_incoming.all() else incoming.filter(pa.array(plan.take_incoming)))
    merged = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
    return merged.sort_by([(k, "ascending") for k in table.primary_key])
