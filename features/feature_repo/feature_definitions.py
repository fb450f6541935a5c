"""Feast declarations for nba: entities, sources, feature views and the model's feature services.

`nba features apply` copies this file into the workspace repo next to the rendered
feature_store.yaml and nba_features.yaml, so `feast -c <workspace>/feature_repo plan` sees the
same objects. Views are generated from features.catalog so the repo cannot drift from the config.
"""

from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, Project, PushSource, ValueType
from feast.types import Array, Bool, Float32, Int32, Int64, String

from features.catalog import CONTENT_SERVICE, HCP_SERVICE, LOGICAL_TAG, catalog
from features.repo import repo_features_config

cfg = repo_features_config(Path(__file__).resolve().parent)

project = Project(name=cfg.project, description="Next-best-action features for pharma HCP engagement")

hcp = Entity(name="hcp", join_keys=["hcp_id"], value_type=ValueType.STRING, description="pseudonymous HCP id")
content = Entity(name="content", join_keys=["content_id"], value_type=ValueType.STRING, description="approved content piece")

_ENTITIES = {"hcp": hcp, "content": content}
_TYPES = {
    "int32": Int32,
    "int64": Int64,
    "float32": Float32,
    "bool": Bool,
    "string": String,
    "array_int64": Array(Int64),
    "array_float32": Array(Float32),
    "array_string": Array(String),
}


def _declare(view):
    # Absolute paths: FileSource resolves relative paths against the process cwd, not the repo.
    batch = FileSource(
        name=view.source_name,
        path=str(cfg.sources_dir / f"{view.name}.parquet"),
        timestamp_field="event_timestamp",
        description=f"weekly snapshots of {view.name}: a row stamped T aggregates events strictly before T",
    )
    source = PushSource(name=view.push_name, batch_source=batch) if view.pushable else batch
    fv = FeatureView(
        name=view.name,
        entities=[_ENTITIES[view.entity]],
        # Weekly rows + a TTL just over a week keep the point-in-time join small (see catalog.View.dense).
        ttl=timedelta(days=view.ttl_days),
        schema=[Field(name=name, dtype=_TYPES[kind]) for name, kind in view.stored_features],
        source=source,
        online=True,
        description=view.doc,
        tags={"stage": "features", "entity": view.entity, LOGICAL_TAG: ",".join(view.feature_names)},
    )
    return batch, source, fv


_views = catalog(cfg)
# `feast apply` collects Feast objects bound to module-level names, so bind each one.
for _view in _views.values():
    _batch, _src, _fv = _declare(_view)
    globals()[_view.source_name] = _batch
    if _src is not _batch:
        globals()[_view.push_name] = _src
    globals()[_view.name] = _fv

nba_model_v1 = FeatureService(
    name=HCP_SERVICE,
    features=[globals()[v.name] for v in _views.values() if v.entity == "hcp"],
    description="the next-best-action model's input contract, version 1",
    tags={"stage": "features"},
)
nba_content_v1 = FeatureService(
    name=CONTENT_SERVICE,
    features=[globals()["content_catalog"]],
    description="content features for candidate actions, version 1",
    tags={"stage": "features"},
)
