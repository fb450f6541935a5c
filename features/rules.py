"""Today's rule-based next best action (the policy the model must beat), over online features.

The senior reps' rules from the domain brief, vectorised over a frame of online features (one
row per HCP, columns as ``features.get_online_features`` returns them):

1. ``unopened_pushes``: several consecutive WeChat pushes unopened -> follow up with a visit;
2. ``strong_interest``: several forwards / favourites / 1:1 replies -> a face-to-face visit, with
   talking points from the topics the HCP engaged with;
3. ``preference``: otherwise push content of the preferred topic at the preferred time.

Every channel also gets a score so the rules yield a full ranking (the rule's channel first,
then channels by the HCP's smoothed open rate), and its own slot, content and reason, so
whichever channel guardrails leave to be served is scheduled and explained for itself:

- slot: the weekday and daypart the HCP answered on *that channel* (responded touches weigh
  more), else the HCP's preference over all channels, else Tuesday morning; always within
  working hours for the channels that need the rep and the HCP in hospital (a visit or a call
  in the evening is not an action a rep can take);
- content: the best approved item of the HCP's preferred topic that the HCP has not received in
  the last ``no_repeat_days`` days, else the same on the other topics by the HCP's engagement,
  else the least recently received item (repeated content wears off; the reps repeat less).

Serving uses this in degraded mode and for the holdout; training's baselines can use it. Pure:
no I/O, no imports of training or serving.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contract.schema import (
    CHANNELS,
    DAYPARTS,
    TOPICS,
    WEEKDAYS,
    WORKING_DAYPARTS,
    WORKING_HOURS_CHANNELS,
    WORKING_WEEKDAYS,
)
from features.contact_history import RecentContacts, list_values, recent_contacts
from features.events import POSITIVE_RESPONSE_CODE

RULE_NAMES: tuple[str, ...] = ("unopened_pushes", "strong_interest", "preference")
CHANNEL_LABELS: dict[str, str] = {
    "visit": "visit",
    "department_meeting": "department meeting",
    "wechat_push": "WeChat push",
    "wecom_1to1": "WeCom 1:1 message",
    "email": "email",
    "webinar": "webinar",
    "conference": "conference",
    "phone": "phone call",
}
TOPIC_LABELS: dict[str, str] = {t: t.replace("_", "-") for t in TOPICS}
_VISIT = CHANNELS.index("visit")
_PUSH = CHANNELS.index("wechat_push")
# Rule-chosen channel outranks every open-rate score (which lie in (0, 1)).
_RULE_BONUS = 2.0
_DEFAULT_WEEKDAY, _DEFAULT_DAYPART = 1, 0  # Tuesday morning when the HCP has no history
# A touch the HCP did not respond to still says a little about when they can be reached.
_UNANSWERED_WEIGHT = 0.05
DEFAULT_NO_REPEAT_DAYS = 30.0


@dataclass(frozen=True)
class RuleThresholds:
    """When a rule fires: unopened pushes in a row, and interest signals in the short window."""

    unopened_pushes: int = 3
    strong_interest: int = 2


@dataclass(frozen=True)
class ContentItems:
    """Approved content the rules may suggest (K items), best first (e.g. newest approval first)."""

    content_id: np.ndarray  # [K] object, unique
    product_id: np.ndarray  # [K] object
    topic: np.ndarray  # [K] int64 index into TOPICS (-1 unknown)

    @classmethod
    def build(cls, content_id: Sequence[str], product_id: Sequence[str], topic: Sequence[str]) -> ContentItems:
        """Items from parallel sequences in preference order (topic names; duplicates keep the first)."""
        ids = pd.Index(np.asarray(content_id, dtype=object).astype(str))
        keep = ~ids.duplicated()
        codes = pd.Series({t: i for i, t in enumerate(TOPICS)}).reindex(np.asarray(topic, dtype=object)).fillna(-1).to_numpy(dtype=np.int64)
        return cls(ids.to_numpy(dtype=object)[keep], np.asarray(product_id, dtype=object).astype(str)[keep], codes[keep])

    def __len__(self) -> int:
        return len(self.content_id)


@dataclass(frozen=True)
class ContentChoice:
    """One item per HCP (N rows)."""

    item: np.ndarray  # [N] int index into ContentItems (-1: nothing approved)
    content_id: np.ndarray  # [N] object (None: nothing approved)
    topic: np.ndarray  # [N] int topic index of the item (-1 unknown or none)
    days_since: np.ndarray  # [N] float days since the HCP last received the item (inf: not known to have)


@dataclass(frozen=True)
class RuleFacts:
    """What the rule reasons state, per HCP (N rows), for callers that word them themselves (serving.reasons)."""

    unopened: np.ndarray  # [N] int: WeChat pushes unopened in a row
    forwards: np.ndarray  # [N] int: forwards in the short window
    favourites: np.ndarray  # [N] int
    replies: np.ndarray  # [N] int: 1:1 replies
    short_days: int  # the short window the interest signals count over
    talk_topic: np.ndarray  # [N] int: topic of the chosen item, else the preferred topic (-1 unknown)
    repeated: np.ndarray  # [N] bool: every approved item was sent within no_repeat_days (the least recent one chosen)
    other_topic: np.ndarray  # [N] bool: no fresh item of the preferred topic left (one of another topic chosen)
    topic_hits: np.ndarray  # [N] int: positive responses to the preferred topic in the touch sequence
    seq_len: np.ndarray  # [N] int: touches in the sequence
    no_repeat_days: float


@dataclass(frozen=True)
class RuleActions:
    """The rule policy's answer per HCP (N rows, C = len(CHANNELS))."""

    ranked: np.ndarray  # [N, C] channel indices, best first (disallowed channels last)
    score: np.ndarray  # [N, C] rule score (> 1 for the rule's channel, open rate otherwise, -inf disallowed)
    expected: np.ndarray  # [N, C] smoothed historical response rate of each channel
    rule: np.ndarray  # [N] object: which rule fired (RULE_NAMES)
    reason: np.ndarray  # [N, C] object: the sentence for a rep if channel c is the one suggested
    history_reason: np.ndarray  # [N] object: what the HCP engaged with ("" when nothing)
    topic: np.ndarray  # [N] int: preferred topic index into TOPICS (-1 unknown)
    weekday: np.ndarray  # [N, C] int: local weekday to use channel c (0 = Monday)
    daypart: np.ndarray  # [N, C] int: local daypart index into DAYPARTS to use channel c
    content: np.ndarray  # [N, C] object: content id for channel c (None: none approved, or the channel carries none)
    facts: RuleFacts | None = None  # the facts behind ``reason``, to word them in another language


def working_hours_mask(channels: Sequence[str] = CHANNELS) -> np.ndarray:
    """[C, 7, 4] True where channel c may be scheduled on (weekday, daypart): working-hours channels Mon-Fri, not evenings."""
    work = np.isin(WEEKDAYS, WORKING_WEEKDAYS)[:, None] & np.isin(DAYPARTS, WORKING_DAYPARTS)[None, :]
    limited = np.isin(np.asarray(channels, dtype=object), WORKING_HOURS_CHANNELS)
    return np.where(limited[:, None, None], work[None], True)


def _window_columns(frame: pd.DataFrame) -> tuple[str, str]:
    """Short and long engagement windows present in the frame (e.g. '30d', '90d')."""
    days = sorted({int(c.rsplit("_", 1)[1][:-1]) for c in frame.columns if c.startswith("visit_sent_") and c.endswith("d")})
    if not days:
        raise ValueError("rule policy: frame lacks engagement columns such as 'visit_sent_30d' (pass features.get_online_features output)")
    short = next((d for d in days if d >= 30), days[-1])
    return f"{short}d", f"{days[-1]}d"


def _col(frame: pd.DataFrame, name: str, default: float | None = None) -> np.ndarray:
    if name not in frame.columns:
        if default is None:
            raise ValueError(f"rule policy: frame lacks column {name!r}")
        return np.full(len(frame), default, dtype=np.float64)
    return frame[name].to_numpy(dtype=np.float64, na_value=0.0)


def _block(frame: pd.DataFrame, pattern: str, names: Sequence[str] = CHANNELS) -> np.ndarray:
    """[N, len(names)] of ``pattern.format(name)`` columns in one conversion (0 where absent)."""
    out = frame.reindex(columns=[pattern.format(x) for x in names]).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.nan_to_num(out, nan=0.0)


def _aligned(frame: pd.DataFrame, name: str, rows: np.ndarray) -> np.ndarray:
    """A list column aligned with another of the same lengths (-1 where absent or misaligned)."""
    values, r = list_values(frame, name)
    if len(values) != len(rows) or not np.array_equal(r, rows):
        return np.full(len(rows), -1, dtype=np.int64)
    return np.asarray(values, dtype=np.int64)


def channel_slots(rows: np.ndarray, channel: np.ndarray, values: np.ndarray, weight: np.ndarray, ok: np.ndarray, n: int, default: int) -> np.ndarray:
    """[N, C] most weighted allowed value per channel: that channel's history, else the HCP's on every channel, else ``default``.

    ``ok`` [C, S] marks the values (weekdays or dayparts) each channel may use; a preference the
    channel may not use (a visit in the evening) never wins, the best allowed one does.
    """
    c, size = ok.shape
    valid = (values >= 0) & (values < size)
    overall = np.zeros((n, size))
    np.add.at(overall, (rows[valid], values[valid]), weight[valid])
    own = np.zeros((n, c, size))
    sel = valid & (channel >= 0) & (channel < c)
    np.add.at(own, (rows[sel], channel[sel], values[sel]), weight[sel])
    own = np.where(ok[None], own, 0.0)
    anywhere = np.where(ok[None], overall[:, None, :], 0.0)
    fallback_value = np.where(ok[:, default], default, ok.argmax(1))  # [C] the default, or the first allowed value
    fallback = np.where(anywhere.sum(-1) > 0, anywhere.argmax(-1), fallback_value[None, :])
    return np.where(own.sum(-1) > 0, own.argmax(-1), fallback).astype(np.int64)


def topic_engagement(frame: pd.DataFrame, content_topics: Mapping[str, str] | None) -> tuple[np.ndarray, np.ndarray]:
    """([N, T] positive responses per topic in the touch sequence, [N, T] ranking score: those first, then longer history)."""
    return _topic_engagement(frame, content_topics, *list_values(frame, "seq_response"))


def _topic_engagement(frame: pd.DataFrame, content_topics: Mapping[str, str] | None, resp: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n, t = len(frame), len(TOPICS)
    seq = np.zeros((n, t), dtype=np.int64)
    if content_topics and len(resp):
        ids, _ = list_values(frame, "seq_content_id")
        # A dict lookup per touch: building and reindexing a pandas Series cost ~1 ms a single-HCP request.
        lookup = {k: TOPICS.index(v) for k, v in content_topics.items() if v in TOPICS}
        codes = np.fromiter((lookup.get(i, -1) for i in np.asarray(ids, dtype=object).tolist()), dtype=np.int64, count=len(ids))
        sel = (np.asarray(resp, dtype=np.int64) >= POSITIVE_RESPONSE_CODE) & (codes >= 0)
        np.add.at(seq, (rows[sel], codes[sel]), 1)
    # The response-history view covers a longer window than the sequence: it orders the topics
    # the recent touches leave tied.
    days = sorted({c.rsplit("_", 1)[1] for c in frame.columns if c.startswith("hist_topic_") and "_opened_" in c})
    longer = _block(frame, "hist_topic_{}_opened_" + max(days, key=lambda d: int(d[:-1])), TOPICS) if days else np.zeros((n, t))
    return seq, seq * 1e6 + np.minimum(longer, 1e6 - 1)


def choose_content(
    items: ContentItems, contacts: RecentContacts, product_ids: np.ndarray, topic_score: np.ndarray, no_repeat_days: float = DEFAULT_NO_REPEAT_DAYS
) -> ContentChoice:
    """Per HCP: the best approved item the HCP has not received in ``no_repeat_days`` days.

    Items are ordered by: not received within the window, the HCP's rank of the item's topic
    (``topic_score`` [N, T], higher is better, ties share a rank), the HCP's own product
    (``product_ids`` [N]), then ``items``' order. When every item was received within the window,
    the least recently received one. Vectorised over [N, K].
    """
    n, k, t = contacts.n, len(items), len(TOPICS)
    if topic_score.shape != (n, t) or len(product_ids) != n:
        raise ValueError(f"choose_content: topic_score must be ({n}, {t}) and product_ids length {n}, got {topic_score.shape} and {len(product_ids)}")
    if k == 0 or n == 0:
        return ContentChoice(np.full(n, -1), np.full(n, None, dtype=object), np.full(n, -1), np.full(n, np.inf))
    since = np.full((n, k), np.inf)
    idx = pd.Index(items.content_id).get_indexer(contacts.content_id)
    sel = idx >= 0
    np.minimum.at(since, (contacts.row[sel], idx[sel]), contacts.age_days[sel])
    fresh = since >= no_repeat_days
    rank = (topic_score[:, None, :] > topic_score[:, :, None]).sum(-1)  # [N, T] topics scoring higher
    rank = np.concatenate([rank, np.full((n, 1), t)], axis=1)[:, items.topic]  # an unknown topic (-1) ranks last
    codes, _ = pd.factorize(np.concatenate([items.product_id, np.asarray(product_ids, dtype=object).astype(str)]))
    own = codes[None, :k] == codes[k:, None]
    key = ((fresh * (t + 2) + (t + 1 - rank)) * 2 + own) * k + (k - 1 - np.arange(k))
    best = key.argmax(1)
    stale = ~fresh.any(1)
    if stale.any():
        s = since[stale]
        best[stale] = np.where(s >= s.max(1, keepdims=True), key[stale], -1).argmax(1)
    return ContentChoice(best, items.content_id[best], items.topic[best], since[np.arange(n), best])


def _join(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise string concatenation of arrays and constants (object dtype, broadcast)."""
    out: np.ndarray | str = ""
    for p in parts:
        out = np.char.add(out, p if isinstance(p, str) else np.asarray(p).astype(str))
    return np.asarray(out, dtype=object)


@dataclass(frozen=True)
class RuleSignals:
    """Which rule fires and the HCP's topic facts (N rows): the part of the rule policy that reasons read for every HCP.

    Cheaper than ``rule_based_actions`` (no channel ranking, slots or content choice): serving reads
    it for the model's HCPs, whose channels, slots and content the model chooses.
    """

    short: str  # the short engagement window ('30d')
    long: str  # the long one ('90d')
    unopened: np.ndarray  # [N] int64
    forwards: np.ndarray  # [N] int64
    favourites: np.ndarray  # [N] int64
    replies: np.ndarray  # [N] int64
    rule_idx: np.ndarray  # [N] int index into RULE_NAMES
    resp: np.ndarray  # flat seq_response values
    rows: np.ndarray  # their rows
    topic_score: np.ndarray  # [N, T] (``topic_engagement``)
    topic: np.ndarray  # [N] preferred topic index (-1 unknown)
    topic_hits: np.ndarray  # [N] positive responses to the preferred topic
    seq_len: np.ndarray  # [N] int64 touches in the sequence

    @property
    def rule(self) -> np.ndarray:
        """[N] object: the rule's name per HCP (``RuleActions.rule``)."""
        return np.asarray(RULE_NAMES, dtype=object)[self.rule_idx]


def rule_signals(frame: pd.DataFrame, content_topics: Mapping[str, str] | None = None, thresholds: RuleThresholds = RuleThresholds()) -> RuleSignals:
    """The rule that fires and the topic facts per HCP, as ``rule_based_actions`` computes them."""
    n = len(frame)
    short, long = _window_columns(frame)
    unopened = _col(frame, "consecutive_unopened_pushes", 0.0).astype(np.int64)
    forwards = _block(frame, "{}_forwarded_" + short).sum(1).astype(np.int64)
    favourites = _col(frame, f"favourited_{short}", 0.0).astype(np.int64)
    replies = _col(frame, f"wecom_1to1_replied_{short}", 0.0).astype(np.int64)
    interest = forwards + favourites + replies
    fire_unopened = unopened >= thresholds.unopened_pushes
    fire_interest = ~fire_unopened & (interest >= thresholds.strong_interest)
    rule_idx = np.where(fire_unopened, 0, np.where(fire_interest, 1, 2))
    resp, rows = list_values(frame, "seq_response")
    topic_hits_all, topic_score = _topic_engagement(frame, content_topics, resp, rows)
    topic = np.where(topic_score.max(1) > 0, topic_score.argmax(1), -1) if n else np.zeros(0, dtype=np.int64)
    topic_hits = topic_hits_all[np.arange(n), np.maximum(topic, 0)] * (topic >= 0)
    seq_len = _col(frame, "seq_len", 0.0).astype(np.int64)
    return RuleSignals(short, long, unopened, forwards, favourites, replies, rule_idx, resp, rows, topic_score, topic, topic_hits, seq_len)


def rule_based_actions(
    frame: pd.DataFrame,
    content_topics: Mapping[str, str] | None = None,
    *,
    allowed: np.ndarray | None = None,
    thresholds: RuleThresholds = RuleThresholds(),
    items: ContentItems | None = None,
    product_ids: np.ndarray | None = None,
    no_repeat_days: float = DEFAULT_NO_REPEAT_DAYS,
    carries_content: np.ndarray | None = None,
    contacts: RecentContacts | None = None,
    sentences: bool = True,
    signals: RuleSignals | None = None,
) -> RuleActions:
    """Rank channels per HCP by the senior reps' rules, with a slot, content and reason per channel.

    content_topics: content id -> topic (for talking points and topic preference).
    allowed: optional [N, C] bool of channels that may be suggested (consent columns
        ``consent_<channel>`` in the frame are always applied on top).
    items: approved content to choose from (None: no content is chosen); product_ids [N]: each
        HCP's main product (preferred within a topic); no_repeat_days: an item the HCP received
        within this many days is chosen only when every item was.
    carries_content: [C] bool, channels a touch can carry content on (default: all).
    contacts: ``features.contact_history.recent_contacts(frame)`` when the caller has it already.
    sentences: False leaves ``reason`` and ``history_reason`` empty, for a caller that words
        ``facts`` itself (serving words them per served suggestion, in the rep's language).
    signals: ``rule_signals(frame, content_topics, thresholds)`` when the caller has it already.
    """
    if no_repeat_days < 0:
        raise ValueError(f"no_repeat_days must be >= 0, got {no_repeat_days}")
    n, c = len(frame), len(CHANNELS)
    sig = rule_signals(frame, content_topics, thresholds) if signals is None else signals
    if len(sig.rule_idx) != n:
        raise ValueError(f"rule policy: signals cover {len(sig.rule_idx)} rows, the frame {n}")
    short, long = sig.short, sig.long
    sent = _block(frame, "{}_sent_" + long)
    opened = _block(frame, "{}_opened_" + long)
    # Beta(1, 3) prior: an untried channel scores 0.25, below a channel the HCP answers.
    expected = (opened + 1.0) / (sent + 4.0)

    ok = np.ones((n, c), dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool).copy()
    if ok.shape != (n, c):
        raise ValueError(f"rule policy: allowed must have shape ({n}, {c}), got {ok.shape}")
    consent_cols = [f"consent_{ch}" for ch in CHANNELS]
    if any(col in frame.columns for col in consent_cols):
        # An absent consent column means "not recorded", which never counts as consent.
        ok &= frame.reindex(columns=consent_cols).fillna(False).to_numpy(dtype=bool)

    unopened, forwards, favourites, replies = sig.unopened, sig.forwards, sig.favourites, sig.replies
    rule_idx = sig.rule_idx
    target = np.where(rule_idx < 2, _VISIT, _PUSH)
    # Without consent to the rule's channel, the best allowed channel by open rate takes over.
    score = expected.copy()
    score[np.arange(n), target] += _RULE_BONUS
    score = np.where(ok, score, -np.inf)
    ranked = np.argsort(-score, axis=1, kind="stable")

    # Slots per channel from the touch sequence: responded touches count, others a little.
    resp, rows = sig.resp, sig.rows
    weight = np.where(np.asarray(resp, dtype=np.int64) >= POSITIVE_RESPONSE_CODE, 1.0, _UNANSWERED_WEIGHT) if len(resp) else np.zeros(0)
    seq_channel = _aligned(frame, "seq_channel", rows)
    work = working_hours_mask()
    weekday_ok, daypart_ok = np.asarray(work.any(axis=2)), np.asarray(work.any(axis=1))
    weekday = channel_slots(rows, seq_channel, _aligned(frame, "seq_weekday", rows), weight, weekday_ok, n, _DEFAULT_WEEKDAY)
    daypart = channel_slots(rows, seq_channel, _aligned(frame, "seq_daypart", rows), weight, daypart_ok, n, _DEFAULT_DAYPART)

    topic_score, topic, topic_hits = sig.topic_score, sig.topic, sig.topic_hits

    carries = np.ones(c, dtype=bool) if carries_content is None else np.asarray(carries_content, dtype=bool)
    if items is not None and len(items):
        products = np.full(n, "", dtype=object) if product_ids is None else np.asarray(product_ids, dtype=object)
        contacts = recent_contacts(frame) if contacts is None else contacts
        if contacts.n != n:
            raise ValueError(f"rule policy: contacts cover {contacts.n} rows, the frame {n}")
        choice = choose_content(items, contacts, products, topic_score, no_repeat_days)
    else:
        choice = ContentChoice(np.full(n, -1), np.full(n, None, dtype=object), np.full(n, -1), np.full(n, np.inf))
    has_item = choice.item >= 0
    content = np.full((n, c), None, dtype=object)
    put = carries[None, :] & has_item[:, None]
    content[put] = np.broadcast_to(choice.content_id[:, None], (n, c))[put]

    # English sentences for every (HCP, channel): ~0.1 ms per HCP with content, wasted where the caller words ``facts``.
    reason = (
        _reasons(rule_idx, unopened, forwards, favourites, replies, short, topic, choice, content, weekday, daypart, no_repeat_days)
        if sentences
        else np.full((n, c), "", dtype=object)
    )
    seq_len = sig.seq_len
    topic_label = np.asarray([*TOPIC_LABELS.values(), "preferred-topic"], dtype=object)[topic]
    history = np.full(n, "", dtype=object)
    has = (topic_hits > 0) & sentences
    if has.any():
        history[has] = _join("engaged with ", topic_hits[has], " ", topic_label[has], " items in the last ", seq_len[has], " touches")
    chosen = (choice.item >= 0) & (no_repeat_days > 0)
    repeated = chosen & (choice.days_since < no_repeat_days)
    facts = RuleFacts(
        unopened=unopened,
        forwards=forwards,
        favourites=favourites,
        replies=replies,
        short_days=int(short[:-1]),
        talk_topic=np.where(choice.item >= 0, choice.topic, topic),
        repeated=repeated,
        other_topic=chosen & ~repeated & (topic >= 0) & (choice.topic != topic),
        topic_hits=topic_hits,
        seq_len=seq_len,
        no_repeat_days=no_repeat_days,
    )
    return RuleActions(
        ranked=ranked,
        score=score,
        expected=expected,
        rule=np.asarray(RULE_NAMES, dtype=object)[rule_idx],
        reason=reason,
        history_reason=history,
        topic=topic,
        weekday=weekday,
        daypart=daypart,
        content=content,
        facts=facts,
    )


def _reasons(
    rule_idx: np.ndarray,
    unopened: np.ndarray,
    forwards: np.ndarray,
    favourites: np.ndarray,
    replies: np.ndarray,
    short: str,
    topic: np.ndarray,
    choice: ContentChoice,
    content: np.ndarray,
    weekday: np.ndarray,
    daypart: np.ndarray,
    no_repeat_days: float,
) -> np.ndarray:
    """[N, C] the sentence for a rep when channel c is the one suggested (the rule's own channel or another in its place)."""
    n, c = content.shape
    topics = [*TOPIC_LABELS.values(), "preferred-topic"]
    labels = [CHANNEL_LABELS[ch] for ch in CHANNELS]
    slots = [[f"{w} {d}" for d in DAYPARTS] for w in WEEKDAYS]
    # Talking points name the topic of the item chosen, else the preferred topic.
    talk = np.where(choice.item >= 0, choice.topic, topic)
    chosen = (choice.item >= 0) & (no_repeat_days > 0)
    repeated = chosen & (choice.days_since < no_repeat_days)
    other_topic = chosen & ~repeated & (topic >= 0) & (choice.topic != topic)
    window = f"{no_repeat_days:g}"
    out = np.empty((n, c), dtype=object)
    # Strings, not arrays: a comprehension over N x C is ~10x faster than numpy's char functions.
    rows = zip(
        rule_idx.tolist(),
        unopened.tolist(),
        forwards.tolist(),
        favourites.tolist(),
        replies.tolist(),
        talk.tolist(),
        topic.tolist(),
        repeated.tolist(),
        other_topic.tolist(),
        weekday.tolist(),
        daypart.tolist(),
        pd.notna(content).tolist(),
    )
    for i, (rule, u, fw, fv, rp, t, pref, rep, other, wd, dp, has) in enumerate(rows):
        note = (
            f"; every approved item was sent in the last {window} days, so the least recently sent one"
            if rep
            else f"; no {topics[pref]} item left that was not sent in the last {window} days"
            if other
            else ""
        )
        cause = (
            f"{u} WeChat pushes in a row unopened"
            if rule == 0
            else f"strong interest ({fw} forwards, {fv} favourites, {rp} 1:1 replies in {short})"
            if rule == 1
            else ""
        )
        row = out[i]
        for ch in range(c):
            slot = slots[wd[ch]][dp[ch]]
            what = f" with {topics[t]} content" if has[ch] else ""
            if rule == 0 and ch == _VISIT:
                text = f"{cause} → follow up with a visit ({slot})"
            elif rule == 1 and ch == _VISIT:
                text = f"{cause} → face-to-face visit; talking points: {topics[t]} ({slot})"
            elif rule < 2:
                text = f"{cause} → {labels[ch]} in place of a {'face-to-face ' if rule == 1 else ''}visit{what} ({slot})"
            elif ch == _PUSH:
                text = f"push {topics[t]} content at the HCP's preferred time ({slot})"
            else:
                text = f"{labels[ch]}{what} at the HCP's preferred time for it ({slot})"
            row[ch] = text + note if has[ch] else text
    return out
