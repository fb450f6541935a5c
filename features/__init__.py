"""nba stage: features. A real Feast feature store over the CRM contract data.

Public API (import from ``features``; nothing heavy is imported until used):

- ``load_features_config(path=None, overrides=None) -> FeaturesConfig``
- ``build_sources(cfg, *, tables=None, progress=True) -> dict``: contract dataset -> Parquet sources.
- ``apply(cfg) -> dict``: render the Feast repo into the workspace and register it.
- ``materialize(cfg, end=None, *, incremental=True, start=None, store=None) -> dict``
- ``materialize_hcps(cfg, hcp_ids, *, tables=None, as_of=None, content=False, store=None) -> dict``: recompute
  only these HCPs' views (as of the end of the newest imported day) and write them online (``nba sync``).
- ``open_store(cfg, *, check=True) -> feast.FeatureStore`` (raises ``FeatureRepoMismatch`` when
  the registry does not match the config).
- ``build_training_set(cfg, entity_df, *, service="nba_model_v1", store=None, progress=True, output="pandas", out_path=None) -> DataFrame | pa.Table | int``:
  point-in-time features for (hcp_id, event_timestamp) rows; extra (label) columns pass through;
  every row returned in input order; ``is_missing`` flags HCPs without features. ``out_path``
  streams big sets to Parquet chunk by chunk (returns the row count). Entity times after the
  last built snapshot + 8 days are refused.
- ``decision_labels(data_dir_or_tables, start=None, end=None, *, outbound_only=True) -> DataFrame``:
  one row per touchpoint: hcp_id, event_timestamp (Monday 00:00 UTC of the touch's week),
  label_channel, label_content_id, label_day_offset (local weekday 0=Mon), label_daypart,
  label_response, label_propensity (NaN when not logged), label_ts.
- ``get_online_features(cfg_or_store, hcp_ids, *, service="nba_model_v1", via="direct") -> DataFrame``: one row
  per id in order; unknown ids get defaults and ``is_missing=True``. ``via="feast"``: the same frame through
  Feast's ``FeatureStore.get_online_features`` (slower; the reference the direct reader is tested against).
- ``push_events(cfg, touchpoints_or_feedback_df_or_list_of_both, *, store=None, history=None, as_of=None) -> dict``:
  recompute the affected HCPs' pushable views and push them online (PushMode.ONLINE).
- ``compute_features_asof(tables, as_of, cfg=None, *, profile_as_of=None) -> DataFrame``: the same features
  from in-memory contract tables, without Feast (equal to Feast offline at snapshot-aligned times when
  ``profile_as_of`` is the build's last snapshot, where the build stamps the ``hcps`` table's changing
  attributes; by default the tables are taken as the world's state at ``as_of``).
- ``catalog(cfg) -> dict[str, View]``: every view and feature with dtype and default.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "FeaturesConfig": "features.config",
    "load_features_config": "features.config",
    "build_sources": "features.build",
    "apply": "features.repo",
    "materialize": "features.repo",
    "materialize_hcps": "features.repo",
    "open_store": "features.repo",
    "FeatureRepoMismatch": "features.repo",
    "build_training_set": "features.retrieval",
    "get_online_features": "features.retrieval",
    "decision_labels": "features.labels",
    "push_events": "features.push",
    "compute_features_asof": "features.snapshots",
    "catalog": "features.catalog",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'features' has no attribute {name!r}")
