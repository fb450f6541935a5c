"""The simulated dataset is a valid CRM export: every table, column, type, key and rule."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from contract.io import arrow_schema, read_frame, read_manifest, read_table
from contract.schema import CHANNELS, GROUND_TRUTH_DIR, MEETING_CHANNELS, TABLES


def test_contract_validator_finds_no_errors(small_world: Path) -> None:
    from contract.importer import validate_dataset

    issues, counts = validate_dataset(small_world)
    errors = [i for i in issues if i.severity == "error"]
    assert not errors, [f"{i.location()}: {i.rule}: {i.message}" for i in errors[:5]]
    assert counts["touchpoints"] > 1000 and counts["outcomes"] == 400 * 12


def test_every_table_has_the_contract_schema_and_unique_keys(small_world: Path) -> None:
    manifest = read_manifest(small_world)
    assert set(manifest["tables"]) == set(TABLES)
    for name, table in TABLES.items():
        arrow = read_table(small_world, name)
        assert arrow.schema.equals(arrow_schema(table)), name
        frame = arrow.to_pandas()
        assert not frame.duplicated(list(table.primary_key)).any(), f"{name}: duplicate primary key"
        for col in table.columns:
            values = frame[col.name]
            if not col.nullable:
                assert values.notna().all(), f"{name}.{col.name} has nulls"
            if col.allowed:
                assert set(values.dropna()) <= set(col.allowed), f"{name}.{col.name}"
            if col.min is not None:
                assert (values.dropna() >= col.min).all(), f"{name}.{col.name} < min"
            if col.max is not None:
                assert (values.dropna() <= col.max).all(), f"{name}.{col.name} > max"


def test_foreign_keys_resolve(small_world: Path) -> None:
    frames = {name: read_frame(small_world, name) for name in TABLES}
    for name, table in TABLES.items():
        for fk in table.foreign_keys:
            values = frames[name][fk.column].dropna()
            missing = set(values) - set(frames[fk.ref_table][fk.ref_column])
            assert not missing, f"{name}.{fk.column} -> {fk.ref_table}: {sorted(missing)[:3]}"


def test_touch_rules_hold(small_world: Path) -> None:
    tp = read_frame(small_world, "touchpoints")
    hcps = read_frame(small_world, "hcps").set_index("hcp_id")
    content = read_frame(small_world, "content").set_index("content_id")
    now = pd.Timestamp(dt.datetime.now(dt.UTC))
    assert (tp["ts"] <= now).all() and str(tp["ts"].dt.tz) == "UTC"
    assert not (tp["opened"] & ~tp["delivered"]).any()
    out = tp[tp["direction"] == "outbound"]
    assert (out["propensity"] > 0).all() and (out["propensity"] <= 1).all()
    assert tp.loc[tp["direction"] == "inbound", "propensity"].isna().all()
    # Approved, unexpired content of the HCP's own product only.
    with_content = out.dropna(subset=["content_id"])
    c = content.loc[with_content["content_id"]]
    assert (c["approved_from"].to_numpy() <= with_content["ts"].to_numpy()).all()
    assert (with_content["ts"].to_numpy() < c["approved_until"].to_numpy()).all()
    assert (c["product_id"].to_numpy() == hcps.loc[with_content["hcp_id"], "main_product_id"].to_numpy()).all()
    assert out.loc[out["channel"] == "phone", "content_id"].isna().all()
    assert out.loc[out["channel"] != "phone", "content_id"].notna().all()
    # Consent for every outbound touch.
    consent = hcps.loc[out["hcp_id"], [f"consent_{ch}" for ch in CHANNELS]].to_numpy()
    col = out["channel"].map({ch: i for i, ch in enumerate(CHANNELS)}).to_numpy()
    assert consent[np.arange(len(out)), col].all()
    meeting = tp["channel"].isin(MEETING_CHANNELS)
    assert tp.loc[~meeting, "attended"].isna().all()
    assert (tp.loc[meeting, "attended"] == tp.loc[meeting, "opened"]).all()
    # Broadcast pushes carry no rep; rep-sent touches do.
    assert tp.loc[tp["channel"] == "wechat_push", "rep_id"].isna().all()
    assert tp.loc[tp["channel"] == "visit", "rep_id"].notna().all()


def test_outcomes_and_feedback_are_consistent(small_world: Path) -> None:
    out = read_frame(small_world, "outcomes")
    assert (out["prescriptions"] <= out["market_boxes"]).all()
    assert set(pd.to_datetime(out["week_start"]).dt.weekday) == {0}
    fb = read_frame(small_world, "feedback")
    tp = read_frame(small_world, "touchpoints")
    done = fb[fb["decision"] == "done"]
    assert len(done) > 0 and set(done["suggestion_id"]) <= set(tp["suggestion_id"].dropna())
    assert fb.loc[fb["decision"] != "dismissed", "reason"].isna().all()
    assert fb.loc[fb["decision"] == "dismissed", "reason"].notna().all()
    assert set(fb["decision"]) >= {"done", "dismissed"}


def test_ground_truth_is_kept_apart(small_world: Path) -> None:
    gt = small_world / GROUND_TRUTH_DIR
    world = json.loads((gt / "world.json").read_text())
    assert world["config"]["seed"] == 3
    params = pq.read_table(gt / "hcp_params.parquet").column_names
    assert "responsiveness" in params and "pref_daypart" in params
    hcps = read_table(small_world, "hcps").column_names
    assert not set(params) - {"hcp_id"} & set(hcps)
    assert "_ground_truth" not in json.dumps(read_manifest(small_world)["tables"])


def test_ids_are_pseudonymous(small_world: Path) -> None:
    hcps = read_frame(small_world, "hcps")
    assert hcps["hcp_id"].str.fullmatch(r"H\d{7}").all()
    assert read_frame(small_world, "reps")["rep_id"].str.fullmatch(r"R\d{5}").all()
    assert not any(re.search(r"name", c) for c in hcps.columns)


def test_fixed_width_ids_match_python_formatting() -> None:
    import numpy as np

    from simulator.tables import fixed_ids

    rng = np.random.default_rng(0)
    for width in (5, 7, 10, 12):
        numbers = np.r_[0, 10**width - 1, rng.integers(0, 10**width, 200)]
        assert fixed_ids("X", numbers, width).to_pylist() == [f"X{v:0{width}d}" for v in numbers.tolist()]
