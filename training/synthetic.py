"""Synthetic training-set frames shaped like ``features.build_training_set`` output.

For tests and benchmarks only: a known world where each HCP has a hidden preferred channel
(visible, noisily, as static ``affinity_<channel>`` features), responds more to it, and reps
follow a habit policy that over-uses visits. Everything is vectorised and seeded.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from contract.schema import CHANNELS

START = pd.Timestamp("2026-01-05", tz="UTC")  # a Monday


def behaviour_channel_probs(n_channels: int = len(CHANNELS)) -> np.ndarray:
    """The synthetic reps' habit: visits half the time, the rest spread evenly."""
    p = np.full(n_channels, 0.5 / (n_channels - 1))
    p[0] = 0.5
    return p


def true_response_prob(action_channel: np.ndarray, preferred: np.ndarray) -> np.ndarray:
    """Ground truth of the synthetic world: 0.7 on the preferred channel, 0.15 elsewhere."""
    return np.where(action_channel == preferred, 0.7, 0.15)


def _history_lists(flat: np.ndarray, n_hcps: int, n_weeks: int, max_hist: int) -> pa.ListArray:
    """Row (h, w) holds HCP h's values from weeks max(0, w - max_hist) .. w-1, oldest first."""
    w = np.tile(np.arange(n_weeks), n_hcps)
    h = np.repeat(np.arange(n_hcps), n_weeks)
    lengths = np.minimum(w, max_hist)
    starts = h * n_weeks + w - lengths
    total = int(lengths.sum())
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    take = np.repeat(starts, lengths) + (np.arange(total) - np.repeat(offsets[:-1], lengths))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat[take]))


def _response_history(keys: dict[str, np.ndarray], response: np.ndarray, n_hcps: int, n_weeks: int) -> pd.DataFrame:
    """The feature stage's response-history columns: each HCP's counts over all its earlier rows."""
    from features.catalog import RESPONSE_HISTORY_BLOCKS, response_history_names

    cols = []
    for kind, values in RESPONSE_HISTORY_BLOCKS:
        onehot = (keys[kind][:, None] == np.arange(len(values))[None, :]).astype(np.int64)  # [N, K]
        for weight in (1, response[:, None]):
            x = (onehot * weight).reshape(n_hcps, n_weeks, len(values))
            cols.append((np.cumsum(x, axis=1) - x).reshape(-1, len(values)))  # strictly before the row
    return pd.DataFrame(np.concatenate(cols, 1).astype(np.int32), columns=response_history_names(365))


def _candidate_columns(channel: np.ndarray, content_ids: np.ndarray, response: np.ndarray, n_hcps: int, n_weeks: int) -> pd.DataFrame:
    """The feature stage's contact-recency and item-history columns: each row sees its HCP's earlier weekly touches."""
    from features.catalog import ITEM_HISTORY_PREFIX, contact_recency_names

    windows = [7, 21, 60, 180]
    names = contact_recency_names(windows)
    cap = 365.0
    data = {n: np.zeros(n_hcps * n_weeks, dtype=np.float32) for n in names}
    items: dict[str, list] = {k: [] for k in ("content_id", "days_since_delivered", "days_since_opened", "n30", "n90", "n365")}
    for h in range(n_hcps):
        for w in range(n_weeks):
            r = h * n_weeks + w
            past = np.arange(h * n_weeks, r)
            age = 7.0 * (w - (past - h * n_weeks))  # touches sit at their week's start
            for ci, ch in enumerate(CHANNELS):
                on = past[channel[past] == ci]
                a = 7.0 * (w - (on - h * n_weeks))
                data[f"cr_{ch}_days_since"][r] = a.min() if len(a) else cap
                for win in windows:
                    data[f"cr_{ch}_sent_{win}d"][r] = (a <= win).sum()
            for n in names:
                if ("topic_" in n or "type_" in n) and n.endswith("days_since"):
                    data[n][r] = cap  # the synthetic catalogue has no tags
            data["cr_days_since_any"][r] = age.min() if len(age) else cap
            order = past[::-1]  # newest first
            seen: dict[str, int] = {}
            for p in order:
                seen.setdefault(content_ids[p], p)
            ids = list(seen)[:12]
            items["content_id"].append(np.array(ids, dtype=object))
            last = np.array([7.0 * (w - (seen[c] - h * n_weeks)) for c in ids])
            opened = [[7.0 * (w - (p - h * n_weeks)) for p in past if content_ids[p] == c and response[p]] for c in ids]
            items["days_since_delivered"].append(last.astype(np.float32))
            items["days_since_opened"].append(np.array([min(o) if o else cap for o in opened], dtype=np.float32))
            for win in (30, 90, 365):
                items[f"n{win}"].append(
                    np.array([sum(1 for p in past if content_ids[p] == c and 7.0 * (w - (p - h * n_weeks)) <= win) for c in ids], dtype=np.float32)
                )
    frame = pd.DataFrame({n: v if "days_since" in n else v.astype(np.int32) for n, v in data.items()})  # counts are int32, as the feature stage's
    for k, v in items.items():
        frame[f"{ITEM_HISTORY_PREFIX}{k}"] = v
    frame[f"{ITEM_HISTORY_PREFIX}len"] = [len(v) for v in items["content_id"]]
    return frame


def synthetic_training_frame(
    n_hcps: int = 64,
    n_weeks: int = 12,
    n_content: int = 12,
    max_hist: int = 16,
    seed: int = 0,
    *,
    response_history: bool = True,
    candidates: bool = True,
    repeat_penalty: float = 0.0,
) -> pd.DataFrame:
    """One decision row per HCP and week, with sequences, static features, labels and propensities
    (the response-history counts unless ``response_history`` is False, the candidate history unless
    ``candidates`` is False; the content has no topics). With ``repeat_penalty`` the HCP habituates:
    an item delivered in the previous four weeks gets its response probability scaled by 1 - penalty."""
    rng = np.random.default_rng(seed)
    n_ch = len(CHANNELS)
    n = n_hcps * n_weeks
    preferred = rng.integers(0, n_ch, n_hcps)
    affinity = np.eye(n_ch)[preferred] + rng.normal(0, 0.3, (n_hcps, n_ch))
    probs = behaviour_channel_probs(n_ch)
    channel = rng.choice(n_ch, size=n, p=probs)
    content_idx = rng.integers(0, n_content, n)
    day = rng.integers(0, 7, n)
    part = rng.integers(0, 4, n)
    p_true = true_response_prob(channel, np.repeat(preferred, n_weeks))
    if repeat_penalty:
        c2 = content_idx.reshape(n_hcps, n_weeks)
        repeated = np.zeros((n_hcps, n_weeks), dtype=bool)
        for lag in range(1, 5):
            repeated[:, lag:] |= c2[:, lag:] == c2[:, :-lag]
        p_true = p_true * np.where(repeated.reshape(-1), 1.0 - repeat_penalty, 1.0)
    response = (rng.random(n) < p_true).astype(np.int64)
    propensity = probs[channel] / n_content / 28.0
    content_ids = np.array([f"CT{i:04d}" for i in range(n_content)], dtype=object)[content_idx]
    read = np.where(response == 1, rng.exponential(120, n), 0.0)
    week = np.tile(np.arange(n_weeks), n_hcps)
    ts = START + pd.to_timedelta(week * 7, unit="D")
    frame = pd.DataFrame(
        {
            "hcp_id": np.repeat(np.array([f"HCP{i:06d}" for i in range(n_hcps)], dtype=object), n_weeks),
            "event_timestamp": ts,
            "label_channel": channel,
            "label_content_id": content_ids,
            "label_day_offset": day,
            "label_daypart": part,
            "label_response": response,
            "label_propensity": propensity,
            "label_ts": ts + pd.to_timedelta(day, unit="D") + pd.to_timedelta(8 + 3 * part, unit="h"),
        }
    )
    weekday = day  # decision weeks start on Monday, so the day offset is the weekday
    gap = np.full(n, 7.0)
    for name, flat in (
        ("seq_channel", channel),
        ("seq_content_id", content_ids),
        ("seq_response", np.where(np.asarray(response) > 0, 2, 1)),  # the feature stage's code: 1 delivered, 2 opened
        ("seq_read_seconds", read),
        ("seq_gap_days", gap),
        ("seq_weekday", weekday),
        ("seq_daypart", part),
    ):
        frame[name] = _history_lists(np.asarray(flat), n_hcps, n_weeks, max_hist).to_pandas()
    frame["seq_len"] = np.minimum(week, max_hist)
    for i, ch in enumerate(CHANNELS):
        frame[f"affinity_{ch}"] = np.repeat(affinity[:, i], n_weeks).astype(np.float32)
    frame["is_kol"] = np.repeat(rng.random(n_hcps) < 0.1, n_weeks)
    if response_history:
        keys = {"channel": channel, "weekday": weekday, "daypart": part, "topic": np.full(n, -1)}
        frame = pd.concat([frame, _response_history(keys, response, n_hcps, n_weeks)], axis=1)
    if candidates:
        frame = pd.concat([frame, _candidate_columns(channel, content_ids, response, n_hcps, n_weeks)], axis=1)
    frame.attrs["preferred_channel"] = dict(zip(frame["hcp_id"].unique(), preferred.tolist()))
    return frame
