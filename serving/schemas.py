"""Request and response models of the HTTP API (pydantic; BentoML validates and documents them)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from contract.schema import CHANNELS, FEEDBACK_REASONS

Channel = Literal[CHANNELS]  # type: ignore[valid-type]
# Rep decisions (accepted, dismissed, done, snoozed) and channel outcomes (delivered: reached the
# HCP, not opened so far; opened; attended, for meetings).
Outcome = Literal["accepted", "dismissed", "done", "snoozed", "delivered", "opened", "attended"]
Reason = Literal[FEEDBACK_REASONS]  # type: ignore[valid-type]
_ID = r"^[A-Za-z0-9_.:\-]{1,64}$"
# The most ids a request can carry whatever the configured batch limit (the config's own upper bound).
MAX_IDS = 100_000


_Day = date  # a field is called ``date`` too


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# pandas timestamps cover only 1677-09-21 ... 2262-04-11, and the engine adds weeks to a decision
# time (content validity, windows): dates are accepted well inside that range.
FIRST_DATE, LAST_DATE = date(1900, 1, 1), date(2199, 12, 31)


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

    hcp_ids: list[str] = Field(
        ...,
        min_length=1,
        max_length=MAX_IDS,
        description="HCP ids (pattern ^[A-Za-z0-9_.:-]{1,64}$); at most the configured batch limit",
        json_schema_extra={"items": {"type": "string", "pattern": _ID}},
    )
    k: int | None = Field(None, ge=1, le=len(CHANNELS), description="suggestions per HCP (default from config)")
    channels: list[Channel] | None = Field(None, description="only these channels may be suggested")
    as_of: datetime | None = Field(
        None,
        description="decision time (timezone-aware); default the server's clock. Within the configured clock skew before the server's "
        "time and at most max_lookahead_days after it; an earlier time only with backtest: true.",
        examples=["2026-05-01T08:00:00+08:00"],
    )
    backtest: bool = Field(
        False,
        description="replay a past decision time: as_of may lie anywhere in the past, content approval is judged at as_of, and the answer "
        "is not recorded in the audit trail (its suggestion ids take no feedback)",
    )
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
    locale: Literal["en", "zh-CN"] | None = Field(None, description="language of the reasons: en or zh-CN (default: the service's configured locale)")

    @field_validator("hcp_ids")
    @classmethod
    def _ids(cls, v: list[str]) -> list[str]:
        import re

        # The first bad id only (a 100,000-id list of bad ids must not build 100,000 errors); fullmatch,
        # as ``$`` alone would let a trailing newline through.
        for i, h in enumerate(v):
            if not re.fullmatch(_ID[1:-1], h):
                raise ValueError(f"hcp_ids[{i}] {h[:40]!r} is not a valid id (1-64 of letters, digits, _ . : -)")
        return v

    _as_of = field_validator("as_of")(classmethod(lambda cls, v: _aware(v)))
    _decision_date = field_validator("decision_date")(classmethod(lambda cls, v: _date(v)))

    @model_validator(mode="after")
    def _one_horizon(self) -> RecommendRequest:
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
    expected_response: float = Field(
        description="predicted probability the HCP responds (for systems; reasons show it to the rep as a likelihood "
        "band: high >= 0.5, medium >= 0.2, low below)"
    )
    propensity: float = Field(description="probability with which this action was served")
    policy: Literal["model", "explore", "holdout", "fallback"] = Field(
        description="which policy served it (model, exploration, holdout group, rule-based fallback): for evaluation, never shown in the reasons"
    )
    degraded: bool
    reasons: list[str] = Field(description="sentences for the rep in the request's locale, about the suggested channel only")
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
    unknown_hcp_ids: list[str] = Field(
        default_factory=list, description="requested ids in no reference table and not in the online store: nothing is suggested for them"
    )
    warnings: list[str] = Field(default_factory=list, description="what the caller should know, e.g. an as_of far from the feature data, unknown ids")


class PlanRequest(_Strict):
    """A rep's day: whom to contact and how, within capacity."""

    rep_id: str = Field(..., pattern=_ID)
    date: _Day = Field(
        ...,
        description="the day to plan (YYYY-MM-DD): contacts fall on this date in each HCP's local time; from the server's today up to 6 days ahead",
        examples=["2026-05-01"],
    )
    visit_capacity: int | None = Field(None, ge=0, le=50, description="override the rep's visits per day")
    message_capacity: int | None = Field(None, ge=0, le=500, description="override the rep's messages per day")
    include_territory: bool = Field(False, description="also rank HCPs in the rep's region who are not yet targets")
    locale: Literal["en", "zh-CN"] | None = Field(
        None, description="language of the reasons and explanations: en or zh-CN (default: the service's configured locale)"
    )

    _day = field_validator("date")(classmethod(lambda cls, v: _date(v)))


class PlannedContact(BaseModel):
    """One contact in a rep's plan."""

    order: int
    hcp_id: str
    expected_value: float = Field(
        description="potential-weighted expected responses, the plan's sort key: expected_response × (1 + ln(1 + "
        "the HCP's potential in boxes per month)); 1.0 is one certain response from an HCP without potential. "
        "No currency: compare contacts with each other"
    )
    not_yet_target: bool
    explanation: str = Field("", description="what expected_value counts for this contact, for the rep (likelihood band and potential weight)")
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
    explanation: str = Field("", description="how the contacts are ordered (expected value) and how many fit the day's capacity, for the rep")


class FeedbackItem(_Strict):
    """The outcome of a suggestion, from the rep (decision) or the channel (delivered, opened, attended).

    The feedback id of a channel outcome is the touch's event_id: a CRM export of that touch must
    carry the same event_id (or the suggestion_id), or it counts twice.
    """

    feedback_id: str = Field(..., pattern=_ID)
    suggestion_id: str = Field(..., pattern=_ID)
    outcome: Outcome
    reason: Reason | None = Field(None, description="why, when dismissed (coded, never free text)")
    ts: datetime = Field(
        ...,
        description="when it happened, timezone-aware (stored as UTC); at most the configured clock skew after the server's clock",
        examples=["2026-05-01T10:30:00+08:00"],
    )
    rep_id: str | None = Field(None, pattern=_ID)

    _ts = field_validator("ts")(classmethod(lambda cls, v: _aware(v)))


class FeedbackResponse(BaseModel):
    """Whether the feedback was stored now (created) or already known (replay)."""

    feedback_id: str
    created: bool
    pushed_online: bool
    push_error: str | None = None


class FeedbackBatch(_Strict):
    """Several outcomes, stored in one transaction (all or nothing) and pushed online once per HCP."""

    items: list[FeedbackItem] = Field(..., min_length=1, max_length=MAX_IDS, description="the outcomes; at most the configured feedback_max_items")


class FeedbackBatchResponse(BaseModel):
    """One result per item, in the items' order, and the counts."""

    results: list[FeedbackResponse]
    created: int = Field(description="items stored now (the others were stored before: replays)")
    pushed_hcps: int = Field(description="HCPs whose online features were pushed by this call")


class ErrorField(BaseModel):
    """One field of the request and what is wrong with it."""

    field: str = Field(description="path of the field, e.g. hcp_ids[0], as_of, body or Content-Type")
    message: str


class ErrorDetail(BaseModel):
    """What went wrong: the HTTP status again, a stable code and a message naming the field."""

    status: int = Field(ge=400, le=599)
    code: str = Field(
        description="invalid_request, unauthorized, not_found, method_not_allowed, conflict, payload_too_large, "
        "unsupported_media_type, overloaded (503 with Retry-After), unavailable, timeout, internal_error"
    )
    message: str
    fields: list[ErrorField] | None = Field(None, description="the fields at fault, when the error is about the request's content")


class ErrorResponse(BaseModel):
    """The one body of every 4xx and 5xx answer (built by ``serving.errors``)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "status": 422,
                        "code": "invalid_request",
                        "message": "hcp_ids[0]: hcp_ids[0] 'a b' is not a valid id (1-64 of letters, digits, _ . : -)",
                        "fields": [{"field": "hcp_ids[0]", "message": "hcp_ids[0] 'a b' is not a valid id (1-64 of letters, digits, _ . : -)"}],
                    }
                }
            ]
        }
    )

    error: ErrorDetail
