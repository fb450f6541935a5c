"""A week of actions for many HCPs as parallel arrays: what a policy returns to the environment."""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from contract.schema import CHANNELS, DAYPARTS

_CH_INDEX = {c: i for i, c in enumerate(CHANNELS)}
_DP_INDEX = {d: i for i, d in enumerate(DAYPARTS)}


@dataclass
class Actions:
    """Rows of (hcp, channel, content, weekday, daypart): indices into the world's tables.

    ``content`` is -1 for a touch without content (phone). ``weekday`` 0 is Monday (the day
    offset within the week), ``daypart`` indexes ``contract.schema.DAYPARTS`` in the HCP's local
    time. ``propensity`` is the probability the policy chose this (channel, content) at this
    decision (NaN if unknown); ``suggestion`` a numeric suggestion id or -1.
    """

    hcp: np.ndarray
    channel: np.ndarray
    content: np.ndarray
    weekday: np.ndarray
    daypart: np.ndarray
    propensity: np.ndarray | None = None
    suggestion: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.hcp)
        for name in ("hcp", "channel", "content", "weekday", "daypart"):
            arr = np.asarray(getattr(self, name), dtype=np.int64).reshape(-1)
            if len(arr) != n:
                raise ValueError(f"Actions.{name}: length {len(arr)} differs from hcp's {n}")
            setattr(self, name, arr)
        self.propensity = np.full(n, np.nan) if self.propensity is None else np.asarray(self.propensity, dtype=np.float64).reshape(-1)
        self.suggestion = np.full(n, -1, dtype=np.int64) if self.suggestion is None else np.asarray(self.suggestion, dtype=np.int64).reshape(-1)
        for name in ("propensity", "suggestion"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Actions.{name}: length {len(getattr(self, name))} differs from hcp's {n}")

    def __len__(self) -> int:
        return len(self.hcp)

    def select(self, mask_or_index: np.ndarray) -> Actions:
        """The rows picked by a boolean mask or an index array."""
        return Actions(**{f.name: getattr(self, f.name)[mask_or_index] for f in fields(self)})

    @staticmethod
    def empty() -> Actions:
        """No actions."""
        z = np.zeros(0, dtype=np.int64)
        return Actions(z, z, z, z, z)

    @staticmethod
    def concat(parts: list[Actions]) -> Actions:
        """Rows of all parts, in order."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Actions.empty()
        return Actions(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Actions)})

    @staticmethod
    def from_frame(frame, hcp_ids: list[str], content_ids: list[str]) -> Actions:
        """Build from a DataFrame with hcp_id, channel, content_id (nullable), weekday (0-6), daypart (name)."""
        hcp_index = {h: i for i, h in enumerate(hcp_ids)}
        content_index = {c: i for i, c in enumerate(content_ids)}
        for col in ("hcp_id", "channel", "content_id", "weekday", "daypart"):
            if col not in frame.columns:
                raise ValueError(f"actions frame: missing column {col!r}")

        def lookup(values, index: dict, col: str, allow_null: bool = False) -> np.ndarray:
            out = np.empty(len(values), dtype=np.int64)
            for row, v in enumerate(values):
                if allow_null and (v is None or v != v):
                    out[row] = -1
                    continue
                if v not in index:
                    raise ValueError(f"actions frame row {row}: unknown {col} {v!r}")
                out[row] = index[v]
            return out

        return Actions(
            hcp=lookup(frame["hcp_id"].tolist(), hcp_index, "hcp_id"),
            channel=lookup(frame["channel"].tolist(), _CH_INDEX, "channel"),
            content=lookup(frame["content_id"].tolist(), content_index, "content_id", allow_null=True),
            weekday=frame["weekday"].to_numpy(dtype=np.int64),
            daypart=lookup(frame["daypart"].tolist(), _DP_INDEX, "daypart"),
            propensity=frame["propensity"].to_numpy(dtype=np.float64) if "propensity" in frame.columns else None,
        )
