"""Typed config of the serving stage (``configs/serving.yaml``)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from contract.schema import CHANNELS, LIFECYCLES
from nba.configuration import StageConfig


class GuardrailConfig(StageConfig):
    """Limits applied after the model; see ``serving.guardrails``."""

    weekly_caps: dict[str, int] = Field(
        default_factory=lambda: {
            "visit": 2,
            "department_meeting": 1,
            "wechat_push": 2,
            "wecom_1to1": 3,
            "email": 2,
            "webinar": 1,
            "conference": 1,
            "phone": 2,
        }
    )
    cooldown_after_unanswered: int = Field(3, ge=1)
    cooldown_days: float = Field(14.0, gt=0)
    lifecycle_weights: dict[str, dict[str, float]] = Field(default_factory=dict)

    @field_validator("weekly_caps")
    @classmethod
    def _known_channels(cls, v: dict[str, int]) -> dict[str, int]:
        for ch, cap in v.items():
            if ch not in CHANNELS:
                raise ValueError(f"unknown channel {ch!r}; known: {', '.join(CHANNELS)}")
            if cap < 0:
                raise ValueError(f"cap for {ch!r} must be >= 0")
        return v

    @field_validator("lifecycle_weights")
    @classmethod
    def _known_lifecycles(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for stage, weights in v.items():
            if stage not in LIFECYCLES:
                raise ValueError(f"unknown lifecycle {stage!r}; known: {', '.join(LIFECYCLES)}")
            for ch, w in weights.items():
                if ch not in CHANNELS:
                    raise ValueError(f"{stage}: unknown channel {ch!r}")
                if not 0.0 <= w <= 1.0:
                    raise ValueError(f"{stage}.{ch}: weight must be in [0, 1]")
        return v

    def policy(self):
        """The pure-function view of these limits."""
        from serving.guardrails import GuardrailPolicy

        return GuardrailPolicy(
            weekly_caps=dict(self.weekly_caps),
            cooldown_after_unanswered=self.cooldown_after_unanswered,
            cooldown_days=self.cooldown_days,
            lifecycle_weights={k: dict(v) for k, v in self.lifecycle_weights.items()},
        )


class ExplorationConfig(StageConfig):
    """Randomisation that keeps tomorrow's evaluation honest."""

    holdout_share: float = Field(0.05, ge=0.0, lt=1.0)
    epsilon: float = Field(0.05, ge=0.0, le=1.0)
    top_m: int = Field(3, ge=1)
    salt: str = "nba-holdout-v1"


class ServingConfig(StageConfig):
    """Where the service listens, what it loads, and the limits it enforces."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    model_name: str = "nba-next-best-action"
    model_alias: str = "champion"
    audit_url: str = "sqlite:///.nba/audit.db"
    api_key_hashes: dict[str, str] = Field(default_factory=dict)
    require_auth: bool = True
    max_batch: int = Field(1000, ge=1, le=100_000)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    default_k: int = Field(3, ge=1, le=20)
    guardrails: GuardrailConfig = GuardrailConfig()
    exploration: ExplorationConfig = ExplorationConfig()

    @model_validator(mode="after")
    def _host_is_local_by_default(self) -> "ServingConfig":
        if self.host in ("", "0"):
            raise ValueError("host must be an address, e.g. 127.0.0.1")
        return self
