"""Validation issues: what is wrong, where (file, row, CSV line, column), and under which rule.

Checks produce boolean masks over whole columns; this module turns a mask into issues, capping
how many are materialised per (file, column, rule) so a systematically broken 10M-row column
yields a readable report plus one line counting the rest, not ten million objects.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

Severity = Literal["error", "warning"]

# Rule codes: stable identifiers tests and downstream tooling can match on.
RULE_MISSING_FILE = "missing_file"
RULE_UNKNOWN_FILE = "unknown_file"
RULE_AMBIGUOUS_FILE = "ambiguous_file"
RULE_UNREADABLE = "unreadable_file"
RULE_MALFORMED_ROW = "malformed_row"
RULE_MISSING_COLUMN = "missing_column"
RULE_UNKNOWN_COLUMN = "unknown_column"
RULE_DUPLICATE_COLUMN = "duplicate_column"
RULE_TYPE = "type"
RULE_NAIVE_TIMESTAMP = "timestamp_without_timezone"
RULE_NULL = "not_nullable"
RULE_ALLOWED = "allowed_values"
RULE_MIN = "min"
RULE_MAX = "max"
RULE_FUTURE = "future"
RULE_DUPLICATE_KEY = "duplicate_key"
RULE_FOREIGN_KEY = "foreign_key"
RULE_CHECK = "check"
RULE_CHANGED_EVENT = "changed_event"
RULE_MANIFEST = "manifest"


@dataclass(frozen=True)
class ValidationIssue:
    """One problem in an export: where it is, the offending value, and the rule it breaks."""

    file: str
    rule: str
    message: str
    table: str | None = None
    row: int | None = None  # 1-based data row (header excluded)
    line: int | None = None  # physical CSV line (header is line 1); None for Parquet
    column: str | None = None
    value: str | None = None
    severity: Severity = "error"

    def location(self) -> str:
        """``file:row N (line L) column C`` as far as known."""
        parts = [self.file]
        if self.row is not None:
            parts.append(f"row {self.row}" + (f" (line {self.line})" if self.line is not None else ""))
        if self.column:
            parts.append(f"column {self.column!r}")
        return ", ".join(parts)

    def __str__(self) -> str:
        value = f" [value {self.value!r}]" if self.value is not None else ""
        return f"{self.severity}: {self.location()}: {self.rule}: {self.message}{value}"


@dataclass
class SourceFile:
    """Where a frame came from, so issues can name the file, data row and CSV line.

    ``rows``/``lines`` map frame position i to the 1-based data row and physical line; None
    means row = i + 1 and (for CSV) line = i + 2. ``failed`` marks cells that could not be
    parsed, so later rules do not report them a second time as nulls.
    """

    file: str
    is_csv: bool = False
    rows: np.ndarray | None = None
    lines: np.ndarray | None = None
    failed: dict[str, np.ndarray] = field(default_factory=dict)

    def row_numbers(self, positions: np.ndarray) -> np.ndarray:
        """1-based data rows of frame positions."""
        return self.rows[positions] if self.rows is not None else positions + 1

    def line_numbers(self, positions: np.ndarray) -> np.ndarray | None:
        """Physical CSV lines of frame positions (None for Parquet)."""
        if not self.is_csv:
            return None
        return self.lines[positions] if self.lines is not None else positions + 2


def _text(value: object) -> str | None:
    if value is None or value is pd.NA:
        return None
    try:
        if value != value:  # NaN / NaT
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, pd.Timestamp) and value.tz is None and value == value.normalize():
        return str(value.date())  # a date column's value, shown without a midnight time
    return str(value)


def issues_from_mask(
    source: SourceFile,
    table: str,
    mask: np.ndarray,
    *,
    rule: str,
    message: str | Callable[[np.ndarray], Sequence[str]],
    column: str | None = None,
    values: Any = None,
    cap: int,
) -> list[ValidationIssue]:
    """Issues for the rows where ``mask`` is true, at most ``cap`` plus one counting the rest.

    ``message`` is one text for all rows, or a function of the shown positions giving one text
    each (so texts are built only for the rows listed); ``values`` is the full column
    (indexed by position) whose offending values are quoted.
    """
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))
    total = len(positions)
    if total == 0:
        return []
    shown = positions[:cap]
    rows = source.row_numbers(shown)
    lines = source.line_numbers(shown)
    if values is not None:
        taken = values.iloc[shown] if hasattr(values, "iloc") else np.asarray(values, dtype=object)[shown]
        texts = [_text(v) for v in (taken.tolist() if hasattr(taken, "tolist") else list(taken))]
    else:
        texts = [None] * len(shown)
    messages = [message] * len(shown) if isinstance(message, str) else list(message(shown))
    out = [
        ValidationIssue(
            file=source.file,
            table=table,
            row=int(rows[k]),
            line=None if lines is None else int(lines[k]),
            column=column,
            value=texts[k],
            rule=rule,
            message=messages[k],
        )
        for k in range(len(shown))
    ]
    if total > cap:
        out.append(
            ValidationIssue(
                file=source.file,
                table=table,
                column=column,
                rule=rule,
                message=f"{total - cap} more rows break this rule (listing capped at {cap} per file, column and rule)",
            )
        )
    return out


def errors(issues: Iterable[ValidationIssue]) -> list[ValidationIssue]:
    """Only the issues that block an import."""
    return [i for i in issues if i.severity == "error"]


def sort_issues(issues: Iterable[ValidationIssue]) -> list[ValidationIssue]:
    """Issues in a stable, readable order: by file, then row, then column and rule."""
    big = 1 << 62
    return sorted(issues, key=lambda i: (i.file, i.row if i.row is not None else -1 if i.column is None else big, i.column or "", i.rule))


# CSV column order: where first, then what.
ISSUE_FIELDS: tuple[str, ...] = ("severity", "file", "table", "row", "line", "column", "value", "rule", "message")
assert set(ISSUE_FIELDS) == {f.name for f in fields(ValidationIssue)}


def write_issues_csv(issues: Iterable[ValidationIssue], path: str | Path) -> int:
    """Write every issue to ``path`` as CSV; return how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(ISSUE_FIELDS))
        writer.writeheader()
        for issue in issues:
            writer.writerow({k: ("" if v is None else v) for k, v in asdict(issue).items()})
            n += 1
    return n


def render_issues(issues: Sequence[ValidationIssue], *, limit: int, console=None) -> None:
    """Print issues as a table (first ``limit``, then a count of the rest) to ``console``."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(stderr=True)
    table = Table(title=f"{len(issues)} problem(s)", show_lines=False)
    for name in ("severity", "file", "row", "line", "column", "value", "rule", "message"):
        table.add_column(name, overflow="fold")
    for i in issues[:limit]:
        value = i.value if i.value is None or len(i.value) <= 40 else i.value[:37] + "..."
        table.add_row(
            i.severity,
            i.file,
            "" if i.row is None else str(i.row),
            "" if i.line is None else str(i.line),
            i.column or "",
            "" if value is None else repr(value),
            i.rule,
            i.message,
        )
    console.print(table)
    if len(issues) > limit:
        console.print(f"... and {len(issues) - limit} more (use --errors-out FILE to get all of them as CSV)")
