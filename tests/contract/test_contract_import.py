"""Import semantics: atomic, idempotent, merges by table kind, same dataset from CSV or Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from contract_fixtures import NOW, only, rejected, set_cell, tree_digest, valid_frames, write_frames

from contract.importer import import_export, load_dataset, validate_dataset
from contract.io import dataset_fingerprint, read_manifest, to_arrow, write_tables
from contract.schema import TABLES


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".staging-" in p.name or ".old-" in p.name)


def test_bad_file_writes_nothing(csv_export: Path, tmp_path: Path) -> None:
    set_cell(csv_export, "touchpoints", 2, "channel", "carrier_pigeon")
    rejected(csv_export, tmp_path / "data")
    assert not (tmp_path / "data").exists()
    assert _leftovers(tmp_path) == []


def test_bad_file_leaves_existing_dataset_untouched(csv_export: Path, tmp_path: Path) -> None:
    data = import_export(csv_export, tmp_path / "data", now=NOW).data_dir
    before = tree_digest(data)
    frames = valid_frames()
    frames["touchpoints"] = frames["touchpoints"].assign(event_id=["E5", "E6", "E7", "E8"])
    bad = write_frames(frames, tmp_path / "day2")
    set_cell(bad, "outcomes", 1, "prescriptions", "-1")
    rejected(bad, data)
    assert tree_digest(data) == before
    assert _leftovers(tmp_path) == []


def test_reimport_is_byte_identical(csv_export: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    import_export(csv_export, data, now=NOW)
    before = tree_digest(data)
    result = import_export(csv_export, data, now=NOW)
    assert tree_digest(data) == before
    assert {n: (s.inserted, s.updated) for n, s in result.stats.items()} == {n: (0, 0) for n in result.stats}
    assert result.stats["touchpoints"].unchanged == 4


def test_new_events_are_appended_in_key_order(csv_export: Path, tmp_path: Path) -> None:
    data = import_export(csv_export, tmp_path / "data", now=NOW).data_dir
    frames = valid_frames()
    frames["touchpoints"] = pd.concat([frames["touchpoints"].iloc[[0]], frames["touchpoints"].iloc[[1]].assign(event_id="E0")], ignore_index=True)
    result = import_export(write_frames(frames, tmp_path / "day2"), data, now=NOW)
    s = result.stats["touchpoints"]
    assert (s.rows_read, s.inserted, s.unchanged, s.rows_total) == (2, 1, 1, 5)
    tp = load_dataset(data)["touchpoints"]
    assert tp["event_id"].tolist() == ["E0", "E1", "E2", "E3", "E4"]
    assert read_manifest(data)["tables"]["touchpoints"]["rows"] == 5


def test_changed_event_is_an_error_naming_key_and_columns(csv_export: Path, tmp_path: Path) -> None:
    data = import_export(csv_export, tmp_path / "data", now=NOW).data_dir
    before = tree_digest(data)
    set_cell(csv_export, "touchpoints", 3, "read_seconds", "99")
    set_cell(csv_export, "touchpoints", 3, "forwarded", "false")
    issues = only(rejected(csv_export, data), "changed_event")
    assert len(issues) == 1
    assert (issues[0].file, issues[0].row, issues[0].value) == ("touchpoints.csv", 3, "E3")
    assert "event_id='E3'" in issues[0].message and "read_seconds, forwarded" in issues[0].message
    assert tree_digest(data) == before


def test_snapshot_tables_upsert(csv_export: Path, tmp_path: Path) -> None:
    data = import_export(csv_export, tmp_path / "data", now=NOW).data_dir
    frames = valid_frames()
    hcps = frames["hcps"]
    hcps.loc[hcps["hcp_id"] == "H2", "segment"] = "B"
    extra = hcps[hcps["hcp_id"] == "H3"].assign(hcp_id="H0")
    frames["hcps"] = pd.concat([hcps[hcps["hcp_id"] != "H1"], extra], ignore_index=True)
    result = import_export(write_frames(frames, tmp_path / "day2"), data, now=NOW)
    s = result.stats["hcps"]
    assert (s.rows_read, s.inserted, s.updated, s.unchanged, s.rows_total) == (3, 1, 1, 1, 4)
    stored = load_dataset(data)["hcps"].set_index("hcp_id")
    assert stored.index.tolist() == ["H0", "H1", "H2", "H3"]  # H1 kept: snapshots upsert, never delete
    assert stored.loc["H2", "segment"] == "B"


def test_csv_and_parquet_give_the_same_dataset(csv_export: Path, parquet_export: Path, tmp_path: Path) -> None:
    a = import_export(csv_export, tmp_path / "a", now=NOW).data_dir
    b = import_export(parquet_export, tmp_path / "b", now=NOW).data_dir
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    for name in TABLES:
        assert (a / f"{name}.parquet").read_bytes() == (b / f"{name}.parquet").read_bytes(), name


def test_input_row_order_does_not_change_output(csv_export: Path, tmp_path: Path) -> None:
    frames = {n: df.iloc[::-1].reset_index(drop=True) for n, df in valid_frames().items()}
    shuffled = write_frames(frames, tmp_path / "reversed")
    a = import_export(csv_export, tmp_path / "a", now=NOW).data_dir
    b = import_export(shuffled, tmp_path / "b", now=NOW).data_dir
    assert dataset_fingerprint(a) == dataset_fingerprint(b)


def test_import_keeps_other_stages_files_and_manifest_keys(csv_export: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    frames = valid_frames()
    write_tables(data, frames, source="simulator", extra={"seed": 7})
    (data / "_ground_truth").mkdir()
    (data / "_ground_truth" / "effects.parquet").write_bytes(b"truth")
    import_export(csv_export, data, now=NOW)
    assert (data / "_ground_truth" / "effects.parquet").read_bytes() == b"truth"
    manifest = json.loads((data / "_manifest.json").read_text())
    assert manifest["seed"] == 7 and manifest["source"] == "nba import"
    assert set(manifest["last_import"]["files"]) == {f"{n}.csv" for n in TABLES}


def test_refuses_to_replace_a_directory_that_is_not_a_dataset(csv_export: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        import_export(csv_export, data, now=NOW)
    assert (data / "precious.txt").read_text() == "keep me"


def test_validate_dataset_clean_then_tampered(csv_export: Path, tmp_path: Path) -> None:
    data = import_export(csv_export, tmp_path / "data", now=NOW).data_dir
    issues, rows = validate_dataset(data, now=NOW)
    assert issues == [] and rows["touchpoints"] == 4
    import pyarrow.parquet as pq

    tp = load_dataset(data)["touchpoints"]
    tp.loc[1, "event_id"] = "E1"
    pq.write_table(to_arrow(TABLES["touchpoints"], tp), data / "touchpoints.parquet")
    issues, _ = validate_dataset(data, now=NOW)
    assert {(i.file, i.rule) for i in issues} == {("touchpoints.parquet", "manifest"), ("touchpoints.parquet", "duplicate_key")}
    dup = only(issues, "duplicate_key")[0]
    assert (dup.row, dup.line, dup.value) == (2, None, "E1")


def test_concurrent_import_into_the_same_dataset_is_refused(csv_export: Path, tmp_path: Path) -> None:
    from contract.importer import DatasetBusy, dataset_lock

    data = tmp_path / "data"
    with dataset_lock(data):
        with pytest.raises(DatasetBusy, match="another import"):
            import_export(csv_export, data, now=NOW)
    assert not data.exists()
    assert import_export(csv_export, data, now=NOW).stats["touchpoints"].inserted == 4


def test_dataset_of_another_contract_version_is_not_merged_into(csv_export: Path, tmp_path: Path) -> None:
    data = import_export(csv_export, tmp_path / "data", now=NOW).data_dir
    manifest = json.loads((data / "_manifest.json").read_text())
    manifest["contract_version"] = "0.9"
    (data / "_manifest.json").write_text(json.dumps(manifest))
    before = tree_digest(data)
    issue = only(rejected(csv_export, data), "manifest")[0]
    assert "contract 0.9" in issue.message
    assert tree_digest(data) == before
