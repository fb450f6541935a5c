"""The hidden response model (the oracle): true response probabilities and adoption effects.

A *positive response* is ``opened`` in the touchpoints table: the HCP opened a push / email /
1:1 message, engaged in a visit or call, or attended a meeting. It needs delivery first, so

    P(positive) = delivery[channel] * link(logit)      link: sigmoid, or 1 - exp(-exp(logit + offset))

    logit = base[channel] + trend[channel] * years * trend_multiplier[hcp] + drift(week, channel)
            + channel_affinity[hcp, channel] + responsiveness[hcp] + lifecycle[product, channel]
            + 1.0 * topic_affinity[hcp, topic(content)] + quality[content]
            + timing_strength[hcp] * (weekday term (preferred day, half for neighbours)
                                      + daypart term (preferred daypart))
            - fatigue_per_touch * (load[hcp, channel] + cross * load on other channels)
            - repetition.per_exposure_logit * exposures[hcp, content]          (repetition decay)
            - wearout.penalty_logit * [day - last_day[hcp, channel] < window[channel]]  (wear-out)
            + warmup.max_logit * (1 - exp(-warm[hcp] / scale)) on target channels    (warm-up)

The last three are off in the default world. ``exposures`` counts earlier deliveries of the
item, each weighted 0.5 ** (days since it / ``repetition.half_life_days``); ``last_day`` is
the day (7 * week + weekday) of the HCP's last delivered touch on the channel; ``warm``
counts opens on the warm-up source channels, weighted the same way with
``warmup.half_life_days``. All are kept in ``WorldState`` as of the Monday that starts the
week (touches of the same week do not affect each other) and advanced by ``Oracle.advance``.

Each positive response moves the HCP up the adoption ladder (0 unaware .. 4 advocating) by
``lift[channel] * lifecycle_lift * topic-stage fit * (1 - adoption / 4.5)``; adoption decays
slowly each week, and our weekly share of the HCP's market boxes is
``share_cap * sigmoid(share_slope * (adoption - 2))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.schema import CHANNELS, LIFECYCLES, TOPICS
from simulator.config import SimulatorConfig
from simulator.world import CH, CONTENTLESS_MASK, HiddenTruth, PublicWorld, contentless_mask

ADOPTION_MAX = 4.5
_TOPIC_WEIGHT = 1.0
# Extra logit per (lifecycle, channel): which channels work at each product stage.
LIFECYCLE_LOGIT = np.zeros((len(LIFECYCLES), len(CHANNELS)))
LIFECYCLE_LOGIT[0, [CH["visit"], CH["department_meeting"]]] = (0.3, 0.2)
LIFECYCLE_LOGIT[1, [CH["visit"], CH["department_meeting"]]] = (0.2, 0.1)
LIFECYCLE_LOGIT[2, [CH["conference"], CH["webinar"]]] = (0.4, 0.2)
LIFECYCLE_LOGIT[3, [CH["wechat_push"], CH["wecom_1to1"], CH["visit"]]] = (0.4, 0.2, -0.3)
# Multiplier of adoption lift per (lifecycle, channel): launch/growth lean on academic visits,
# maturity on KOL conferences, post-VBP on precise pushes.
LIFECYCLE_LIFT = np.ones((len(LIFECYCLES), len(CHANNELS)))
LIFECYCLE_LIFT[0, [CH["visit"], CH["department_meeting"], CH["wechat_push"], CH["email"]]] = (1.6, 1.5, 0.6, 0.8)
LIFECYCLE_LIFT[1, [CH["visit"], CH["department_meeting"], CH["wechat_push"]]] = (1.4, 1.3, 0.7)
LIFECYCLE_LIFT[2, [CH["conference"], CH["webinar"], CH["visit"]]] = (1.8, 1.3, 0.9)
LIFECYCLE_LIFT[3, [CH["wechat_push"], CH["wecom_1to1"], CH["email"], CH["visit"], CH["department_meeting"]]] = (2.0, 1.5, 1.3, 0.6, 0.7)
# Which topics move an HCP at each ladder stage (rows: unaware, aware, trying, adopting, advocating).
STAGE_TOPIC_FIT = np.array(
    [
        # disease, brand, clinical, guideline, case, patient_mgmt
        [1.0, 0.8, 0.4, 0.5, 0.3, 0.2],
        [0.7, 0.6, 1.0, 0.8, 0.6, 0.3],
        [0.3, 0.4, 0.8, 0.8, 1.0, 0.6],
        [0.2, 0.3, 0.5, 0.6, 0.8, 1.0],
        [0.1, 0.3, 0.4, 0.5, 0.7, 1.0],
    ]
)
assert STAGE_TOPIC_FIT.shape[1] == len(TOPICS)
_NO_CONTENT_FIT = 0.5
# Day index of "never touched" in ``WorldState.last_day``: far enough back for any window.
NEVER_DAY = -1_000_000


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class WorldState:
    """The hidden dynamic state at the start of a week: adoption, contact load and touch memory.

    ``last_day`` and ``warm`` are cheap and always kept; ``exposure`` is (n, K) float32 (e.g.
    100k HCPs x 200 items = 80 MB), so it exists only in worlds with repetition decay (None
    means no exposure yet). Omitted fields start empty.
    """

    adoption: np.ndarray  # (n,)
    fatigue: np.ndarray  # (n, C)
    last_day: np.ndarray | None = None  # (n, C) int32 day (7 * week + weekday) of the last delivered touch, NEVER_DAY
    warm: np.ndarray | None = None  # (n,) decayed opens on the warm-up source channels
    exposure: np.ndarray | None = None  # (n, K) float32 decayed deliveries of each item

    def __post_init__(self) -> None:
        n = len(self.adoption)
        if self.last_day is None:
            self.last_day = np.full((n, len(CHANNELS)), NEVER_DAY, dtype=np.int32)
        if self.warm is None:
            self.warm = np.zeros(n)

    def copy(self) -> WorldState:
        """An independent copy."""
        return WorldState(
            self.adoption.copy(), self.fatigue.copy(), self.last_day.copy(), self.warm.copy(), None if self.exposure is None else self.exposure.copy()
        )


class Oracle:
    """True response probabilities and effects for any batch of (HCP, channel, content, time)."""

    def __init__(self, public: PublicWorld, hidden: HiddenTruth, cfg: SimulatorConfig) -> None:
        self.public, self.hidden, self.cfg = public, hidden, cfg
        r = cfg.response
        self.base = np.array([r.base_logit[c] for c in CHANNELS])
        self.trend = np.array([r.trend_per_year[c] for c in CHANNELS])
        self.delivery = np.array([r.delivery[c] for c in CHANNELS])
        self.lift = np.array([cfg.adoption.lift[c] for c in CHANNELS])
        self.life = public.product_lifecycle[public.hcp_product]

    @property
    def contentless(self) -> np.ndarray:
        """(C,) bool: channels whose touches carry no content in this world."""
        return contentless_mask(self.cfg.contentless_channels)

    @property
    def wearout_window(self) -> np.ndarray:
        """(C,) wear-out window in days per channel (0: none)."""
        return np.array([self.cfg.wearout.window_days.get(c, 0) for c in CHANNELS], dtype=np.int64)

    def initial_state(self) -> WorldState:
        """The state at week 0: starting adoption, no contact load, no touch memory."""
        n = self.public.n_hcps
        exposure = np.zeros((n, len(self.public.content_ids)), dtype=np.float32) if self.cfg.repetition.enabled else None
        return WorldState(self.hidden.adoption0.astype(np.float64).copy(), np.zeros((n, len(CHANNELS))), exposure=exposure)

    def link(self, logit: np.ndarray, channel: np.ndarray) -> np.ndarray:
        """P(positive) from the logit: delivery times the world's link (logistic or saturating)."""
        r = self.cfg.response
        if r.link == "saturating":
            return self.delivery[channel] * -np.expm1(-np.exp(np.minimum(logit + r.saturating_offset, 50.0)))
        return self.delivery[channel] * sigmoid(logit)

    def drift_logit(self, week: int) -> np.ndarray:
        """Per-channel logit shift from drift events that started at or before ``week``."""
        out = np.zeros(len(CHANNELS))
        for ev in self.cfg.drift.events:
            if week >= ev.week:
                out[CH[ev.channel]] += ev.delta_logit
        return out

    def channel_logit(self, state: WorldState, week: int, hcp: np.ndarray, channel: np.ndarray) -> np.ndarray:
        """The part of the logit that depends on HCP, channel, week and state (not content or time)."""
        h = self.hidden
        years = week / 52.0
        f = self.cfg.fatigue
        load = state.fatigue[hcp]
        own = load[np.arange(len(hcp)), channel]
        fatigue = f.per_touch_logit * (own + f.cross_channel * (load.sum(axis=1) - own))
        out = (
            self.base[channel]
            + self.trend[channel] * years * h.trend_multiplier[hcp]
            + self.drift_logit(week)[channel]
            + h.channel_affinity[hcp, channel]
            + h.responsiveness[hcp]
            + LIFECYCLE_LOGIT[self.life[hcp], channel]
            - fatigue
        )
        if self.cfg.warmup.enabled:
            out = out + self.warmup_logit(state, hcp, channel)
        return out

    def warmup_logit(self, state: WorldState, hcp: np.ndarray, channel: np.ndarray) -> np.ndarray:
        """Cross-channel warm-up: the boost recent digital opens give the target channels (0 elsewhere)."""
        w = self.cfg.warmup
        target = np.array([c in w.target_channels for c in CHANNELS])
        boost = w.max_logit * -np.expm1(-state.warm[hcp] / w.scale)
        return np.where(target[channel], boost, 0.0)

    def repetition_logit(self, state: WorldState, hcp: np.ndarray, content: np.ndarray) -> np.ndarray:
        """Minus ``per_exposure_logit`` x earlier (decayed) deliveries of the item to the HCP; 0 without content."""
        r = self.cfg.repetition
        if not r.enabled or state.exposure is None:
            return np.zeros(len(hcp))
        has = (content >= 0) & (content < state.exposure.shape[1])
        seen = state.exposure[hcp, np.where(has, content, 0)].astype(np.float64)
        return np.where(has, -r.per_exposure_logit * seen, 0.0)

    def wearout_logit(self, state: WorldState, week: int, hcp: np.ndarray, channel: np.ndarray, weekday: np.ndarray) -> np.ndarray:
        """Minus ``penalty_logit`` where the touch falls within the channel's window of the HCP's last delivered one."""
        w = self.cfg.wearout
        if not w.enabled:
            return np.zeros(len(hcp))
        gap = 7 * week + weekday - state.last_day[hcp, channel].astype(np.int64)
        return np.where(gap < self.wearout_window[channel], -w.penalty_logit, 0.0)

    def content_logit(self, hcp: np.ndarray, content: np.ndarray) -> np.ndarray:
        """Topic affinity and quality of the content (0 where ``content`` is -1)."""
        has = content >= 0
        k = np.where(has, content, 0)
        topic = self.public.content_topic[k]
        val = _TOPIC_WEIGHT * self.hidden.topic_affinity[hcp, topic] + self.hidden.content_quality[k]
        return np.where(has, val, 0.0)

    def time_logit(self, hcp: np.ndarray, weekday: np.ndarray, daypart: np.ndarray) -> np.ndarray:
        """Preferred weekday (half credit for a neighbouring day) and preferred daypart, centred, times the HCP's timing strength."""
        r = self.cfg.response
        d = np.abs(weekday - self.hidden.pref_weekday[hcp])
        d = np.minimum(d, 7 - d)
        wd = r.weekday_match * (np.where(d == 0, 1.0, np.where(d == 1, 0.5, 0.0)) - 0.4)
        dp = r.daypart_match * ((daypart == self.hidden.pref_daypart[hcp]) - 0.3)
        if self.hidden.timing_strength is None:
            return wd + dp
        return self.hidden.timing_strength[hcp] * (wd + dp)

    def logit(self, state: WorldState, week: int, hcp, channel, content, weekday, daypart) -> np.ndarray:
        """Full response logit for a batch of touches (arrays of equal length)."""
        hcp, channel, content, weekday, daypart = (np.asarray(a, dtype=np.int64) for a in (hcp, channel, content, weekday, daypart))
        out = self.channel_logit(state, week, hcp, channel) + self.content_logit(hcp, content) + self.time_logit(hcp, weekday, daypart)
        if self.cfg.repetition.enabled:
            out = out + self.repetition_logit(state, hcp, content)
        if self.cfg.wearout.enabled:
            out = out + self.wearout_logit(state, week, hcp, channel, weekday)
        return out

    def expected_response(self, state: WorldState, week: int, hcp, channel, content, weekday, daypart) -> np.ndarray:
        """P(positive response = opened/engaged/attended) for each touch of the batch."""
        channel = np.asarray(channel, dtype=np.int64)
        return self.link(self.logit(state, week, hcp, channel, content, weekday, daypart), channel)

    def adoption_gain(self, state: WorldState, hcp, channel, content) -> np.ndarray:
        """Adoption gained if the touch gets a positive response (multiply by P for the expectation)."""
        hcp, channel, content = (np.asarray(a, dtype=np.int64) for a in (hcp, channel, content))
        a = state.adoption[hcp]
        stage = np.clip(np.floor(a), 0, 4).astype(np.int64)
        topic = self.public.content_topic[np.where(content >= 0, content, 0)]
        fit = np.where(content >= 0, STAGE_TOPIC_FIT[stage, topic], _NO_CONTENT_FIT)
        kol = self.public.hcp_kol[hcp]
        conf = np.where(channel == CH["conference"], np.where(kol, 1.5, 0.6), 1.0)
        return self.lift[channel] * LIFECYCLE_LIFT[self.life[hcp], channel] * fit * conf * np.clip(1.0 - a / ADOPTION_MAX, 0.0, 1.0)

    def share(self, adoption: np.ndarray, hcp: np.ndarray | None = None) -> np.ndarray:
        """Our share of prescriptions at an adoption level."""
        cap = self.hidden.share_cap if hcp is None else self.hidden.share_cap[hcp]
        return cap * sigmoid(self.cfg.adoption.share_slope * (adoption - 2.0))

    def market_mean(self, week: int) -> np.ndarray:
        """Expected market boxes per HCP in ``week`` (with a Spring Festival dip in weeks 4-6)."""
        day_of_year = (self.public.week_start_date(week).timetuple().tm_yday - 1) // 7
        season = 0.8 if 4 <= day_of_year <= 6 else 1.0
        return self.hidden.market_week * season

    def expected_prescriptions(self, state: WorldState, week: int) -> np.ndarray:
        """Expected boxes of our product per HCP in ``week`` given the state at its start."""
        return self.market_mean(week) * self.share(state.adoption)

    def advance(
        self, state: WorldState, gains: np.ndarray, touches_per_channel: np.ndarray, week: int | None = None, executed: dict[str, np.ndarray] | None = None
    ) -> WorldState:
        """The state one week later: adoption decays and adds gains, contact load decays and adds touches.

        ``executed`` (the week's outbound touches as arrays hcp, channel, content, weekday,
        delivered, opened) and ``week`` update the touch memory: last delivered day per channel,
        decayed item exposures and decayed warm-up opens. Without them the memory only decays.
        """
        a = state.adoption * (1.0 - self.cfg.adoption.decay_per_week) + gains
        fat = state.fatigue * self.cfg.fatigue.decay_per_week + touches_per_channel
        n = len(a)
        last_day = state.last_day.copy()
        warm = state.warm * 0.5 ** (7.0 / self.cfg.warmup.half_life_days)
        exposure = state.exposure
        rep = self.cfg.repetition
        if rep.enabled:
            k = len(self.public.content_ids)
            if exposure is None:
                exposure = np.zeros((n, k), dtype=np.float32)
            elif exposure.shape[1] < k:  # a content campaign grew the catalogue
                exposure = np.pad(exposure, ((0, 0), (0, k - exposure.shape[1])))
            exposure = exposure * np.float32(0.5 ** (7.0 / rep.half_life_days))
        elif exposure is not None:
            exposure = exposure.copy()
        if executed is not None and len(executed["hcp"]):
            if week is None:
                raise ValueError("advance: executed touches need the week they happened in")
            hcp = np.asarray(executed["hcp"], dtype=np.int64)
            ch = np.asarray(executed["channel"], dtype=np.int64)
            content = np.asarray(executed["content"], dtype=np.int64)
            got = np.asarray(executed["delivered"], dtype=bool)
            weekday = np.asarray(executed["weekday"], dtype=np.int64)
            day = (7 * week + weekday).astype(np.int32)
            np.maximum.at(last_day, (hcp[got], ch[got]), day[got])
            # Each touch enters the memory already decayed from its day to the next Monday.
            source = np.isin(ch, [CH[c] for c in self.cfg.warmup.source_channels]) & np.asarray(executed["opened"], dtype=bool)
            warm = warm + np.bincount(hcp[source], weights=0.5 ** ((7 - weekday[source]) / self.cfg.warmup.half_life_days), minlength=n)
            if rep.enabled:
                seen = got & (content >= 0)
                np.add.at(exposure, (hcp[seen], content[seen]), (0.5 ** ((7 - weekday[seen]) / rep.half_life_days)).astype(np.float32))
        return WorldState(np.clip(a, 0.0, ADOPTION_MAX), fat, last_day, warm, exposure)


def contentless(channel: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """True where the channel carries no content (``mask``: a world's contentless channels; default phone)."""
    return (CONTENTLESS_MASK if mask is None else mask)[channel]
