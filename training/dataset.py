"""Turning a training-set DataFrame (decision labels + point-in-time features) into tensors.

One row is one logged touch: the HCP's state as of ``event_timestamp`` (sequence arrays, oldest
first, and static features) and the action the rep took after it with the HCP's response and
the logged propensity. Conversion is vectorised through Arrow list offsets: no per-row loops.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from contract.schema import CHANNELS
from features.catalog import (
    CONTACT_PREFIX,
    ITEM_HISTORY_ARRAYS,
    ITEM_HISTORY_PREFIX,
    RESPONSE_HISTORY_BLOCKS,
    RESPONSE_HISTORY_PREFIX,
    contact_recency_names,
    response_history_names,
)
from features.events import POSITIVE_RESPONSE_CODE  # seq_response >= 2: opened/attended or engaged
from features.labels import LABEL_COLUMNS as FEATURE_LABEL_COLUMNS

# The feature stage's label columns, less the touch's own time (``label_ts``: for splits, never a label).
LABEL_COLUMNS: tuple[str, ...] = tuple(c for c in FEATURE_LABEL_COLUMNS if c != "label_ts")
SEQ_COLUMNS: tuple[str, ...] = (
    "seq_channel",
    "seq_content_id",
    "seq_response",
    "seq_read_seconds",
    "seq_gap_days",
    "seq_weekday",
    "seq_daypart",
)
# Columns never used as static features: ids, times, labels, sequences.
NON_FEATURE_COLUMNS: frozenset[str] = frozenset({*LABEL_COLUMNS, *SEQ_COLUMNS, "seq_len", "label_ts", "created_timestamp"})
PAD, NONE = 0, 1  # reserved content ids
# Item slots of the candidate block (training.model.candidates): the feature stage's item history
# holds up to features.item_history_items items per HCP; more are cut, fewer padded.
ITEM_SLOTS = 12
# Block sizes of the response-history counts (channel, weekday, daypart, topic): training.model.ModelConfig.long_history.
RESPONSE_HISTORY_SIZES: tuple[int, ...] = tuple(len(values) for _, values in RESPONSE_HISTORY_BLOCKS)


@dataclass(frozen=True)
class ContentVocab:
    """Content ids to model indices: 0 is padding, 1 is 'no content / unknown', then the catalogue.

    Null and empty-string ids (the feature stage writes "" for contacts without content) map to 1.
    """

    ids: tuple[str, ...]

    @classmethod
    def from_ids(cls, ids: Sequence[Any]) -> ContentVocab:
        """Vocabulary over the distinct non-empty ids, sorted so the same catalogue gives the same indices."""
        clean = pd.Series(list(ids), dtype=object).dropna().astype(str)
        return cls(tuple(sorted(clean[clean != ""].unique())))

    def __len__(self) -> int:
        return len(self.ids) + 2

    def __getstate__(self) -> dict[str, Any]:
        # The lookup table is derived: never pickled with a model bundle.
        return {"ids": self.ids}

    def _table(self) -> dict[str, int] | None:
        """Content id -> model index, built once per vocabulary (None when ids repeat: the pandas path raises as before)."""
        table = self.__dict__.get("_codes")
        if table is None:
            table = {c: i + 2 for i, c in enumerate(self.ids)}
            table = table if len(table) == len(self.ids) and all(type(c) is str for c in self.ids) else {}
            object.__setattr__(self, "_codes", table)  # frozen dataclass: a cache outside the fields
        return table or None

    def encode(self, values: Any) -> np.ndarray:
        """Model indices for content ids (null or unseen -> NONE)."""
        # Plain str / None values (what Arrow and the feature stage give): a dict lookup, not a pandas
        # Index and a string Series per call (~1 ms of a single-HCP request).
        seq = values.tolist() if isinstance(values, np.ndarray) and values.ndim == 1 else None
        table = self._table() if seq is not None else None
        if table is not None and all(v is None or type(v) is str for v in seq):
            return np.fromiter((NONE if v is None else table.get(v, NONE) for v in seq), dtype=np.int32, count=len(seq))
        idx = pd.Index(self.ids).get_indexer(pd.Series(values, dtype=object).astype("string").to_numpy(dtype=object, na_value=None))
        return np.where(idx < 0, NONE, idx + 2).astype(np.int32)

    def decode(self, indices: np.ndarray) -> np.ndarray:
        """Content ids for model indices (None for the reserved ones)."""
        table = np.array([None, None, *self.ids], dtype=object)
        return table[np.asarray(indices)]

    def mask(self, allowed: Sequence[str]) -> np.ndarray:
        """Boolean [V] mask, True where the content may be suggested (NONE stays allowed)."""
        out = np.zeros(len(self), dtype=bool)
        out[NONE] = True
        idx = pd.Index(self.ids).get_indexer(list(allowed))
        out[idx[idx >= 0] + 2] = True
        return out


@dataclass
class StaticScaler:
    """Standardises static features with training-split statistics (saved with the model)."""

    columns: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, frame: pd.DataFrame, columns: Sequence[str]) -> StaticScaler:
        """Means and standard deviations of ``columns`` (NaN-aware; constant columns get std 1)."""
        values = _static_matrix(frame, columns)
        with np.errstate(all="ignore"):
            mean = np.nan_to_num(np.nanmean(values, 0)) if len(values) else np.zeros(len(columns))
            std = np.nan_to_num(np.nanstd(values, 0)) if len(values) else np.ones(len(columns))
        std = np.where(std > 1e-8, std, 1.0)
        return cls(tuple(columns), mean.astype(np.float32), std.astype(np.float32))

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """[N, S] float32, standardised, missing values at the mean (0)."""
        values = (_static_matrix(frame, self.columns) - self.mean) / self.std
        return np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"columns": list(self.columns), "mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StaticScaler:
        """Inverse of ``to_dict``."""
        return cls(tuple(data["columns"]), np.asarray(data["mean"], np.float32), np.asarray(data["std"], np.float32))


def _static_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    present = set(frame.columns)  # one set, not a pandas Index lookup per column
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"training set: static feature columns missing: {missing}")
    if not columns:
        return np.zeros((len(frame), 0), np.float32)
    if frame.columns.is_unique:
        # Positions cached per column set: a name lookup of ~200 columns cost ~0.3 ms a served request.
        sub = frame.iloc[:, _positions(tuple(frame.columns), tuple(columns))]
    else:
        sub = frame[list(columns)]
    return sub.astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)


@lru_cache(maxsize=32)
def _positions(columns: tuple[Any, ...], names: tuple[Any, ...]) -> np.ndarray:
    return pd.Index(columns).get_indexer(list(names))


def response_history_columns(frame: pd.DataFrame) -> list[str] | None:
    """The feature stage's response-history columns in stored order, or None when the frame has none."""
    names = _response_history_of(tuple(frame.columns))
    return None if names is None else list(names)


@lru_cache(maxsize=32)
def _response_history_of(columns: tuple[Any, ...]) -> tuple[str, ...] | None:
    # Per column set, not per call: a served request scans its ~300 column names once per schema.
    present = [c for c in columns if str(c).startswith(RESPONSE_HISTORY_PREFIX)]
    if not present:
        return None
    windows = sorted({str(c).rsplit("_", 1)[-1] for c in present})
    if len(windows) != 1 or not windows[0].endswith("d") or not windows[0][:-1].isdigit():
        raise ValueError(f"training set: response-history columns ({RESPONSE_HISTORY_PREFIX}*) must share one '<days>d' window, got {windows}")
    names = response_history_names(int(windows[0][:-1]))
    have = set(columns)
    missing = [c for c in names if c not in have]
    if missing:
        raise ValueError(f"training set: response-history columns missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return tuple(names)


def float_blocks(frame: pd.DataFrame, names: Sequence[str], rows: int = 1 << 16) -> Iterator[tuple[slice, np.ndarray]]:
    """(row slice, float64 [rows, len(names)] with NaN for missing) over ``frame``'s ``names`` columns, a block of rows at a time.

    One conversion per block instead of one per column: a single-row frame (a served request) pays
    for one pandas call, not one per column, and a 5.6M-row training set never holds a float64
    copy of the whole block.
    """
    for start in range(0, max(len(frame), 1), rows):
        part = frame if len(frame) <= rows else frame.iloc[start : start + rows]  # one block: no slice
        yield slice(start, start + len(part)), part[list(names)].to_numpy(dtype=np.float64, na_value=np.nan)


def _in_block(n: int, rows: slice, bad: np.ndarray) -> np.ndarray:
    """A block's bad-row mask placed in the whole frame's rows, so errors name the frame's row."""
    out = np.zeros(n, dtype=bool)
    out[rows] = bad
    return out


def contact_columns(frame: pd.DataFrame) -> tuple[list[str], int] | None:
    """The contact-recency columns in stored order and the number of windows, or None when the frame has none."""
    found = _contact_columns_of(tuple(frame.columns))
    return None if found is None else (list(found[0]), found[1])


@lru_cache(maxsize=32)
def _contact_columns_of(columns: tuple[Any, ...]) -> tuple[tuple[str, ...], int] | None:
    present = [str(c) for c in columns if str(c).startswith(CONTACT_PREFIX)]
    if not present:
        return None
    windows = sorted({int(c.rsplit("_", 1)[1][:-1]) for c in present if c.startswith(f"{CONTACT_PREFIX}{CHANNELS[0]}_sent_")})
    names = contact_recency_names(windows) if windows else []
    have = set(columns)
    missing = [c for c in names if c not in have]
    if not windows or missing:
        raise ValueError(f"training set: contact-recency columns ({CONTACT_PREFIX}*) incomplete: missing {missing[:5] or 'the per-window counts'}")
    return tuple(names), len(windows)


def encode_candidates(frame: pd.DataFrame, vocab: ContentVocab, item_slots: int = ITEM_SLOTS) -> tuple[dict[str, np.ndarray], list[str], int] | None:
    """The candidate block (training.model.candidates) as compact arrays, the contact columns it read (in order) and
    their number of windows; None when absent.

    ``contact`` uint8 [N, K] (days as a log-scale byte, counts capped at 255), ``item_ids`` [N, M]
    content indices (0 = empty), ``item_feats`` uint8 [N, M, 5]. One byte per value: 125 bytes a
    row, about 700 MB at 100k HCPs x 1 year.
    """
    from training.model.candidates import days_code

    found = contact_columns(frame)
    if found is None or f"{ITEM_HISTORY_PREFIX}content_id" not in frame.columns:
        return None
    names, n_windows = found
    n = len(frame)
    contact = np.empty((n, len(names)), dtype=np.uint8)
    is_days = np.array(["days_since" in c for c in names])
    for rows, values in float_blocks(frame, names):
        if (negative := (values[:, ~is_days] < 0)).any():
            col = np.asarray(names)[~is_days][np.flatnonzero(negative.any(0))[0]]
            raise _first_bad(frame, _in_block(len(frame), rows, negative.any(1)), str(col), "must be a count >= 0")
        block = contact[rows]  # a view: rows is a slice
        block[:, is_days] = days_code(values[:, is_days])  # missing row: never
        block[:, ~is_days] = np.minimum(np.nan_to_num(values[:, ~is_days], nan=0.0), 255)
    ids_list = _list_array(frame, f"{ITEM_HISTORY_PREFIX}content_id")
    lengths = np.diff(ids_list.offsets.to_numpy())
    content_dtype = np.int16 if len(vocab) < 2**15 else np.int32
    # Newest first: keep each row's first ``item_slots`` items, left-aligned.
    keep = np.minimum(lengths, item_slots)
    row = np.repeat(np.arange(n), keep)
    pos = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
    src = np.repeat(ids_list.offsets.to_numpy()[:-1].astype(np.int64), keep) + pos
    ids = np.zeros((n, item_slots), dtype=content_dtype)
    codes = vocab.encode(ids_list.values.to_numpy(zero_copy_only=False))
    # An item outside the vocabulary (NONE) carries no learnt identity: leave its slot empty.
    ids[row, pos] = np.where(codes[src] > NONE, codes[src], PAD)
    feats = np.zeros((n, item_slots, len(ITEM_HISTORY_ARRAYS)), dtype=np.uint8)
    for j, a in enumerate(ITEM_HISTORY_ARRAYS):
        arr = _list_array(frame, f"{ITEM_HISTORY_PREFIX}{a}")
        if (np.diff(arr.offsets.to_numpy()) != lengths).any():
            raise _first_bad(frame, np.diff(arr.offsets.to_numpy()) != lengths, f"{ITEM_HISTORY_PREFIX}{a}", "array length differs from item_hist_content_id's")
        values = np.asarray(arr.values.to_numpy(zero_copy_only=False), dtype=np.float64)[src]
        feats[row, pos, j] = days_code(values) if a.startswith("days_since") else np.minimum(np.nan_to_num(values), 255)
    return {"contact": contact, "item_ids": ids, "item_feats": feats}, names, n_windows


def static_feature_columns(frame: pd.DataFrame) -> list[str]:
    """Numeric and boolean columns that are neither ids, labels, sequences nor response-history counts, in frame order."""
    out = []
    for name in frame.columns:
        if name in NON_FEATURE_COLUMNS or str(name).startswith(("label_", "seq_", RESPONSE_HISTORY_PREFIX, CONTACT_PREFIX, ITEM_HISTORY_PREFIX)):
            continue
        dtype = frame[name].dtype
        if pd.api.types.is_bool_dtype(dtype) or (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_datetime64_any_dtype(dtype)):
            out.append(name)
    return out


@dataclass
class EncodedData:
    """Model-ready arrays in compact dtypes; ``batches`` yields torch tensors."""

    arrays: dict[str, np.ndarray]
    hcp_id: np.ndarray
    week: np.ndarray  # event_timestamp as datetime64[ns]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.hcp_id)

    def subset(self, index: np.ndarray) -> EncodedData:
        """Rows at ``index`` (positions or boolean mask)."""
        return EncodedData({k: v[index] for k, v in self.arrays.items()}, self.hcp_id[index], self.week[index], dict(self.meta))

    def batches(
        self, batch_size: int, device: Any = "cpu", *, shuffle: bool = False, seed: int = 0, shard: tuple[int, int] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Torch batches; shuffled by ``seed`` when asked (same seed, same order).

        ``shard=(rank, workers)``: only the rank's contiguous part of each batch (data-parallel
        training); every worker sees the same batches in the same order, so the parts add up.
        """
        import torch

        n = len(self)
        order = torch.from_numpy(np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n))
        # Zero-copy views of the compact arrays; each batch is one gather per array, then one cast
        # (ids to int64 for embeddings and targets, values to float32): no per-row Python.
        with warnings.catch_warnings():  # read-only arrays are fine: batches are gathered copies
            warnings.simplefilter("ignore", UserWarning)
            tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in self.arrays.items()}
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            if shard is not None:
                idx = idx.tensor_split(shard[1])[shard[0]]
            yield {k: _cast(torch, t.index_select(0, idx)).to(device) for k, t in tensors.items()}


def _cast(torch: Any, values: Any) -> Any:
    return values.float() if values.is_floating_point() else values.long()


def _first_bad(frame: pd.DataFrame, bad: np.ndarray, column: str, why: str) -> ValueError:
    pos = int(np.flatnonzero(bad)[0])
    hcp = frame["hcp_id"].iloc[pos] if "hcp_id" in frame.columns else "?"
    return ValueError(f"training set: column {column!r}, row {pos} (hcp_id={hcp}): {why} ({int(bad.sum())} bad rows)")


def _list_array(frame: pd.DataFrame, column: str) -> pa.ListArray:
    col = frame[column]
    try:
        # An object column converts from its ndarray at half the cost of from the Series (same Arrow type).
        arr = pa.array(col.to_numpy() if col.dtype == object else col, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise ValueError(f"training set: column {column!r} must hold one array per row: {exc}") from None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_null(arr.type):
        arr = pa.array([[] for _ in range(len(frame))], type=pa.list_(pa.int64()))
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise ValueError(f"training set: column {column!r} must hold arrays, got {arr.type}")
    return arr


def _pad_right(arr: pa.ListArray, max_len: int, values: np.ndarray, fill: Any, dtype: Any) -> np.ndarray:
    """Keep each row's last ``max_len`` items, left-aligned, padded on the right with ``fill``."""
    offsets = arr.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    keep = np.minimum(lengths, max_len)
    n = len(lengths)
    out = np.full((n, max_len), fill, dtype=dtype)
    total = int(keep.sum())
    if total:
        row = np.repeat(np.arange(n), keep)
        pos = np.arange(total) - np.repeat(np.cumsum(keep) - keep, keep)
        src = np.repeat(offsets[:-1] + lengths - keep, keep) + pos
        out[row, pos] = values[src]
    return out


def encode_frame(
    frame: pd.DataFrame,
    vocab: ContentVocab,
    scaler: StaticScaler,
    max_seq_len: int,
    *,
    with_labels: bool = True,
    item_slots: int = ITEM_SLOTS,
) -> EncodedData:
    """Validate a training-set frame and encode it to compact arrays (see module docstring)."""
    required = ["hcp_id", *SEQ_COLUMNS] + (["event_timestamp", *LABEL_COLUMNS[2:]] if with_labels else [])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"training set: missing columns {missing}")
    idx = frame.index
    if not (isinstance(idx, pd.RangeIndex) and idx.start == 0 and idx.step == 1):
        frame = frame.reset_index(drop=True)  # positions are the rows; a copy only where the index differs
    n = len(frame)
    lists = {c: _list_array(frame, c) for c in SEQ_COLUMNS}
    lengths = np.diff(lists["seq_channel"].offsets.to_numpy())
    for c in SEQ_COLUMNS[1:]:
        other = np.diff(lists[c].offsets.to_numpy())
        if (other != lengths).any():
            raise _first_bad(frame, other != lengths, c, "array length differs from seq_channel's")

    def flat(c: str, kind: str) -> np.ndarray:
        values = lists[c].values
        if kind == "str":
            return values.to_numpy(zero_copy_only=False)
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64)

    arrays: dict[str, np.ndarray] = {}
    ch = flat("seq_channel", "num")
    if len(ch) and (np.isnan(ch).any() or ch.min() < 0 or ch.max() >= len(CHANNELS)):
        raise ValueError(f"training set: column 'seq_channel' holds values outside 0..{len(CHANNELS) - 1}")
    arrays["channel"] = _pad_right(lists["seq_channel"], max_seq_len, ch.astype(np.int8) + 1, 0, np.int8)
    content_dtype = np.int16 if len(vocab) < 2**15 else np.int32  # halves the largest token array
    arrays["content"] = _pad_right(lists["seq_content_id"], max_seq_len, vocab.encode(flat("seq_content_id", "str")).astype(content_dtype), PAD, content_dtype)
    resp = np.nan_to_num(flat("seq_response", "num"))
    # seq_response is the feature stage's code (features.events: 0 not delivered, 1 delivered,
    # 2 opened/attended, 3 engaged): a positive response is >= 2, like label_response.
    arrays["response"] = _pad_right(lists["seq_response"], max_seq_len, (resp >= POSITIVE_RESPONSE_CODE).astype(np.int8) + 1, 0, np.int8)
    for name, col, size in (("weekday", "seq_weekday", 7), ("daypart", "seq_daypart", 4)):
        v = flat(col, "num")
        if len(v) and (np.isnan(v).any() or v.min() < 0 or v.max() >= size):
            raise ValueError(f"training set: column {col!r} holds values outside 0..{size - 1}")
        arrays[name] = _pad_right(lists[col], max_seq_len, v.astype(np.int8) + 1, 0, np.int8)
    for name, col in (("gap_days", "seq_gap_days"), ("read_seconds", "seq_read_seconds")):
        arrays[name] = _pad_right(lists[col], max_seq_len, np.nan_to_num(flat(col, "num")).astype(np.float32), 0.0, np.float32)
    arrays["length"] = np.minimum(lengths, max_seq_len).astype(np.int16)
    # float16 storage: standardised values lose nothing that matters and 200+ static columns
    # dominate memory at 100k HCPs x 1 year; batches are cast to float32.
    arrays["static"] = scaler.transform(frame).astype(np.float16)
    meta: dict[str, Any] = {}
    if (hist := response_history_columns(frame)) is not None:
        # Counts of a year's touches per channel/weekday/daypart/topic stay far below 255; uint8
        # keeps the 50 columns at 50 bytes a row (280 MB at 100k HCPs x 1 year). A missing value
        # (no feature row yet) means no touches yet: 0.
        # A block of rows at a time: a float64 copy of all 50 would be a 2.3 GB transient at 100k HCPs x 1 year.
        counts = np.empty((n, len(hist)), dtype=np.uint8)
        for rows, values in float_blocks(frame, hist):
            if (negative := values < 0).any():
                col = hist[int(np.flatnonzero(negative.any(0))[0])]
                raise _first_bad(frame, _in_block(len(frame), rows, negative.any(1)), col, "must be a count >= 0")
            counts[rows] = np.minimum(np.nan_to_num(values, nan=0.0), 255)
        arrays["history_long"] = counts
        meta["history_columns"] = tuple(hist)
    if (cand := encode_candidates(frame, vocab, item_slots)) is not None:
        arrays.update(cand[0])
        meta["contact_columns"], meta["contact_windows"] = tuple(cand[1]), cand[2]

    if with_labels:
        label_channel = frame["label_channel"].to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(label_channel) | (label_channel < 0) | (label_channel >= len(CHANNELS))
        if bad.any():
            raise _first_bad(frame, bad, "label_channel", f"must be an index into contract.schema.CHANNELS (0..{len(CHANNELS) - 1})")
        day = frame["label_day_offset"].to_numpy(dtype=np.float64, na_value=np.nan)
        if (bad := ~np.isin(day, np.arange(7))).any():
            raise _first_bad(frame, bad, "label_day_offset", "must be 0..6")
        part = frame["label_daypart"].to_numpy(dtype=np.float64, na_value=np.nan)
        if (bad := ~np.isin(part, np.arange(4))).any():
            raise _first_bad(frame, bad, "label_daypart", "must be 0..3")
        response = frame["label_response"].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        if (bad := ~np.isin(response, (0.0, 1.0))).any():
            raise _first_bad(frame, bad, "label_response", "must be 0 or 1")
        prop = frame["label_propensity"].astype("float64").to_numpy(dtype=np.float64, na_value=np.nan)
        if (bad := ~np.isnan(prop) & ((prop <= 0) | (prop > 1))).any():
            raise _first_bad(frame, bad, "label_propensity", "must be in (0, 1] or missing")
        arrays["label_channel"] = label_channel.astype(np.int8)
        arrays["label_content"] = vocab.encode(frame["label_content_id"].to_numpy(dtype=object))
        arrays["label_slot"] = (day * 4 + part).astype(np.int8)
        arrays["label_response"] = response.astype(np.float32)
        arrays["propensity"] = prop.astype(np.float32)

    if "event_timestamp" in frame.columns:
        week = pd.to_datetime(frame["event_timestamp"], utc=True).dt.tz_convert(None).to_numpy(dtype="datetime64[ns]")
    else:  # scoring rows need no timestamp: features are already as of now
        week = np.full(n, np.datetime64("NaT"), dtype="datetime64[ns]")
    return EncodedData(arrays, frame["hcp_id"].astype(str).to_numpy(), week, meta)


def weeks_window(data: EncodedData) -> str:
    """The first and last decision week of ``data`` as ``YYYY-MM-DD..YYYY-MM-DD`` ("" when empty): a split's window for tags and reports."""
    if not len(data):
        return ""
    w = np.asarray(data.week, dtype="datetime64[D]")
    return f"{w.min()}..{w.max()}"


def time_split(weeks: np.ndarray, val_weeks: int, test_weeks: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (train, validation, test): the last ``test_weeks`` distinct weeks test, the ``val_weeks`` before them validate.

    Validation weeks select (early stopping, calibration, tuning); test weeks only report, so a
    reported figure never comes from weeks that chose the model. Times are counted by the week
    (Monday 00:00 UTC) they fall in, so day-grain examples split on the same weeks as week-grain ones.
    """
    monday0 = np.datetime64("1970-01-05", "D")  # a Monday: weeks start on Monday 00:00 UTC
    days = np.asarray(weeks).astype("datetime64[D]")
    weeks = monday0 + np.floor_divide((days - monday0).astype(np.int64), 7) * 7
    distinct = np.unique(weeks)
    if len(distinct) <= val_weeks + test_weeks:
        raise ValueError(f"val_weeks={val_weeks} + test_weeks={test_weeks} leave no training weeks: the data spans {len(distinct)} weeks")
    cutoff = distinct[-(val_weeks + test_weeks)]
    test_cut = distinct[-test_weeks] if test_weeks else None
    train = weeks < cutoff
    test = weeks >= test_cut if test_cut is not None else np.zeros(len(weeks), dtype=bool)
    return train, ~train & ~test, test
