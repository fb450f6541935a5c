"""Decision labels: one row per logged touchpoint, keyed to the decision time (its week or its day) its features are as of."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.events import TOUCH_COLUMNS, epoch_seconds, local_weekday_daypart
from features.snapshots import decision_times, to_epoch_seconds

LABEL_COLUMNS = [
    "hcp_id",
    "event_timestamp",
    "label_channel",
    "label_content_id",
    "label_day_offset",
    "label_daypart",
    "label_response",
    "label_propensity",
    "label_ts",
]


def _load(data: str | Path | Mapping[str, Any]) -> tuple[Any, Any]:
    import pyarrow as pa

    if isinstance(data, (str, Path)):
        from contract.io import read_table

        tp = read_table(data, "touchpoints", columns=[*TOUCH_COLUMNS, "propensity"])
        hcps = read_table(data, "hcps", columns=["hcp_id", "timezone"])
        return tp, hcps
    for name in ("touchpoints", "hcps"):
        if name not in data:
            raise ValueError(f"contract table {name!r} is missing (needed for labels)")
    conv = [t if isinstance(t, pa.Table) else pa.Table.from_pandas(t, preserve_index=False) for t in (data["touchpoints"], data["hcps"])]
    return conv[0], conv[1]


def decision_labels(
    data: str | Path | Mapping[str, Any],
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    *,
    outbound_only: bool = True,
    grain: str = "week",
):
    """Labels for touchpoints with ``start <= ts < end``: what was done, when, and the response.

    ``event_timestamp`` is the decision time: 00:00 UTC of the Monday starting the touch's week
    (``grain="week"``) or of the touch's day (``grain="day"``). Features are read as of then, so
    they never see the touch itself, nor anything after it. ``label_day_offset`` and ``label_daypart``
    are the touch's local weekday (0 = Monday) and daypart (HCP timezone), the slot a
    suggestion names. ``label_response`` is 1 if opened, attended or replied.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    from contract.schema import CHANNELS

    decision_times(np.zeros(0), grain)  # an unknown grain fails before any reading
    tp, hcps = _load(data)
    t = epoch_seconds(tp.column("ts"))
    mask = np.ones(len(t), dtype=bool)
    if start is not None:
        mask &= t >= to_epoch_seconds(start)
    if end is not None:
        mask &= t < to_epoch_seconds(end)
    if outbound_only:
        mask &= tp.column("direction").to_numpy(zero_copy_only=False) == "outbound"
    tp = tp.filter(mask)
    t = t[mask]
    ch = pc.index_in(tp.column("channel"), value_set=pa_array(CHANNELS))
    if ch.null_count:
        row = int(pc.index(pc.is_null(ch), True).as_py())
        raise ValueError(f"touchpoints: row {row}: channel {tp.column('channel')[row].as_py()!r} not in {CHANNELS}")
    hcp_idx = pc.index_in(tp.column("hcp_id"), value_set=hcps.column("hcp_id").combine_chunks())
    if hcp_idx.null_count:
        row = int(pc.index(pc.is_null(hcp_idx), True).as_py())
        raise ValueError(f"touchpoints: row {row}: hcp_id {tp.column('hcp_id')[row].as_py()!r} is not in table 'hcps'")
    tz = hcps.column("timezone").to_numpy(zero_copy_only=False).astype(object)
    weekday, daypart = local_weekday_daypart(t, hcp_idx.to_numpy(zero_copy_only=False).astype(np.int64), tz)

    def flag(name: str) -> np.ndarray:
        return pc.fill_null(tp.column(name), False).to_numpy(zero_copy_only=False).astype(bool)

    response = flag("opened") | flag("attended") | flag("replied")
    ws = decision_times(t, grain)
    out = pd.DataFrame(
        {
            "hcp_id": tp.column("hcp_id").to_numpy(zero_copy_only=False),
            "event_timestamp": pd.to_datetime(ws, unit="s", utc=True),
            "label_channel": ch.to_numpy(zero_copy_only=False).astype(np.int64),
            "label_content_id": pc.fill_null(tp.column("content_id"), "").to_numpy(zero_copy_only=False),
            "label_day_offset": weekday.astype(np.int64),
            "label_daypart": daypart.astype(np.int64),
            "label_response": response.astype(np.int64),
            "label_propensity": pc.cast(tp.column("propensity"), "float64").to_numpy(zero_copy_only=False).astype(np.float64),
            "label_ts": tp.column("ts").cast(pa.timestamp("us", tz="UTC")).to_pandas(),
        }
    )
    return out.sort_values(["event_timestamp", "hcp_id", "label_ts"], kind="stable").reset_index(drop=True)


def pa_array(values):
    """An Arrow string array of ``values``."""
    import pyarrow as pa

    return pa.array(list(values), pa.string())
