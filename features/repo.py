"""The Feast repo on disk and the store handle: render, apply, check, materialize.

The package's ``features/feature_repo/`` holds the declarations; ``render_repo`` writes a
runnable copy into the workspace with a feature_store.yaml built from the config (absolute
paths), so the Python API and ``feast -c <workspace>/feature_repo`` see one and the same repo.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from features.catalog import LOGICAL_TAG, expected_schema, schema_diff, signature
from features.config import FeaturesConfig

PACKAGE_REPO = Path(__file__).resolve().parent / "feature_repo"
DEFINITIONS_FILE = "feature_definitions.py"
CONFIG_FILE = "nba_features.yaml"


class FeatureRepoMismatch(RuntimeError):
    """The registry (or repo) does not hold what the config declares; run `nba features apply`."""


def repo_features_config(repo_dir: Path) -> FeaturesConfig:
    """The config a repo folder was rendered with, else $NBA_FEATURES_CONFIG, else the stock one."""
    from features.config import load_features_config

    rendered = Path(repo_dir) / CONFIG_FILE
    if rendered.exists():
        return load_features_config(rendered)
    return load_features_config(os.environ.get("NBA_FEATURES_CONFIG") or None)


def _redis_connection_string(url: str) -> str:
    u = urlparse(url)
    db = (u.path or "/0").lstrip("/") or "0"
    parts = [f"{u.hostname or '127.0.0.1'}:{u.port or 6379}", f"db={db}"]
    if u.password:
        parts.append(f"password={u.password}")
    return ",".join(parts)


def store_settings(cfg: FeaturesConfig) -> dict[str, Any]:
    """The feature_store.yaml content for ``cfg`` (absolute paths)."""
    ws = Path(cfg.workspace_dir)
    if cfg.online_store.type == "sqlite":
        online = {"type": "sqlite", "path": str(Path(cfg.online_store.url or ws / "online_store.db").resolve())}
    else:
        online = {"type": "redis", "connection_string": _redis_connection_string(cfg.online_store.url)}
    if cfg.registry.type == "file":
        registry = {"registry_type": "file", "path": str(Path(cfg.registry.url or ws / "registry.db").resolve())}
    else:
        registry = {"registry_type": "sql", "path": cfg.registry.url, "sqlalchemy_config_kwargs": {"echo": False, "pool_pre_ping": True}}
    registry["cache_ttl_seconds"] = cfg.registry.cache_ttl_seconds
    return {
        "project": cfg.project,
        "provider": "local",
        "registry": registry,
        "online_store": online,
        "offline_store": {"type": "duckdb"},
        "entity_key_serialization_version": 3,
        "auth": {"type": "no_auth"},
    }


def render_repo(cfg: FeaturesConfig) -> Path:
    """Write the runnable repo (definitions, feature_store.yaml, nba_features.yaml) into the workspace."""
    repo = Path(cfg.repo_dir)
    repo.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PACKAGE_REPO / DEFINITIONS_FILE, repo / DEFINITIONS_FILE)
    shutil.copyfile(PACKAGE_REPO / ".feastignore", repo / ".feastignore")
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(store_settings(cfg), sort_keys=False))
    (repo / CONFIG_FILE).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    return repo


def load_definitions(repo_dir: Path) -> list:
    """Import a repo's definitions file and collect its Feast objects (as `feast apply` does)."""
    from feast import Entity, FeatureService, FeatureView
    from feast.data_source import DataSource

    path = Path(repo_dir) / DEFINITIONS_FILE
    spec = importlib.util.spec_from_file_location(f"_nba_feature_repo_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    seen: dict[int, Any] = {}
    for value in vars(module).values():
        if isinstance(value, (Entity, DataSource, FeatureView, FeatureService)):
            seen.setdefault(id(value), value)
    return list(seen.values())


def _repo_config(cfg: FeaturesConfig):
    from feast import RepoConfig

    return RepoConfig(repo_path=str(cfg.repo_dir), **store_settings(cfg))


def view_signature(fv) -> list[str]:
    """A registered FeatureView's signature (logical names from its tags, then stored fields)."""
    stored = [f.name for f in fv.features]
    logical = fv.tags.get(LOGICAL_TAG)
    return signature(logical.split(",") if logical else stored, stored)


def registry_schema(store) -> dict[str, list[str]]:
    """View name -> signature as the registry holds it."""
    return {fv.name: view_signature(fv) for fv in store.list_feature_views(allow_cache=False)}


def check_registry(store, cfg: FeaturesConfig) -> None:
    """Raise FeatureRepoMismatch naming what differs between the registry and the config."""
    diff = schema_diff(expected_schema(cfg), registry_schema(store))
    if diff:
        where = store.config.registry.path
        raise FeatureRepoMismatch(
            f"feature registry {where} does not match the config (project {cfg.project!r}):\n  - "
            + "\n  - ".join(diff)
            + "\nrun `nba features apply` (with the same config) to register the current definitions"
        )


def open_store(cfg: FeaturesConfig, *, check: bool = True):
    """A Feast FeatureStore for ``cfg``; by default verifies the registry matches the config."""
    from feast import FeatureStore

    cfg = cfg.resolved()
    store = FeatureStore(config=_repo_config(cfg))
    # Readers need the catalog (defaults, column order) that this store was opened for.
    store._nba_cfg = cfg
    if check:
        check_registry(store, cfg)
    return store


def apply(cfg: FeaturesConfig) -> dict[str, Any]:
    """Register the definitions for ``cfg`` (and delete views the config no longer has)."""
    from feast import FeatureView

    cfg = cfg.resolved()
    repo = render_repo(cfg)
    objects = load_definitions(repo)
    declared = {o.name: view_signature(o) for o in objects if isinstance(o, FeatureView)}
    diff = schema_diff(expected_schema(cfg), declared)
    if diff:
        raise FeatureRepoMismatch(f"repo {repo / DEFINITIONS_FILE} does not declare what the config asks:\n  - " + "\n  - ".join(diff))
    store = open_store(cfg, check=False)
    stale = [fv for fv in store.list_feature_views(allow_cache=False) if fv.name not in declared]
    store.apply(objects, objects_to_delete=stale, partial=not stale)
    check_registry(store, cfg)
    return {"repo": str(repo), "views": len(declared), "features": sum(len(v.split(",")) for o in objects if isinstance(o, FeatureView) for v in [o.tags.get(LOGICAL_TAG, "")]), "deleted_views": [fv.name for fv in stale]}


def materialize(cfg: FeaturesConfig, end: datetime | None = None, *, incremental: bool = True, start: datetime | None = None, store=None) -> dict[str, Any]:
    """Load source rows up to ``end`` into the online store (incremental: from the last run).

    A time-varying view only needs its rows from the last TTL (8 days) before ``end``: older
    snapshots are superseded, and skipping them keeps the scan to one snapshot per entity.
    """
    from datetime import timedelta

    from features.build import read_build_manifest
    from features.catalog import DIMENSION_TS, catalog
    from features.snapshots import utc

    cfg = cfg.resolved()
    store = store or open_store(cfg)
    if end is None:
        # Just past the last snapshot: materialize's interval excludes its end.
        end = utc(read_build_manifest(cfg)["last_snapshot_s"] + 1)
    registered = {fv.name: fv for fv in store.list_feature_views(allow_cache=False)}
    done = []
    for view in catalog(cfg).values():
        begin = start or DIMENSION_TS
        if incremental and start is None and registered[view.name].materialization_intervals:
            begin = max(iv[1] for iv in registered[view.name].materialization_intervals)
        if view.ttl_days:
            begin = max(begin, end - timedelta(days=view.ttl_days))
        if begin >= end:
            continue
        store.materialize(begin, end, feature_views=[view.name])
        done.append(view.name)
    return {"end": end.isoformat(), "incremental": incremental, "views": done}
