"""Typed config of the experiments stage (``configs/experiments.yaml``): ui, compare, monitor, lift."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from experiments.lift_config import LiftConfig
from nba.configuration import StageConfig, load_config

# Evidently's per-column methods we allow: distances (effect sizes), so a window of 100k rows
# is not "drifted" merely because it is large, as any p-value test would say.
_NUM_METHODS = ("wasserstein", "psi", "kl_div", "jensenshannon", "hellinger", "ed")
_CAT_METHODS = ("jensenshannon", "psi", "kl_div", "hellinger", "TVD")


class UiConfig(StageConfig):
    """`nba ui`: the MLflow UI on the project's tracking store."""

    host: str = "127.0.0.1"
    port: int = Field(5000, ge=0, le=65535)  # 0: any free port
    workers: int = Field(1, ge=1, le=8)


class CompareConfig(StageConfig):
    """`nba compare`: which runs, which params and metrics go in the table."""

    experiment: str | None = None  # default: the training config's tracking.experiment
    max_runs: int = Field(10, ge=1, le=500)
    params: list[str] = Field(default_factory=lambda: ["model.encoder", "loss.objective", "epochs", "lr", "model.d_model", "seed"])
    # Training runs log val/* per epoch; evaluation runs (tag stage=evaluation) log sim/*, ope/*, offline/*.
    metrics: list[str] = Field(
        default_factory=lambda: [
            "sim/model_share_of_oracle_gain",
            "sim/model_responses_per_hcp_week",
            "ope/value",
            "ope/dr_value",
            "ope/snips_value",
            "ope/vs_logged",
            "val/content_ndcg_at_10",
            "val/response_auc",
            "val/response_ece",
            "val/policy_value_dr",
        ]
    )


class Thresholds(StageConfig):
    """When `nba monitor` calls a window drifted (tuned by `nba bench monitor-detection`)."""

    # Evidently per-column drift: normed Wasserstein (numeric) / Jensen-Shannon (categorical).
    column: float = Field(0.1, gt=0)
    # A feature's bar is also at least this multiple of how far it moved between the reference
    # window's own earlier and later weeks (its noise floor); 0 turns that off.
    noise_multiple: float = Field(3.0, ge=0)
    # Population drift: any profile feature (tier, department, beds, consent, ...) moved this far.
    profile_score: float = Field(0.1, gt=0)
    # Response drift: this share of the response features (opens, reads, replies, outcomes) drifted ...
    drifted_share: float = Field(0.25, gt=0, le=1)
    # ... or one of them moved this far (a single collapsed channel moves few columns a lot).
    feature_score: float = Field(0.35, gt=0)
    # ... or a channel's response rate to served suggestions (feedback opened / attended) moved
    # by this share of itself, with a two-proportion |z| this large (audit-window references only).
    response_rate_change: float = Field(0.5, gt=0)
    response_z: float = Field(5.0, gt=0)
    # Activity drift (what was sent, when, where; moves with any policy change): a higher bar.
    activity_share: float = Field(0.5, gt=0, le=1)
    activity_score: float = Field(0.6, gt=0)
    # Touchpoint-sequence summary statistics: any one moved this far.
    sequence_score: float = Field(0.3, gt=0)
    # Prediction drift: total variation distance of the served channel mix,
    channel_mix: float = Field(0.15, gt=0, le=1)
    # Jensen-Shannon distance of the served content mix,
    content_mix: float = Field(0.3, gt=0, le=1)
    # share of served content ids (and of recent sequence content) never seen in the reference,
    new_content_share: float = Field(0.1, gt=0, le=1)
    # and normed Wasserstein distance of the expected-response score distribution.
    score: float = Field(0.3, gt=0)
    # Catalogue: the share of active approved content the serving model cannot score (unknown to
    # its vocabulary) rose this much over the reference's, or a topic has no item it knows.
    unknown_content_share: float = Field(0.05, gt=0, le=1)


class MonitorConfig(StageConfig):
    """`nba monitor`: where the audit trail is, where reports go, and the drift thresholds."""

    audit_url: str | None = None  # default: the serving config's audit_url
    out_dir: Path = Path(".nba/monitor")
    experiment: str = "nba-monitoring"  # MLflow experiment the reports are logged to
    log_to_mlflow: bool = True
    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    thresholds: Thresholds = Field(default_factory=Thresholds)
    # Rows per side scored by Evidently's column tests (a seeded sample beyond this: the normed
    # Wasserstein of 50k rows is within ~0.01 of the full window's, far below any threshold);
    # decoding, sequence summaries and prediction mixes use every row.
    max_rows: int = Field(50_000, ge=100)
    # Rows per side in the HTML report's plots (Evidently renders every point it is given).
    report_rows: int = Field(20_000, ge=100)
    seed: int = 0
    top_features: int = Field(5, ge=1, le=50)
    # Reference from a training run: features as of its dataset's last N weeks (all HCPs).
    reference_weeks: int = Field(4, ge=1, le=52)
    html: bool = True

    @field_validator("num_method", "cat_method")
    @classmethod
    def _method(cls, v: str, info: ValidationInfo) -> str:
        kind, allowed = ("numeric", _NUM_METHODS) if info.field_name == "num_method" else ("categorical", _CAT_METHODS)
        if v not in allowed:
            raise ValueError(f"unknown {kind} drift method {v!r}; use a distance: {', '.join(allowed)}")
        return v


class ExperimentsConfig(StageConfig):
    """The experiments stage: reads what training and serving record."""

    training_config: str | None = None  # training YAML (tracking store); default configs/training.yaml
    serving_config: str | None = None  # serving YAML (audit trail); default configs/serving.yaml
    ui: UiConfig = Field(default_factory=UiConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    lift: LiftConfig = Field(default_factory=LiftConfig)


def load_experiments_config(path: str | Path | None = None, overrides: dict | None = None) -> ExperimentsConfig:
    """``configs/experiments.yaml`` (or ``path``) with dotted overrides."""
    return load_config(ExperimentsConfig, "experiments", path, overrides=overrides)


def training_config(cfg: ExperimentsConfig):
    """The training stage's config (its MLflow tracking store, registered model and data)."""
    from training.config import TrainingConfig

    return load_config(TrainingConfig, "training", cfg.training_config)


def serving_config(cfg: ExperimentsConfig):
    """The serving stage's config (its audit trail)."""
    from serving.config import ServingConfig

    return load_config(ServingConfig, "serving", cfg.serving_config)
