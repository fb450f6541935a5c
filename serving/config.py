"""Typed config of the serving stage (``configs/serving.yaml``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator, model_validator

from contract.schema import CHANNELS, LIFECYCLES
from nba.configuration import StageConfig


class WindowRuleConfig(StageConfig):
    """A rule with a window in days: at most ``max`` touches within ``days`` days.

    ``scope: channel`` counts touches on ``channel`` ("at most 1 conference in 60 days": none
    while one happened in the last 60 days); ``scope: item`` counts deliveries of the same content
    item on any channel; ``scope: topic`` counts delivered items of the same topic.
    """

    name: str | None = Field(None, min_length=1, max_length=64, description="shown in reasons; default <channel|item|topic>_<days>d")
    scope: Literal["channel", "item", "topic"] = "channel"
    channel: str | None = None
    days: float = Field(..., gt=0, le=3650)
    max: int = Field(1, ge=1)

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, v: str | None) -> str | None:
        if v is not None and v not in CHANNELS:
            raise ValueError(f"unknown channel {v!r}; known: {', '.join(CHANNELS)}")
        return v

    @model_validator(mode="after")
    def _channel_matches_scope(self) -> WindowRuleConfig:
        if self.scope == "channel" and self.channel is None:
            raise ValueError("channel: a channel-scope rule needs a channel")
        if self.scope != "channel" and self.channel is not None:
            raise ValueError(f"channel: {self.scope}-scope rules count every channel; leave channel out")
        return self

    def label(self) -> str:
        """The rule's name (given, or derived from scope and window)."""
        return self.name or f"{self.channel if self.scope == 'channel' else self.scope}_{self.days:g}d"


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
    # Rules with windows in days (serving.guardrails.WindowRule), checked before ranking.
    window_rules: list[WindowRuleConfig] = Field(
        default_factory=lambda: [
            WindowRuleConfig(channel="conference", days=60, max=1),
            WindowRuleConfig(channel="department_meeting", days=21, max=1),
            WindowRuleConfig(scope="item", days=30, max=1),
        ]
    )

    @field_validator("window_rules")
    @classmethod
    def _unique_names(cls, v: list[WindowRuleConfig]) -> list[WindowRuleConfig]:
        names = [r.label() for r in v]
        dup = sorted({x for x in names if names.count(x) > 1})
        if dup:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dup)}")
        return v

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
        from serving.guardrails import GuardrailPolicy, WindowRule

        return GuardrailPolicy(
            weekly_caps=dict(self.weekly_caps),
            cooldown_after_unanswered=self.cooldown_after_unanswered,
            cooldown_days=self.cooldown_days,
            lifecycle_weights={k: dict(v) for k, v in self.lifecycle_weights.items()},
            window_rules=tuple(WindowRule(r.label(), r.days, r.max, r.scope, r.channel) for r in self.window_rules),
        )


class ExplorationConfig(StageConfig):
    """Randomisation that keeps tomorrow's evaluation honest."""

    holdout_share: float = Field(0.05, ge=0.0, lt=1.0)
    epsilon: float = Field(0.05, ge=0.0, le=1.0)
    top_m: int = Field(3, ge=1)
    salt: str = "nba-holdout-v1"


class RulesConfig(StageConfig):
    """Thresholds of the rule-based policy (``features.rules``) used for holdout and degraded mode."""

    unopened_pushes: int = Field(3, ge=1)
    strong_interest: int = Field(2, ge=1)
    # Content the HCP received within this many days is suggested again only when every approved item was (0: off).
    no_repeat_days: float = Field(30.0, ge=0)


class AdmissionConfig(StageConfig):
    """Admission control per worker (``serving.admission``): past these, /recommend, /plan and /feedback answer 503 with Retry-After."""

    # Requests being served at once (queued for a micro-batch or scored); more wait in the queue.
    # Latency ~ in flight / throughput (Little's law): size it as the latency you accept times
    # what one worker answers per second (16 ~ 80 ms at 200/s).
    max_in_flight: int = Field(16, ge=1, le=100_000)
    # Requests waiting for a slot; one more is refused at once.
    max_queue: int = Field(32, ge=0, le=100_000)
    # A queued request still without a slot after this long is refused (keeps 503s fast and accepted latency bounded).
    queue_timeout_ms: float = Field(20.0, ge=0, le=60_000)
    retry_after_s: int = Field(1, ge=1, le=3600)
    # Refuse a /recommend on arrival when admitted work has already waited this long for the engine thread
    # (or the event loop runs this late): slots alone let a saturated worker take on work it answers late.
    # Feedback and plans only queue within the slots (0: off).
    max_wait_ms: float = Field(60.0, ge=0, le=60_000)


class BatchingConfig(StageConfig):
    """Micro-batching of concurrent /recommend calls (``serving.batching``)."""

    enabled: bool = True
    # HCPs scored in one engine call at most (a larger single request is scored alone).
    max_hcps: int = Field(1000, ge=1, le=100_000)
    # Wait this long for company before scoring (0: none; under load batches form while one is scored).
    max_wait_ms: float = Field(0.0, ge=0, le=1000)


class OnlineReadConfig(StageConfig):
    """How long an online-store call may take before serving falls back to the rules, and when to try the store again."""

    # Tens of milliseconds: a fallback only helps if it comes before the caller gives up. No retries.
    connect_timeout_ms: float = Field(50.0, gt=0, le=10_000)
    read_timeout_ms: float = Field(80.0, gt=0, le=10_000)
    # After a failure, requests skip the store (degraded at once) for this long, then one probes it.
    cooloff_s: float = Field(1.0, gt=0, le=300)
    # Feedback whose push failed is pushed again every this many seconds (0: only when it is replayed),
    # at most push_retry_hcps HCPs a round so a backlog never stalls scoring.
    push_retry_s: float = Field(30.0, ge=0, le=3600)
    push_retry_hcps: int = Field(5, ge=1, le=1000)


class CapacityConfig(StageConfig):
    """A rep's visit and 1:1 message capacity shared across the HCPs of a request (``serving.capacity``)."""

    # Mask the rep-time (visit, department meeting, phone) and 1:1 entries a rep cannot make in the
    # horizon before the slate is drawn, so their HCPs get their next-best channel instead.
    enabled: bool = True
    # How many of each HCP's suggestions a rep is expected to act on: those count against capacity.
    ranks: int = Field(2, ge=1, le=20)
    # Share of the contract's capacity (reps.visit_capacity_per_day, message_capacity_per_day) suggestions may fill.
    utilisation: float = Field(1.0, gt=0, le=1)
    # Working days in a week-long horizon (a one-day horizon counts one).
    working_days: int = Field(5, ge=1, le=7)


class OutcomeCalibrationConfig(StageConfig):
    """Expected responses corrected by the outcomes of served suggestions (``serving.outcome_calibration``)."""

    enabled: bool = True
    # How often the service refits the shift from the audit trail's outcomes (0: never; the stored shift is still applied).
    refresh_s: float = Field(3600.0, ge=0)
    # Outcomes served under the current shift needed before it moves, and the shrinkage prior (rows).
    min_rows: int = Field(200, ge=1)
    prior_rows: float = Field(200.0, ge=0)
    # The shift never exceeds this on the logit scale (about a factor of e^2 on the odds).
    max_abs_shift: float = Field(2.0, gt=0, le=10)


class ServingConfig(StageConfig):
    """Where the service listens, what it loads, and the limits it enforces."""

    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    model_name: str = "nba-next-best-action"
    model_alias: str = "champion"
    audit_url: str = "sqlite:///.nba/audit.db"
    # if_missing: create the audit schema in a database holding no trail; never: create nothing (production:
    # `nba audit init` as the owner role). A trail whose tables went missing is refused either way.
    audit_create: Literal["if_missing", "never"] = "if_missing"
    api_key_hashes: dict[str, str] = Field(default_factory=dict)
    require_auth: bool = True
    max_batch: int = Field(1000, ge=1, le=100_000)
    max_body_bytes: int = Field(2_000_000, ge=1024)
    # Items per POST /feedback/batch (422 past it; the body's byte limit answers 413 first).
    feedback_max_items: int = Field(1000, ge=1, le=100_000)
    default_k: int = Field(3, ge=1, le=20)
    # Language of the texts a rep reads (reasons, rule names, plan explanations; serving.messages);
    # a request may ask for another with its own ``locale``.
    locale: Literal["en", "zh-CN"] = "en"
    guardrails: GuardrailConfig = GuardrailConfig()
    exploration: ExplorationConfig = ExplorationConfig()
    rules: RulesConfig = RulesConfig()
    capacity: CapacityConfig = CapacityConfig()
    outcome_calibration: OutcomeCalibrationConfig = OutcomeCalibrationConfig()
    # Where the champion is registered (the training stage's tracking URI).
    tracking_uri: str = "sqlite:///.nba/mlflow/mlflow.db"
    # Feature stage YAML (default configs/features.yaml); its data_dir gives the reference
    # tables (HCP time zones and reps, content approval windows) unless data_dir is set here.
    features_config: str | None = None
    data_dir: str | None = None
    # The most seconds a change to the reference tables (content approvals, owners, reps) takes to
    # reach a running service: the dataset is polled every half of it. 0: read once at start-up.
    reference_refresh_s: float = Field(60.0, ge=0)
    # Without a champion the service is not ready, unless a rules-only deployment is intended.
    require_model: bool = True
    # Features unavailable: consent cannot be checked, so only channels needing no digital consent.
    degraded_channels: list[str] = Field(default_factory=lambda: ["visit"])
    # Channels served without content when no champion says which (its bundle stores what its training data showed).
    contentless_channels: list[str] = Field(default_factory=lambda: ["phone"])
    # Content must stay approved this many days past the suggestion (the window it may be used in).
    content_valid_days: float = Field(7.0, ge=0)
    suggestion_ttl_days: float = Field(7.0, gt=0)
    # Expiry policy of the nightly file (serving.crm_formats): a suggestion leaves the rep's list this long after its
    # window ends, capped by suggestion_ttl_days after the run and by its content's approval end.
    expiry_grace_days: float = Field(2.0, ge=0)
    # Shape of `nba recommend --all` files unless --format says otherwise: generic | veeva (Vault CRM) | salesforce (LSC).
    crm_format: Literal["generic", "veeva", "salesforce"] = "generic"
    batch_chunk: int = Field(5000, ge=1)
    # Intra-op threads for the model: more than the cores free per worker makes small
    # requests spin and wait (one HCP took ~80 ms with the default on a busy 2-core box).
    torch_threads: int = Field(1, ge=1, le=256)
    workers: int = Field(1, ge=1, le=64)
    # Time rules (serving.clock): a feedback ts or an as_of may run this far ahead of the server's clock
    # (callers' clocks drift); an as_of further back needs backtest: true (not recorded).
    max_clock_skew_s: float = Field(300.0, ge=0, le=86_400)
    # How far ahead an as_of may look (planning the coming week needs none: windows are already ahead).
    max_lookahead_days: float = Field(7.0, ge=0, le=366)
    # The server's clock pinned to this instant, for a sandbox world whose data lies in the past
    # (tests, benchmarks, demos); null: the system clock. Never set in production.
    fixed_clock: datetime | None = None
    online_read: OnlineReadConfig = OnlineReadConfig()
    # A decision time this many days beyond the newest feature snapshot (or before the oldest) draws a warning in the response.
    as_of_warn_days: float = Field(30.0, gt=0)
    # The event loop (HTTP) and the engine thread share one GIL: with Python's default 5 ms slice
    # every step of a request could wait 5 ms behind a scoring thread (sys.setswitchinterval).
    gil_switch_interval_ms: float = Field(1.0, gt=0, le=100)
    # BentoML's last-resort bound on one request (504 past it). Admission control sheds long before;
    # BentoML keeps a timer per request this long (~5 KB each: 60 s at 200/s is ~60 MB resident).
    request_timeout_s: float = Field(60.0, gt=0, le=3600)
    admission: AdmissionConfig = AdmissionConfig()
    batching: BatchingConfig = BatchingConfig()

    @field_validator("degraded_channels", "contentless_channels")
    @classmethod
    def _degraded_known(cls, v: list[str]) -> list[str]:
        for ch in v:
            if ch not in CHANNELS:
                raise ValueError(f"unknown channel {ch!r}; known: {', '.join(CHANNELS)}")
        return v

    @field_validator("fixed_clock")
    @classmethod
    def _clock_aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("must be timezone-aware, e.g. 2025-05-06T00:00:00+00:00")
        return v

    @model_validator(mode="after")
    def _host_is_local_by_default(self) -> ServingConfig:
        if self.host in ("", "0"):
            raise ValueError("host must be an address, e.g. 127.0.0.1")
        return self
