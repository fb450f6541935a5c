"""Today's rule-based next best action (the policy the model must beat), over online features.

The senior reps' rules from the domain brief, vectorised over a frame of online features (one
row per HCP, columns as ``features.get_online_features`` returns them):

1. ``unopened_pushes``: several consecutive WeChat pushes unopened -> follow up with a visit;
2. ``strong_interest``: several forwards / favourites / 1:1 replies -> a face-to-face visit, with
   talking points from the topics the HCP engaged with;
3. ``preference``: otherwise push content of the preferred topic at the preferred time.

Every channel also gets a score so the rules yield a full ranking (the rule's channel first,
then channels by the HCP's smoothed open rate). Serving uses this in degraded mode and for the
holdout; training's baselines can use it. Pure: no I/O, no imports of training or serving.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from contract.schema import CHANNELS, DAYPARTS, TOPICS, WEEKDAYS

RULE_NAMES: tuple[str, ...] = ("unopened_pushes", "strong_interest", "preference")
CHANNEL_LABELS: dict[str, str] = {
    "visit": "visit",
    "department_meeting": "department meeting",
    "wechat_push": "WeChat push",
    "wecom_1to1": "1:1 WeChat message",
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


@dataclass(frozen=True)
class RuleThresholds:
    """When a rule fires: unopened pushes in a row, and interest signals in the short window."""

    unopened_pushes: int = 3
    strong_interest: int = 2


@dataclass(frozen=True)
class RuleActions:
    """The rule policy's answer per HCP (N rows, C = len(CHANNELS))."""

    ranked: np.ndarray  # [N, C] channel indices, best first (disallowed channels last)
    score: np.ndarray  # [N, C] rule score (> 1 for the rule's channel, open rate otherwise, -inf disallowed)
    expected: np.ndarray  # [N, C] smoothed historical response rate of each channel
    rule: np.ndarray  # [N] object: which rule fired (RULE_NAMES)
    reason: np.ndarray  # [N] object: the rule's sentence for a rep
    history_reason: np.ndarray  # [N] object: what the HCP engaged with ("" when nothing)
    topic: np.ndarray  # [N] int: preferred topic index into TOPICS (-1 unknown)
    weekday: np.ndarray  # [N] int: preferred local weekday (0 = Monday)
    daypart: np.ndarray  # [N] int: preferred local daypart index into DAYPARTS


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


def _block(frame: pd.DataFrame, pattern: str) -> np.ndarray:
    """[N, C] of ``pattern.format(channel)`` columns in one conversion (0 where absent)."""
    out = frame.reindex(columns=[pattern.format(ch) for ch in CHANNELS]).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.nan_to_num(out, nan=0.0)


def _flat(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flattened values of a list column and each value's row index."""
    import pyarrow as pa

    if name not in frame.columns:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    arr = pa.array(frame[name], from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(arr.type):
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    lengths = np.diff(arr.offsets.to_numpy()) if len(arr) else np.zeros(0, dtype=np.int64)
    lengths = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lengths) if arr.null_count else lengths
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values, np.repeat(np.arange(len(frame)), lengths)


def _mode(rows: np.ndarray, values: np.ndarray, weight: np.ndarray, n: int, size: int, default: int) -> np.ndarray:
    """Most frequent value per row (weighted), ``default`` where a row has none."""
    counts = np.zeros((n, size))
    ok = (values >= 0) & (values < size)
    np.add.at(counts, (rows[ok], values[ok].astype(np.int64)), weight[ok])
    return np.where(counts.sum(1) > 0, counts.argmax(1), default)


def _join(*parts: np.ndarray | str) -> np.ndarray:
    """Element-wise string concatenation of arrays and constants (object dtype)."""
    out: np.ndarray | str = ""
    for p in parts:
        out = np.char.add(out, p if isinstance(p, str) else np.asarray(p).astype(str))
    return np.asarray(out, dtype=object)


def rule_based_actions(
    frame: pd.DataFrame,
    content_topics: Mapping[str, str] | None = None,
    *,
    allowed: np.ndarray | None = None,
    thresholds: RuleThresholds = RuleThresholds(),
) -> RuleActions:
    """Rank channels per HCP by the senior reps' rules and say why, for every row of ``frame``.

    content_topics: content id -> topic (for talking points and topic preference).
    allowed: optional [N, C] bool of channels that may be suggested (consent columns
        ``consent_<channel>`` in the frame are always applied on top).
    """
    n, c = len(frame), len(CHANNELS)
    short, long = _window_columns(frame)
    sent = _block(frame, "{}_sent_" + long)
    opened = _block(frame, "{}_opened_" + long)
    # Beta(1, 3) prior: an untried channel scores 0.25, below a channel the HCP answers.
    expected = (opened + 1.0) / (sent + 4.0)

    ok = np.ones((n, c), dtype=bool) if allowed is None else np.asarray(allowed, dtype=bool).copy()
    if ok.shape != (n, c):
        raise ValueError(f"rule policy: allowed must have shape ({n}, {c}), got {ok.shape}")
    consent_cols = [f"consent_{ch}" for ch in CHANNELS]
    if any(c in frame.columns for c in consent_cols):
        # An absent consent column means "not recorded", which never counts as consent.
        ok &= frame.reindex(columns=consent_cols).fillna(False).to_numpy(dtype=bool)

    unopened = _col(frame, "consecutive_unopened_pushes", 0.0).astype(np.int64)
    forwards = _block(frame, "{}_forwarded_" + short).sum(1).astype(np.int64)
    favourites = _col(frame, f"favourited_{short}", 0.0).astype(np.int64)
    replies = _col(frame, f"wecom_1to1_replied_{short}", 0.0).astype(np.int64)
    interest = forwards + favourites + replies

    fire_unopened = unopened >= thresholds.unopened_pushes
    fire_interest = ~fire_unopened & (interest >= thresholds.strong_interest)
    rule_idx = np.where(fire_unopened, 0, np.where(fire_interest, 1, 2))
    target = np.where(rule_idx < 2, _VISIT, _PUSH)
    # Without consent to the rule's channel, the best allowed channel by open rate takes over.
    score = expected.copy()
    score[np.arange(n), target] += _RULE_BONUS
    score = np.where(ok, score, -np.inf)
    ranked = np.argsort(-score, axis=1, kind="stable")

    # Preferences from the touch sequence: responded touches count, others count a little.
    resp, rows = _flat(frame, "seq_response")
    weight = np.where(np.asarray(resp, dtype=np.float64) > 0, 1.0, 0.05) if len(resp) else np.zeros(0)
    dayparts, _ = _flat(frame, "seq_daypart")
    weekdays, _ = _flat(frame, "seq_weekday")
    daypart = _mode(rows, np.asarray(dayparts, dtype=np.int64), weight, n, len(DAYPARTS), _DEFAULT_DAYPART)
    weekday = _mode(rows, np.asarray(weekdays, dtype=np.int64), weight, n, len(WEEKDAYS), _DEFAULT_WEEKDAY)
    topic = np.full(n, -1, dtype=np.int64)
    topic_hits = np.zeros(n, dtype=np.int64)
    if content_topics and len(resp):
        ids, _ = _flat(frame, "seq_content_id")
        lookup = pd.Series({k: TOPICS.index(v) for k, v in content_topics.items() if v in TOPICS}, dtype=np.int64)
        codes = lookup.reindex(pd.Index(np.asarray(ids, dtype=object))).fillna(-1).to_numpy(dtype=np.int64)
        engaged = np.asarray(resp, dtype=np.float64) > 0
        counts = np.zeros((n, len(TOPICS)), dtype=np.int64)
        sel = engaged & (codes >= 0)
        np.add.at(counts, (rows[sel], codes[sel]), 1)
        topic = np.where(counts.sum(1) > 0, counts.argmax(1), -1)
        topic_hits = counts.max(1) if n else topic_hits

    topic_label = np.asarray([*TOPIC_LABELS.values(), "preferred-topic"], dtype=object)[topic]
    slot_label = _join(np.asarray(WEEKDAYS, dtype=object)[weekday], " ", np.asarray(DAYPARTS, dtype=object)[daypart])
    reason = np.empty(n, dtype=object)
    if fire_unopened.any():
        m = fire_unopened
        reason[m] = _join(unopened[m], " WeChat pushes in a row unopened → follow up with a visit")
    if fire_interest.any():
        m = fire_interest
        reason[m] = _join(
            "strong interest (", forwards[m], " forwards, ", favourites[m], " favourites, ", replies[m],
            f" 1:1 replies in {short}) → face-to-face visit; talking points: ", topic_label[m],
        )
    rest = rule_idx == 2
    if rest.any():
        reason[rest] = _join("push ", topic_label[rest], " content at the HCP's preferred time (", slot_label[rest], ")")
    seq_len = _col(frame, "seq_len", 0.0).astype(np.int64)
    history = np.full(n, "", dtype=object)
    has = topic_hits > 0
    if has.any():
        history[has] = _join("engaged with ", topic_hits[has], " ", topic_label[has], " items in the last ", seq_len[has], " touches")
    return RuleActions(
        ranked=ranked, score=score, expected=expected, rule=np.asarray(RULE_NAMES, dtype=object)[rule_idx],
        reason=reason, history_reason=history, topic=topic, weekday=weekday.astype(np.int64), daypart=daypart.astype(np.int64),
    )
