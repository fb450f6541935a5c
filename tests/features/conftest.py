"""Fixtures: the tiny contract dataset, and a built, applied, materialized feature store."""

from __future__ import annotations

import pandas as pd
import pytest
from tiny_contract import features_config, make_tables


@pytest.fixture()
def tables() -> dict[str, pd.DataFrame]:
    return make_tables()


@pytest.fixture()
def dataset(tmp_path, tables):
    from contract.io import write_tables

    path = tmp_path / "data"
    write_tables(path, tables, source="test")
    return path


@pytest.fixture(scope="module")
def built_store(tmp_path_factory):
    """A real Feast repo built from the tiny dataset, applied and materialized on SQLite."""
    from contract.io import write_tables
    from features import apply, build_sources, materialize, open_store

    root = tmp_path_factory.mktemp("fs")
    tables = make_tables()
    write_tables(root / "data", tables, source="test")
    cfg = features_config(root / "data", root / "ws")
    build_sources(cfg, progress=False)
    apply(cfg)
    store = open_store(cfg)
    materialize(cfg, store=store)
    return cfg, store, tables
