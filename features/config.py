"""Typed config of the feature store stage (``configs/features.yaml``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nba.configuration import StageConfig


class OnlineStoreConfig(StageConfig):
    """Where online features live: embedded SQLite (default) or Redis."""

    type: Literal["sqlite", "redis"] = "sqlite"
    # sqlite: a file path (default: <workspace>/online_store.db); redis: redis://host:port/db
    url: str | None = None

    @model_validator(mode="after")
    def _redis_needs_url(self) -> OnlineStoreConfig:
        if self.type == "redis" and not (self.url and self.url.startswith("redis://")):
            raise ValueError("online_store.url must be redis://host:port/db when online_store.type is redis")
        return self


class RegistryConfig(StageConfig):
    """Where Feast keeps its definitions: a local file (default) or a SQL database."""

    type: Literal["file", "sql"] = "file"
    # file: a path (default: <workspace>/registry.db); sql: a SQLAlchemy URL, e.g.
    # postgresql+psycopg://postgres@127.0.0.1:5432/nba?sslmode=disable
    url: str | None = None
    cache_ttl_seconds: int = Field(60, ge=0)

    @model_validator(mode="after")
    def _sql_needs_url(self) -> RegistryConfig:
        if self.type == "sql" and not self.url:
            raise ValueError("registry.url must be a SQLAlchemy URL when registry.type is sql")
        return self


class ExamplesConfig(StageConfig):
    """How training examples are cut: the decision grain and the bounds of a day-grain build."""

    # week: one state per HCP and Monday, the Feast sources' snapshot (point-in-time join); day:
    # one per HCP and UTC day with a logged touch, the state as of that midnight (every event
    # before it), computed from the contract tables by the same transforms as the online pushes.
    grain: Literal["week", "day"] = "week"
    # HCP x distinct-time cells computed at once by a day-grain build: bounds its peak memory.
    chunk_cells: int = Field(1_000_000, ge=1)


class FeaturesConfig(StageConfig):
    """Feature store settings: where data comes from, windows, and which backends to use."""

    project: str = Field("nba", pattern=r"^[a-z][a-z0-9_]*$")
    data_dir: Path = Path(".nba/data")
    workspace_dir: Path = Path(".nba/features")
    sequence_length: int = Field(20, ge=1, le=500)
    engagement_windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    visits_window_days: int = Field(90, ge=1, le=3650)
    outcome_windows_weeks: list[int] = Field(default_factory=lambda: [4, 12])
    content_popularity_days: int = Field(30, ge=1, le=3650)
    # Response history per channel, weekday, daypart and topic over this window: an HCP's timing
    # and topic tastes need far more touches than the sequence's last N (about a year of them).
    response_history_days: int = Field(365, ge=1, le=3650)
    # Candidate-aware recency: per channel, touches over these windows and days since its last
    # use; per topic and content type, days since the last delivery (view hcp_contact_recency_*).
    contact_windows_days: list[int] = Field(default_factory=lambda: [7, 21, 60, 180])
    # The item history: each HCP's most recently delivered distinct items over item_history_days,
    # with days since delivered/opened and counts over 30/90/365 days (view hcp_item_history_*).
    # The touch sequence holds only the last sequence_length touches, about five months.
    item_history_items: int = Field(12, ge=1, le=200)
    item_history_days: int = Field(365, ge=30, le=3650)
    # Recency features are capped so "never" and "long ago" share one finite value.
    days_since_cap: float = Field(365.0, gt=0)
    # Entity rows per get_historical_features call: bounds peak memory of large training sets.
    training_chunk_rows: int = Field(250_000, ge=1)
    # HCPs per chunk when building sources: bounds peak memory of the build.
    build_chunk_hcps: int = Field(20_000, ge=1)
    online_store: OnlineStoreConfig = Field(default_factory=OnlineStoreConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    examples: ExamplesConfig = Field(default_factory=ExamplesConfig)

    @field_validator("engagement_windows_days", "outcome_windows_weeks", "contact_windows_days")
    @classmethod
    def _windows(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("needs at least one window")
        if any(w < 1 for w in v):
            raise ValueError("windows must be >= 1")
        if len(set(v)) != len(v):
            raise ValueError("windows must be distinct")
        return sorted(v)

    def resolved(self) -> FeaturesConfig:
        """A copy with data and workspace paths made absolute (FileSource paths must be)."""
        return self.model_copy(update={"data_dir": self.data_dir.resolve(), "workspace_dir": self.workspace_dir.resolve()})

    @property
    def sources_dir(self) -> Path:
        """Directory holding the feature source Parquet files."""
        return self.workspace_dir / "sources"

    @property
    def repo_dir(self) -> Path:
        """The rendered Feast repo (feature_store.yaml + definitions) in the workspace."""
        return self.workspace_dir / "feature_repo"


def load_features_config(path: str | Path | None = None, overrides: dict | None = None) -> FeaturesConfig:
    """Load ``configs/features.yaml`` (or ``path``) with dotted overrides, paths resolved."""
    from nba.configuration import load_config

    return load_config(FeaturesConfig, "features", path, overrides).resolved()
