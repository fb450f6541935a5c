"""Contract tables built straight from the simulator's arrays (Arrow columns, no Python objects per row)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from contract.io import arrow_schema
from contract.schema import (
    CHANNELS,
    CONTENT_FORMS,
    CONTENT_TYPES,
    DEPARTMENTS,
    DIRECTIONS,
    FEEDBACK_DECISIONS,
    FEEDBACK_REASONS,
    HOSPITAL_TIERS,
    LIFECYCLES,
    REP_TYPES,
    SEGMENTS,
    TABLES,
    TITLES,
    TOPICS,
)
from simulator.observed import TouchBatch
from simulator.world import CH, REGIONS, TIMEZONES, PublicWorld

# Channels a rep sends personally; the rest are marketing broadcasts with no rep on the row.
_REP_ON_ROW = np.array([c in ("visit", "department_meeting", "phone", "wecom_1to1") for c in CHANNELS])


# ASCII of every 4-digit group "0000".."9999": ids are built 4 digits per division.
_DIGITS4 = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8)


def fixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """Strings ``prefix`` + zero-padded ``numbers`` built as one Arrow buffer (fast for 10M+ rows)."""
    x = np.asarray(numbers, dtype=np.int64).copy()
    n = len(x)
    head = np.frombuffer(prefix.encode(), dtype=np.uint8)
    padded = -(-width // 4) * 4
    digits = np.empty((n, padded), dtype=np.uint8)
    for pos in range(padded - 4, -1, -4):
        digits[:, pos : pos + 4] = _DIGITS4[x % 10_000]
        x //= 10_000
    total = len(head) + width
    buf = np.empty((n, total), dtype=np.uint8)
    buf[:, : len(head)] = head
    buf[:, len(head) :] = digits[:, padded - width :]
    offsets = np.arange(n + 1, dtype=np.int32) * total
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(buf.tobytes()))


def take_strings(values: list[str] | tuple[str, ...], index: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """``values[index]`` as an Arrow string column, null where ``null`` is True."""
    idx = pa.array(np.asarray(index, dtype=np.int64), mask=null)
    return pc.take(pa.array(list(values), type=pa.string()), idx)


def _ts(us: np.ndarray) -> pa.Array:
    return pa.array(np.asarray(us, dtype=np.int64), type=pa.timestamp("us", tz="UTC"))


def _table(name: str, cols: dict[str, pa.Array | np.ndarray]) -> pa.Table:
    schema = arrow_schema(TABLES[name])
    arrays = [pa.array(cols[f.name], type=f.type) if not isinstance(cols[f.name], pa.Array) else cols[f.name].cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def products_table(pub: PublicWorld) -> pa.Table:
    """The products table."""
    return _table(
        "products",
        {
            "product_id": pa.array(pub.product_ids),
            "therapeutic_area": take_strings(DEPARTMENTS, pub.product_area),
            "lifecycle": take_strings(LIFECYCLES, pub.product_lifecycle),
        },
    )


def reps_table(pub: PublicWorld) -> pa.Table:
    """The reps table."""
    return _table(
        "reps",
        {
            "rep_id": pa.array(pub.rep_ids),
            "region": take_strings(REGIONS, pub.rep_region),
            "rep_type": take_strings(REP_TYPES, pub.rep_type),
            "visit_capacity_per_day": pub.rep_visit_cap_day,
            "message_capacity_per_day": pub.rep_msg_cap_day,
        },
    )


def hcps_table(pub: PublicWorld) -> pa.Table:
    """The hcps table (segmentation and consent included; nothing hidden)."""
    cols: dict[str, pa.Array | np.ndarray] = {
        "hcp_id": pa.array(pub.hcp_ids),
        "hospital_id": take_strings(pub.hospital_ids, pub.hcp_hospital),
        "hospital_tier": take_strings(HOSPITAL_TIERS, pub.hcp_tier),
        "department": take_strings(DEPARTMENTS, pub.hcp_dept),
        "title": take_strings(TITLES, pub.hcp_title),
        "is_kol": pub.hcp_kol,
        "rep_id": take_strings(pub.rep_ids, pub.hcp_rep),
        "region": take_strings(REGIONS, pub.hcp_region),
        "timezone": take_strings(TIMEZONES, pub.hcp_tz),
        "main_product_id": take_strings(pub.product_ids, pub.hcp_product),
        "beds": pub.hcp_beds,
        "potential_boxes_month": pub.hcp_potential_month,
        "support_share": pub.hcp_support,
        "segment": take_strings(SEGMENTS, pub.hcp_segment),
        "profile_completeness": pub.hcp_profile,
    }
    for i, ch in enumerate(CHANNELS):
        cols[f"consent_{ch}"] = pub.consent[:, i]
    return _table("hcps", cols)


def hcp_profile_history_table(pub: PublicWorld, valid_from_week: np.ndarray | None = None) -> pa.Table:
    """Dated profile versions: the simulator's mutable attributes never change, so one row per HCP valid from its first week."""
    from contract.schema import HCP_DATED_COLUMNS

    hcps = hcps_table(pub)
    weeks = np.zeros(pub.n_hcps, dtype=np.int64) if valid_from_week is None else np.asarray(valid_from_week, dtype=np.int64)
    # Known from the Monday the HCP enters the CRM (week 0, or its onboarding week under a population shift).
    valid = pub.week_start_us(0) + weeks * 7 * 86_400_000_000
    cols: dict[str, pa.Array | np.ndarray] = {"hcp_id": hcps["hcp_id"].combine_chunks(), "valid_from": _ts(valid)}
    cols.update({name: hcps[name].combine_chunks() for name in HCP_DATED_COLUMNS})
    return _table("hcp_profile_history", cols)


def content_table(pub: PublicWorld) -> pa.Table:
    """The content catalogue."""
    return _table(
        "content",
        {
            "content_id": pa.array(pub.content_ids),
            "product_id": take_strings(pub.product_ids, pub.content_product),
            "topic": take_strings(TOPICS, pub.content_topic),
            "content_type": take_strings(CONTENT_TYPES, pub.content_type),
            "form": take_strings(CONTENT_FORMS, pub.content_form),
            "approval_code": pa.array(pub.content_approval),
            "approved_from": _ts(pub.content_from_us),
            "approved_until": _ts(pub.content_until_us),
        },
    )


def touchpoints_table(pub: PublicWorld, t: TouchBatch, first_event: int = 1) -> pa.Table:
    """The touchpoints table; event ids number rows in order from ``first_event``."""
    c = t.cols
    n = len(t)
    channel = c["channel"].astype(np.int64)
    content = c["content"].astype(np.int64)
    rep = c["rep"].astype(np.int64)
    meeting = np.isin(channel, [CH[m] for m in ("department_meeting", "webinar", "conference")])
    prop = c["propensity"].astype(np.float64)
    sugg = c["suggestion"].astype(np.int64)
    return _table(
        "touchpoints",
        {
            "event_id": fixed_ids("T", np.arange(first_event, first_event + n), 10),
            "hcp_id": take_strings(pub.hcp_ids, c["hcp"].astype(np.int64)),
            "rep_id": take_strings(pub.rep_ids, np.maximum(rep, 0), null=rep < 0),
            "ts": _ts(c["ts_us"]),
            "channel": take_strings(CHANNELS, channel),
            "content_id": take_strings(pub.content_ids, np.maximum(content, 0), null=content < 0),
            "direction": take_strings(DIRECTIONS, c["inbound"].astype(np.int64)),
            "delivered": c["delivered"].astype(bool),
            "opened": c["opened"].astype(bool),
            "read_seconds": c["read_seconds"].astype(np.float64),
            "forwarded": c["forwarded"].astype(bool),
            "favourited": c["favourited"].astype(bool),
            "replied": c["replied"].astype(bool),
            "attended": pa.array(c["opened"].astype(bool), mask=~meeting),
            "propensity": pa.array(prop, mask=np.isnan(prop)),
            "suggestion_id": _suggestion_ids(sugg),
        },
    )


def _suggestion_ids(sugg: np.ndarray) -> pa.Array:
    has = sugg >= 0
    ids = fixed_ids("S", sugg[has], 12)
    position = np.cumsum(has) - 1
    return pc.take(ids, pa.array(np.maximum(position, 0), mask=~has))


def suggestion_number(week: int | np.ndarray, hcp: np.ndarray) -> np.ndarray:
    """Numeric suggestion id: one suggestion per HCP per week at most."""
    return np.asarray(week, dtype=np.int64) * 100_000_000 + np.asarray(hcp, dtype=np.int64)


def outcomes_table(pub: PublicWorld, weeks: list[dict[str, np.ndarray]]) -> pa.Table:
    """The outcomes table from per-week arrays (week, hcp, prescriptions, market_boxes)."""
    if weeks:
        cols = {k: np.concatenate([w[k] for w in weeks]) for k in weeks[0]}
    else:
        cols = {k: np.zeros(0, dtype=np.int64) for k in ("week", "hcp", "prescriptions", "market_boxes")}
    hcp = cols["hcp"].astype(np.int64)
    rx = cols["prescriptions"].astype(np.int64)
    mkt = cols["market_boxes"].astype(np.int64)
    start_days = (pub.start_date - dt.date(1970, 1, 1)).days
    share = np.divide(rx, mkt, out=np.zeros(len(rx)), where=mkt > 0)
    return _table(
        "outcomes",
        {
            "hcp_id": take_strings(pub.hcp_ids, hcp),
            "week_start": pa.array((start_days + 7 * cols["week"].astype(np.int64)).astype(np.int32), type=pa.date32()),
            "product_id": take_strings(pub.product_ids, pub.hcp_product[hcp]),
            "prescriptions": rx,
            "market_boxes": mkt,
            "share": pa.array(share, mask=mkt == 0),
        },
    )


def feedback_table(pub: PublicWorld, cols: dict[str, np.ndarray]) -> pa.Table:
    """The feedback table from arrays (suggestion, hcp, ts_us, decision, reason)."""
    sugg = cols["suggestion"].astype(np.int64)
    hcp = cols["hcp"].astype(np.int64)
    reason = cols["reason"].astype(np.int64)
    return _table(
        "feedback",
        {
            "feedback_id": fixed_ids("F", sugg, 12),
            "suggestion_id": fixed_ids("S", sugg, 12),
            "hcp_id": take_strings(pub.hcp_ids, hcp),
            "rep_id": take_strings(pub.rep_ids, pub.hcp_rep[hcp]),
            "ts": _ts(cols["ts_us"]),
            "decision": take_strings(FEEDBACK_DECISIONS, cols["decision"].astype(np.int64)),
            "reason": take_strings(FEEDBACK_REASONS, np.maximum(reason, 0), null=reason < 0),
        },
    )


def _index(values: pa.Array, vocabulary, what: str) -> np.ndarray:
    vocab = pa.array(list(vocabulary), type=pa.string())
    idx = pc.index_in(values.cast(pa.string()), value_set=vocab)
    if idx.null_count:
        bad = values.filter(pc.is_null(idx))[0].as_py()
        raise ValueError(f"{what}: value {bad!r} not in {list(vocabulary)[:10]}")
    return idx.to_numpy(zero_copy_only=False).astype(np.int64)


def public_from_tables(tables: dict[str, pa.Table], start_date: dt.date, weeks: int) -> PublicWorld:
    """Rebuild the public world's index arrays from the contract tables of a simulated dataset."""
    pr, rp, hc, co = (tables[k].combine_chunks() for k in ("products", "reps", "hcps", "content"))
    product_ids = pr["product_id"].to_pylist()
    rep_ids = rp["rep_id"].to_pylist()
    hospital_ids = sorted(set(hc["hospital_id"].to_pylist()))

    def col(t: pa.Table, name: str) -> np.ndarray:
        return t[name].to_numpy()

    return PublicWorld(
        start_date=start_date,
        weeks=weeks,
        product_ids=product_ids,
        product_area=_index(pr["therapeutic_area"], DEPARTMENTS, "products.therapeutic_area"),
        product_lifecycle=_index(pr["lifecycle"], LIFECYCLES, "products.lifecycle"),
        rep_ids=rep_ids,
        rep_region=_index(rp["region"], REGIONS, "reps.region"),
        rep_type=_index(rp["rep_type"], REP_TYPES, "reps.rep_type"),
        rep_visit_cap_day=col(rp, "visit_capacity_per_day").astype(np.int64),
        rep_msg_cap_day=col(rp, "message_capacity_per_day").astype(np.int64),
        hcp_ids=hc["hcp_id"].to_pylist(),
        hospital_ids=hospital_ids,
        hcp_hospital=_index(hc["hospital_id"], hospital_ids, "hcps.hospital_id"),
        hcp_tier=_index(hc["hospital_tier"], HOSPITAL_TIERS, "hcps.hospital_tier"),
        hcp_dept=_index(hc["department"], DEPARTMENTS, "hcps.department"),
        hcp_title=_index(hc["title"], TITLES, "hcps.title"),
        hcp_kol=col(hc, "is_kol").astype(bool),
        hcp_rep=_index(hc["rep_id"], rep_ids, "hcps.rep_id"),
        hcp_region=_index(hc["region"], REGIONS, "hcps.region"),
        hcp_tz=_index(hc["timezone"], TIMEZONES, "hcps.timezone"),
        hcp_product=_index(hc["main_product_id"], product_ids, "hcps.main_product_id"),
        hcp_beds=hc["beds"].to_numpy(zero_copy_only=False).astype(np.int64),
        hcp_potential_month=hc["potential_boxes_month"].to_numpy(zero_copy_only=False).astype(np.float64),
        hcp_support=hc["support_share"].to_numpy(zero_copy_only=False).astype(np.float64),
        hcp_segment=_index(hc["segment"], SEGMENTS, "hcps.segment"),
        hcp_profile=hc["profile_completeness"].to_numpy(zero_copy_only=False).astype(np.float64),
        consent=np.stack([col(hc, f"consent_{c}").astype(bool) for c in CHANNELS], axis=1),
        content_ids=co["content_id"].to_pylist(),
        content_product=_index(co["product_id"], product_ids, "content.product_id"),
        content_topic=_index(co["topic"], TOPICS, "content.topic"),
        content_type=_index(co["content_type"], CONTENT_TYPES, "content.content_type"),
        content_form=_index(co["form"], CONTENT_FORMS, "content.form"),
        content_approval=co["approval_code"].to_pylist(),
        content_from_us=co["approved_from"].cast(pa.int64()).to_numpy(),
        content_until_us=co["approved_until"].cast(pa.int64()).to_numpy(),
    )


def rep_on_row(channel: np.ndarray) -> np.ndarray:
    """True where a touch on ``channel`` is sent by the rep (so the row names the rep)."""
    return _REP_ON_ROW[channel]
