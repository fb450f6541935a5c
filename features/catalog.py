"""The feature catalog: every view, its entity and its features (name, dtype, default).

Pure data derived from the config. The Feast declarations, the transforms, the defaults for
missing rows and the registry/config consistency check all read this one catalog, so they
cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from contract.schema import CHANNELS, CONTENT_TYPES, DAYPARTS, MEETING_CHANNELS, TOPICS, WEEKDAYS

# Feature kinds and how each is stored (numpy dtype) and declared in Feast (see definitions).
KINDS = ("int32", "int64", "float32", "bool", "string", "array_int64", "array_float32", "array_string")
NUMPY_DTYPES = {"int32": "int32", "int64": "int64", "float32": "float32", "bool": "bool", "string": "object"}

# Dimension rows (profile) are valid for all time: stamped before any label can be.
DIMENSION_TS = datetime(2000, 1, 3, tzinfo=UTC)

HCP_SERVICE = "nba_model_v1"
CONTENT_SERVICE = "nba_content_v1"
MISSING_FLAG = "is_missing"
# Source rows are weekly; a TTL of 8 days always reaches the previous snapshot.
SNAPSHOT_TTL_DAYS = 8
# The view of dated (mutable) HCP attributes and its "values are known" flag.
DATED_PROFILE = "hcp_profile_dated"
PROFILE_KNOWN = "profile_known"
# FeatureView tag holding the logical feature names (packed views store one vector).
LOGICAL_TAG = "nba_features"


@dataclass(frozen=True)
class Feature:
    """One feature column: name, storage kind and the value used when a row is missing."""

    name: str
    kind: str
    default: object


@dataclass(frozen=True)
class View:
    """A feature view: name, entity, features; ``pushable`` views accept fresh rows online."""

    name: str
    entity: str
    features: tuple[Feature, ...]
    pushable: bool = False
    doc: str = ""
    # Packed views store all their (numeric) features as one Array(Float32) per row: Feast's
    # online stores write and read one value per feature, so 200 scalar features per HCP made
    # materialisation and reads ~50x slower. Readers unpack to named columns via the catalog.
    packed: bool = False
    # Time-varying views get a row every weekly snapshot and a TTL just over a week, so the
    # point-in-time join matches at most two source rows per entity row (the latest wins).
    # Without a TTL DuckDB joins every earlier snapshot (x52) before picking one: 12 GB for
    # 1M entity rows. Dimension views (profile) keep one row per entity and no TTL.
    dense: bool = True
    # Array features stored concatenated in one Array(Float32) per row (``<view>_arrays``): the
    # touchpoint sequence's six numeric arrays as one stored value instead of six, since the
    # online stores pay per stored value (a row in SQLite, a field to decode in Redis).
    packed_arrays: tuple[str, ...] = ()

    @property
    def ttl_days(self) -> int:
        """Feast TTL in days (0: never expires)."""
        return SNAPSHOT_TTL_DAYS if self.dense else 0

    @property
    def vector_name(self) -> str:
        """The stored Array(Float32) feature of a packed view."""
        return f"{self.name}_vec"

    @property
    def arrays_name(self) -> str:
        """The stored Array(Float32) holding a view's ``packed_arrays``, one after another."""
        return f"{self.name}_arrays"

    @property
    def stored_features(self) -> list[tuple[str, str]]:
        """(name, kind) of the features as Feast stores them."""
        if self.packed:
            return [(self.vector_name, "array_float32")]
        rest = [(f.name, f.kind) for f in self.features if f.name not in self.packed_arrays]
        return [(self.arrays_name, "array_float32"), *rest] if self.packed_arrays else rest

    @property
    def defaults_vector(self):
        """The packed default row (float32), in feature order."""
        import numpy as np

        return np.array([float(f.default) for f in self.features], dtype=np.float32)

    @property
    def source_name(self) -> str:
        """Name of the batch source (Feast template style: ``<view>_source``)."""
        return f"{self.name}_source"

    @property
    def push_name(self) -> str:
        """Name of the push source feeding this view."""
        return f"{self.name}_push"

    @property
    def feature_names(self) -> list[str]:
        """Feature names in declaration order."""
        return [f.name for f in self.features]


def _i(name: str, default: int = 0) -> Feature:
    return Feature(name, "int32", default)


def _f(name: str, default: float = 0.0) -> Feature:
    return Feature(name, "float32", default)


def _b(name: str, default: bool = False) -> Feature:
    return Feature(name, "bool", default)


def profile_view() -> View:
    """HCP profile that does not change: categorical codes (index into the contract tuples, -1 unknown)."""
    feats = [_i("hospital_tier", -1), _i("department", -1), _i("title", -1), _i("lifecycle", -1), _b("is_kol"), _i("beds", 0)]
    return View("hcp_profile", "hcp", tuple(feats), doc="HCP profile: hospital tier, department, title, KOL", packed=True, dense=False)


def dated_profile_view() -> View:
    """The HCP attributes that change (segmentation, completeness, consent), valid from a date.

    Rows come from the contract's optional ``hcp_profile_history`` (stamped ``valid_from``)
    and from ``hcps`` itself, stamped at the export's last snapshot: a label before that
    never sees export-day values. ``profile_known`` is False where the defaults stand in.
    """
    feats = [
        _i("segment", -1),
        _f("potential_boxes_month"),
        _f("support_share"),
        _f("profile_completeness"),
        _b("profile_qualified"),
        *[_b(f"consent_{ch}") for ch in CHANNELS],
        _b(PROFILE_KNOWN),
    ]
    return View(DATED_PROFILE, "hcp", tuple(feats), doc="segmentation, completeness and consent, as known at the time", packed=True, dense=False)


def engagement_view(windows_days: list[int], cap: float) -> View:
    """Per-channel engagement over each window, plus recency and the unopened-push streak.

    One view for all windows (named after the longest): Feast reads online stores one view
    at a time, so fewer views is the main lever on online latency.
    """
    feats: list[Feature] = []
    for window in windows_days:
        w = f"{window}d"
        for ch in CHANNELS:
            feats += [_i(f"{ch}_sent_{w}"), _i(f"{ch}_opened_{w}"), _f(f"{ch}_open_rate_{w}"), _f(f"{ch}_read_seconds_{w}")]
            feats += [_i(f"{ch}_forwarded_{w}"), _i(f"{ch}_replied_{w}")]
            if ch in MEETING_CHANNELS:
                feats.append(_i(f"{ch}_attended_{w}"))
        feats += [_i(f"touches_{w}"), _i(f"inbound_{w}"), _i(f"favourited_{w}"), _i(f"engaged_{w}")]
    feats += [_f("days_since_last_touch", cap), *[_f(f"days_since_last_{ch}", cap) for ch in CHANNELS]]
    feats += [_f("days_since_last_open", cap), _i("consecutive_unopened_pushes"), _i("touches_total")]
    name = f"hcp_engagement_{max(windows_days)}d"
    return View(name, "hcp", tuple(feats), pushable=True, doc="engagement per channel and window, recency, streaks", packed=True)


def visits_view(window_days: int) -> View:
    """Rep-time contacts and rep feedback on suggestions over the window."""
    w = f"{window_days}d"
    feats = [_i(f"visits_{w}"), _i(f"department_meetings_{w}"), _i(f"phone_calls_{w}"), _i(f"meetings_attended_{w}")]
    feats += [_i(f"suggestions_{d}_{w}") for d in ("accepted", "dismissed", "done", "snoozed")]
    feats.append(_f(f"suggestion_acceptance_rate_{w}"))
    return View(f"hcp_visits_{w}", "hcp", tuple(feats), pushable=True, doc=f"visits, meetings and rep feedback, last {w}", packed=True)


def outcomes_view(windows_weeks: list[int]) -> View:
    """Prescriptions, market and share over completed weeks, and the short-vs-long trend."""
    feats: list[Feature] = []
    for k in windows_weeks:
        feats += [_i(f"rx_{k}w"), _i(f"market_{k}w"), _f(f"share_{k}w")]
    feats += [_f("rx_trend_per_week"), _i(f"weeks_with_rx_{max(windows_weeks)}w")]
    return View(f"hcp_outcomes_{max(windows_weeks)}w", "hcp", tuple(feats), doc="weekly outcomes before the snapshot", packed=True)


def sequence_view(cap: float) -> View:
    """The HCP's last N touchpoints, oldest first, as parallel arrays."""
    feats = [
        Feature("seq_channel", "array_int64", ()),
        Feature("seq_content_id", "array_string", ()),
        Feature("seq_response", "array_int64", ()),
        Feature("seq_read_seconds", "array_float32", ()),
        Feature("seq_gap_days", "array_float32", ()),
        Feature("seq_weekday", "array_int64", ()),
        Feature("seq_daypart", "array_int64", ()),
        Feature("seq_len", "int64", 0),
    ]
    numeric = tuple(f.name for f in feats if f.kind in ("array_int64", "array_float32"))
    return View("hcp_touch_sequence", "hcp", tuple(feats), pushable=True, doc="last N touchpoints as arrays", packed_arrays=numeric)


# The response-history view's blocks, in stored order: each block is sent counts for every value,
# then opened counts for every value. Readers (training.dataset) rely on this layout.
RESPONSE_HISTORY_BLOCKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("channel", CHANNELS),
    ("weekday", WEEKDAYS),
    ("daypart", DAYPARTS),
    ("topic", TOPICS),
)
RESPONSE_HISTORY_PREFIX = "hist_"


def response_history_name(kind: str, value: str, what: str, days: int) -> str:
    """One response-history feature: ``what`` (sent | opened) for ``value`` of block ``kind``."""
    return f"{RESPONSE_HISTORY_PREFIX}{kind}_{value}_{what}_{days}d"


def response_history_names(days: int) -> list[str]:
    """Feature names of the response-history view, in stored order (see RESPONSE_HISTORY_BLOCKS)."""
    return [response_history_name(kind, value, what, days) for kind, values in RESPONSE_HISTORY_BLOCKS for what in ("sent", "opened") for value in values]


def response_history_view(days: int) -> View:
    """Delivered outbound touches and positive responses per channel, local weekday, daypart and topic."""
    feats = tuple(_i(n) for n in response_history_names(days))
    return View(
        f"hcp_response_history_{days}d",
        "hcp",
        feats,
        pushable=True,
        doc=f"delivered touches and responses per channel, weekday, daypart and topic, last {days}d",
        packed=True,
    )


# Candidate-aware recency (training.model's candidate terms and serving's window rules read these).
CONTACT_PREFIX = "cr_"
ITEM_HISTORY_PREFIX = "item_hist_"
# Item-history arrays per item, in stored order; the content ids travel beside them as strings.
ITEM_HISTORY_ARRAYS: tuple[str, ...] = ("days_since_delivered", "days_since_opened", "n30", "n90", "n365")
ITEM_COUNT_WINDOWS_DAYS: tuple[int, ...] = (30, 90, 365)


def contact_recency_names(windows_days: list[int]) -> list[str]:
    """Feature names of the contact-recency view, in stored order: per channel (days since, sent per
    window), then days since the last delivery per topic and per content type, then any touch."""
    names = [f"{CONTACT_PREFIX}{ch}_{what}" for ch in CHANNELS for what in ("days_since", *(f"sent_{w}d" for w in windows_days))]
    names += [f"{CONTACT_PREFIX}topic_{t}_days_since" for t in TOPICS]
    names += [f"{CONTACT_PREFIX}type_{t}_days_since" for t in CONTENT_TYPES]
    return [*names, f"{CONTACT_PREFIX}days_since_any"]


def contact_recency_view(windows_days: list[int], cap: float) -> View:
    """Per channel days since last used and touches per window; per topic and type days since last delivered."""
    feats = tuple(_f(n, cap) if n.endswith("days_since") or n.endswith("days_since_any") else _i(n) for n in contact_recency_names(windows_days))
    return View(
        f"hcp_contact_recency_{max(windows_days)}d",
        "hcp",
        feats,
        pushable=True,
        packed=True,
        doc="recency and repetition per channel, topic and content type (candidate terms, window rules)",
    )


def item_history_view(days: int) -> View:
    """The HCP's most recently delivered distinct items (newest first), each with recency and counts."""
    feats = [Feature(f"{ITEM_HISTORY_PREFIX}content_id", "array_string", ())]
    feats += [Feature(f"{ITEM_HISTORY_PREFIX}{a}", "array_float32", ()) for a in ITEM_HISTORY_ARRAYS]
    feats.append(Feature(f"{ITEM_HISTORY_PREFIX}len", "int64", 0))
    numeric = tuple(f"{ITEM_HISTORY_PREFIX}{a}" for a in ITEM_HISTORY_ARRAYS)
    return View(
        f"hcp_item_history_{days}d",
        "hcp",
        tuple(feats),
        pushable=True,
        packed_arrays=numeric,
        doc=f"recently delivered items with days since delivered/opened and 30/90/365-day counts, last {days}d",
    )


def content_view(popularity_days: int) -> View:
    """Content tags, approval window relative to the snapshot, and recent popularity."""
    w = f"{popularity_days}d"
    feats = [_i("topic", -1), _i("content_type", -1), _i("form", -1), Feature("product_id", "string", "")]
    feats += [_b("is_approved"), _f("approval_days_left"), _f("days_since_approval")]
    feats += [_i(f"sent_{w}"), _i(f"opened_{w}"), _f(f"open_rate_{w}"), _f(f"mean_read_seconds_{w}")]
    return View("content_catalog", "content", tuple(feats), doc="content tags, approval and popularity")


def catalog(cfg) -> dict[str, View]:
    """Every view for ``cfg`` (a FeaturesConfig), in declaration order."""
    cap = float(cfg.days_since_cap)
    views = [profile_view(), dated_profile_view()]
    views += [engagement_view(cfg.engagement_windows_days, cap)]
    views += [visits_view(cfg.visits_window_days), outcomes_view(cfg.outcome_windows_weeks)]
    views += [response_history_view(cfg.response_history_days)]
    views += [contact_recency_view(cfg.contact_windows_days, cap), item_history_view(cfg.item_history_days)]
    views += [sequence_view(cap), content_view(cfg.content_popularity_days)]
    return {v.name: v for v in views}


def hcp_views(cfg) -> list[View]:
    """The HCP-keyed views: the model's feature service."""
    return [v for v in catalog(cfg).values() if v.entity == "hcp"]


def service_views(cfg, service: str) -> list[View]:
    """The views a feature service (``nba_model_v1`` or ``nba_content_v1``) holds."""
    if service == HCP_SERVICE:
        return hcp_views(cfg)
    if service == CONTENT_SERVICE:
        return [catalog(cfg)["content_catalog"]]
    raise KeyError(f"unknown feature service {service!r}; known: {HCP_SERVICE}, {CONTENT_SERVICE}")


def signature(logical: list[str], stored: list[str]) -> list[str]:
    """A view's comparable signature: its logical feature names, then its stored fields."""
    return [*logical, *(f"[stored] {n}" for n in stored)]


def expected_schema(cfg) -> dict[str, list[str]]:
    """View name -> signature, what the registry must hold for this config."""
    return {name: signature(v.feature_names, [n for n, _ in v.stored_features]) for name, v in catalog(cfg).items()}


def schema_diff(expected: dict[str, list[str]], actual: dict[str, list[str]]) -> list[str]:
    """Human-readable differences between two view->features maps (empty when equal)."""
    out = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing:
        out.append(f"views missing: {', '.join(missing)}")
    if extra:
        out.append(f"views not in config: {', '.join(extra)}")
    for name in sorted(set(expected) & set(actual)):
        want, got = expected[name], actual[name]
        if list(want) != list(got):
            plus = [f for f in want if f not in got]
            minus = [f for f in got if f not in want]
            detail = []
            if plus:
                detail.append(f"missing {plus[:5]}{' ...' if len(plus) > 5 else ''}")
            if minus:
                detail.append(f"unexpected {minus[:5]}{' ...' if len(minus) > 5 else ''}")
            out.append(f"view {name}: features differ ({'; '.join(detail) or 'order differs'})")
    return out
