"""Coercion: raw export columns (CSV text or Parquet of any type) to the contract's types.

Every column is parsed as a whole with Arrow compute kernels and regex masks; a cell that
does not parse becomes null in the typed frame and an issue naming its row, and is marked
failed so the nullability rule does not report it again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from contract.io import arrow_schema
from contract.issues import (
    RULE_DUPLICATE_COLUMN,
    RULE_MISSING_COLUMN,
    RULE_NAIVE_TIMESTAMP,
    RULE_TYPE,
    RULE_UNKNOWN_COLUMN,
    SourceFile,
    ValidationIssue,
    issues_from_mask,
)
from contract.schema import Column, Table

DEFAULT_CAP = 1000

_INT_RE = r"^[+-]?[0-9]{1,18}$"
_FLOAT_RE = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# An ISO 8601 date-time ending in a zone designator; a bare date's "-05" must not count.
_AWARE_RE = r"[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]+)?)? ?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_DATE_RE = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"
BOOL_TRUE: tuple[str, ...] = ("true", "1", "yes")
BOOL_FALSE: tuple[str, ...] = ("false", "0", "no")

# Arrow-backed strings: 3-5x less memory than Python str objects and null checks read a bitmap.
_PANDAS_TYPES = {pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(), pa.string(): pd.StringDtype("pyarrow")}


def canonical_frame(arrow: pa.Table) -> pd.DataFrame:
    """A contract-typed Arrow table as the pandas frame every check and merge works on.

    Strings are ``string[pyarrow]`` (NA for null), ints ``Int64``, bools ``boolean``, floats
    ``float64`` (NaN for null), timestamps ``datetime64[us, UTC]``, dates ``datetime64[ms]``.
    """
    return arrow.to_pandas(types_mapper=_PANDAS_TYPES.get, date_as_object=False)


def _np(mask: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _is_text(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def _parse_text(col: Column, text: pa.ChunkedArray) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray, np.ndarray]:
    """Parse trimmed text as ``col.kind``; return (typed values, type-error mask, naive-timestamp mask)."""
    text = pc.utf8_trim_whitespace(text)
    null = pc.or_kleene(pc.is_null(text), pc.equal(text, ""))
    n = len(text)
    none = np.zeros(n, dtype=bool)
    if col.kind == "string":
        return pc.if_else(null, pa.scalar(None, pa.string()), text), none, none
    if col.kind in ("int", "float"):
        ok = pc.match_substring_regex(text, _INT_RE if col.kind == "int" else _FLOAT_RE)
        target = pa.int64() if col.kind == "int" else pa.float64()
        values = pc.cast(pc.if_else(ok, text, pa.scalar(None, pa.string())), target)
        bad = pc.and_(pc.invert(null), pc.invert(ok))
        if col.kind == "float":
            bad = pc.or_kleene(bad, pc.invert(pc.is_finite(values)))
            values = pc.if_else(pc.is_finite(values), values, pa.scalar(None, pa.float64()))
        return values, _np(bad), none
    if col.kind == "bool":
        lower = pc.utf8_lower(text)
        ok = pc.is_in(lower, value_set=pa.array(BOOL_TRUE + BOOL_FALSE))
        values = pc.if_else(ok, pc.is_in(lower, value_set=pa.array(BOOL_TRUE)), pa.scalar(None, pa.bool_()))
        return values, _np(pc.and_(pc.invert(null), pc.invert(ok))), none
    if col.kind == "date":
        ok_shape = pc.match_substring_regex(text, _DATE_RE)
        parsed = pc.strptime(pc.if_else(ok_shape, text, pa.scalar(None, pa.string())), format="%Y-%m-%d", unit="s", error_is_null=True)
        # strptime rolls 2025-02-31 over to March; a date must print back as it was written.
        parsed = pc.if_else(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), text), parsed, pa.scalar(None, parsed.type))
        values = pc.cast(parsed, pa.date32())
        return values, _np(pc.and_(pc.invert(null), pc.is_null(parsed))), none
    # timestamp: Arrow's ISO 8601 cast is ~10x faster than pandas but all-or-nothing, so pandas
    # (per-cell, errors -> NaT) only runs on the rare columns or rows Arrow refuses.
    aware = _np(pc.match_substring_regex(text, _AWARE_RE))
    present = ~_np(null)
    target = pa.timestamp("us", tz="UTC")
    values = _cast_or_none(pc.if_else(pa.array(aware), text, pa.scalar(None, pa.string())), target)
    if values is None:
        parsed = _pandas_iso(text, aware)
        values = pa.array(parsed, type=pa.timestamp("ns", tz="UTC"), from_pandas=True).cast(target, safe=False)
    aware_ok = aware & _np(pc.is_valid(values))
    bad = present & aware & ~aware_ok
    others = present & ~aware
    naive = np.zeros(n, dtype=bool)
    if others.any():
        readable = _pandas_iso(text, others).notna().to_numpy()
        naive, bad = others & readable, bad | (others & ~readable)
    return values, bad, naive


def _cast_or_none(arr, target: pa.DataType):
    try:
        return pc.cast(arr, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _pandas_iso(text: pa.ChunkedArray, rows: np.ndarray) -> pd.Series:
    """pandas' ISO 8601 parse of the selected rows (NaT elsewhere and where unreadable)."""
    strings = pc.if_else(pa.array(rows), text, pa.scalar(None, pa.string())).to_numpy(zero_copy_only=False)
    return pd.to_datetime(pd.Series(strings, dtype=object), format="ISO8601", utc=True, errors="coerce")


def _coerce_column(col: Column, arr: pa.ChunkedArray) -> tuple[pa.Array | pa.ChunkedArray, np.ndarray, np.ndarray, str]:
    """Typed values, type-error mask, naive-timestamp mask and a why-text for one column."""
    t = arr.type
    none = np.zeros(len(arr), dtype=bool)
    why = {
        "int": "not an integer",
        "float": "not a finite number",
        "bool": f"not a boolean (accepted: {'/'.join(BOOL_TRUE + BOOL_FALSE)})",
        "date": "not a date (YYYY-MM-DD)",
        "timestamp": "not an ISO 8601 timestamp",
        "string": "not text",
    }[col.kind]
    if pa.types.is_dictionary(t):
        arr, t = pc.cast(arr, t.value_type), t.value_type
    if pa.types.is_large_string(t):
        arr, t = pc.cast(arr, pa.string()), pa.string()
    if col.kind == "int" and pa.types.is_integer(t):
        return pc.cast(arr, pa.int64()), none, none, why
    if col.kind == "int" and pa.types.is_floating(t):
        whole = pc.and_(pc.is_finite(arr), pc.equal(pc.floor(arr), arr))
        # NaN is how pandas writes a missing value in an int column it had to make float.
        bad = pc.and_(pc.and_(pc.is_valid(arr), pc.invert(pc.is_nan(arr))), pc.invert(whole))
        values = pc.cast(pc.if_else(whole, arr, pa.scalar(None, t)), pa.int64())
        return values, _np(bad), none, why
    if col.kind == "float" and (pa.types.is_floating(t) or pa.types.is_integer(t)):
        values = pc.cast(arr, pa.float64())
        # NaN is how pandas-written Parquet spells a missing float; infinity is a real error.
        nan = pc.is_nan(values)
        bad = pc.and_(pc.is_valid(values), pc.invert(pc.or_(pc.is_finite(values), nan)))
        return pc.if_else(pc.is_finite(values), values, pa.scalar(None, pa.float64())), _np(bad), none, why
    if col.kind == "bool" and pa.types.is_boolean(t):
        return arr, none, none, why
    if col.kind == "timestamp" and pa.types.is_timestamp(t):
        if t.tz is None:
            return pa.nulls(len(arr), pa.timestamp("us", tz="UTC")), none, _np(pc.is_valid(arr)), why
        return pc.cast(arr, pa.timestamp("us", tz="UTC"), safe=False), none, none, why
    if col.kind == "date" and (pa.types.is_date(t)):
        return pc.cast(arr, pa.date32()), none, none, why
    if col.kind == "string" and _is_text(t):
        text = pc.utf8_trim_whitespace(arr)
        return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text), none, none, why
    try:
        text = pc.cast(arr, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
        return pa.nulls(len(arr), arrow_type(col)), _np(pc.is_valid(arr)), none, f"{why} (stored as {t})"
    values, bad, naive = _parse_text(col, text)
    return values, bad, naive, why


def arrow_type(col: Column) -> pa.DataType:
    """The Arrow type a contract column is stored with."""
    return arrow_schema(Table(name="_", columns=(col,), primary_key=())).field(col.name).type


def coerce_arrow(table: Table, raw: pa.Table, source: SourceFile, *, cap: int = DEFAULT_CAP) -> tuple[pa.Table, list[ValidationIssue]]:
    """Typed Arrow table of the contract columns present in ``raw``, plus column and type issues."""
    issues: list[ValidationIssue] = []
    names = raw.column_names
    seen: set[str] = set()
    for name in names:
        if name in seen:
            issues.append(ValidationIssue(file=source.file, table=table.name, column=name, rule=RULE_DUPLICATE_COLUMN, message="column given more than once"))
        seen.add(name)
    for name in names:
        if name not in table.column_names:
            issues.append(
                ValidationIssue(
                    file=source.file,
                    table=table.name,
                    column=name,
                    rule=RULE_UNKNOWN_COLUMN,
                    message=f"not a column of contract table {table.name!r}",
                )
            )
    arrays, fields = [], []
    for col in table.columns:
        if col.name not in seen:
            issues.append(
                ValidationIssue(
                    file=source.file,
                    table=table.name,
                    column=col.name,
                    rule=RULE_MISSING_COLUMN,
                    message=f"required column of {table.name!r} ({col.kind}) is missing",
                )
            )
            continue
        raw_col = raw.column(names.index(col.name))
        values, bad, naive, why = _coerce_column(col, raw_col)
        original = raw_col
        if bad.any():
            issues += issues_from_mask(source, table.name, bad, rule=RULE_TYPE, message=why, column=col.name, values=_Lazy(original), cap=cap)
        if naive.any():
            issues += issues_from_mask(
                source,
                table.name,
                naive,
                rule=RULE_NAIVE_TIMESTAMP,
                message="timestamp without timezone (give an offset such as +08:00 or Z)",
                column=col.name,
                values=_Lazy(original),
                cap=cap,
            )
        source.failed[col.name] = bad | naive
        arrays.append(values)
        fields.append(pa.field(col.name, arrow_type(col)))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields)) if arrays else pa.table({}), issues


class _Lazy:
    """Positional access to a raw Arrow column without converting all of it to Python."""

    def __init__(self, arr: pa.ChunkedArray) -> None:
        self._arr = arr

    @property
    def iloc(self):
        return self

    def __getitem__(self, positions):
        return self._arr.take(pa.array(np.asarray(positions, dtype=np.int64))).to_pylist()


def coerce(table: Table, raw_frame: pd.DataFrame | pa.Table, file: str | SourceFile, *, cap: int = DEFAULT_CAP) -> tuple[pd.DataFrame, list[ValidationIssue]]:
    """Parse a raw export frame into contract types; return the typed frame and the issues found.

    Passing a ``SourceFile`` (rather than a file name) lets issues carry CSV line numbers and
    records which cells failed, for ``validate_tables``.
    """
    source = file if isinstance(file, SourceFile) else SourceFile(file=file)
    raw = raw_frame if isinstance(raw_frame, pa.Table) else pa.Table.from_pandas(raw_frame, preserve_index=False)
    typed, issues = coerce_arrow(table, raw, source, cap=cap)
    return canonical_frame(typed), issues
