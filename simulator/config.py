"""Typed config of the simulated world: size, seed, and every knob of the hidden response model."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from contract.schema import CHANNELS, SEGMENTS, TOPICS
from nba.configuration import StageConfig

_CHANNEL_SET = frozenset(CHANNELS)


def _check_channels(value: dict, what: str) -> dict:
    unknown = sorted(set(value) - _CHANNEL_SET)
    if unknown:
        raise ValueError(f"{what}: unknown channel(s) {unknown}; known: {', '.join(CHANNELS)}")
    return value


class PopulationConfig(StageConfig):
    """Hospitals, HCPs, reps, consent and segmentation."""

    hcps_per_hospital: float = Field(25.0, gt=1)
    # Shares of hospitals per tier (tertiary_a, tertiary_b, secondary, primary).
    hospital_tier_shares: tuple[float, float, float, float] = (0.12, 0.18, 0.35, 0.35)
    # Relative number of HCPs a hospital of each tier employs (big tertiary hospitals hold most).
    hospital_tier_size: tuple[float, float, float, float] = (5.0, 3.0, 1.5, 0.6)
    consent: dict[str, float] = Field(
        default_factory=lambda: {
            "visit": 0.96,
            "department_meeting": 0.9,
            "wechat_push": 0.78,
            "wecom_1to1": 0.55,
            "email": 0.45,
            "webinar": 0.72,
            "conference": 0.85,
            "phone": 0.6,
        }
    )
    specialty_departments: tuple[str, ...] = ("oncology", "neurology")
    chronic_rep_max_hcps: int = Field(120, ge=10)
    specialty_rep_target_hcps: int = Field(90, ge=10)
    # Quantile cuts of potential and support that split the A/B/C/D quadrants.
    segment_potential_quantile: float = Field(0.6, gt=0, lt=1)
    segment_support_quantile: float = Field(0.6, gt=0, lt=1)
    profile_completeness_mean: float = Field(0.66, gt=0, lt=1)
    content_per_product: int = Field(24, ge=0, le=500)

    @field_validator("consent")
    @classmethod
    def _consent_channels(cls, v: dict[str, float]) -> dict[str, float]:
        _check_channels(v, "consent")
        missing = sorted(_CHANNEL_SET - set(v))
        if missing:
            raise ValueError(f"consent: missing channel(s) {missing}")
        bad = {k: x for k, x in v.items() if not 0 <= x <= 1}
        if bad:
            raise ValueError(f"consent: rates must lie in [0, 1], got {bad}")
        return v

    @field_validator("hospital_tier_shares", "hospital_tier_size")
    @classmethod
    def _positive(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(x < 0 for x in v) or sum(v) <= 0:
            raise ValueError("must be non-negative with a positive sum")
        return v


class ResponseConfig(StageConfig):
    """The hidden response model: P(opened/attended) = delivery x link(logit).

    ``link: logistic`` is ``sigmoid(logit)``; ``link: saturating`` is ``1 - exp(-exp(logit +
    saturating_offset))`` (complementary log-log: each unit of logit multiplies a response
    *rate*, so good touches saturate towards delivery faster and poor ones fade slower). The
    default offset ln(ln 2) makes both links agree at logit 0.
    """

    base_logit: dict[str, float] = Field(
        default_factory=lambda: {
            "visit": 0.6,
            "department_meeting": -0.2,
            "wechat_push": -1.3,
            "wecom_1to1": -0.4,
            "email": -0.9,
            "webinar": -0.9,
            "conference": -0.3,
            "phone": -0.5,
        }
    )
    # Logit change per simulated year (survey: email and online meetings rising; WeChat
    # broadcasts and face-to-face visits declining).
    trend_per_year: dict[str, float] = Field(
        default_factory=lambda: {
            "visit": -0.6,
            "department_meeting": -0.1,
            "wechat_push": -0.8,
            "wecom_1to1": 0.1,
            "email": 1.0,
            "webinar": 1.0,
            "conference": 0.0,
            "phone": -0.2,
        }
    )
    delivery: dict[str, float] = Field(
        default_factory=lambda: {
            "visit": 0.8,
            "department_meeting": 0.9,
            "wechat_push": 0.97,
            "wecom_1to1": 0.95,
            "email": 0.92,
            "webinar": 0.96,
            "conference": 0.95,
            "phone": 0.7,
        }
    )
    channel_affinity_sd: float = Field(0.8, ge=0)
    topic_affinity_sd: float = Field(0.7, ge=0)
    content_quality_sd: float = Field(0.3, ge=0)
    responsiveness_sd: float = Field(0.5, ge=0)
    weekday_match: float = Field(0.6, ge=0)
    daypart_match: float = Field(1.0, ge=0)
    # Per-HCP spread of how much timing matters: each HCP's weekday and daypart terms are
    # scaled by a mean-1 lognormal factor with this sd (0: every HCP alike, as before).
    timing_sd: float = Field(0.0, ge=0, le=3)
    # Confounding: HCPs in high tiers (tertiary A, KOLs, high support) respond better anyway.
    tier_responsiveness: float = Field(0.6, ge=0)
    link: Literal["logistic", "saturating"] = "logistic"
    saturating_offset: float = Field(-0.3665, ge=-5, le=5)

    @field_validator("base_logit", "trend_per_year", "delivery")
    @classmethod
    def _channels(cls, v: dict[str, float], info) -> dict[str, float]:
        _check_channels(v, info.field_name)
        if info.field_name == "delivery" and any(not 0 < x <= 1 for x in v.values()):
            raise ValueError("delivery: rates must lie in (0, 1]")
        return v


class FatigueConfig(StageConfig):
    """Contacting too often lowers response: a per-channel load that decays weekly."""

    per_touch_logit: float = Field(0.45, ge=0)
    cross_channel: float = Field(0.25, ge=0, le=1)
    decay_per_week: float = Field(0.5, ge=0, lt=1)


class RepetitionConfig(StageConfig):
    """Content repetition decay: audiences habituate to an item they have already received.

    Each earlier delivery of an item to an HCP counts as one exposure, halving every
    ``half_life_days``; the item's logit for that HCP drops by ``per_exposure_logit`` per
    exposure (counted at the start of the week). 0 turns the effect off (no state is kept).
    """

    per_exposure_logit: float = Field(0.0, ge=0, le=10)
    half_life_days: float = Field(30.0, gt=0, le=3650)

    @property
    def enabled(self) -> bool:
        """True when repeated items lose response."""
        return self.per_exposure_logit > 0


class WearoutConfig(StageConfig):
    """Per-channel wear-out: a touch within ``window_days[channel]`` days of the HCP's previous
    delivered touch on that channel loses ``penalty_logit`` (channels not listed: no window)."""

    window_days: dict[str, int] = Field(default_factory=dict)
    penalty_logit: float = Field(0.8, ge=0, le=10)

    @field_validator("window_days")
    @classmethod
    def _windows(cls, v: dict[str, int]) -> dict[str, int]:
        _check_channels(v, "window_days")
        bad = {k: x for k, x in v.items() if not 0 <= x <= 3650}
        if bad:
            raise ValueError(f"window_days: days must lie in [0, 3650], got {bad}")
        return v

    @property
    def enabled(self) -> bool:
        """True when some channel has a window and the penalty is positive."""
        return self.penalty_logit > 0 and any(x > 0 for x in self.window_days.values())


class WarmupConfig(StageConfig):
    """Cross-channel warm-up: recent opens on digital ``source_channels`` make ``target_channels`` land better.

    Opens on the sources are counted with a ``half_life_days`` decay (at the start of the week);
    the targets' logit rises by ``max_logit * (1 - exp(-opens / scale))``. 0 turns it off.
    """

    max_logit: float = Field(0.0, ge=0, le=10)
    scale: float = Field(1.5, gt=0)
    half_life_days: float = Field(21.0, gt=0, le=3650)
    source_channels: list[str] = Field(default_factory=lambda: ["wechat_push", "email", "webinar"])
    target_channels: list[str] = Field(default_factory=lambda: ["visit", "wecom_1to1"])

    @field_validator("source_channels", "target_channels")
    @classmethod
    def _known(cls, v: list[str], info) -> list[str]:
        _check_channels(dict.fromkeys(v), info.field_name)
        return v

    @property
    def enabled(self) -> bool:
        """True when digital opens raise the targets' response."""
        return self.max_logit > 0 and bool(self.source_channels) and bool(self.target_channels)


class AdoptionConfig(StageConfig):
    """The adoption ladder (0 unaware .. 4 advocating) that effective touches climb."""

    # Adoption gained per positive response, before lifecycle, topic-stage fit and ceiling.
    lift: dict[str, float] = Field(
        default_factory=lambda: {
            "visit": 0.10,
            "department_meeting": 0.12,
            "wechat_push": 0.025,
            "wecom_1to1": 0.05,
            "email": 0.04,
            "webinar": 0.07,
            "conference": 0.10,
            "phone": 0.03,
        }
    )
    decay_per_week: float = Field(0.006, ge=0, lt=1)
    share_slope: float = Field(1.4, gt=0)

    @field_validator("lift")
    @classmethod
    def _channels(cls, v: dict[str, float]) -> dict[str, float]:
        return _check_channels(v, "lift")


class BehaviourConfig(StageConfig):
    """Today's logging policy: tier-driven visits, weekly broadcasts, brief's rules, exploration."""

    # Floor mixed into every decision's channel distribution: every eligible action gets > 0.
    exploration: float = Field(0.06, gt=0, le=1)
    content_exploration: float = Field(0.1, gt=0, le=1)
    # 0: rep visits ignore tiers; 1: stock skew towards A; >1: stronger.
    confounding: float = Field(1.0, ge=0)
    visit_weight_by_segment: dict[str, float] = Field(default_factory=lambda: {"A": 0.9, "B": 0.55, "C": 0.35, "D": 0.12})
    rep_weights: dict[str, float] = Field(default_factory=lambda: {"none": 1.0, "department_meeting": 0.06, "phone": 0.05, "wecom_1to1": 0.12})
    marketing_weights: dict[str, float] = Field(default_factory=lambda: {"none": 0.5, "wechat_push": 3.0, "email": 0.2, "webinar": 0.15, "conference": 0.05})
    kol_conference_weight: float = Field(0.6, ge=0)
    unopened_pushes_for_visit: int = Field(3, ge=1)
    interest_for_visit: float = Field(2.0, gt=0)
    rule_visit_boost: float = Field(4.0, ge=1)
    capacity_utilisation: float = Field(0.8, gt=0, le=1)
    # Content habits. Marketing keeps one campaign item per (product, channel) for
    # ``campaign_weeks`` weeks before rotating (1: a new one every week). With probability
    # ``repeat_last_item`` the sender reuses the item this HCP last got on the channel, if still
    # eligible (reps who keep showing their favourite deck).
    campaign_weeks: int = Field(1, ge=1, le=520)
    repeat_last_item: float = Field(0.0, ge=0, lt=1)
    # Slot habits: share of rep touches placed at the HCP's observed best slot (else a random
    # working slot), and marketing's fixed send slot per channel as [weekday 0-6 or -1 for a
    # random weekday, daypart 0-3] (a WeChat push of personal content goes at the HCP's slot).
    preferred_slot_share: float = Field(0.5, ge=0, le=1)
    campaign_slots: dict[str, tuple[int, int]] = Field(
        default_factory=lambda: {"wechat_push": (1, 3), "webinar": (3, 3), "conference": (5, 0), "email": (-1, 0)}
    )

    @field_validator("visit_weight_by_segment")
    @classmethod
    def _segments(cls, v: dict[str, float]) -> dict[str, float]:
        if set(v) != set(SEGMENTS):
            raise ValueError(f"visit_weight_by_segment: need exactly the segments {SEGMENTS}, got {sorted(v)}")
        return v

    @field_validator("campaign_slots")
    @classmethod
    def _slots(cls, v: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        _check_channels(v, "campaign_slots")
        allowed = {"wechat_push", "email", "webinar", "conference"}
        other = sorted(set(v) - allowed)
        if other:
            raise ValueError(f"campaign_slots: only marketing channels {sorted(allowed)} have a send slot, got {other}")
        bad = {k: s for k, s in v.items() if not (-1 <= s[0] <= 6 and 0 <= s[1] <= 3)}
        if bad:
            raise ValueError(f"campaign_slots: need [weekday -1..6, daypart 0..3], got {bad}")
        return v


class ConstraintsConfig(StageConfig):
    """Hard limits every policy must respect (the environment drops and counts violations)."""

    channel_cap_per_week: int = Field(1, ge=1, le=7)
    max_touches_per_week: int = Field(3, ge=1, le=20)
    # Weeks that must pass between two touches of an HCP on a channel (conferences are rare).
    min_weeks_between: dict[str, int] = Field(default_factory=lambda: {"conference": 12, "department_meeting": 4, "webinar": 2})

    @field_validator("min_weeks_between")
    @classmethod
    def _gaps(cls, v: dict[str, int]) -> dict[str, int]:
        _check_channels(v, "min_weeks_between")
        if any(x < 0 for x in v.values()):
            raise ValueError("min_weeks_between: gaps must be >= 0")
        return v


class DriftEvent(StageConfig):
    """A change of the world at a week: adds ``delta_logit`` to a channel's response from then on."""

    week: int = Field(ge=0)
    channel: str
    delta_logit: float

    @field_validator("channel")
    @classmethod
    def _channel(cls, v: str) -> str:
        if v not in _CHANNEL_SET:
            raise ValueError(f"unknown channel {v!r}; known: {', '.join(CHANNELS)}")
        return v


class ContentCampaign(StageConfig):
    """A new content topic appears: a campaign of new content items on ``topic``, approved from ``week``.

    The catalogue gains ``items_per_product`` new items per product (ids after the existing
    ones), spread over content types so every content channel can carry them; their hidden
    quality is ``quality`` (a logit bonus: a fresh, well-made topic HCPs respond to).
    """

    week: int = Field(ge=0)
    topic: str
    items_per_product: int = Field(6, ge=1, le=100)
    quality: float = 0.8

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if v not in TOPICS:
            raise ValueError(f"unknown topic {v!r}; known: {', '.join(TOPICS)}")
        return v


class PopulationShift(StageConfig):
    """A population shift: a cohort of HCPs joins the CRM at ``week`` (a roll-out to new hospitals).

    ``share`` of all HCPs, drawn with weights ``tier_weights`` per hospital tier (tertiary_a,
    tertiary_b, secondary, primary), are not onboarded before ``week``: no consent yet, so no
    touch, no inbound message, and no suggestion is asked for them. From ``week`` on they are
    served like everyone else, cold (no history), so the served population's mix shifts.
    """

    week: int = Field(ge=0)
    share: float = Field(0.3, gt=0, lt=1)
    tier_weights: tuple[float, float, float, float] = (0.0, 0.2, 1.0, 3.0)

    @field_validator("tier_weights")
    @classmethod
    def _weights(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(x < 0 for x in v) or sum(v) <= 0:
            raise ValueError("must be non-negative with a positive sum")
        return v


class DriftConfig(StageConfig):
    """Drift injection, all scheduled by week (empty: a stationary-trend world).

    ``events``: a channel's response shifts (e.g. collapses); ``content``: a new content topic
    appears; ``population``: a new cohort of HCPs joins. Weeks may lie past the simulated period,
    so a world continued after its logs (closed-loop serving) drifts while being served.
    """

    events: list[DriftEvent] = Field(default_factory=list)
    content: list[ContentCampaign] = Field(default_factory=list)
    population: list[PopulationShift] = Field(default_factory=list)


class SimulatorConfig(StageConfig):
    """The simulator stage: world size, seed, output, and the hidden world's knobs."""

    seed: int = Field(7, ge=0)
    hcps: int = Field(2000, ge=20, le=2_000_000)
    days: int = Field(365, ge=28, le=3660)
    start_date: dt.date = dt.date(2025, 1, 6)
    out: Path = Path(".nba/data")
    oracle_touches_per_week: int = Field(2, ge=1, le=8)
    # Channels whose touches carry no content (a phone call is a conversation); a world where
    # calls carry content, like some customers' logs, lists none.
    contentless_channels: list[str] = Field(default_factory=lambda: ["phone"])
    population: PopulationConfig = Field(default_factory=PopulationConfig)
    response: ResponseConfig = Field(default_factory=ResponseConfig)
    fatigue: FatigueConfig = Field(default_factory=FatigueConfig)
    repetition: RepetitionConfig = Field(default_factory=RepetitionConfig)
    wearout: WearoutConfig = Field(default_factory=WearoutConfig)
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)
    adoption: AdoptionConfig = Field(default_factory=AdoptionConfig)
    behaviour: BehaviourConfig = Field(default_factory=BehaviourConfig)
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)

    @field_validator("contentless_channels")
    @classmethod
    def _contentless(cls, v: list[str]) -> list[str]:
        _check_channels(dict.fromkeys(v), "contentless_channels")
        return v

    @field_validator("start_date")
    @classmethod
    def _monday(cls, v: dt.date) -> dt.date:
        if v.weekday() != 0:
            raise ValueError(f"must be a Monday (weeks start on Monday), got {v} ({v.strftime('%A')})")
        return v

    @model_validator(mode="after")
    def _not_future(self) -> SimulatorConfig:
        end = self.start_date + dt.timedelta(days=self.days)
        if end > dt.date.today():
            raise ValueError(f"start_date + days = {end} lies in the future; contract tables may not hold future timestamps")
        return self

    @property
    def weeks(self) -> int:
        """Simulated whole weeks (days // 7)."""
        return self.days // 7
