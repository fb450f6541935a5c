"""The Feast repo on disk and the store handle: render, apply, check, materialize.

The package's ``features/feature_repo/`` holds the declarations; ``render_repo`` writes a
runnable copy into the workspace with a feature_store.yaml built from the config (absolute
paths), so the Python API and ``feast -c <workspace>/feature_repo`` see one and the same repo.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
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


def store_settings(cfg: FeaturesConfig, *, last_writer_wins: bool = False) -> dict[str, Any]:
    """The feature_store.yaml content for ``cfg`` (absolute paths).

    ``last_writer_wins``: Redis writes replace a stored row even when its event time is not
    newer (Feast's ``skip_dedup``; SQLite always does). A rebuilt snapshot keeps its stamp but
    holds new values, and Redis would otherwise drop it silently.
    """
    ws = Path(cfg.workspace_dir)
    if cfg.online_store.type == "sqlite":
        online = {"type": "sqlite", "path": str(Path(cfg.online_store.url or ws / "online_store.db").resolve())}
    else:
        online = {"type": "redis", "connection_string": _redis_connection_string(cfg.online_store.url)}
        if last_writer_wins:
            online["skip_dedup"] = True
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


def _repo_config(cfg: FeaturesConfig, last_writer_wins: bool = False):
    from feast import RepoConfig

    return RepoConfig(repo_path=str(cfg.repo_dir), **store_settings(cfg, last_writer_wins=last_writer_wins))


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


def open_store(cfg: FeaturesConfig, *, check: bool = True, last_writer_wins: bool = False):
    """A Feast FeatureStore for ``cfg``; by default verifies the registry matches the config."""
    from feast import FeatureStore

    cfg = cfg.resolved()
    store = FeatureStore(config=_repo_config(cfg, last_writer_wins))
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
    return {
        "repo": str(repo),
        "views": len(declared),
        "features": sum(len(v.split(",")) for o in objects if isinstance(o, FeatureView) for v in [o.tags.get(LOGICAL_TAG, "")]),
        "deleted_views": [fv.name for fv in stale],
    }


ONLINE_STATE = "_online_state.json"


def read_online_state(cfg: FeaturesConfig) -> dict[str, Any]:
    """What the online store was last loaded from (build, dataset, pending HCPs); {} before any load."""
    import json

    path = Path(cfg.workspace_dir) / ONLINE_STATE
    return json.loads(path.read_text()) if path.exists() else {}


def write_online_state(cfg: FeaturesConfig, **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into the online state file atomically (write, fsync, rename); return it."""
    import json
    import tempfile

    path = Path(cfg.workspace_dir) / ONLINE_STATE
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {**read_online_state(cfg), **updates}
    fd, tmp = tempfile.mkstemp(prefix=f".{ONLINE_STATE}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(state, indent=2, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return state


def build_id(manifest: dict[str, Any]) -> str:
    """A short hash identifying one feature build (its manifest's content)."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def writer_store(cfg: FeaturesConfig, store=None):
    """A store whose online writes replace stored rows whatever their stamp (see ``store_settings``)."""
    if store is not None and (cfg.online_store.type == "sqlite" or getattr(store.config.online_store, "skip_dedup", False)):
        return store
    return open_store(cfg, check=store is None, last_writer_wins=True)


def materialize(cfg: FeaturesConfig, end: datetime | None = None, *, incremental: bool = True, start: datetime | None = None, store=None) -> dict[str, Any]:
    """Load source rows up to ``end`` into the online store (incremental: from the last run).

    A time-varying view only needs its rows from the last TTL (8 days) before ``end``: older
    snapshots are superseded, and skipping them keeps the scan to one snapshot per entity.

    Any day of the week: a mid-week import and rebuild rewrite the LAST weekly snapshot (stamped
    the coming Monday, which already holds every event before it) without adding a later one, so
    "continue from the last loaded end" found nothing to load. The build's identity is recorded
    with each load; when the sources were rebuilt since, every view's newest rows are loaded
    again, written last-writer-wins because their stamps did not move. We reload the newest
    snapshot rather than diffing: the old sources are gone once a build replaces them, and a
    snapshot load is what materialisation costs anyway. `nba sync` is the incremental path
    (only the HCPs an import touched, stamped at the end of the imported day: ``materialize_hcps``).
    """
    from datetime import timedelta

    from features.build import read_build_manifest
    from features.catalog import DIMENSION_TS, catalog
    from features.snapshots import utc

    cfg = cfg.resolved()
    store = store or open_store(cfg)
    manifest = read_build_manifest(cfg)
    if end is None:
        # Just past the last snapshot: materialize's interval excludes its end.
        end = utc(manifest["last_snapshot_s"] + 1)
    this_build = build_id(manifest)
    rebuilt = incremental and start is None and read_online_state(cfg).get("build_id") != this_build
    registered = {fv.name: fv for fv in store.list_feature_views(allow_cache=False)}
    writer = writer_store(cfg, store) if rebuilt else store
    done, reloaded = [], []
    for view in catalog(cfg).values():
        begin = start or DIMENSION_TS
        loaded = registered[view.name].materialization_intervals
        if incremental and start is None and loaded:
            last = max(iv[1] for iv in loaded)
            begin = last
            # Rebuilt sources: their newest rows changed in place, and a dimension view's rows keep
            # their fixed stamp whatever the build, so load them again (see above).
            if rebuilt and (last >= end or not view.ttl_days):
                begin = DIMENSION_TS
                reloaded.append(view.name)
        if view.ttl_days:
            begin = max(begin, end - timedelta(days=view.ttl_days))
        if begin >= end:
            continue
        writer.materialize(begin, end, feature_views=[view.name])
        done.append(view.name)
    if done or rebuilt:
        # The loaded rows are the build's: the online store now reflects the dataset it was built from.
        write_online_state(cfg, build_id=this_build, dataset_fingerprint=manifest.get("dataset_fingerprint"), end=end.isoformat())
    return {"end": end.isoformat(), "incremental": incremental, "views": done, "reloaded_views": reloaded}


def snapshot_after(tables: dict[str, Any]) -> int:
    """The snapshot a build of ``tables`` would stamp last (epoch s): the Monday after the newest event."""
    import numpy as np

    from features.events import WEEK_S, as_arrow, epoch_seconds
    from features.snapshots import week_start

    newest = []
    for name, col, extra in (("touchpoints", "ts", 0), ("feedback", "ts", 0), ("outcomes", "week_start", WEEK_S - 1)):
        t = tables.get(name)
        if t is None:
            continue
        t = as_arrow(t)
        if t.num_rows:
            newest.append(int(np.max(epoch_seconds(t.column(col)))) + extra)
    if not newest:
        raise ValueError("dataset has no touchpoints, outcomes or feedback: nothing to compute features from")
    return int(week_start(np.array([max(newest)]))[0]) + WEEK_S


def day_after(tables: dict[str, Any]) -> int:
    """The sync's as-of (epoch s): 00:00 UTC after the newest touch or feedback, i.e. the end of the newest imported day.

    Contract times are stored in UTC and the day grain keys decisions to 00:00 UTC
    (``features.snapshots.decision_times``), so the online rows a sync writes are the state a
    day-grain training row for the next day reads. Outcomes are weekly aggregates, known only
    once their week is over (a week still running is not counted at any earlier time), so they
    set the as-of only for a dataset without events.
    """
    import numpy as np

    from features.events import DAY_S, as_arrow, epoch_seconds

    newest = []
    for name in ("touchpoints", "feedback"):
        t = tables.get(name)
        if t is not None:
            t = as_arrow(t)
            if t.num_rows:
                newest.append(int(np.max(epoch_seconds(t.column("ts")))))
    if not newest:
        return snapshot_after(tables)
    return (max(newest) // DAY_S + 1) * DAY_S


def materialize_hcps(
    cfg: FeaturesConfig, hcp_ids: list[str], *, tables: dict[str, Any] | None = None, as_of: int | None = None, content: bool = False, store=None
) -> dict[str, Any]:
    """Recompute every HCP view of ``hcp_ids`` (and the content view if ``content``) and write them online.

    The same transforms over each HCP's whole history, as of the end of the newest imported day
    (``day_after``; default): the rows equal the day-grain training rows (``features.examples``)
    of those HCPs at that midnight, which is what a decision taken the next day reads. (Before,
    the sync stamped the coming Monday, the weekly snapshot, so mid-week serving read days-since
    and window features as of next Monday.) Other HCPs' rows are left as they are, so the cost
    follows the import's size, not the population's. Written last-writer-wins: the weekly
    materialisation stamps a later Monday, which a day's rows must replace on Redis.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from features.build import read_contract
    from features.catalog import catalog, hcp_views
    from features.events import as_arrow, prepare
    from features.snapshots import array_feature_names, content_table, hcp_tables, utc

    cfg = cfg.resolved()
    t0 = time.perf_counter()
    full = tables if tables is not None else read_contract(cfg.data_dir)
    t = int(as_of) if as_of is not None else day_after(full)
    ids = sorted(set(map(str, hcp_ids)))
    views = []
    if ids:
        views += hcp_views(cfg)
    if content:
        views.append(catalog(cfg)["content_catalog"])
    if not views:
        return {"hcps": 0, "as_of": utc(t).isoformat(), "views": [], "rows_written": 0, "read_s": 0.0, "compute_s": 0.0, "write_s": 0.0}
    writer = writer_store(cfg, store)
    t1 = time.perf_counter()
    frames: dict[str, Any] = {}
    if ids:
        keep = pa.array(ids, pa.string())
        full = {n: None if tb is None else as_arrow(tb) for n, tb in full.items()}
        part = {n: tb.filter(pc.is_in(tb.column("hcp_id"), value_set=keep)) if tb is not None and "hcp_id" in tb.column_names else tb for n, tb in full.items()}
        known = set(part["hcps"].column("hcp_id").to_pylist())
        unknown = [h for h in ids if h not in known]
        if unknown:
            raise ValueError(f"materialize_hcps: hcp_id(s) not in table 'hcps': {unknown[:5]}")
        frames.update(hcp_tables(prepare(part, cfg.days_since_cap), cfg, np.array([t]), as_source=False))
    if content:
        frames["content_catalog"] = content_table(prepare(full, cfg.days_since_cap), cfg, np.array([t]), as_source=False)
    t2 = time.perf_counter()
    written = 0
    for v in views:
        df = frames[v.name].to_pandas()
        for c in array_feature_names(v):
            if c in df.columns:
                df[c] = [np.asarray(x) for x in df[c]]
        writer.write_to_online_store(v.name, df, allow_registry_cache=True)
        written += len(df)
    return {
        "hcps": len(ids),
        "as_of": utc(t).isoformat(),
        "views": [v.name for v in views],
        "rows_written": written,
        "read_s": round(t1 - t0, 3),
        "compute_s": round(t2 - t1, 3),
        "write_s": round(time.perf_counter() - t2, 3),
    }
