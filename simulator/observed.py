"""What a real policy can know: the touchpoint history and per-HCP summaries computed from it.

Every field of ``ObservedState`` is a function of logged touchpoints (channel, content topic,
local time of the touch, delivered/opened/forwarded/favourited/replied, direction) and nothing
hidden, so a policy may use it as if it had computed it from the CRM export.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from contract.schema import CHANNELS, TOPICS
from simulator.world import CH, PublicWorld

TOUCH_FIELDS = (
    "week",
    "hcp",
    "rep",
    "ts_us",
    "channel",
    "content",
    "inbound",
    "delivered",
    "opened",
    "read_seconds",
    "forwarded",
    "favourited",
    "replied",
    "propensity",
    "suggestion",
    "weekday",
    "daypart",
    "p_response",
)
# What a policy may see: everything but the oracle's probability.
OBSERVABLE_FIELDS = tuple(f for f in TOUCH_FIELDS if f != "p_response")


@dataclass
class TouchBatch:
    """Touches as parallel arrays (one entry per ``TOUCH_FIELDS`` name)."""

    cols: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.cols["hcp"])

    @staticmethod
    def concat(parts: list[TouchBatch]) -> TouchBatch:
        """All rows of all parts, in order."""
        if not parts:
            return TouchBatch({k: np.zeros(0) for k in OBSERVABLE_FIELDS})
        return TouchBatch({k: np.concatenate([p.cols[k] for p in parts]) for k in parts[0].cols})

    def observable(self) -> TouchBatch:
        """The same rows without ground-truth columns."""
        return TouchBatch({k: self.cols[k] for k in OBSERVABLE_FIELDS})


@dataclass
class ObservedState:
    """Per-HCP summaries of the history so far, updated once per simulated week."""

    unopened_push_streak: np.ndarray  # consecutive delivered WeChat pushes not opened
    interest: np.ndarray  # forwards + favourites + replies + inbound messages, halved weekly
    topic_opens: np.ndarray  # (n, topics) opens by topic, decaying 10 %/week
    slot_opens: np.ndarray  # (n, 7 * 4) opens by local (weekday, daypart), decaying 5 %/week
    sent: np.ndarray  # (n, channels) outbound touches so far
    opened: np.ndarray  # (n, channels) positive responses so far
    last_visit_week: np.ndarray  # -1 if never visited
    recent_touches: np.ndarray  # outbound touches, halved weekly
    last_week: np.ndarray  # (n, channels) week of the last outbound touch, -1 never
    last_content: np.ndarray  # (n, channels) content of the last outbound touch with content, -1 none

    @staticmethod
    def empty(n: int) -> ObservedState:
        """Nothing observed yet."""
        return ObservedState(
            unopened_push_streak=np.zeros(n, dtype=np.int64),
            interest=np.zeros(n),
            topic_opens=np.zeros((n, len(TOPICS))),
            slot_opens=np.zeros((n, 28)),
            sent=np.zeros((n, len(CHANNELS)), dtype=np.int64),
            opened=np.zeros((n, len(CHANNELS)), dtype=np.int64),
            last_visit_week=np.full(n, -1, dtype=np.int64),
            recent_touches=np.zeros(n),
            last_week=np.full((n, len(CHANNELS)), -1, dtype=np.int64),
            last_content=np.full((n, len(CHANNELS)), -1, dtype=np.int32),
        )

    def top_topic(self) -> np.ndarray:
        """Each HCP's most-engaged topic index, -1 where nothing was opened yet."""
        top = self.topic_opens.argmax(axis=1)
        return np.where(self.topic_opens.max(axis=1) > 0, top, -1)

    def preferred_slot(self) -> tuple[np.ndarray, np.ndarray]:
        """Each HCP's observed best (weekday, daypart) by opens; -1 where nothing was opened yet."""
        best = self.slot_opens.argmax(axis=1)
        seen = self.slot_opens.max(axis=1) > 0
        return np.where(seen, best // 4, -1), np.where(seen, best % 4, -1)

    def update(self, public: PublicWorld, week: int, t: TouchBatch) -> None:
        """Fold one week of touches into the summaries."""
        n = public.n_hcps
        c = t.cols
        hcp = c["hcp"].astype(np.int64)
        ch = c["channel"].astype(np.int64)
        outbound = ~c["inbound"].astype(bool)
        opened = c["opened"].astype(bool) & outbound
        self.interest *= 0.5
        self.interest += np.bincount(hcp, weights=(c["forwarded"] | c["favourited"] | c["replied"]).astype(float) + (~outbound), minlength=n)
        self.topic_opens *= 0.9
        has = opened & (c["content"] >= 0)
        topic = public.content_topic[c["content"][has].astype(np.int64)]
        self.topic_opens += np.bincount(hcp[has] * len(TOPICS) + topic, minlength=n * len(TOPICS)).reshape(n, -1)
        self.slot_opens *= 0.95
        slot = c["weekday"].astype(np.int64) * 4 + c["daypart"].astype(np.int64)
        self.slot_opens += np.bincount(hcp[opened] * 28 + slot[opened], minlength=n * 28).reshape(n, -1)
        self.sent += np.bincount(hcp[outbound] * len(CHANNELS) + ch[outbound], minlength=n * len(CHANNELS)).reshape(n, -1)
        self.opened += np.bincount(hcp[opened] * len(CHANNELS) + ch[opened], minlength=n * len(CHANNELS)).reshape(n, -1)
        visited = hcp[outbound & (ch == CH["visit"]) & c["delivered"].astype(bool)]
        self.last_visit_week[visited] = week
        self.last_week[hcp[outbound], ch[outbound]] = week
        # Rows are in time order, so the last write per (HCP, channel) is the latest item.
        sent_item = outbound & (c["content"] >= 0)
        self.last_content[hcp[sent_item], ch[sent_item]] = c["content"][sent_item]
        self.recent_touches = self.recent_touches * 0.5 + np.bincount(hcp[outbound], minlength=n)
        push = outbound & (ch == CH["wechat_push"]) & c["delivered"].astype(bool)
        push_opened = np.bincount(hcp[push & opened], minlength=n) > 0
        push_missed = np.bincount(hcp[push & ~opened], minlength=n)
        self.unopened_push_streak = np.where(push_opened, 0, self.unopened_push_streak + push_missed)
        # A follow-up visit answers the streak: the rule starts counting again.
        self.unopened_push_streak[visited] = 0


@dataclass
class History:
    """The touches and outcomes so far, as arrays (``touches()``) or contract tables (``touchpoints()``)."""

    public: PublicWorld
    first_event: int = 1  # event id number of the first touch (continues a dataset's numbering)
    _touches: list[TouchBatch] = field(default_factory=list)
    _outcomes: list[dict[str, np.ndarray]] = field(default_factory=list)
    _cache: TouchBatch | None = None

    def append(self, touches: TouchBatch, outcomes: dict[str, np.ndarray]) -> None:
        """Record one week (ground-truth columns are dropped)."""
        self._touches.append(touches.observable())
        self._outcomes.append(outcomes)
        self._cache = None

    @property
    def weeks(self) -> int:
        """Weeks recorded."""
        return len(self._touches)

    def touches(self) -> TouchBatch:
        """All touches so far as arrays (``OBSERVABLE_FIELDS``)."""
        if self._cache is None:
            self._cache = TouchBatch.concat(self._touches)
            # Keep one copy: later weeks append to the concatenated block.
            self._touches = [self._cache]
        return self._cache

    def outcome_arrays(self) -> list[dict[str, np.ndarray]]:
        """Weekly outcome arrays (week, hcp, prescriptions, market_boxes), one dict per week."""
        return list(self._outcomes)

    def touchpoints(self):
        """All touches so far as a contract-shaped ``touchpoints`` Arrow table."""
        from simulator.tables import touchpoints_table

        return touchpoints_table(self.public, self.touches(), first_event=self.first_event)

    def outcomes(self):
        """All weekly outcomes so far as a contract-shaped ``outcomes`` Arrow table."""
        from simulator.tables import outcomes_table

        return outcomes_table(self.public, self._outcomes)

    def contract_tables(self, logged: dict | None = None) -> dict:
        """``touchpoints`` and ``outcomes`` so far, after ``logged``'s (a dataset's own, when the world continues from its end).

        The logged tables' schema wins, so the result reads like the dataset a CRM would hold.
        """
        import pyarrow as pa

        logged = logged or {}
        out = {}
        for name, make in (("touchpoints", self.touchpoints), ("outcomes", self.outcomes)):
            if name not in logged:
                out[name] = make()
            elif self.weeks:
                out[name] = pa.concat_tables([logged[name], make().cast(logged[name].schema)])
            else:
                out[name] = logged[name]
        return out


def observed_from_touchpoints(public: PublicWorld, touchpoints) -> ObservedState:
    """Recompute the summaries from a contract ``touchpoints`` table (e.g. a dataset's logs)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from contract.schema import DAYPART_HOURS, DAYPARTS

    tp = touchpoints.combine_chunks() if hasattr(touchpoints, "combine_chunks") else touchpoints

    def index(col: str, vocab: list[str]) -> np.ndarray:
        idx = pc.index_in(tp[col], value_set=pa.array(vocab, type=pa.string()))
        return idx.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)

    hcp = index("hcp_id", public.hcp_ids)
    if (hcp < 0).any():
        raise ValueError("touchpoints: hcp_id not in the hcps table")
    ts_us = tp["ts"].cast(pa.int64()).to_numpy()
    local_us = ts_us + public.tz_offset_h[hcp] * 3_600_000_000
    start_us = public.week_start_us(0)
    week = (local_us - start_us) // (7 * 86_400_000_000)
    weekday = ((local_us - start_us) // 86_400_000_000) % 7
    hour = (local_us // 3_600_000_000) % 24
    starts = np.array([DAYPART_HOURS[d][0] for d in DAYPARTS])
    daypart = np.clip(np.searchsorted(starts, hour, side="right") - 1, 0, 3)
    cols = {
        "hcp": hcp,
        "channel": index("channel", list(CHANNELS)),
        "content": index("content_id", public.content_ids),
        "inbound": (index("direction", ["outbound", "inbound"]) == 1),
        "weekday": weekday,
        "daypart": daypart,
        **{k: tp[k].to_numpy(zero_copy_only=False).astype(bool) for k in ("delivered", "opened", "forwarded", "favourited", "replied")},
    }
    obs = ObservedState.empty(public.n_hcps)
    order = np.argsort(week, kind="stable")
    bounds = np.searchsorted(week[order], np.arange(week.min(initial=0), week.max(initial=-1) + 2))
    for w, (lo, hi) in zip(range(int(week.min(initial=0)), int(week.max(initial=-1)) + 1), zip(bounds[:-1], bounds[1:])):
        rows = order[lo:hi]
        obs.update(public, w, TouchBatch({k: v[rows] for k, v in cols.items()}))
    return obs
