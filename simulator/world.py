"""The simulated world as arrays: what the CRM shows (``PublicWorld``) and what it hides (``HiddenTruth``).

Everything is indexed by position: HCP ``i`` is row ``i`` of the hcps table, channel ``c`` is
``contract.schema.CHANNELS[c]``, content ``k`` is row ``k`` of the content table, and so on.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import numpy as np

from contract.schema import CHANNELS, MEETING_CHANNELS, REP_TIME_CHANNELS

# Regions of China with their IANA timezone and UTC offset (none observes DST, so fixed
# offsets are exact). A few HCPs in the far west keep Xinjiang time.
REGIONS: tuple[str, ...] = ("east", "north", "south", "central", "southwest", "northwest", "northeast")
REGION_WEIGHTS: tuple[float, ...] = (0.26, 0.17, 0.17, 0.14, 0.12, 0.06, 0.08)
TIMEZONE_OFFSETS_H: dict[str, int] = {"Asia/Shanghai": 8, "Asia/Hong_Kong": 8, "Asia/Urumqi": 6}
TIMEZONES: tuple[str, ...] = tuple(TIMEZONE_OFFSETS_H)

CH = {name: i for i, name in enumerate(CHANNELS)}
N_CHANNELS = len(CHANNELS)
REP_TIME_MASK = np.array([c in REP_TIME_CHANNELS for c in CHANNELS])
MEETING_MASK = np.array([c in MEETING_CHANNELS for c in CHANNELS])
# Channels sent by the rep personally (1:1 messages count against message capacity).
REP_CHANNEL_MASK = REP_TIME_MASK | (np.arange(N_CHANNELS) == CH["wecom_1to1"])
# Channels a touch carries no content on in the default world (a phone call is a
# conversation). A world's own set is ``SimulatorConfig.contentless_channels``: read it with
# ``contentless_mask(cfg.contentless_channels)``, never this constant, wherever a config exists.
CONTENTLESS_MASK = np.array([c == "phone" for c in CHANNELS])
# Working hours only for channels that need the rep or the HCP in hospital.
WORKDAY_ONLY_MASK = REP_TIME_MASK.copy()


def contentless_mask(channels) -> np.ndarray:
    """(C,) bool mask of the named channels (a world's ``contentless_channels``)."""
    names = set(channels)
    unknown = sorted(names - set(CHANNELS))
    if unknown:
        raise ValueError(f"contentless_channels: unknown channel(s) {unknown}; known: {', '.join(CHANNELS)}")
    return np.array([c in names for c in CHANNELS])


@dataclass
class PublicWorld:
    """What the CRM exports: entities, segmentation, consent, content catalogue (as index arrays)."""

    start_date: dt.date
    weeks: int
    # products
    product_ids: list[str]
    product_area: np.ndarray  # department index
    product_lifecycle: np.ndarray  # LIFECYCLES index
    # reps
    rep_ids: list[str]
    rep_region: np.ndarray
    rep_type: np.ndarray  # REP_TYPES index
    rep_visit_cap_day: np.ndarray
    rep_msg_cap_day: np.ndarray
    # hcps
    hcp_ids: list[str]
    hospital_ids: list[str]
    hcp_hospital: np.ndarray
    hcp_tier: np.ndarray  # HOSPITAL_TIERS index
    hcp_dept: np.ndarray
    hcp_title: np.ndarray
    hcp_kol: np.ndarray
    hcp_rep: np.ndarray
    hcp_region: np.ndarray
    hcp_tz: np.ndarray  # TIMEZONES index
    hcp_product: np.ndarray
    hcp_beds: np.ndarray
    hcp_potential_month: np.ndarray
    hcp_support: np.ndarray
    hcp_segment: np.ndarray  # SEGMENTS index
    hcp_profile: np.ndarray
    consent: np.ndarray  # (n_hcps, n_channels) bool
    # content
    content_ids: list[str]
    content_product: np.ndarray
    content_topic: np.ndarray
    content_type: np.ndarray
    content_form: np.ndarray
    content_approval: list[str]
    content_from_us: np.ndarray  # approved_from, microseconds since epoch UTC
    content_until_us: np.ndarray

    @property
    def n_hcps(self) -> int:
        """Number of HCPs."""
        return len(self.hcp_ids)

    @property
    def tz_offset_h(self) -> np.ndarray:
        """UTC offset in hours of each HCP's timezone."""
        return np.array([TIMEZONE_OFFSETS_H[t] for t in TIMEZONES], dtype=np.int64)[self.hcp_tz]

    def week_start_us(self, week: int) -> int:
        """Monday 00:00 UTC of simulated week ``week`` in microseconds since the epoch."""
        day = self.start_date + dt.timedelta(weeks=week)
        return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp()) * 1_000_000

    def week_start_date(self, week: int) -> dt.date:
        """The Monday that starts simulated week ``week``."""
        return self.start_date + dt.timedelta(weeks=week)


@dataclass
class HiddenTruth:
    """Per-HCP and per-content parameters the logs never show; only evaluation code reads them."""

    channel_affinity: np.ndarray  # (n, C) logit offsets
    trend_multiplier: np.ndarray  # (n,) how strongly the HCP follows the market's channel trends
    topic_affinity: np.ndarray  # (n, T)
    pref_weekday: np.ndarray  # (n,) 0=Mon
    pref_daypart: np.ndarray  # (n,) DAYPARTS index
    responsiveness: np.ndarray  # (n,)
    adoption0: np.ndarray  # (n,) adoption ladder position at the start, 0..4
    share_cap: np.ndarray  # (n,) our share if fully adopted
    market_week: np.ndarray  # (n,) expected market boxes per week
    content_quality: np.ndarray  # (K,)
    # (n,) how strongly timing matters to each HCP (scales weekday and daypart terms); None = 1.
    timing_strength: np.ndarray | None = None

    def to_columns(self) -> dict[str, np.ndarray]:
        """Flat per-HCP columns (matrices split per channel/topic) for a Parquet file."""
        from contract.schema import TOPICS

        out: dict[str, np.ndarray] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "content_quality" or v is None:
                continue
            if f.name == "channel_affinity":
                out.update({f"channel_affinity__{c}": v[:, i] for i, c in enumerate(CHANNELS)})
            elif f.name == "topic_affinity":
                out.update({f"topic_affinity__{t}": v[:, i] for i, t in enumerate(TOPICS)})
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_columns(cls, cols: dict[str, np.ndarray], content_quality: np.ndarray) -> HiddenTruth:
        """Inverse of ``to_columns``."""
        from contract.schema import TOPICS

        kw = {k: np.asarray(v) for k, v in cols.items() if "__" not in k}
        kw["channel_affinity"] = np.stack([np.asarray(cols[f"channel_affinity__{c}"]) for c in CHANNELS], axis=1)
        kw["topic_affinity"] = np.stack([np.asarray(cols[f"topic_affinity__{t}"]) for t in TOPICS], axis=1)
        optional = {"timing_strength"}  # absent from datasets written before it existed
        names = {f.name for f in fields(cls)} - {"content_quality"}
        missing = sorted(names - optional - set(kw))
        if missing:
            raise ValueError(f"ground truth hcp_params: missing columns {missing}")
        return cls(content_quality=np.asarray(content_quality), **{k: kw[k] for k in names if k in kw})
