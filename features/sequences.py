"""The HCP's last N touchpoints before each snapshot, as Arrow list arrays (oldest first)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from features.events import Prepared
from features.transforms import Grid

SEQUENCE_FEATURES = ("seq_channel", "seq_content_id", "seq_response", "seq_read_seconds", "seq_gap_days", "seq_weekday", "seq_daypart")


def sequence_bounds(prep: Prepared, times: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(HCP x T) end index (exclusive) and length of each snapshot's last-``n`` event slice."""
    ev = prep.events
    grid = Grid(ev.hcp, ev.t, prep.n_hcps, times)
    length = np.minimum(grid.hi - grid.start, n)
    return grid.hi, length


def sequence_arrays(prep: Prepared, hi: np.ndarray, length: np.ndarray) -> dict[str, pa.Array]:
    """Arrow list arrays for the selected rows: ``hi`` and ``length`` are flat, one per row."""
    ev = prep.events
    hi = hi.astype(np.int64)
    length = length.astype(np.int64)
    offsets = np.concatenate([[0], np.cumsum(length)])
    total = int(offsets[-1])
    # Position of every sequence element in the sorted events, built without a Python loop.
    idx = np.repeat(hi - length, length) + (np.arange(total) - np.repeat(offsets[:-1], length))
    off = pa.array(offsets.astype(np.int32) if total < 2**31 else offsets)
    list_type = pa.ListArray if total < 2**31 else pa.LargeListArray

    def lst(values: np.ndarray, typ: pa.DataType) -> pa.Array:
        return list_type.from_arrays(off, pa.array(values, type=typ))

    content = pa.array(prep.content_vocab, pa.string()).take(pa.array(ev.content[idx]))
    return {
        "seq_channel": lst(ev.channel[idx].astype(np.int64), pa.int64()),
        "seq_content_id": list_type.from_arrays(off, content),
        "seq_response": lst(ev.response[idx].astype(np.int64), pa.int64()),
        "seq_read_seconds": lst(ev.read_seconds[idx], pa.float32()),
        "seq_gap_days": lst(ev.gap_days[idx], pa.float32()),
        "seq_weekday": lst(ev.weekday[idx].astype(np.int64), pa.int64()),
        "seq_daypart": lst(ev.daypart[idx].astype(np.int64), pa.int64()),
        "seq_len": pa.array(length, pa.int64()),
    }


def interleaved_index(length: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where k equal-length arrays stored back to back per row live in the flat values.

    Row i stores ``k * length[i]`` values: array 0's, then array 1's, ... Returns the per-array
    row offsets (``length`` cumulated) and, for every element of the per-array flat order, the
    flat position of its array-0 value (``base``) and its row's length (``step``): array j's
    element sits at ``base + j * step``.
    """
    length = np.asarray(length, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(length)])
    row = np.repeat(np.arange(len(length)), length)
    local = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], length)
    return offsets, k * offsets[row] + local, length[row]
