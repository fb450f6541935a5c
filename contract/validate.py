"""Row rules of the data contract, checked on typed frames with whole-column masks.

``validate_tables`` is pure: the importer, ``nba validate``, the simulator and tests all call
it on contract-typed pandas frames (as ``coerce`` or ``canonical_frame`` give them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

from contract.coercion import DEFAULT_CAP, canonical_frame, coerce  # noqa: F401  (re-exported)
from contract.issues import (
    RULE_ALLOWED,
    RULE_CHECK,
    RULE_DUPLICATE_KEY,
    RULE_FOREIGN_KEY,
    RULE_FUTURE,
    RULE_MAX,
    RULE_MIN,
    RULE_NULL,
    SourceFile,
    ValidationIssue,
    issues_from_mask,
)
from contract.schema import TABLES, Table

Frames = Mapping[str, pd.DataFrame]


def _mask(series: pd.Series) -> np.ndarray:
    """A boolean mask from a comparison that may hold NA (NA means 'not flagged')."""
    if isinstance(series.dtype, pd.api.extensions.ExtensionDtype):
        return series.fillna(False).to_numpy(dtype=bool)
    return series.to_numpy(dtype=bool)


def _isin(series: pd.Series, values) -> np.ndarray:
    """Membership mask computed by Arrow (pandas' arrow-string isin loops over values in Python)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        arr = pa.array(series, from_pandas=True)
        value_set = pa.array(pd.Series(values, dtype=object).dropna().to_numpy(), type=arr.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return series.isin(values).to_numpy(dtype=bool)  # mixed-type frames built by hand
    found = pc.is_in(arr, value_set=value_set)
    return np.asarray(pc.fill_null(found, False).to_numpy(zero_copy_only=False), dtype=bool)


def _opened_implies_delivered(df: pd.DataFrame) -> np.ndarray:
    return _mask(df["opened"] & ~df["delivered"])


def _propensity_positive(df: pd.DataFrame) -> np.ndarray:
    return _mask(df["propensity"].notna() & (df["propensity"] <= 0))


def _prescriptions_within_market(df: pd.DataFrame) -> np.ndarray:
    return _mask(df["prescriptions"] > df["market_boxes"])


def _approval_window(df: pd.DataFrame) -> np.ndarray:
    return _mask(df["approved_from"] >= df["approved_until"])


# Table.checks texts -> (columns they read, mask of the rows breaking them). A new check in
# contract.schema without an entry here fails loudly in validate_tables.
CHECKS: dict[str, tuple[tuple[str, ...], Callable[[pd.DataFrame], np.ndarray]]] = {
    "opened implies delivered": (("opened", "delivered"), _opened_implies_delivered),
    "propensity > 0 when present": (("propensity",), _propensity_positive),
    "prescriptions <= market_boxes": (("prescriptions", "market_boxes"), _prescriptions_within_market),
    "approved_from < approved_until": (("approved_from", "approved_until"), _approval_window),
}


def _utc(now: dt.datetime) -> pd.Timestamp:
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (e.g. datetime.now(timezone.utc)); a naive time is ambiguous")
    return pd.Timestamp(now).tz_convert("UTC")


def _key_text(df: pd.DataFrame, key: tuple[str, ...], positions: np.ndarray) -> list[str]:
    cols = [df[k].iloc[positions].tolist() for k in key]
    return [
        ", ".join(f"{k}={v!r}" if not isinstance(v, pd.Timestamp) else f"{k}={v.date() if k == 'week_start' else v}" for k, v in zip(key, vals))
        for vals in zip(*cols)
    ]


def _column_rules(t: Table, df: pd.DataFrame, src: SourceFile, cap: int) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    for col in t.columns:
        if col.name not in df.columns:
            continue
        s = df[col.name]
        present = s.notna().to_numpy()
        failed = src.failed.get(col.name)
        if not col.nullable:
            null = ~present if failed is None else ~present & ~failed
            issues += issues_from_mask(src, t.name, null, rule=RULE_NULL, column=col.name, message="null/empty value in a non-nullable column", cap=cap)
        if col.allowed is not None:
            bad = present & ~_isin(s, col.allowed)
            issues += issues_from_mask(
                src, t.name, bad, rule=RULE_ALLOWED, column=col.name, values=s, message=f"not one of the allowed values: {', '.join(col.allowed)}", cap=cap
            )
        if col.min is not None:
            issues += issues_from_mask(
                src, t.name, _mask(s < col.min), rule=RULE_MIN, column=col.name, values=s, message=f"below the minimum {col.min:g}", cap=cap
            )
        if col.max is not None:
            issues += issues_from_mask(
                src, t.name, _mask(s > col.max), rule=RULE_MAX, column=col.name, values=s, message=f"above the maximum {col.max:g}", cap=cap
            )
    return issues


def _future_rule(t: Table, df: pd.DataFrame, src: SourceFile, now: pd.Timestamp, cap: int) -> list[ValidationIssue]:
    if t.event_time is None or t.event_time not in df.columns:
        return []
    s = df[t.event_time]
    if t.column(t.event_time).kind == "date":
        limit = pd.Timestamp(now.date())
        what = f"date after today ({limit.date()} UTC)"
    else:
        limit, what = now, f"timestamp after now ({now.isoformat()})"
    return issues_from_mask(
        src, t.name, _mask(s > limit), rule=RULE_FUTURE, column=t.event_time, values=s, message=f"{what}: events cannot lie in the future", cap=cap
    )


def _duplicate_rule(t: Table, df: pd.DataFrame, src: SourceFile, cap: int) -> list[ValidationIssue]:
    key = list(t.primary_key)
    if not key or any(k not in df.columns for k in key):
        return []
    later = df.duplicated(subset=key, keep="first").to_numpy()
    if not later.any():
        return []
    involved = df.duplicated(subset=key, keep=False).to_numpy()
    sub = df.loc[involved, key].copy()
    sub["_pos"] = np.flatnonzero(involved)
    first_pos = sub.groupby(key, sort=False, dropna=False)["_pos"].transform("min")
    first_of = pd.Series(first_pos.to_numpy(), index=sub["_pos"].to_numpy())

    def messages(shown: np.ndarray) -> list[str]:
        firsts = src.row_numbers(first_of.loc[shown].to_numpy())
        return [f"duplicate primary key ({k}) also at row {int(r)}" for k, r in zip(_key_text(df, t.primary_key, shown), firsts)]

    return issues_from_mask(src, t.name, later, rule=RULE_DUPLICATE_KEY, column=",".join(key), values=df[key[0]], message=messages, cap=cap)


def _reference_values(frames: Frames, existing: Frames | None, ref_table: str, ref_column: str) -> pd.Index | None:
    parts = [f[ref_table][ref_column] for f in (frames, existing or {}) if ref_table in f and ref_column in f[ref_table].columns]
    if not parts:
        return None
    return pd.Index(pd.concat(parts, ignore_index=True).dropna().unique())


def _foreign_key_rules(t: Table, df: pd.DataFrame, src: SourceFile, frames: Frames, existing: Frames | None, cap: int) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    for fk in t.foreign_keys:
        if fk.column not in df.columns:
            continue
        s = df[fk.column]
        refs = _reference_values(frames, existing, fk.ref_table, fk.ref_column)
        present = s.notna().to_numpy()
        if refs is None:
            bad, why = present, f"references {fk.ref_table}.{fk.ref_column}, but table {fk.ref_table!r} is neither in the export nor in the dataset"
        else:
            bad, why = present & ~_isin(s, refs), f"no {fk.ref_table} row with {fk.ref_column} equal to this value (in the export or the existing dataset)"
        issues += issues_from_mask(src, t.name, bad, rule=RULE_FOREIGN_KEY, column=fk.column, values=s, message=why, cap=cap)
    return issues


def _check_rules(t: Table, df: pd.DataFrame, src: SourceFile, cap: int) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    for check in t.checks:
        if check not in CHECKS:
            raise KeyError(f"table {t.name!r} declares check {check!r}, which contract.validate.CHECKS does not implement")
        columns, rule = CHECKS[check]
        if any(c not in df.columns for c in columns):
            continue
        bad = rule(df)
        if not bad.any():
            continue

        def messages(shown: np.ndarray, columns=columns, check=check) -> list[str]:
            vals = [df[c].iloc[shown].tolist() for c in columns]
            return [f"breaks {check!r} (" + ", ".join(f"{c}={v}" for c, v in zip(columns, row)) + ")" for row in zip(*vals)]

        issues += issues_from_mask(src, t.name, bad, rule=RULE_CHECK, column=",".join(columns), values=df[columns[0]], message=messages, cap=cap)
    return issues


def validate_tables(
    frames: Frames,
    *,
    existing: Frames | None = None,
    now: dt.datetime,
    sources: Mapping[str, SourceFile] | None = None,
    cap: int = DEFAULT_CAP,
) -> list[ValidationIssue]:
    """Every row rule of the contract on typed frames; references resolve against ``frames`` and ``existing``.

    Rules: non-nullable columns, allowed values, min/max, no event in the future of ``now``,
    unique primary keys within a frame, foreign keys, and each table's declared checks.
    ``cap`` bounds the issues listed per (file, column, rule); one more issue counts the rest.
    """
    now_utc = _utc(now)
    issues: list[ValidationIssue] = []
    for name, df in frames.items():
        if name not in TABLES:
            raise KeyError(f"unknown contract table {name!r}; known: {', '.join(TABLES)}")
        t = TABLES[name]
        src = (sources or {}).get(name) or SourceFile(file=name)
        issues += _column_rules(t, df, src, cap)
        issues += _future_rule(t, df, src, now_utc, cap)
        issues += _duplicate_rule(t, df, src, cap)
        issues += _foreign_key_rules(t, df, src, frames, existing, cap)
        issues += _check_rules(t, df, src, cap)
    return issues
