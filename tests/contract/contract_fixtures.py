"""A tiny, valid CRM export built in code, written as CSV or Parquet, plus helpers to break it.

A module with a unique name (not conftest) so test files can import the helpers directly.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
from pathlib import Path

import pandas as pd
import pytest

from contract.importer import ImportRejected, import_export
from contract.issues import ValidationIssue
from contract.schema import CHANNELS

UTC = dt.UTC
NOW = dt.datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text).tz_convert("UTC")


def valid_frames() -> dict[str, pd.DataFrame]:
    """Every contract table with a few rows that satisfy every rule."""
    products = pd.DataFrame({"product_id": ["P1", "P2"], "therapeutic_area": ["cardiology", "nephrology"], "lifecycle": ["growth", "post_vbp"]})
    reps = pd.DataFrame(
        {
            "rep_id": ["R1", "R2"],
            "region": ["east", "north"],
            "rep_type": ["chronic", "specialty"],
            "visit_capacity_per_day": [8, 6],
            "message_capacity_per_day": [40, 60],
        }
    )
    hcps = pd.DataFrame(
        {
            "hcp_id": ["H1", "H2", "H3"],
            "hospital_id": ["X1", "X1", "X2"],
            "hospital_tier": ["tertiary_a", "tertiary_a", "secondary"],
            "department": ["cardiology", "cardiology", "nephrology"],
            "title": ["chief_physician", "resident", "attending_physician"],
            "is_kol": [True, False, False],
            "rep_id": ["R1", "R1", "R2"],
            "region": ["east", "east", "north"],
            "timezone": ["Asia/Shanghai"] * 3,
            "main_product_id": ["P1", "P1", "P2"],
            "beds": pd.array([90, None, 40], dtype="Int64"),
            "potential_boxes_month": [864.0, None, 120.5],
            "support_share": [0.3, 0.1, None],
            "segment": ["A", None, "C"],
            "profile_completeness": [0.8, 0.5, 0.65],
            **{f"consent_{ch}": [True, i % 2 == 0, False] for i, ch in enumerate(CHANNELS)},
        }
    )
    content = pd.DataFrame(
        {
            "content_id": ["C1", "C2"],
            "product_id": ["P1", "P2"],
            "topic": ["clinical_data", "guideline"],
            "content_type": ["article", "video"],
            "form": ["long_read", "short_video"],
            "approval_code": ["MLR-001", "MLR-002"],
            "approved_from": [_ts("2025-01-01T00:00:00Z"), _ts("2025-01-15T00:00:00Z")],
            "approved_until": [_ts("2025-12-31T00:00:00Z"), _ts("2026-01-15T00:00:00Z")],
        }
    )
    touchpoints = pd.DataFrame(
        {
            "event_id": ["E1", "E2", "E3", "E4"],
            "hcp_id": ["H1", "H2", "H1", "H3"],
            "rep_id": ["R1", None, "R1", "R2"],
            "ts": [_ts("2025-02-03T09:30:00+08:00"), _ts("2025-02-04T12:00:00Z"), _ts("2025-02-10T15:00:00+08:00"), _ts("2025-02-11T10:00:00+08:00")],
            "channel": ["visit", "wechat_push", "email", "webinar"],
            "content_id": ["C1", "C2", None, "C1"],
            "direction": ["outbound", "outbound", "outbound", "inbound"],
            "delivered": [True, True, True, False],
            "opened": [True, False, True, False],
            "read_seconds": [120.0, 0.0, 35.5, 0.0],
            "forwarded": [False, False, True, False],
            "favourited": [False, False, False, False],
            "replied": [True, False, False, False],
            "attended": pd.array([None, None, None, False], dtype="boolean"),
            "propensity": [0.25, None, 0.5, None],
            "suggestion_id": ["S1", None, None, None],
        }
    )
    outcomes = pd.DataFrame(
        {
            "hcp_id": ["H1", "H1", "H3"],
            "week_start": pd.to_datetime(["2025-02-03", "2025-02-10", "2025-02-03"]),
            "product_id": ["P1", "P1", "P2"],
            "prescriptions": [12, 15, 0],
            "market_boxes": [40, 42, 10],
            "share": [0.3, 15 / 42, 0.0],
        }
    )
    feedback = pd.DataFrame(
        {
            "feedback_id": ["F1", "F2"],
            "suggestion_id": ["S1", "S2"],
            "hcp_id": ["H1", "H2"],
            "rep_id": ["R1", None],
            "ts": [_ts("2025-02-03T10:00:00+08:00"), _ts("2025-02-05T10:00:00+08:00")],
            "decision": ["done", "dismissed"],
            "reason": [None, "wrong_time"],
        }
    )
    history = pd.DataFrame(
        {
            "hcp_id": ["H1", "H1", "H3"],
            "valid_from": [_ts("2024-12-02T00:00:00Z"), _ts("2025-02-05T09:00:00+08:00"), _ts("2025-01-06T00:00:00Z")],
            "potential_boxes_month": [700.0, 864.0, None],
            "support_share": [0.2, 0.3, None],
            "segment": ["B", "A", None],
            "profile_completeness": [0.55, 0.8, 0.6],
            **{f"consent_{ch}": [True, True, i % 2 == 0] for i, ch in enumerate(CHANNELS)},
        }
    )
    return {
        "products": products,
        "reps": reps,
        "hcps": hcps,
        "hcp_profile_history": history,
        "content": content,
        "touchpoints": touchpoints,
        "outcomes": outcomes,
        "feedback": feedback,
    }


def write_frames(frames: dict[str, pd.DataFrame], directory: Path, fmt: str = "csv") -> Path:
    """Write typed frames as an export: CSV text the way a CRM would, or Parquet."""
    import pyarrow.parquet as pq

    from contract.io import to_arrow
    from contract.schema import TABLES

    directory.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        if fmt == "csv":
            out = df.copy()
            for c in out.columns:
                if isinstance(out[c].dtype, pd.DatetimeTZDtype):
                    out[c] = out[c].map(lambda v: v.isoformat() if pd.notna(v) else "")
                elif TABLES[name].column(c).kind == "date":
                    out[c] = out[c].dt.strftime("%Y-%m-%d")
            out.to_csv(directory / f"{name}.csv", index=False)
        else:
            pq.write_table(to_arrow(TABLES[name], df), directory / f"{name}.parquet")
    return directory


def read_rows(path: Path) -> list[dict[str, str]]:
    """A CSV file's rows as dicts of text."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]], header: list[str] | None = None) -> None:
    """Write rows of text as CSV (header from the first row unless given)."""
    header = header or list(rows[0])
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def set_cell(src: Path, table: str, row: int, column: str, value: str) -> None:
    """Overwrite one cell (1-based data row) of ``<table>.csv`` in an export."""
    path = src / f"{table}.csv"
    rows = read_rows(path)
    rows[row - 1][column] = value
    write_rows(path, rows)


def rejected(src: Path, data_dir: Path, now: dt.datetime = NOW) -> list[ValidationIssue]:
    """The issues an import of ``src`` is rejected with (fails the test if it is accepted)."""
    with pytest.raises(ImportRejected) as info:
        import_export(src, data_dir, now=now)
    return info.value.issues


def only(issues: list[ValidationIssue], rule: str) -> list[ValidationIssue]:
    """Issues of one rule."""
    return [i for i in issues if i.rule == rule]


def tree_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` by relative path."""
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture()
def csv_export(tmp_path: Path) -> Path:
    """A valid export as CSV files."""
    return write_frames(valid_frames(), tmp_path / "export_csv", "csv")


@pytest.fixture()
def parquet_export(tmp_path: Path) -> Path:
    """The same export as Parquet files."""
    return write_frames(valid_frames(), tmp_path / "export_parquet", "parquet")
