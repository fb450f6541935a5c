"""Each HCP's recent contacts as flat arrays, read from a frame of features, for window rules.

Rules with windows in days ("no conference within 60 days of the last", "the same item at most
once in 30 days") and the rule policy's no-repeat content choice need, per HCP, the age of each
recent touch, its channel and its content. Two sources, both point-in-time as of the row's
feature time:

- the touch sequence (``seq_*`` columns, oldest first): every touch, but only the last
  ``features.sequence_length`` of them; ages come from ``days_since_last_touch`` plus the gaps;
- the item history (``item_hist_*`` columns of view ``hcp_item_history_*``, when present): the most
  recently delivered distinct items over a year with their last delivery, which covers items the
  short sequence has already dropped.

Pure: a frame in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from contract.schema import CHANNELS

_NEVER = np.inf


@dataclass(frozen=True)
class RecentContacts:
    """Flat arrays, one entry per known recent touch (outbound and inbound, as in the sequence)."""

    n: int  # rows of the frame
    row: np.ndarray  # int64 frame row of each touch
    channel: np.ndarray  # int64 channel index (-1 when only the item is known)
    content_id: np.ndarray  # object content id ("" when none)
    age_days: np.ndarray  # float64 days before the row's feature time
    opened: np.ndarray  # bool positive response

    def take(self, rows: np.ndarray) -> RecentContacts:
        """The touches of frame rows ``rows`` (sorted, unique), renumbered 0..len(rows)-1 as in ``frame.iloc[rows]``."""
        at = np.full(self.n, -1, dtype=np.int64)
        at[rows] = np.arange(len(rows))
        new = at[self.row]
        sel = new >= 0
        return RecentContacts(len(rows), new[sel], self.channel[sel], self.content_id[sel], self.age_days[sel], self.opened[sel])


def list_values(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Flattened values of a list column and each value's row index (empty when absent)."""
    import pyarrow as pa

    if name not in frame.columns or len(frame) == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    col = frame[name]
    # An object column converts from its ndarray at half the cost of from the Series (same Arrow type).
    arr = pa.array(col.to_numpy() if col.dtype == object else col, from_pandas=True)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(arr.type):
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    lengths = np.diff(arr.offsets.to_numpy())
    if arr.null_count:
        lengths = np.where(arr.is_null().to_numpy(zero_copy_only=False), 0, lengths)
    values = arr.flatten().to_numpy(zero_copy_only=False)
    return values, np.repeat(np.arange(len(frame)), lengths)


def recent_contacts(frame: pd.DataFrame) -> RecentContacts:
    """The recent touches of every row of ``frame`` (sequence and item-history columns)."""
    n = len(frame)
    ch, rows = list_values(frame, "seq_channel")
    gaps, _ = list_values(frame, "seq_gap_days")
    content, _ = list_values(frame, "seq_content_id")
    resp, _ = list_values(frame, "seq_response")
    ch = np.asarray(ch, dtype=np.int64)
    if len(ch):
        last = frame["days_since_last_touch"].to_numpy(dtype=np.float64, na_value=0.0) if "days_since_last_touch" in frame.columns else np.zeros(n)
        gaps = np.nan_to_num(np.asarray(gaps, dtype=np.float64), nan=0.0)
        # Age of element j = age of the row's last element + the gaps of the elements after j
        # in its row: forward cumulative sums, no Python loop over rows.
        csum = np.cumsum(gaps)
        row_end = np.r_[np.flatnonzero(np.diff(rows)), len(rows) - 1]  # last flat index of each present row
        end_of = np.repeat(row_end, np.diff(np.r_[-1, row_end]))
        after = csum[end_of] - csum
        age = last[rows] + after
        content = np.asarray(content, dtype=object)
        content = np.where(pd.isna(content), "", content).astype(object)
        opened = np.asarray(resp, dtype=np.int64) >= 2
    else:
        age, content, opened = np.zeros(0), np.zeros(0, dtype=object), np.zeros(0, dtype=bool)
    parts = [(rows.astype(np.int64), ch, content, age, opened)]
    items, irow = list_values(frame, "item_hist_content_id")
    if len(items):
        days, _ = list_values(frame, "item_hist_days_since_delivered")
        opened_days, _ = list_values(frame, "item_hist_days_since_opened")
        parts.append(
            (
                irow.astype(np.int64),
                np.full(len(items), -1, dtype=np.int64),
                np.asarray(items, dtype=object),
                np.asarray(days, dtype=np.float64),
                np.asarray(opened_days, dtype=np.float64) <= np.asarray(days, dtype=np.float64),
            )
        )
    cols = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    return RecentContacts(n, cols[0], cols[1], cols[2].astype(object), cols[3], cols[4].astype(bool))


def channel_counts_within(rc: RecentContacts, days: float) -> np.ndarray:
    """[N, C] touches per channel in the last ``days`` days (sequence touches only)."""
    sel = (rc.channel >= 0) & (rc.age_days < days)
    out = np.zeros((rc.n, len(CHANNELS)), dtype=np.int64)
    np.add.at(out, (rc.row[sel], rc.channel[sel]), 1)
    return out


def days_since_channel(rc: RecentContacts) -> np.ndarray:
    """[N, C] days since the last known touch per channel (inf when none is known)."""
    out = np.full((rc.n, len(CHANNELS)), _NEVER)
    sel = rc.channel >= 0
    np.minimum.at(out, (rc.row[sel], rc.channel[sel]), rc.age_days[sel])
    return out


def delivered_within(rc: RecentContacts, content_ids: np.ndarray, days: float) -> np.ndarray:
    """[N, K] bool: the candidate item ``content_ids[i, k]`` reached row i's HCP in the last ``days`` days."""
    content_ids = np.asarray(content_ids, dtype=object)
    if content_ids.ndim == 1:
        content_ids = content_ids[:, None]
    out = np.zeros(content_ids.shape, dtype=bool)
    sel = (rc.content_id != "") & (rc.age_days < days)
    if not sel.any():
        return out
    recent = set(zip(rc.row[sel].tolist(), rc.content_id[sel].tolist()))
    rows, cols = np.nonzero(pd.notna(content_ids))
    hit = np.fromiter(((r, content_ids[r, k]) in recent for r, k in zip(rows.tolist(), cols.tolist())), dtype=bool, count=len(rows))
    out[rows[hit], cols[hit]] = True
    return out


__all__ = ["RecentContacts", "list_values", "channel_counts_within", "days_since_channel", "delivered_within", "recent_contacts"]
