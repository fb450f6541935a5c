"""The training stage's typed config: model sizes, objective, optimiser, tracking and tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from nba.configuration import StageConfig


class ModelSection(StageConfig):
    """Encoder choice and layer sizes."""

    encoder: Literal["transformer", "gru"] = "transformer"
    d_model: int = Field(32, ge=8, le=1024)
    n_layers: int = Field(1, ge=1, le=12)
    n_heads: int = Field(4, ge=1, le=16)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_seq_len: int = Field(20, ge=1, le=512)
    # Per-HCP response-history counts fed to the response head (training.model.ModelConfig.history).
    history: bool = True
    # Embed each content item's tags (topic, type, form) beside its id (training.model.ModelConfig.content_attributes);
    # needs the dataset's content table (a ready Parquet training set has none: ids only).
    content_tags: bool = True
    # Read the feature stage's response-history counts (a year per channel/weekday/daypart/topic)
    # where the training set has them (training.model.ModelConfig.long_history); needs ``history``.
    long_history: bool = True
    # Candidate-aware terms: each candidate channel's and item's history with this HCP (recency,
    # repetition, wear-out) where the training set has the feature stage's contact-recency and
    # item-history views (training.model.candidates, ModelConfig.candidates).
    candidates: bool = True
    # Per-HCP topic, weekday and daypart response relative to the HCP's own overall rate, shrunk where
    # touches are few (training.model.history, ModelConfig.relative_rates); needs ``long_history``.
    relative_rates: bool = True

    @model_validator(mode="after")
    def _heads_divide_width(self) -> ModelSection:
        if self.encoder == "transformer" and self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        return self


class LossSection(StageConfig):
    """How the logged, policy-confounded data is weighted, and how the heads' losses combine."""

    # The channel/content/slot heads: naive imitates what reps logged; ips: clipped
    # inverse-propensity weighted value; dr: doubly robust value (the response head's predictions
    # as the direct-method term).
    objective: Literal["naive", "ips", "dr"] = "dr"
    # The response head, which the decision rule uses: fitted on every logged touch as it is
    # (none), or weighted by clipped inverse propensity (ips). It models P(response | state,
    # action), and the behaviour policy chose actions from the same observed state, so the fit
    # needs no reweighting; weighting only adds variance: at 10,000 HCPs the unweighted fit's
    # policy reached 0.386 of the oracle's gain from the first week, the IPS-weighted one 0.357 (README).
    response_weighting: Literal["none", "ips"] = "none"
    ips_clip: float = Field(20.0, gt=1.0, le=1e6)
    channel_weight: float = Field(1.0, ge=0.0)
    content_weight: float = Field(1.0, ge=0.0)
    slot_weight: float = Field(1.0, ge=0.0)
    response_weight: float = Field(1.0, ge=0.0)


class TrackingSection(StageConfig):
    """Where runs and models are recorded (MLflow)."""

    uri: str = "sqlite:///.nba/mlflow/mlflow.db"
    artifact_location: str = ".nba/mlflow/artifacts"
    experiment: str = "nba-training"
    registered_model: str = "nba-next-best-action"


class TuneSection(StageConfig):
    """Optuna search: TPE sampler with median pruning; its own database, never MLflow's."""

    trials: int = Field(20, ge=1)
    storage: str = "sqlite:///.nba/optuna/optuna.db"
    study_name: str = "nba-tune"
    # Processes running trials of the one study at once (training/tuning.py): use a PostgreSQL storage.
    workers: int = Field(1, ge=1, le=64)
    startup_trials: int = Field(3, ge=0)
    warmup_epochs: int = Field(1, ge=0)
    # What trials are ranked by (higher is better): "simulator" = the model policy's true share of
    # the oracle's gain over ``sim_weeks`` simulated weeks (needs the dataset's ground truth);
    # "ope_dr" = the doubly robust estimate of the target policy's value on the validation weeks
    # (logs alone); "auto" = simulator when ground truth is present, else ope_dr. Pruning is on
    # the per-epoch validation response AUC (policy value exists only after training).
    objective: Literal["auto", "simulator", "ope_dr"] = "auto"
    encoders: list[Literal["transformer", "gru"]] = Field(default_factory=lambda: ["transformer", "gru"], min_length=1)
    sim_weeks: int = Field(8, ge=1, le=520)
    # The simulator objective draws the world's randomness from the dataset's seed plus this offset,
    # never from the seed `nba evaluate` reports with (the dataset's own), so selection and the
    # reported figure see different draws.
    sim_seed_offset: int = Field(1000, description="added to the dataset's seed for tuning's simulated draws; not 0")

    @field_validator("sim_seed_offset")
    @classmethod
    def _offset_not_zero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must not be 0: tuning would select on the very draws `nba evaluate` reports")
        return v


class OpeSection(StageConfig):
    """Off-policy evaluation of the policy as served (training.served_policy), from the logs alone."""

    # The estimate `nba evaluate` reports and `nba promote` gates on: dr | snips | switch_dr | dr_os | ips | dm | dm_rc | switch_dr_ba | switch_dr_bb (training/ope.py).
    estimator: Literal["dr", "snips", "switch_dr", "dr_os", "ips", "dm", "dm_rc", "switch_dr_ba", "switch_dr_bb"] = "switch_dr_bb"
    n_boot: int = Field(1000, ge=50, le=100_000)  # HCP-clustered bootstrap resamples (ends move ~7% of the width at 200)
    alpha: float = Field(0.05, gt=0.0, lt=0.5)
    # The served policy's exploration: must match serving's `exploration` block (configs/serving.yaml).
    epsilon: float = Field(0.05, ge=0.0, le=1.0)
    top_m: int = Field(3, ge=1, le=8)
    # Where the logs carry no propensity: "auto" estimates the reps' policy (training.propensity)
    # for those rows; "logged" drops them.
    propensity: Literal["auto", "logged"] = "auto"
    switch_tau: float = Field(20.0, gt=0.0)  # switch-DR: weights above this fall back to the reward model
    shrink_lambda: float = Field(20.0, gt=0.0)  # DR with optimistic shrinkage: w -> lambda w / (w^2 + lambda)
    # The verdict "enough overlap to trust" (training.ope.verdict).
    min_ess: float = Field(100.0, ge=1.0)
    min_support: float = Field(0.9, ge=0.0, le=1.0)


class TrainingConfig(StageConfig):
    """Everything `nba train`, `nba tune`, `nba evaluate` and `nba promote` read."""

    data_dir: str = ".nba/data"
    # A ready training set (Parquet, features.build_training_set's columns); when set, the
    # feature store is not asked. Tests and benchmarks use it.
    training_set: str | None = None
    features_config: str | None = None  # features stage YAML (default configs/features.yaml)
    model: ModelSection = ModelSection()
    loss: LossSection = LossSection()
    tracking: TrackingSection = TrackingSection()
    tune: TuneSection = TuneSection()
    ope: OpeSection = OpeSection()
    lr: float = Field(3e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(1024, ge=1)
    # Weeks before the test weeks that select (early stopping, calibration, tuning).
    val_weeks: int = Field(6, ge=1, description="weeks before the test weeks held out for selection")
    # The last weeks of the log, never used for selection: what `nba evaluate` reports (0: report
    # on the validation weeks, flagged as overlapping the selection).
    test_weeks: int = Field(6, ge=0, description="last weeks of the log held out for reporting")
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU training is data-parallel: `workers` forked DDP ranks (training.parallel; under torchrun its world size counts instead), each with
    # `num_threads` torch threads. This network's ops are too small for a second intra-op thread
    # to help (measured on 2 cores: two threads, same wall time per row); a second process gave
    # 1.17x on the 100k bench (memory-bound; README "Performance notes").
    workers: int = Field(2, ge=1, le=64)
    # The loss graph through torch.compile (fused kernels cut the memory traffic that bounds an
    # epoch here); needs a C compiler, falls back to eager; first compile ~20-100 s.
    compile: bool = False
    num_threads: int = Field(1, ge=1, le=256)
    # Where simulated policies start (`nba evaluate`, the tuning objective): "end" continues the
    # world after its logged year, every policy seeing the logged history, as a model trained on
    # that year would be deployed; "beginning" replays the year from week 0 with no history, which
    # measures cold-start value only (per-HCP evidence cannot exist yet).
    sim_start: Literal["end", "beginning"] = "end"
    output_dir: str = ".nba/models"
    # Channels whose touches carry no content (scored and served with none): "auto" reads it from
    # the training weeks (contentless when < 5% of a channel's logged touches name an item,
    # training.contentless), or a list of channel names. Stored in the model bundle.
    contentless_channels: Literal["auto"] | list[str] = "auto"

    @field_validator("contentless_channels")
    @classmethod
    def _contentless_known(cls, v: str | list[str]) -> str | list[str]:
        if not isinstance(v, str):
            from training.contentless import contentless_mask

            contentless_mask(v)  # names an unknown channel
        return v

    @model_validator(mode="after")
    def _tracking_and_tuning_apart(self) -> TrainingConfig:
        # Optuna and MLflow both keep an alembic_version table: one file for both breaks Optuna.
        if self.tune.storage == self.tracking.uri:
            raise ValueError("tune.storage must not be the MLflow tracking database (tracking.uri)")
        return self


def workdir_overrides(workdir: str | Path, data_dir: str | Path, features_config: str | Path) -> dict[str, str]:
    """Training-config overrides that keep a run's inputs, models and MLflow store under ``workdir`` (the quickstart, the world benches)."""
    mlflow_dir = Path(workdir) / "mlflow"
    return {
        "data_dir": str(data_dir),
        "features_config": str(features_config),
        "output_dir": str(Path(workdir) / "models"),
        "tracking.uri": f"sqlite:///{mlflow_dir / 'mlflow.db'}",
        "tracking.artifact_location": str(mlflow_dir / "artifacts"),
    }
