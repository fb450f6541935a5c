"""Reference data (approvals, owners) reaches a running engine within ``reference_refresh_s``, without a restart."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from contract.schema import CHANNELS
from serving.config import ServingConfig
from serving.engine import Recommender
from serving.reference import LiveReference, ReferenceData

NOW = datetime.now(UTC).replace(microsecond=0)
REFRESH_S = 0.2
HCPS = [f"h{i}" for i in range(6)]


def _tables(until_c1: datetime, owner_h0: str = "r1") -> dict[str, pd.DataFrame]:
    hcps = pd.DataFrame(
        {
            "hcp_id": HCPS,
            "hospital_id": "x1",
            "hospital_tier": "tertiary_a",
            "department": "cardiology",
            "title": "resident",
            "is_kol": False,
            "rep_id": [owner_h0, *["r1"] * (len(HCPS) - 1)],
            "region": "east",
            "timezone": "Asia/Shanghai",
            "main_product_id": "p1",
            "beds": 10,
            "potential_boxes_month": 50.0,
            "support_share": 0.2,
            "segment": "A",
            "profile_completeness": 0.9,
            **{f"consent_{c}": True for c in CHANNELS},
        }
    )
    products = pd.DataFrame({"product_id": ["p1"], "therapeutic_area": ["cardiology"], "lifecycle": ["growth"]})
    reps = pd.DataFrame({"rep_id": ["r1", "r2"], "region": "east", "rep_type": "chronic", "visit_capacity_per_day": 8, "message_capacity_per_day": 50})
    content = pd.DataFrame(
        {
            "content_id": ["c1", "c2"],
            "product_id": "p1",
            "topic": ["guideline", "case_study"],
            "content_type": "article",
            "form": "long_read",
            "approval_code": ["MLR-1", "MLR-2"],
            # c1 is the newest approval, so the rules pick it first while it is approved.
            "approved_from": [NOW - timedelta(days=10), NOW - timedelta(days=40)],
            "approved_until": [until_c1, NOW + timedelta(days=200)],
        }
    )
    return {"products": products, "reps": reps, "hcps": hcps, "content": content}


def _write(data_dir: Path, tables: dict[str, pd.DataFrame]) -> None:
    """Replace the dataset atomically, as `nba import` / `nba sync` do."""
    from contract.io import staged_dir, write_tables

    with staged_dir(data_dir) as stage:
        write_tables(stage, tables, source="test")


def _features() -> pd.DataFrame:
    """Online features of HCPs with every consent and no recent contact."""
    cols = {
        "hcp_id": HCPS,
        **{f"consent_{ch}": True for ch in CHANNELS},
        **{f"days_since_last_{ch}": 365.0 for ch in CHANNELS},
        **{f"{ch}_{kind}_{w}": 0 for ch in CHANNELS for kind in ("sent", "opened", "forwarded") for w in ("7d", "30d", "90d")},
        "favourited_30d": 0,
        "wecom_1to1_replied_30d": 0,
        "consecutive_unopened_pushes": 0,
        "lifecycle": 1,
        "potential_boxes_month": 50.0,
    }
    return pd.DataFrame(cols)


def _suggested(rec: Recommender) -> set[str]:
    f = rec.recommend(HCPS, k=3, as_of=NOW, record=False, explore=False, features=_features()).frame
    return set(f["content_id"].dropna().astype(str))


def _wait(live: LiveReference, reloads: int, limit_s: float) -> float:
    t0 = time.monotonic()
    while live.reloads < reloads and time.monotonic() - t0 < limit_s:
        time.sleep(0.02)
    return time.monotonic() - t0


def test_a_recalled_item_stops_being_suggested_without_a_restart(tmp_path):
    data = tmp_path / "data"
    _write(data, _tables(until_c1=NOW + timedelta(days=100)))
    live = ReferenceData.watch(data, refresh_s=REFRESH_S)
    try:
        rec = Recommender(ServingConfig(require_model=False, audit_url="sqlite:///:memory:", reference_refresh_s=REFRESH_S), reference=live)
        assert "c1" in _suggested(rec)
        _write(data, _tables(until_c1=NOW - timedelta(days=1)))  # recalled: approval ended yesterday
        waited = _wait(live, 2, limit_s=5.0)
        assert live.reloads == 2 and waited <= REFRESH_S + 1.0
        after = _suggested(rec)
        assert "c1" not in after and "c2" in after
        assert rec._topics == {"c1": "guideline", "c2": "case_study"}
    finally:
        live.stop()


def test_owner_changes_reach_plans_and_unchanged_datasets_are_not_reloaded(tmp_path):
    data = tmp_path / "data"
    _write(data, _tables(until_c1=NOW + timedelta(days=100)))
    live = ReferenceData.watch(data, refresh_s=REFRESH_S)
    try:
        assert "h0" in live.rep_hcps("r1") and live.rep_hcps("r2") == []
        _write(data, _tables(until_c1=NOW + timedelta(days=100)))  # same tables rewritten: same hashes
        time.sleep(3 * REFRESH_S)
        assert live.reloads == 1
        _write(data, _tables(until_c1=NOW + timedelta(days=100), owner_h0="r2"))
        _wait(live, 2, limit_s=5.0)
        assert live.rep_hcps("r2") == ["h0"] and "h0" not in live.rep_hcps("r1")
    finally:
        live.stop()


def test_a_missing_dataset_is_picked_up_when_it_appears_and_a_broken_one_keeps_the_last_copy(tmp_path):
    data = tmp_path / "data"
    live = ReferenceData.watch(data, refresh_s=REFRESH_S)
    try:
        assert len(live.hcps) == 0 and live.approved_content(NOW) == []
        _write(data, _tables(until_c1=NOW + timedelta(days=100)))
        _wait(live, 1, limit_s=5.0)
        assert sorted(live.approved_content(NOW)) == ["c1", "c2"]
        # A manifest whose content table is gone: the reload fails, the loaded copy keeps serving.
        (data / "content.parquet").unlink()
        manifest = (data / "_manifest.json").read_text().replace('"content": {', '"content": {"changed": 1, ')
        (data / "_manifest.json").write_text(manifest)
        time.sleep(3 * REFRESH_S)
        assert live.reloads == 1 and sorted(live.approved_content(NOW)) == ["c1", "c2"]
    finally:
        live.stop()


def test_refresh_zero_reads_once(tmp_path):
    data = tmp_path / "data"
    _write(data, _tables(until_c1=NOW + timedelta(days=100)))
    live = ReferenceData.watch(data, refresh_s=0)
    _write(data, _tables(until_c1=NOW - timedelta(days=1)))
    time.sleep(0.3)
    assert "c1" in live.approved_content(NOW)
    assert live.refresh() and "c1" not in live.approved_content(NOW)  # an explicit refresh still works


@pytest.mark.parametrize("bad", [-1.0])
def test_reference_refresh_is_validated(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="reference_refresh_s"):
        ServingConfig(reference_refresh_s=bad)
