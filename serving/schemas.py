"""Request and response models of the HTTP API (pydantic; BentoML validates and documents them)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.schema import CHANNELS, FEEDBACK_REASONS

Channel = Literal[CHANNELS]  # type: ignore[valid-type]
Outcome = Literal["accepted", "dismissed", "done", "snoozed", "opened", "attended"]
Reason = Literal[FEEDBACK_REASONS]  # type: ignore[valid-type]
_ID = r"^[A-Za-z0-9_.:\-]{1,64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# pandas timestamps cover 1677-09-21 ... 2262-04-11: whole days inside that range are safe to plan on.
FIRST_DATE, LAST_DATE = date(1677, 9, 22), date(2262, 4, 10)


def _in_range(d: date) -> None:
    if not FIRST_DATE <= d <= LAST_DATE:
        raise ValueError(f"{d.isoformat()} is outside the supported range {FIRST_DATE.isoformat()} to {LAST_DATE.isoformat()}")


def _aware(v: datetime | None) -> datetime | None:
    if v is not None and v.tzinfo is None:
        raise ValueError("must be timezone-aware, e.g. 2026-05-01T08:00:00+08:00")
    if v is not None:
        _in_range(v.date())
    return v


def _date(v: date | None) -> date | None:
    if v is not None:
        _in_range(v)
    return v


class RecommendRequest(_Strict):
    """Suggestions for one or many HCPs (pseudonymous ids)."""

    hcp_ids: list[str] = Field(..., min_length=1, description="HCP ids; at most the configured batch limit")
    k: int | None = Field(None, ge=1, le=len(CHANNELS), description="suggestions per HCP (default from config)")
    channels: list[Channel] | None = Field(None, description="only these channels may be suggested")
    as_of: datetime | None = Field(None, description="decision time (timezone-aware); default now")
    rep_id: str | None = Field(None, pattern=_ID)
    window: Literal["today", "week"] | None = Field(
        None,
        description="planning horizon: 'week' (default) suggests the best slot in the coming week; 'today' only slots of the HCP's "
        "local today not yet over (visits, department meetings and calls within working hours). Not together with decision_date.",
    )
    decision_date: date | None = Field(
        None,
        description="plan for this date in the HCP's local time zone (YYYY-MM-DD, from today up to 6 days ahead): only that day's slots "
        "(the remaining ones when it is today). Not together with window.",
        examples=["2026-05-01"],
    )

    @field_validator("hcp_ids")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        import re

        for i, h in enumerate(v):
            if not re.match(_ID, h):
                raise ValueError(f"hcp_ids[{i}] {h[:40]!r} is not a valid id (1-64 of letters, digits, _ . : -)")
        return v

    _as_of = field_validator("as_of")(classmethod(lambda cls, v: _aware(v)))
    _decision_date = field_validator("decision_date")(classmethod(lambda cls, v: _date(v)))

    @model_validator(mode="after")
    def _one_horizon(self) -> "RecommendRequest":
        if self.window is not None and self.decision_date is not None:
            raise ValueError("decision_date: give either window or decision_date, not both")
        return self


class Suggestion(BaseModel):
    """One suggested action, with its id for feedback."""

    suggestion_id: str
    rank: int
    channel: str
    content_id: str | None
    window_start: str = Field(description="start of the suggested window, HCP local time (ISO 8601 with offset)")
    window_end: str
    timezone: str
    expected_response: float = Field(description="predicted probability the HCP responds")
    propensity: float = Field(description="probability with which this action was served")
    policy: Literal["model", "explore", "holdout", "fallback"]
    degraded: bool
    reasons: list[str]
    rules_applied: list[str]


class HcpSuggestions(BaseModel):
    """All suggestions for one HCP."""

    hcp_id: str
    suggestions: list[Suggestion]


class RecommendResponse(BaseModel):
    """Suggestions per HCP and the model that produced them."""

    request_id: str
    model_version: str | None
    as_of: datetime
    degraded: bool
    notes: list[str]
    results: list[HcpSuggestions]


class PlanRequest(_Strict):
    """A rep's day: whom to contact and how, within capacity."""

    rep_id: str = Field(..., pattern=_ID)
    date: date
    visit_capacity: int | None = Field(None, ge=0, le=50, description="override the rep's visits per day")
    message_capacity: int | None = Field(None, ge=0, le=500, description="override the rep's messages per day")
    include_territory: bool = Field(False, description="also rank HCPs in the rep's region who are not yet targets")


class PlannedContact(BaseModel):
    """One contact in a rep's plan."""

    order: int
    hcp_id: str
    expected_value: float
    not_yet_target: bool
    suggestion: Suggestion


class PlanResponse(BaseModel):
    """The packed plan and what did not fit."""

    rep_id: str
    date: date
    model_version: str | None
    visit_capacity: int
    message_capacity: int
    contacts: list[PlannedContact]
    deferred: int = Field(description="candidate contacts left out for capacity")


class FeedbackItem(_Strict):
    """The outcome of a suggestion, from the rep (decision) or the channel (opened, attended)."""

    feedback_id: str = Field(..., pattern=_ID)
    suggestion_id: str = Field(..., pattern=_ID)
    outcome: Outcome
    reason: Reason | None = Field(None, description="why, when dismissed (coded, never free text)")
    ts: datetime
    rep_id: str | None = Field(None, pattern=_ID)

    _ts = field_validator("ts")(classmethod(lambda cls, v: _aware(v)))


class FeedbackResponse(BaseModel):
    """Whether the feedback was stored now (created) or already known (replay)."""

    feedback_id: str
    created: bool
    pushed_online: bool
    push_error: str | None = None
