"""contract.io: atomic staged writes, contract casting, stable manifests."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from contract.io import dataset_fingerprint, read_frame, read_manifest, staged_dir, write_tables
from contract.schema import MANIFEST_NAME


def _products() -> pd.DataFrame:
    return pd.DataFrame({"product_id": ["P1", "P2"], "therapeutic_area": ["cardiology", "oncology"], "lifecycle": ["growth", "launch"]})


def test_staged_dir_replaces_target_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "data"
    with staged_dir(target) as stage:
        write_tables(stage, {"products": _products()}, source="test")
    assert read_frame(target, "products")["product_id"].tolist() == ["P1", "P2"]

    before = (target / "products.parquet").read_bytes()
    with pytest.raises(RuntimeError):
        with staged_dir(target) as stage:
            write_tables(stage, {"products": _products().iloc[:1]}, source="test")
            raise RuntimeError("failure half way")
    assert (target / "products.parquet").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"], "staging leftovers"


def test_write_casts_to_contract_and_rejects_missing_columns(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="missing columns.*lifecycle"):
        write_tables(tmp_path, {"products": _products().drop(columns="lifecycle")}, source="test")
    manifest = write_tables(tmp_path, {"products": _products()[["lifecycle", "product_id", "therapeutic_area"]]}, source="test")
    assert manifest["tables"]["products"]["rows"] == 2
    assert list(read_frame(tmp_path, "products").columns) == ["product_id", "therapeutic_area", "lifecycle"]


def test_same_data_same_bytes_and_fingerprint(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    write_tables(a, {"products": _products()}, source="test")
    write_tables(b, {"products": _products()}, source="test")
    assert (a / MANIFEST_NAME).read_text() == (b / MANIFEST_NAME).read_text()
    assert dataset_fingerprint(a) == dataset_fingerprint(b)
    write_tables(b, {"products": _products().iloc[::-1]}, source="test")
    assert dataset_fingerprint(a) != dataset_fingerprint(b)


def test_reading_a_non_dataset_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nba simulate"):
        read_manifest(tmp_path)
