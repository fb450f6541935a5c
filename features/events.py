"""Contract tables -> compact, sorted numpy event arrays that every transform shares.

Pure: takes in-memory tables (pandas or Arrow), returns arrays. HCPs are indexed by their
position in the sorted ``hcps.hcp_id``; events are sorted by (HCP, time) so each HCP's events
are one contiguous slice and windowed sums are two binary searches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract.schema import CHANNELS, CONTENT_FORMS, CONTENT_TYPES, DAYPARTS, TOPICS, TOUCH_STATE_COLUMNS, daypart_of_hour

# seq_response codes: 0 not delivered, 1 delivered, 2 opened/attended, 3 engaged; >= this is a positive response.
POSITIVE_RESPONSE_CODE = 2

DAY_S = 86_400
WEEK_S = 7 * DAY_S
ENGAGED_READ_SECONDS = 60.0
# Daypart index of each local hour 0..23, so the conversion is one array lookup.
_DAYPART_OF_HOUR = np.array([DAYPARTS.index(daypart_of_hour(h)) for h in range(24)], dtype=np.int8)

TOUCH_COLUMNS = list(TOUCH_STATE_COLUMNS)  # contract.schema: shared with the per-HCP index


@dataclass(frozen=True)
class Events:
    """Touchpoints as parallel arrays sorted by (hcp, t); ``t`` in whole UTC seconds."""

    hcp: np.ndarray  # int32 HCP index
    t: np.ndarray  # int64 epoch seconds (floored)
    channel: np.ndarray  # int8 index into CHANNELS
    content: np.ndarray  # int32 index into Prepared.content_vocab (0 = no content)
    inbound: np.ndarray  # bool
    delivered: np.ndarray
    opened: np.ndarray  # opened, or attended for meetings
    read_seconds: np.ndarray  # float32
    forwarded: np.ndarray
    favourited: np.ndarray
    replied: np.ndarray
    attended: np.ndarray
    engaged: np.ndarray  # forwarded/favourited/replied or read >= 60 s
    response: np.ndarray  # int8: 0 not delivered, 1 delivered, 2 opened/attended, 3 engaged
    weekday: np.ndarray  # int8 local weekday, 0 = Monday
    daypart: np.ndarray  # int8 index into DAYPARTS, local time
    gap_days: np.ndarray  # float32 days since this HCP's previous touch (cap when none)

    def take(self, idx: np.ndarray) -> Events:
        """The events at positions ``idx``."""
        return Events(**{k: getattr(self, k)[idx] for k in self.__dataclass_fields__})

    def __len__(self) -> int:
        return len(self.t)


@dataclass(frozen=True)
class Prepared:
    """Everything the transforms need, indexed by HCP position ``0..n_hcps-1``."""

    hcp_ids: np.ndarray  # object, sorted
    profile: dict[str, np.ndarray]  # profile columns aligned to hcp_ids
    events: Events
    feedback_hcp: np.ndarray  # int32
    feedback_t: np.ndarray  # int64
    feedback_decision: np.ndarray  # int8 index into FEEDBACK_DECISIONS
    outcome_hcp: np.ndarray  # int32, one row per (hcp, week)
    outcome_t: np.ndarray  # int64: last second of the week (known only once the week is over)
    outcome_rx: np.ndarray  # int64
    outcome_market: np.ndarray  # int64
    content_vocab: np.ndarray  # object: "" then content ids (sorted)
    content_ids: np.ndarray  # object: content table ids, sorted
    content_attrs: dict[str, np.ndarray]  # aligned to content_ids
    cap: float
    # Dated versions of the mutable profile columns (contract table hcp_profile_history),
    # sorted by (hcp, t); ``history`` holds the same keys as ``profile`` for DATED_PROFILE.
    history_hcp: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    history_t: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    history: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_hcps(self) -> int:
        return len(self.hcp_ids)

    def hcp_slice(self, start: int, stop: int) -> Prepared:
        """The same data restricted to HCPs ``start..stop-1``, re-indexed from 0."""
        ev = self.events
        a, b = np.searchsorted(ev.hcp, [start, stop])
        sub = ev.take(np.arange(a, b))
        sub = replace(sub, hcp=(sub.hcp - start).astype(np.int32))
        fa, fb = np.searchsorted(self.feedback_hcp, [start, stop])
        oa, ob = np.searchsorted(self.outcome_hcp, [start, stop])
        ha, hb = np.searchsorted(self.history_hcp, [start, stop])
        return replace(
            self,
            hcp_ids=self.hcp_ids[start:stop],
            profile={k: v[start:stop] for k, v in self.profile.items()},
            events=sub,
            feedback_hcp=(self.feedback_hcp[fa:fb] - start).astype(np.int32),
            feedback_t=self.feedback_t[fa:fb],
            feedback_decision=self.feedback_decision[fa:fb],
            outcome_hcp=(self.outcome_hcp[oa:ob] - start).astype(np.int32),
            outcome_t=self.outcome_t[oa:ob],
            outcome_rx=self.outcome_rx[oa:ob],
            outcome_market=self.outcome_market[oa:ob],
            history_hcp=(self.history_hcp[ha:hb] - start).astype(np.int32),
            history_t=self.history_t[ha:hb],
            history={k: v[ha:hb] for k, v in self.history.items()},
        )


def as_arrow(data: Any) -> pa.Table:
    """A pandas DataFrame or Arrow table as an Arrow table."""
    if isinstance(data, pa.Table):
        return data
    return pa.Table.from_pandas(data, preserve_index=False)


def _np(col: pa.ChunkedArray, fill: Any = None) -> np.ndarray:
    if fill is not None and col.null_count:  # fill_null costs ~40 us even with nothing to fill (a one-HCP push makes ~50 calls)
        col = pc.fill_null(col, fill)
    return col.to_numpy(zero_copy_only=False)


def epoch_seconds(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Timestamps (any unit, tz-aware UTC) or dates -> int64 epoch seconds, floored."""
    if pa.types.is_date(col.type):
        return col.cast(pa.date32()).cast(pa.int32()).to_numpy(zero_copy_only=False).astype(np.int64) * DAY_S
    us = col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy(zero_copy_only=False)
    return np.floor_divide(us, 1_000_000)


_VALUE_SETS: dict[tuple[str, ...], pa.Array] = {}


def _value_set(allowed: tuple[str, ...]) -> pa.Array:
    """The Arrow array of a vocabulary, built once (vocabularies are module constants)."""
    hit = _VALUE_SETS.get(allowed)
    if hit is None:
        hit = _VALUE_SETS[allowed] = pa.array(list(allowed), pa.string())
    return hit


def _codes(col: pa.ChunkedArray, allowed: tuple[str, ...], where: str) -> np.ndarray:
    if pa.types.is_null(col.type):  # an all-null column from pandas has no string type
        col = col.cast(pa.string())
    idx = pc.index_in(col, value_set=_value_set(tuple(allowed)))
    # A value outside the vocabulary is a null code where the value is not null.
    if idx.null_count > col.null_count:
        bad = pc.and_(pc.is_null(idx), pc.is_valid(col))
        row = int(pc.index(bad, True).as_py())
        raise ValueError(f"{where}: row {row}: value {col[row].as_py()!r} not in {allowed}")
    return _np(idx, -1).astype(np.int8 if len(allowed) < 127 else np.int32)


def _hcp_index(col: pa.ChunkedArray, hcp_ids: pa.Array, where: str) -> np.ndarray:
    idx = pc.index_in(col, value_set=hcp_ids)
    if idx.null_count:
        row = int(pc.index(pc.is_null(idx), True).as_py())
        raise ValueError(f"{where}: row {row}: hcp_id {col[row].as_py()!r} is not in table 'hcps'")
    return _np(idx).astype(np.int32)


def local_weekday_daypart(t: np.ndarray, hcp: np.ndarray, tz_of_hcp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local weekday and daypart of each event, converting once per distinct timezone."""
    import pandas as pd

    weekday = np.zeros(len(t), dtype=np.int8)
    daypart = np.zeros(len(t), dtype=np.int8)
    if not len(t):
        return weekday, daypart
    # Distinct timezones are few: find them per HCP, not per event.
    zones, zone_of_hcp = np.unique(tz_of_hcp.astype(str), return_inverse=True)
    ev_zone = zone_of_hcp[hcp]
    for zi, tz in enumerate(zones):
        m = ev_zone == zi
        try:
            local = pd.DatetimeIndex(pd.to_datetime(t[m], unit="s", utc=True)).tz_convert(tz)
        except Exception as exc:  # an unknown IANA name: say which
            raise ValueError(f"hcps.timezone: unknown timezone {tz!r}: {exc}") from None
        weekday[m] = local.weekday.to_numpy(np.int8)
        daypart[m] = _DAYPART_OF_HOUR[local.hour.to_numpy()]
    return weekday, daypart


def run_lengths(flag: np.ndarray, group: np.ndarray) -> np.ndarray:
    """At each position, how many consecutive ``flag`` values end there within its group."""
    n = len(flag)
    if not n:
        return np.zeros(0, dtype=np.int32)
    f = flag.astype(np.int64)
    c = np.cumsum(f)
    reset = np.where(~flag, c, -1)
    starts = np.r_[True, group[1:] != group[:-1]]
    # A group start resets the run to what was counted before it.
    reset = np.where(starts, np.maximum(reset, c - f), reset)
    return (c - np.maximum.accumulate(reset)).astype(np.int32)


# id(content Arrow table) -> (the table, its arrays): a push prepares the same cached catalogue
# (contract.by_hcp.whole_table) on every call. Arrow tables are immutable; DataFrames are not cached.
_CONTENT: dict[int, tuple[pa.Table, tuple]] = {}


def _content_arrays(data: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray], pa.Array]:
    """The content table's sorted ids, vocabulary ("" first), coded attributes and ids as Arrow, read-only."""
    hit = _CONTENT.get(id(data)) if isinstance(data, pa.Table) else None
    if hit is not None and hit[0] is data:
        return hit[1]
    # Content vocabulary: index 0 is "no content", so sequence arrays can hold "".
    content = as_arrow(data)
    content = content.take(pc.sort_indices(content, sort_keys=[("content_id", "ascending")]))
    content_ids = _np(content.column("content_id")).astype(object)
    content_vocab = np.concatenate([np.array([""], dtype=object), content_ids])
    content_attrs = {
        "topic": _codes(content.column("topic"), TOPICS, "content.topic"),
        "content_type": _codes(content.column("content_type"), CONTENT_TYPES, "content.content_type"),
        "form": _codes(content.column("form"), CONTENT_FORMS, "content.form"),
        "product_id": _np(content.column("product_id")).astype(object),
        "approved_from": epoch_seconds(content.column("approved_from")),
        "approved_until": epoch_seconds(content.column("approved_until")),
    }
    out = (content_ids, content_vocab, content_attrs, pa.array(content_ids.tolist(), pa.string()))
    if isinstance(data, pa.Table):
        # Shared between calls: read-only, so that no caller can change another's catalogue.
        for a in (content_ids, content_vocab, *content_attrs.values()):
            a.setflags(write=False)
        if len(_CONTENT) >= 8:
            _CONTENT.clear()
        _CONTENT[id(data)] = (data, out)
    return out


def prepare(tables: Mapping[str, Any], cap: float = 365.0) -> Prepared:
    """Validate and index in-memory contract tables for the transforms."""
    from contract.schema import DEPARTMENTS, FEEDBACK_DECISIONS, HOSPITAL_TIERS, LIFECYCLES, TITLES

    for name in ("hcps", "products", "content", "touchpoints", "outcomes"):
        if name not in tables:
            raise ValueError(f"contract table {name!r} is missing from the dataset (needed for features)")
    hcps = as_arrow(tables["hcps"])
    order = pc.sort_indices(hcps, sort_keys=[("hcp_id", "ascending")])
    hcps = hcps.take(order)
    hcp_ids_arrow = hcps.column("hcp_id").combine_chunks()
    hcp_ids = _np(hcps.column("hcp_id")).astype(object)
    if len(np.unique(hcp_ids)) != len(hcp_ids):
        raise ValueError("hcps: hcp_id is not unique")

    products = as_arrow(tables["products"])
    lc_codes = _codes(products.column("lifecycle"), LIFECYCLES, "products.lifecycle")
    p_idx = _np(pc.index_in(hcps.column("main_product_id"), value_set=products.column("product_id").combine_chunks()), -1)
    lifecycle = np.where(p_idx >= 0, lc_codes[np.maximum(p_idx, 0)] if len(lc_codes) else -1, -1)

    profile = {
        "hospital_tier": _codes(hcps.column("hospital_tier"), HOSPITAL_TIERS, "hcps.hospital_tier"),
        "department": _codes(hcps.column("department"), DEPARTMENTS, "hcps.department"),
        "title": _codes(hcps.column("title"), TITLES, "hcps.title"),
        "lifecycle": lifecycle.astype(np.int8),
        "is_kol": _np(hcps.column("is_kol"), False).astype(bool),
        "beds": _np(hcps.column("beds"), 0).astype(np.int32),
        **dated_profile(hcps, "hcps"),
    }
    tz_of_hcp = _np(hcps.column("timezone")).astype(object)
    history = tables.get("hcp_profile_history")
    if history is not None:
        history = as_arrow(history)
        h_hcp = _hcp_index(history.column("hcp_id"), hcp_ids_arrow, "hcp_profile_history")
        h_t = epoch_seconds(history.column("valid_from"))
        order = np.lexsort((h_t, h_hcp))
        h_cols = {k: v[order] for k, v in dated_profile(history, "hcp_profile_history").items()}
        h_hcp, h_t = h_hcp[order], h_t[order]
    else:
        h_hcp, h_t, h_cols = np.zeros(0, np.int32), np.zeros(0, np.int64), {k: v[:0] for k, v in dated_profile(hcps, "hcps").items()}

    content_ids, content_vocab, content_attrs, content_ids_arrow = _content_arrays(tables["content"])

    tp = as_arrow(tables["touchpoints"])
    missing = [c for c in TOUCH_COLUMNS if c not in tp.column_names]
    if missing:
        raise ValueError(f"touchpoints: missing columns {missing}")
    hcp = _hcp_index(tp.column("hcp_id"), hcp_ids_arrow, "touchpoints")
    t = epoch_seconds(tp.column("ts"))
    sort = np.lexsort((t, hcp))
    content_code = _np(pc.index_in(tp.column("content_id"), value_set=content_ids_arrow), -1) + 1
    channel = _codes(tp.column("channel"), CHANNELS, "touchpoints.channel")
    cols = {
        "delivered": _np(tp.column("delivered"), False).astype(bool),
        "opened": _np(tp.column("opened"), False).astype(bool),
        "forwarded": _np(tp.column("forwarded"), False).astype(bool),
        "favourited": _np(tp.column("favourited"), False).astype(bool),
        "replied": _np(tp.column("replied"), False).astype(bool),
        "attended": _np(tp.column("attended"), False).astype(bool),
    }
    read = _np(tp.column("read_seconds"), 0.0).astype(np.float32)
    inbound = _np(tp.column("direction")).astype(object) == "inbound"
    hcp, t, channel, content_code, read, inbound = (a[sort] for a in (hcp, t, channel, content_code, read, inbound))
    cols = {k: v[sort] for k, v in cols.items()}
    opened = cols["opened"] | cols["attended"]
    engaged = cols["forwarded"] | cols["favourited"] | cols["replied"] | (read >= ENGAGED_READ_SECONDS)
    response = np.where(~cols["delivered"], 0, np.where(engaged, 3, np.where(opened, 2, 1))).astype(np.int8)
    weekday, daypart = local_weekday_daypart(t, hcp, tz_of_hcp)
    same = np.r_[False, hcp[1:] == hcp[:-1]]
    gap = np.where(same, np.diff(t, prepend=t[:1]) / DAY_S, cap).astype(np.float32)
    events = Events(
        hcp=hcp,
        t=t,
        channel=channel,
        content=content_code.astype(np.int32),
        inbound=inbound,
        delivered=cols["delivered"],
        opened=opened,
        read_seconds=read,
        forwarded=cols["forwarded"],
        favourited=cols["favourited"],
        replied=cols["replied"],
        attended=cols["attended"],
        engaged=engaged,
        response=response,
        weekday=weekday,
        daypart=daypart,
        gap_days=gap,
    )

    if "feedback" in tables and tables["feedback"] is not None:
        fb = as_arrow(tables["feedback"])
        f_hcp = _hcp_index(fb.column("hcp_id"), hcp_ids_arrow, "feedback")
        f_t = epoch_seconds(fb.column("ts"))
        f_dec = _codes(fb.column("decision"), FEEDBACK_DECISIONS, "feedback.decision")
        s = np.lexsort((f_t, f_hcp))
        f_hcp, f_t, f_dec = f_hcp[s], f_t[s], f_dec[s]
    else:
        f_hcp, f_t, f_dec = np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int8)

    out = as_arrow(tables["outcomes"])
    o_hcp = _hcp_index(out.column("hcp_id"), hcp_ids_arrow, "outcomes")
    o_week = epoch_seconds(out.column("week_start"))
    rx = _np(out.column("prescriptions"), 0).astype(np.int64)
    mk = _np(out.column("market_boxes"), 0).astype(np.int64)
    # Several products per HCP-week add up; one row per (hcp, week) keeps "weeks with rx" honest.
    key = o_hcp.astype(np.int64) * (1 << 33) + (o_week // DAY_S)
    ukey, inv = np.unique(key, return_inverse=True)
    o_rx = np.bincount(inv, weights=rx, minlength=len(ukey)).astype(np.int64)
    o_mk = np.bincount(inv, weights=mk, minlength=len(ukey)).astype(np.int64)
    o_hcp_u = (ukey // (1 << 33)).astype(np.int32)
    o_t = (ukey % (1 << 33)) * DAY_S + WEEK_S - 1

    return Prepared(
        hcp_ids=hcp_ids,
        profile=profile,
        events=events,
        feedback_hcp=f_hcp,
        feedback_t=f_t,
        feedback_decision=f_dec,
        outcome_hcp=o_hcp_u,
        outcome_t=o_t,
        outcome_rx=o_rx,
        outcome_market=o_mk,
        content_vocab=content_vocab,
        content_ids=content_ids,
        content_attrs=content_attrs,
        cap=float(cap),
        history_hcp=h_hcp,
        history_t=h_t,
        history=h_cols,
    )


def dated_profile(table: pa.Table, where: str) -> dict[str, np.ndarray]:
    """The mutable profile columns (contract HCP_DATED_COLUMNS) of ``hcps`` or its history, coded."""
    from contract.schema import SEGMENTS

    def num(name: str) -> np.ndarray:
        return _np(table.column(name), 0.0).astype(np.float32)

    out = {
        "segment": _codes(table.column("segment"), SEGMENTS, f"{where}.segment"),
        "potential_boxes_month": num("potential_boxes_month"),
        "support_share": num("support_share"),
        "profile_completeness": num("profile_completeness"),
        **{f"consent_{ch}": _np(table.column(f"consent_{ch}"), False).astype(bool) for ch in CHANNELS},
    }
    out["profile_qualified"] = out["profile_completeness"] >= 0.6
    return out
