"""The CRM data contract: the tables a pharma CRM exports and every stage downstream reads.

This module is the single source of truth for table names, columns, types, allowed values,
keys and references. The importer validates against it, the simulator writes it, the feature
store reads it. Changing it is changing a public interface: bump ``CONTRACT_VERSION``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CONTRACT_VERSION = "1.1"

# Touchpoint channels (domain brief: offline/private and online). Order is stable: models index
# channels by position in this tuple, so append only.
CHANNELS: tuple[str, ...] = (
    "visit",  # face-to-face visit by the rep
    "department_meeting",  # small in-hospital meeting
    "wechat_push",  # WeChat service-account broadcast push
    "wecom_1to1",  # enterprise-WeChat 1:1 message from the rep
    "email",
    "webinar",  # online meeting / academic webinar
    "conference",  # KOL-level conference
    "phone",
)
# Channels that cost rep time (the rep's visit capacity); the rest count against messages.
REP_TIME_CHANNELS: tuple[str, ...] = ("visit", "department_meeting", "phone")
# Channels whose response is attendance rather than opening.
MEETING_CHANNELS: tuple[str, ...] = ("department_meeting", "webinar", "conference")

HOSPITAL_TIERS: tuple[str, ...] = ("tertiary_a", "tertiary_b", "secondary", "primary")
DEPARTMENTS: tuple[str, ...] = (
    "cardiology",
    "nephrology",
    "oncology",
    "endocrinology",
    "respiratory",
    "neurology",
    "general_medicine",
    "pharmacy",
)
TITLES: tuple[str, ...] = (
    "chief_physician",
    "associate_chief_physician",
    "attending_physician",
    "resident",
    "pharmacist",
)
SEGMENTS: tuple[str, ...] = ("A", "B", "C", "D")
REP_TYPES: tuple[str, ...] = ("chronic", "specialty")
LIFECYCLES: tuple[str, ...] = ("launch", "growth", "maturity", "post_vbp")

TOPICS: tuple[str, ...] = (
    "disease_info",
    "brand_image",
    "clinical_data",
    "guideline",
    "case_study",
    "patient_management",
)
CONTENT_TYPES: tuple[str, ...] = ("article", "video", "meeting_invite", "case", "e_detail")
CONTENT_FORMS: tuple[str, ...] = ("long_read", "short_read", "infographic", "short_video", "long_video", "slides", "live")

DIRECTIONS: tuple[str, ...] = ("outbound", "inbound")
FEEDBACK_DECISIONS: tuple[str, ...] = ("accepted", "dismissed", "done", "snoozed")
FEEDBACK_REASONS: tuple[str, ...] = (
    "not_relevant",
    "already_contacted",
    "hcp_unavailable",
    "wrong_channel",
    "wrong_content",
    "wrong_time",
    "capacity",
    "other",
)

# A time slot is (weekday, daypart) in the HCP's local time. Dayparts split the working day.
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAYPARTS: tuple[str, ...] = ("morning", "midday", "afternoon", "evening")
# Local hour ranges [start, end) for each daypart; hours outside all ranges map to the nearest.
DAYPART_HOURS: dict[str, tuple[int, int]] = {
    "morning": (7, 11),
    "midday": (11, 14),
    "afternoon": (14, 18),
    "evening": (18, 23),
}
# Working hours in the HCP's local time: channels that need the rep and the HCP in hospital
# (visits, department meetings, calls) happen only on these weekdays and dayparts.
WORKING_HOURS_CHANNELS: tuple[str, ...] = REP_TIME_CHANNELS
WORKING_WEEKDAYS: tuple[str, ...] = WEEKDAYS[:5]  # Monday to Friday
WORKING_DAYPARTS: tuple[str, ...] = DAYPARTS[:3]  # morning to afternoon, not the evening

Kind = Literal["string", "int", "float", "bool", "timestamp", "date"]


@dataclass(frozen=True)
class Column:
    """One column of a contract table, with the rules every row must satisfy."""

    name: str
    kind: Kind
    nullable: bool = False
    allowed: tuple[str, ...] | None = None
    min: float | None = None
    max: float | None = None
    doc: str = ""


@dataclass(frozen=True)
class ForeignKey:
    """Values of ``column`` must appear in ``ref_table.ref_column`` (nulls are not checked)."""

    column: str
    ref_table: str
    ref_column: str


@dataclass(frozen=True)
class Table:
    """A contract table: columns, primary key, references, and how re-imports merge."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: tuple[ForeignKey, ...] = ()
    # "snapshot": a CRM re-export replaces rows by key (dimension tables: hcps, content).
    # "events": rows are immutable facts; re-importing the same key is a no-op, a changed
    # row under an existing key is an error.
    merge: Literal["snapshot", "events"] = "snapshot"
    # Timestamp/date column that must not lie in the future at import time.
    event_time: str | None = None
    doc: str = ""
    checks: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> tuple[str, ...]:
        """Column names in contract order."""
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")


def _consent_columns() -> tuple[Column, ...]:
    return tuple(Column(f"consent_{ch}", "bool", doc=f"HCP consented to be contacted by {ch}") for ch in CHANNELS)


PRODUCTS = Table(
    name="products",
    columns=(
        Column("product_id", "string", doc="product code"),
        Column("therapeutic_area", "string", allowed=DEPARTMENTS, doc="department the product is promoted to"),
        Column("lifecycle", "string", allowed=LIFECYCLES, doc="launch, growth, maturity or post-VBP"),
    ),
    primary_key=("product_id",),
    doc="Promoted products and their lifecycle stage, which shapes the channel mix.",
)

REPS = Table(
    name="reps",
    columns=(
        Column("rep_id", "string", doc="pseudonymous rep id"),
        Column("region", "string"),
        Column("rep_type", "string", allowed=REP_TYPES),
        Column("visit_capacity_per_day", "int", min=0, max=50, doc="visits, meetings and calls per working day"),
        Column("message_capacity_per_day", "int", min=0, max=500, doc="1:1 messages per working day"),
    ),
    primary_key=("rep_id",),
    doc="Medical representatives. No names: pseudonymous ids only.",
)

HCPS = Table(
    name="hcps",
    columns=(
        Column("hcp_id", "string", doc="pseudonymous HCP id; never a name"),
        Column("hospital_id", "string"),
        Column("hospital_tier", "string", allowed=HOSPITAL_TIERS),
        Column("department", "string", allowed=DEPARTMENTS),
        Column("title", "string", allowed=TITLES),
        Column("is_kol", "bool"),
        Column("rep_id", "string", doc="owning rep"),
        Column("region", "string"),
        Column("timezone", "string", doc="IANA timezone of the HCP, e.g. Asia/Shanghai"),
        Column("main_product_id", "string", doc="product promoted to this HCP first"),
        Column("beds", "int", nullable=True, min=0, max=5000, doc="department beds (potential)"),
        Column("potential_boxes_month", "float", nullable=True, min=0, doc="patient-count potential"),
        Column("support_share", "float", nullable=True, min=0, max=1, doc="our share of the HCP's prescriptions"),
        Column("segment", "string", nullable=True, allowed=SEGMENTS, doc="A/B/C/D from potential x support"),
        Column("profile_completeness", "float", nullable=True, min=0, max=1, doc="share of profile filled"),
        *_consent_columns(),
    ),
    primary_key=("hcp_id",),
    foreign_keys=(
        ForeignKey("rep_id", "reps", "rep_id"),
        ForeignKey("main_product_id", "products", "product_id"),
    ),
    doc="Healthcare professionals, pseudonymous, with segmentation and per-channel consent.",
)

# The attributes of an HCP that change over time (the rest of ``hcps`` is fixed by who the HCP
# is: hospital, department, title). ``hcps`` holds their values on the export day only.
HCP_DATED_COLUMNS: tuple[str, ...] = (
    "potential_boxes_month",
    "support_share",
    "segment",
    "profile_completeness",
    *(f"consent_{ch}" for ch in CHANNELS),
)

HCP_PROFILE_HISTORY = Table(
    name="hcp_profile_history",
    columns=(
        Column("hcp_id", "string"),
        Column("valid_from", "timestamp", doc="when these values became true in the CRM, timezone-aware"),
        *(col for col in HCPS.columns if col.name in HCP_DATED_COLUMNS),
    ),
    primary_key=("hcp_id", "valid_from"),
    foreign_keys=(ForeignKey("hcp_id", "hcps", "hcp_id"),),
    merge="events",
    event_time="valid_from",
    doc=(
        "Dated versions of the HCP attributes that change (potential, support, segment, completeness, consent). "
        "Without it those attributes are known only from the export day on: training features before it carry "
        "defaults, flagged by `profile_known`, instead of values from the future."
    ),
)

CONTENT = Table(
    name="content",
    columns=(
        Column("content_id", "string"),
        Column("product_id", "string"),
        Column("topic", "string", allowed=TOPICS),
        Column("content_type", "string", allowed=CONTENT_TYPES),
        Column("form", "string", allowed=CONTENT_FORMS),
        Column("approval_code", "string", doc="medical-legal-regulatory approval reference"),
        Column("approved_from", "timestamp"),
        Column("approved_until", "timestamp"),
    ),
    primary_key=("content_id",),
    foreign_keys=(ForeignKey("product_id", "products", "product_id"),),
    checks=("approved_from < approved_until",),
    doc="Approved content. Only content inside its approval window may ever be suggested.",
)

TOUCHPOINTS = Table(
    name="touchpoints",
    columns=(
        Column("event_id", "string"),
        Column("hcp_id", "string"),
        Column("rep_id", "string", nullable=True, doc="null for broadcast pushes"),
        Column("ts", "timestamp", doc="when it happened, timezone-aware (stored as UTC)"),
        Column("channel", "string", allowed=CHANNELS),
        Column("content_id", "string", nullable=True, doc="null for contacts without content"),
        Column("direction", "string", allowed=DIRECTIONS),
        Column("delivered", "bool"),
        Column("opened", "bool", doc="opened / engaged (for meetings: same as attended)"),
        Column("read_seconds", "float", min=0, max=86400),
        Column("forwarded", "bool"),
        Column("favourited", "bool"),
        Column("replied", "bool"),
        Column("attended", "bool", nullable=True, doc="meetings only; null elsewhere"),
        Column("propensity", "float", nullable=True, min=0, max=1, doc="logged probability of this action, if known"),
        Column("suggestion_id", "string", nullable=True, doc="the NBA suggestion this acted on, if any"),
    ),
    primary_key=("event_id",),
    foreign_keys=(
        ForeignKey("hcp_id", "hcps", "hcp_id"),
        ForeignKey("rep_id", "reps", "rep_id"),
        ForeignKey("content_id", "content", "content_id"),
    ),
    merge="events",
    event_time="ts",
    checks=("opened implies delivered", "propensity > 0 when present"),
    doc="Every contact with an HCP and how the HCP responded.",
)

OUTCOMES = Table(
    name="outcomes",
    columns=(
        Column("hcp_id", "string"),
        Column("week_start", "date", doc="Monday of the week"),
        Column("product_id", "string"),
        Column("prescriptions", "int", min=0, doc="boxes of our product prescribed that week"),
        Column("market_boxes", "int", min=0, doc="boxes of all products in the class that week"),
        Column("share", "float", nullable=True, min=0, max=1, doc="prescriptions / market_boxes"),
    ),
    primary_key=("hcp_id", "week_start", "product_id"),
    foreign_keys=(
        ForeignKey("hcp_id", "hcps", "hcp_id"),
        ForeignKey("product_id", "products", "product_id"),
    ),
    merge="events",
    event_time="week_start",
    checks=("prescriptions <= market_boxes",),
    doc="Weekly prescriptions per HCP and product.",
)

FEEDBACK = Table(
    name="feedback",
    columns=(
        Column("feedback_id", "string"),
        Column("suggestion_id", "string"),
        Column("hcp_id", "string"),
        Column("rep_id", "string", nullable=True),
        Column("ts", "timestamp"),
        Column("decision", "string", allowed=FEEDBACK_DECISIONS),
        Column("reason", "string", nullable=True, allowed=FEEDBACK_REASONS, doc="why, when dismissed"),
    ),
    primary_key=("feedback_id",),
    foreign_keys=(
        ForeignKey("hcp_id", "hcps", "hcp_id"),
        ForeignKey("rep_id", "reps", "rep_id"),
    ),
    merge="events",
    event_time="ts",
    doc="Rep decisions on suggestions. Reasons are coded, never free text (no names leak).",
)

# Import order respects references: a table comes after every table it points to.
TABLES: dict[str, Table] = {t.name: t for t in (PRODUCTS, REPS, HCPS, HCP_PROFILE_HISTORY, CONTENT, TOUCHPOINTS, OUTCOMES, FEEDBACK)}
REQUIRED_TABLES: tuple[str, ...] = ("products", "reps", "hcps", "content", "touchpoints", "outcomes")
OPTIONAL_TABLES: tuple[str, ...] = ("hcp_profile_history", "feedback")

# The touch columns every per-HCP state is computed from (the feature transforms; the per-HCP
# index keeps these plus the ids it de-duplicates by): one list, so the two cannot drift apart.
TOUCH_STATE_COLUMNS: tuple[str, ...] = (
    "hcp_id",
    "ts",
    "channel",
    "content_id",
    "direction",
    "delivered",
    "opened",
    "read_seconds",
    "forwarded",
    "favourited",
    "replied",
    "attended",
)

MANIFEST_NAME = "_manifest.json"
# Where the simulator keeps ground truth, apart from the logs. Training never reads it.
GROUND_TRUTH_DIR = "_ground_truth"


def table(name: str) -> Table:
    """The contract table called ``name``, or a KeyError listing the known tables."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"unknown contract table {name!r}; known: {', '.join(TABLES)}") from None


def daypart_of_hour(hour: int) -> str:
    """The daypart a local hour falls into (night hours fold into the nearest daypart)."""
    for name, (start, end) in DAYPART_HOURS.items():
        if start <= hour < end:
            return name
    return "morning" if hour < DAYPART_HOURS["morning"][0] else "evening"
