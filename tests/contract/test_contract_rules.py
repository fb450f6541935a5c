"""Every contract rule, each on a tiny export broken in one place: the issue names file, row, line, column."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from contract_fixtures import NOW, only, read_rows, rejected, set_cell, valid_frames, write_frames, write_rows

from contract.importer import import_export, load_dataset
from contract.issues import errors
from contract.schema import TABLES
from contract.validate import coerce, validate_tables


def _one(issues, rule):
    found = only(issues, rule)
    assert len(found) == 1, f"expected one {rule} issue, got {[str(i) for i in issues]}"
    return found[0]


def test_valid_export_imports_in_both_formats(csv_export: Path, parquet_export: Path, tmp_path: Path) -> None:
    for src in (csv_export, parquet_export):
        result = import_export(src, tmp_path / f"data_{src.name}", now=NOW)
        assert errors(result.issues) == []
        assert result.stats["touchpoints"].inserted == 4
        assert result.stats["hcps"].rows_total == 3


def test_missing_required_file(csv_export: Path, tmp_path: Path) -> None:
    (csv_export / "content.csv").unlink()
    issue = _one(rejected(csv_export, tmp_path / "data"), "missing_file")
    assert issue.table == "content" and "content" in issue.file


def test_optional_table_may_be_absent(csv_export: Path, tmp_path: Path) -> None:
    (csv_export / "feedback.csv").unlink()
    result = import_export(csv_export, tmp_path / "data", now=NOW)
    assert "feedback" not in result.stats


def test_unknown_file_is_reported_not_used(csv_export: Path, tmp_path: Path) -> None:
    (csv_export / "doctors_full_names.csv").write_text("id,name\n1,x\n")
    result = import_export(csv_export, tmp_path / "data", now=NOW)
    warning = _one(result.issues, "unknown_file")
    assert warning.severity == "warning" and warning.file == "doctors_full_names.csv"
    assert not (tmp_path / "data" / "doctors_full_names.parquet").exists()


def test_same_table_twice_is_ambiguous(csv_export: Path, parquet_export: Path, tmp_path: Path) -> None:
    (csv_export / "reps.parquet").write_bytes((parquet_export / "reps.parquet").read_bytes())
    issue = _one(rejected(csv_export, tmp_path / "data"), "ambiguous_file")
    assert issue.table == "reps"


def test_missing_and_unknown_columns(csv_export: Path, tmp_path: Path) -> None:
    rows = read_rows(csv_export / "reps.csv")
    for r in rows:
        r.pop("region")
        r["rep_name"] = "someone"
    write_rows(csv_export / "reps.csv", rows)
    issues = rejected(csv_export, tmp_path / "data")
    missing, unknown = _one(issues, "missing_column"), _one(issues, "unknown_column")
    assert (missing.file, missing.column) == ("reps.csv", "region")
    assert (unknown.file, unknown.column) == ("reps.csv", "rep_name")


@pytest.mark.parametrize(
    ("table", "row", "column", "value"),
    [
        ("reps", 2, "visit_capacity_per_day", "eight"),
        ("reps", 1, "message_capacity_per_day", "4.5"),
        ("touchpoints", 3, "read_seconds", "1,5"),
        ("touchpoints", 2, "delivered", "maybe"),
        ("touchpoints", 4, "ts", "yesterday"),
        ("outcomes", 2, "week_start", "2025-02-31"),
        ("outcomes", 1, "week_start", "2025-02-03T00:00:00Z"),
        ("hcps", 3, "potential_boxes_month", "inf"),
    ],
)
def test_type_errors_name_file_row_line_column(csv_export: Path, tmp_path: Path, table: str, row: int, column: str, value: str) -> None:
    set_cell(csv_export, table, row, column, value)
    issues = rejected(csv_export, tmp_path / "data")
    issue = _one(issues, "type")
    assert (issue.file, issue.row, issue.line, issue.column, issue.value) == (f"{table}.csv", row, row + 1, column, value)
    # The unparseable cell is not reported a second time as a null.
    assert only(issues, "not_nullable") == []


def test_csv_bools_accept_common_spellings() -> None:
    raw = pd.DataFrame({"hcp_id": ["H1"] * 6, "is_kol": ["true", "False", "1", "0", "YES", " no "]})
    frame, issues = coerce(TABLES["hcps"], raw, "hcps.csv")
    assert only(issues, "type") == []
    assert frame["is_kol"].tolist() == [True, False, True, False, True, False]
    assert {i.column for i in only(issues, "missing_column")} == set(TABLES["hcps"].column_names) - {"hcp_id", "is_kol"}


def test_null_in_non_nullable_column(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "touchpoints", 2, "hcp_id", "")
    issue = _one(rejected(csv_export, tmp_path / "data"), "not_nullable")
    assert (issue.file, issue.row, issue.line, issue.column) == ("touchpoints.csv", 2, 3, "hcp_id")


def test_nullable_column_accepts_empty(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "hcps", 1, "beds", "")
    data = import_export(csv_export, tmp_path / "data", now=NOW).data_dir
    assert load_dataset(data)["hcps"].set_index("hcp_id").loc["H1", "beds"] is pd.NA


def test_value_outside_allowed(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "touchpoints", 3, "channel", "fax")
    issue = _one(rejected(csv_export, tmp_path / "data"), "allowed_values")
    assert (issue.row, issue.column, issue.value) == (3, "channel", "fax")
    assert "wechat_push" in issue.message


@pytest.mark.parametrize(
    ("table", "row", "column", "value", "rule"),
    [
        ("outcomes", 2, "prescriptions", "-3", "min"),
        ("reps", 1, "visit_capacity_per_day", "51", "max"),
        ("hcps", 2, "support_share", "1.5", "max"),
        ("touchpoints", 1, "read_seconds", "-0.5", "min"),
    ],
)
def test_numbers_outside_min_max(csv_export: Path, tmp_path: Path, table: str, row: int, column: str, value: str, rule: str) -> None:
    set_cell(csv_export, table, row, column, value)
    issue = _one(rejected(csv_export, tmp_path / "data"), rule)
    assert (issue.file, issue.row, issue.column, issue.value) == (f"{table}.csv", row, column, value.lstrip("+"))


def test_naive_timestamp_is_an_error(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "touchpoints", 2, "ts", "2025-02-04 12:00:00")
    issue = _one(rejected(csv_export, tmp_path / "data"), "timestamp_without_timezone")
    assert (issue.row, issue.line, issue.column) == (2, 3, "ts")
    assert "timestamp without timezone" in issue.message


def test_naive_timestamp_column_in_parquet(parquet_export: Path, tmp_path: Path) -> None:
    arrow = pq.read_table(parquet_export / "content.parquet")
    i = arrow.schema.get_field_index("approved_until")
    arrow = arrow.set_column(i, "approved_until", arrow.column(i).cast(pa.timestamp("us")))
    pq.write_table(arrow, parquet_export / "content.parquet")
    found = only(rejected(parquet_export, tmp_path / "data"), "timestamp_without_timezone")
    assert [(x.file, x.row, x.line, x.column) for x in found] == [
        ("content.parquet", 1, None, "approved_until"),
        ("content.parquet", 2, None, "approved_until"),
    ]


def test_timestamps_are_stored_as_utc(csv_export: Path, tmp_path: Path) -> None:
    data = import_export(csv_export, tmp_path / "data", now=NOW).data_dir
    tp = load_dataset(data)["touchpoints"].set_index("event_id")
    assert str(tp["ts"].dtype) == "datetime64[us, UTC]"
    # 09:30 in Shanghai (+08:00) is 01:30 UTC.
    assert tp.loc["E1", "ts"] == pd.Timestamp("2025-02-03T01:30:00Z")


def test_future_timestamp_and_date_relative_to_injected_now(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "touchpoints", 4, "ts", "2025-03-01T12:00:01Z")
    set_cell(csv_export, "outcomes", 3, "week_start", "2025-03-03")
    issues = only(rejected(csv_export, tmp_path / "data"), "future")
    assert sorted((i.file, i.row, i.column) for i in issues) == [("outcomes.csv", 3, "week_start"), ("touchpoints.csv", 4, "ts")]
    # The same export is fine a week later.
    later = dt.datetime(2025, 3, 8, tzinfo=dt.UTC)
    assert errors(import_export(csv_export, tmp_path / "data", now=later).issues) == []


def test_naive_now_is_refused() -> None:
    frames = valid_frames()
    with pytest.raises(ValueError, match="timezone-aware"):
        validate_tables(frames, now=dt.datetime(2025, 3, 1))


def test_duplicate_primary_key_names_both_rows(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "touchpoints", 3, "event_id", "E1")
    issue = _one(rejected(csv_export, tmp_path / "data"), "duplicate_key")
    assert (issue.file, issue.row, issue.line, issue.value) == ("touchpoints.csv", 3, 4, "E1")
    assert "also at row 1" in issue.message


def test_duplicate_composite_key() -> None:
    frames = valid_frames()
    out = frames["outcomes"]
    frames["outcomes"] = pd.concat([out, out.iloc[[1]].assign(prescriptions=1)], ignore_index=True)
    issue = _one(validate_tables(frames, now=NOW), "duplicate_key")
    assert (issue.file, issue.row, issue.column) == ("outcomes", 4, "hcp_id,week_start,product_id")
    assert "week_start=2025-02-10" in issue.message and "also at row 2" in issue.message


def test_foreign_key_to_incoming_table(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "touchpoints", 2, "content_id", "C404")
    issue = _one(rejected(csv_export, tmp_path / "data"), "foreign_key")
    assert (issue.file, issue.row, issue.column, issue.value) == ("touchpoints.csv", 2, "content_id", "C404")


def test_foreign_key_resolves_against_existing_dataset(tmp_path: Path) -> None:
    first = valid_frames()
    data = import_export(write_frames(first, tmp_path / "day1"), tmp_path / "data", now=NOW).data_dir
    # Day 2 re-exports only H2 and H3; a new touchpoint on H1 must resolve against the dataset.
    second = valid_frames()
    second["hcps"] = second["hcps"][second["hcps"]["hcp_id"] != "H1"]
    second["outcomes"] = second["outcomes"][second["outcomes"]["hcp_id"] != "H1"]
    second["feedback"] = second["feedback"][second["feedback"]["hcp_id"] != "H1"]
    second["hcp_profile_history"] = second["hcp_profile_history"][second["hcp_profile_history"]["hcp_id"] != "H1"]
    second["touchpoints"] = second["touchpoints"].assign(event_id=["E11", "E12", "E13", "E14"])
    result = import_export(write_frames(second, tmp_path / "day2"), data, now=NOW)
    assert result.stats["touchpoints"].inserted == 4
    # Without the dataset the same day-2 export breaks references to H1.
    issues = rejected(tmp_path / "day2", tmp_path / "fresh")
    assert {(i.file, i.column, i.value) for i in only(issues, "foreign_key")} == {("touchpoints.csv", "hcp_id", "H1")}


@pytest.mark.parametrize(
    ("table", "row", "column", "value", "check"),
    [
        ("touchpoints", 4, "opened", "true", "opened implies delivered"),
        ("touchpoints", 1, "propensity", "0", "propensity > 0 when present"),
        ("outcomes", 1, "prescriptions", "41", "prescriptions <= market_boxes"),
        ("content", 2, "approved_until", "2025-01-15T00:00:00Z", "approved_from < approved_until"),
    ],
)
def test_table_checks(csv_export: Path, tmp_path: Path, table: str, row: int, column: str, value: str, check: str) -> None:
    set_cell(csv_export, table, row, column, value)
    issue = _one(rejected(csv_export, tmp_path / "data"), "check")
    assert (issue.file, issue.row, issue.line) == (f"{table}.csv", row, row + 1)
    assert column in issue.column.split(",") and check in issue.message


def test_all_errors_are_collected_across_files(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "reps", 1, "rep_type", "freelance")
    set_cell(csv_export, "touchpoints", 2, "ts", "not a time")
    set_cell(csv_export, "touchpoints", 4, "read_seconds", "-1")
    set_cell(csv_export, "outcomes", 3, "market_boxes", "")
    issues = rejected(csv_export, tmp_path / "data")
    assert {(i.file, i.row, i.rule) for i in errors(issues)} == {
        ("reps.csv", 1, "allowed_values"),
        ("touchpoints.csv", 2, "type"),
        ("touchpoints.csv", 4, "min"),
        ("outcomes.csv", 3, "not_nullable"),
    }


def test_listing_is_capped_with_a_count_of_the_rest() -> None:
    frames = valid_frames()
    tp = frames["touchpoints"]
    frames["touchpoints"] = pd.concat([tp] * 5, ignore_index=True).assign(event_id=[f"E{i}" for i in range(20)], channel="fax")
    found = only(validate_tables(frames, now=NOW, cap=3), "allowed_values")
    assert [i.row for i in found] == [1, 2, 3, None]
    assert found[-1].message.startswith("17 more rows")


def test_malformed_csv_row_reports_its_line(csv_export: Path, tmp_path: Path) -> None:
    path = csv_export / "reps.csv"
    path.write_text(path.read_text() + "R3,east,chronic,5,30,surplus\n")
    issue = _one(rejected(csv_export, tmp_path / "data"), "malformed_row")
    assert (issue.file, issue.line) == ("reps.csv", 4)
    assert "got 6" in issue.message


def test_line_numbers_follow_quoted_newlines(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "reps", 1, "region", "east\nsubregion 2")
    set_cell(csv_export, "reps", 2, "visit_capacity_per_day", "x")
    issue = _one(rejected(csv_export, tmp_path / "data"), "type")
    # Row 1 spans lines 2-3, so row 2 starts on line 4.
    assert (issue.row, issue.line) == (2, 4)


def test_parquet_type_error_names_row(parquet_export: Path, tmp_path: Path) -> None:
    arrow = pq.read_table(parquet_export / "outcomes.parquet")
    i = arrow.schema.get_field_index("prescriptions")
    arrow = arrow.set_column(i, "prescriptions", pa.array([12.0, 15.5, 0.0]))
    pq.write_table(arrow, parquet_export / "outcomes.parquet")
    issue = _one(rejected(parquet_export, tmp_path / "data"), "type")
    assert (issue.file, issue.row, issue.line, issue.column, issue.value) == ("outcomes.parquet", 2, None, "prescriptions", "15.5")


def test_validate_tables_accepts_hand_built_frames() -> None:
    # The simulator hands over plain pandas frames (object strings, numpy bools), not coerce()'s dtypes.
    assert validate_tables(valid_frames(), now=NOW) == []


def test_validate_tables_resolves_references_in_existing() -> None:
    frames = valid_frames()
    existing = {"content": frames["content"], "products": frames["products"]}
    frames = {"touchpoints": frames["touchpoints"], "hcps": frames["hcps"], "reps": frames["reps"]}
    assert validate_tables(frames, existing=existing, now=NOW) == []
    issues = validate_tables(frames, existing={"products": existing["products"]}, now=NOW)
    assert {(i.file, i.row, i.column) for i in issues} == {("touchpoints", 1, "content_id"), ("touchpoints", 2, "content_id"), ("touchpoints", 4, "content_id")}
    assert "neither in the export nor in the dataset" in issues[0].message


def test_coerce_converts_offsets_to_utc_and_flags_naive() -> None:
    raw = pd.DataFrame({"ts": ["2025-02-03T09:30:00+08:00", "2025-02-03 01:30:00Z", "2025-02-03 09:30", "", "02/03/2025"]})
    frame, issues = coerce(TABLES["feedback"], raw, "feedback.csv")
    assert frame["ts"].iloc[0] == frame["ts"].iloc[1] == pd.Timestamp("2025-02-03T01:30:00Z")
    assert frame["ts"].isna().tolist() == [False, False, True, True, True]
    assert sorted((i.row, i.rule, i.value) for i in issues if i.column == "ts") == [
        (3, "timestamp_without_timezone", "2025-02-03 09:30"),
        (5, "type", "02/03/2025"),
    ]


def test_parquet_written_by_pandas_with_nan_ints_and_int_ids(parquet_export: Path, tmp_path: Path) -> None:
    # pandas stores a nullable int column as float with NaN, and ids sometimes as integers.
    hcps = valid_frames()["hcps"].astype({"beds": "float64"})
    hcps["hospital_id"] = [101, 101, 202]
    hcps.to_parquet(parquet_export / "hcps.parquet", index=False)
    data = import_export(parquet_export, tmp_path / "data", now=NOW).data_dir
    stored = load_dataset(data)["hcps"].set_index("hcp_id")
    assert stored["beds"].isna().tolist() == [False, True, False]
    assert stored["hospital_id"].tolist() == ["101", "101", "202"]


def test_every_declared_check_is_implemented() -> None:
    from contract.validate import CHECKS

    declared = {c for t in TABLES.values() for c in t.checks}
    assert declared <= set(CHECKS), f"checks without an implementation: {declared - set(CHECKS)}"
    for t in TABLES.values():
        for check in t.checks:
            assert set(CHECKS[check][0]) <= set(t.column_names), (t.name, check)


def test_padded_bom_header_is_read_and_repeated_column_is_an_error(csv_export: Path, tmp_path: Path) -> None:
    path = csv_export / "products.csv"
    lines = path.read_text().splitlines()
    header = " product_id ,therapeutic_area,lifecycle,lifecycle"
    body = [f"{line},{line.rsplit(',', 1)[1]}" for line in lines[1:]]
    path.write_text("\ufeff" + "\n".join([header, *body]) + "\n", encoding="utf-8")
    issues = rejected(csv_export, tmp_path / "data")
    assert [(i.file, i.column, i.rule) for i in errors(issues)] == [("products.csv", "lifecycle", "duplicate_column")]


def test_the_touch_state_columns_are_touchpoint_columns_and_the_index_keeps_them() -> None:
    """The one list of touch columns the features read exists in the contract and in the per-HCP index."""
    from contract.by_hcp import INDEXED
    from contract.schema import TOUCH_STATE_COLUMNS

    names = [c.name for c in TABLES["touchpoints"].columns]
    assert set(TOUCH_STATE_COLUMNS) <= set(names)
    assert list(TOUCH_STATE_COLUMNS) == INDEXED["touchpoints"][: len(TOUCH_STATE_COLUMNS)]
    assert {"event_id", "suggestion_id"} <= set(INDEXED["touchpoints"])
