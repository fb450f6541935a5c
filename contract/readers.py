"""Reading a CRM export directory: find one file per contract table, read it as raw Arrow.

CSV files are read with every column as text (parsing is the coercion step's job, so a bad
cell becomes an issue with its row, not a reader crash); Parquet files keep their own types.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from contract.issues import (
    RULE_AMBIGUOUS_FILE,
    RULE_MALFORMED_ROW,
    RULE_MISSING_FILE,
    RULE_UNKNOWN_FILE,
    RULE_UNREADABLE,
    SourceFile,
    ValidationIssue,
)
from contract.schema import OPTIONAL_TABLES, REQUIRED_TABLES, TABLES

SUFFIXES: tuple[str, ...] = (".csv", ".parquet")


@dataclass
class ExportFiles:
    """The files of an export: one path per contract table found, plus problems seen."""

    tables: dict[str, Path] = field(default_factory=dict)
    issues: list[ValidationIssue] = field(default_factory=list)


def discover_export(src_dir: str | Path) -> ExportFiles:
    """Map contract tables to files in ``src_dir``; missing required and odd files become issues."""
    src = Path(src_dir)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: export directory not found")
    found = ExportFiles()
    candidates: dict[str, list[Path]] = {}
    for path in sorted(src.iterdir()):
        if path.name.startswith("."):
            continue
        stem, suffix = path.stem, path.suffix.lower()
        if path.is_file() and suffix in SUFFIXES and stem in TABLES:
            candidates.setdefault(stem, []).append(path)
        else:
            found.issues.append(
                ValidationIssue(
                    file=path.name,
                    rule=RULE_UNKNOWN_FILE,
                    severity="warning",
                    message=f"not a contract table file (expected <table>{{.csv,.parquet}} for tables {', '.join(TABLES)}); ignored",
                )
            )
    for name, paths in candidates.items():
        if len(paths) > 1:
            found.issues.append(
                ValidationIssue(
                    file=" + ".join(p.name for p in paths),
                    table=name,
                    rule=RULE_AMBIGUOUS_FILE,
                    message=f"table {name!r} given twice; keep exactly one file per table",
                )
            )
        else:
            found.tables[name] = paths[0]
    for name in REQUIRED_TABLES:
        if name not in candidates:
            found.issues.append(
                ValidationIssue(
                    file=f"{name}.csv|{name}.parquet",
                    table=name,
                    rule=RULE_MISSING_FILE,
                    message=f"required table {name!r} missing from {src} (optional tables: {', '.join(OPTIONAL_TABLES)})",
                )
            )
    return found


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig") as f:
        # Spreadsheet tools pad header cells; a padded name is still the column it names.
        return [h.strip() for h in next(csv.reader(f), [])]


def _count_newlines(path: Path) -> tuple[int, bool]:
    """Newline count and whether the file ends without one (cheap, chunked, no parsing)."""
    count, last = 0, b"\n"
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count, last != b"\n"


def _exact_positions(path: Path, width: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int | None, int | None, int]]]:
    """Data-row and line numbers of each well-formed record, plus (row, line, fields) of malformed ones.

    Only reached when a CSV's lines are not its records (quoted newlines, blank lines or
    malformed rows), so the per-record Python loop here is off the fast path.
    """
    rows, lines = [], []
    bad: list[tuple[int | None, int | None, int]] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        next(reader, None)
        prev, record_no = reader.line_num, 0
        for record in reader:
            start, prev = prev + 1, reader.line_num
            if not record:
                continue
            record_no += 1
            if len(record) == width:
                rows.append(record_no)
                lines.append(start)
            else:
                bad.append((record_no, start, len(record)))
    return np.asarray(rows, dtype=np.int64), np.asarray(lines, dtype=np.int64), bad


def read_csv(path: str | Path, table_name: str) -> tuple[pa.Table | None, SourceFile, list[ValidationIssue]]:
    """Read a CSV export file with every column as text; malformed rows become issues."""
    from pyarrow import csv as pacsv

    path = Path(path)
    source = SourceFile(file=path.name, is_csv=True)
    issues: list[ValidationIssue] = []
    try:
        header = _csv_header(path)
    except UnicodeDecodeError as exc:
        return None, source, [ValidationIssue(file=path.name, table=table_name, rule=RULE_UNREADABLE, message=f"not UTF-8 text: {exc}")]
    if not header or all(not h.strip() for h in header):
        return None, source, [ValidationIssue(file=path.name, table=table_name, rule=RULE_UNREADABLE, message="empty file: no header line")]
    bad_rows: list[pacsv.InvalidRow] = []

    def on_invalid(row) -> str:
        bad_rows.append(row)
        return "skip"

    try:
        data = pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=1 << 24),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pacsv.ConvertOptions(column_types={h: pa.string() for h in header}, strings_can_be_null=False, quoted_strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        return None, source, [ValidationIssue(file=path.name, table=table_name, rule=RULE_UNREADABLE, message=f"cannot parse CSV: {exc}")]
    newlines, unterminated = _count_newlines(path)
    malformed: list[tuple[int | None, int | None, int]] = [(None, None, r.actual_columns) for r in bad_rows]
    if newlines + int(unterminated) != data.num_rows + 1:
        source.rows, source.lines, found = _exact_positions(path, len(header))
        if len(found) == len(bad_rows):
            malformed = found
        if len(source.rows) != data.num_rows:  # a layout the csv module reads differently: drop lines rather than lie
            source.rows, source.lines, source.is_csv = None, None, False
    for (row_no, line_no, width), row in zip(malformed, bad_rows):
        issues.append(
            ValidationIssue(
                file=path.name,
                table=table_name,
                row=row_no,
                line=line_no,
                rule=RULE_MALFORMED_ROW,
                value=row.text[:200],
                message=f"expected {row.expected_columns} fields, got {width}",
            )
        )
    return data, source, issues


def read_parquet(path: str | Path, table_name: str) -> tuple[pa.Table | None, SourceFile, list[ValidationIssue]]:
    """Read a Parquet export file with its own column types."""
    import pyarrow.parquet as pq

    path = Path(path)
    source = SourceFile(file=path.name)
    try:
        return pq.read_table(path), source, []
    except (pa.ArrowException, OSError) as exc:
        return None, source, [ValidationIssue(file=path.name, table=table_name, rule=RULE_UNREADABLE, message=f"cannot read Parquet: {exc}")]


def read_source(path: str | Path, table_name: str) -> tuple[pa.Table | None, SourceFile, list[ValidationIssue]]:
    """Read one export file (CSV or Parquet by suffix); None plus issues when unreadable."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return read_csv(path, table_name)
    return read_parquet(path, table_name)
