"""The hidden response model (the oracle): true response probabilities and adoption effects.

A *positive response* is ``opened`` in the touchpoints table: the HCP opened a push / email /
1:1 message, engaged in a visit or call, or attended a meeting. It needs delivery first, so

    P(positive) = delivery[channel] * sigmoid(logit)

    logit = base[channel] + trend[channel] * years * trend_multiplier[hcp] + drift(week, channel)
            + channel_affinity[hcp, channel] + responsiveness[hcp] + lifecycle[product, channel]
            + 1.0 * topic_affinity[hcp, topic(content)] + quality[content]
            + weekday term (preferred day, half for neighbours) + daypart term (preferred daypart)
            - fatigue_per_touch * (load[hcp, channel] + cross * load on other channels)

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
from simulator.world import CH, CONTENTLESS_MASK, HiddenTruth, PublicWorld

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


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function."""
    return 1.0 / (1.0 + np.exp(-x))


@dataclass
class WorldState:
    """The hidden dynamic state: adoption ladder position and per-channel contact load."""

    adoption: np.ndarray  # (n,)
    fatigue: np.ndarray  # (n, C)

    def copy(self) -> WorldState:
        """An independent copy."""
        return WorldState(self.adoption.copy(), self.fatigue.copy())


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

    def initial_state(self) -> WorldState:
        """The state at week 0: starting adoption, no contact load."""
        n = self.public.n_hcps
        return WorldState(self.hidden.adoption0.astype(np.float64).copy(), np.zeros((n, len(CHANNELS))))

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
        return (
            self.base[channel]
            + self.trend[channel] * years * h.trend_multiplier[hcp]
            + self.drift_logit(week)[channel]
            + h.channel_affinity[hcp, channel]
            + h.responsiveness[hcp]
            + LIFECYCLE_LOGIT[self.life[hcp], channel]
            - fatigue
        )

    def content_logit(self, hcp: np.ndarray, content: np.ndarray) -> np.ndarray:
        """Topic affinity and quality of the content (0 where ``content`` is -1)."""
        has = content >= 0
        k = np.where(has, content, 0)
        topic = self.public.content_topic[k]
        val = _TOPIC_WEIGHT * self.hidden.topic_affinity[hcp, topic] + self.hidden.content_quality[k]
        return np.where(has, val, 0.0)

    def time_logit(self, hcp: np.ndarray, weekday: np.ndarray, daypart: np.ndarray) -> np.ndarray:
        """Preferred weekday (half credit for a neighbouring day) and preferred daypart, centred."""
        r = self.cfg.response
        d = np.abs(weekday - self.hidden.pref_weekday[hcp])
        d = np.minimum(d, 7 - d)
        wd = r.weekday_match * (np.where(d == 0, 1.0, np.where(d == 1, 0.5, 0.0)) - 0.4)
        dp = r.daypart_match * ((daypart == self.hidden.pref_daypart[hcp]) - 0.3)
        return wd + dp

    def logit(self, state: WorldState, week: int, hcp, channel, content, weekday, daypart) -> np.ndarray:
        """Full response logit for a batch of touches (arrays of equal length)."""
        hcp, channel, content, weekday, daypart = (np.asarray(a, dtype=np.int64) for a in (hcp, channel, content, weekday, daypart))
        return self.channel_logit(state, week, hcp, channel) + self.content_logit(hcp, content) + self.time_logit(hcp, weekday, daypart)

    def expected_response(self, state: WorldState, week: int, hcp, channel, content, weekday, daypart) -> np.ndarray:
        """P(positive response = opened/engaged/attended) for each touch of the batch."""
        channel = np.asarray(channel, dtype=np.int64)
        return self.delivery[channel] * sigmoid(self.logit(state, week, hcp, channel, content, weekday, daypart))

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

    def advance(self, state: WorldState, gains: np.ndarray, touches_per_channel: np.ndarray) -> WorldState:
        """The state one week later: adoption decays and adds gains, contact load decays and adds touches."""
        a = state.adoption * (1.0 - self.cfg.adoption.decay_per_week) + gains
        fat = state.fatigue * self.cfg.fatigue.decay_per_week + touches_per_channel
        return WorldState(np.clip(a, 0.0, ADOPTION_MAX), fat)


def contentless(channel: np.ndarray) -> np.ndarray:
    """True where the channel carries no content (phone)."""
    return CONTENTLESS_MASK[channel]
