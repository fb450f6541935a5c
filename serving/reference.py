"""Reference data the service needs besides features: HCP time zones and owners, reps, content.

Read from the contract dataset (dimension tables are small): which rep owns an HCP, the HCP's
time zone (suggested windows are in local time), reps' daily capacities, and content topics and
approval windows (only approved, unexpired content may be suggested). A running service keeps
it current without a restart: ``ReferenceData.watch`` polls the dataset's manifest and swaps in
a freshly loaded copy when the dimension tables changed (``LiveReference``), so a recall or a
change of owner reaches every replica within ``reference_refresh_s``. Consent travels with the
online features (``nba sync``).
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import LIFECYCLES
from features.rules import ContentItems

DEFAULT_TIMEZONE = "Asia/Shanghai"


@dataclass
class ReferenceData:
    """Dimension tables indexed for lookups (ids are pseudonymous)."""

    hcps: pd.DataFrame  # index hcp_id: rep_id, timezone, main_product_id, segment, lifecycle
    reps: pd.DataFrame  # index rep_id: visit_capacity_per_day, message_capacity_per_day
    content: pd.DataFrame  # index content_id: product_id, topic, approved_from, approved_until
    # Plain-array views built once at start-up: a request looks HCPs up in a dict, not a pandas index.
    _pos: dict[str, int] = field(init=False, repr=False)
    _cols: dict[str, np.ndarray] = field(init=False, repr=False)
    _approval_ns: tuple[np.ndarray, np.ndarray, np.ndarray] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._pos = {str(h): i for i, h in enumerate(self.hcps.index)}
        self._cols = {c: self.hcps[c].to_numpy(dtype=object) for c in ("rep_id", "timezone", "main_product_id", "lifecycle", "segment") if c in self.hcps}
        ids = self.content.index.astype(str).to_numpy(dtype=object)
        self._approval_ns = (ids, _ns(self.content["approved_from"]), _ns(self.content["approved_until"]))

    @classmethod
    def empty(cls) -> ReferenceData:
        """No reference data: default time zone, no owners, no content."""
        return cls(
            pd.DataFrame(columns=["rep_id", "region", "timezone", "main_product_id", "segment", "lifecycle"]).rename_axis("hcp_id"),
            pd.DataFrame(columns=["visit_capacity_per_day", "message_capacity_per_day"]).rename_axis("rep_id"),
            pd.DataFrame(columns=["product_id", "topic", "approved_from", "approved_until"]).rename_axis("content_id"),
        )

    @classmethod
    def watch(cls, data_dir: str | Path, *, refresh_s: float = 60.0) -> LiveReference:
        """The dataset's reference data, reloaded in the background when it changes (see ``LiveReference``)."""
        return LiveReference(data_dir, refresh_s=refresh_s)

    @classmethod
    def load(cls, data_dir: str | Path) -> ReferenceData:
        """Read hcps, reps, products and content from a contract dataset."""
        from contract.io import read_frame

        data_dir = Path(data_dir)
        if not data_dir.exists():
            raise FileNotFoundError(f"reference data: contract dataset {data_dir} does not exist (run nba simulate or nba import)")
        hcps = read_frame(data_dir, "hcps", columns=["hcp_id", "rep_id", "region", "timezone", "main_product_id", "segment"])
        products = read_frame(data_dir, "products", columns=["product_id", "lifecycle"]).set_index("product_id")
        hcps["lifecycle"] = hcps["main_product_id"].map(products["lifecycle"])
        reps = read_frame(data_dir, "reps", columns=["rep_id", "visit_capacity_per_day", "message_capacity_per_day"])
        content = read_frame(data_dir, "content", columns=["content_id", "product_id", "topic", "approved_from", "approved_until"])
        return cls(hcps.set_index("hcp_id"), reps.set_index("rep_id"), content.set_index("content_id"))

    def approved_content(self, as_of: datetime, valid_days: float = 0.0) -> list[str]:
        """Content approved at ``as_of`` and still approved ``valid_days`` later."""
        ids, start, until = self._approval_ns
        now = _ns_scalar(as_of)
        later = _ns_scalar(as_of + timedelta(days=valid_days))
        # A missing approval date (NaT, the int64 minimum) never approves.
        ok = (start != _NAT) & (until != _NAT) & (start <= now) & (until > later)
        return ids[ok].tolist()

    def content_products(self, vocab: Any) -> np.ndarray:
        """[V] product of each item of a model vocabulary ("" where the catalogue does not know it), cached per vocabulary."""
        cache = self.__dict__.setdefault("_product_cache", {})
        key = id(vocab)
        if key not in cache:
            ids = pd.Index(self.content.index.astype(str))
            pos = ids.get_indexer(pd.Index(["", "", *vocab.ids], dtype=object))
            prod = self.content["product_id"].astype(str).to_numpy(dtype=object)
            cache[key] = np.where(pos >= 0, prod[np.maximum(pos, 0)], "").astype(object)
        return cache[key]

    def content_topics(self) -> dict[str, str]:
        """Content id -> topic (built once per loaded copy; callers must not mutate it)."""
        if "_topics_cache" not in self.__dict__:
            self.__dict__["_topics_cache"] = self.content["topic"].astype(str).to_dict()
        return self.__dict__["_topics_cache"]

    def content_items(self, approved: list[str]) -> ContentItems:
        """The approved items for the rule policy's content choice, newest approval first."""
        # The approved set changes only when the clock crosses an approval boundary: cache it.
        cache = self.__dict__.setdefault("_items_cache", {})
        key = tuple(approved)
        if key not in cache:
            c = self.content.loc[self.content.index.isin(approved)]
            c = c.sort_values("approved_from", ascending=False, kind="stable")
            cache[key] = ContentItems.build(c.index.astype(str), c["product_id"].astype(str), c["topic"].astype(str))
            if len(cache) > 64:
                cache.pop(next(iter(cache)))
        return cache[key]

    def lookup(self, hcp_ids: list[str]) -> dict[str, np.ndarray]:
        """Reference columns for ``hcp_ids`` as arrays, in order (``known``; unknown HCPs: default zone, None elsewhere)."""
        pos = np.fromiter((self._pos.get(h, -1) for h in hcp_ids), dtype=np.int64, count=len(hcp_ids))
        known = pos >= 0
        out: dict[str, np.ndarray] = {"known": known}
        for c, values in self._cols.items():
            col = np.full(len(hcp_ids), None, dtype=object)
            col[known] = values[pos[known]]
            out[c] = col
        tz = out.get("timezone", np.full(len(hcp_ids), None, dtype=object))
        out["timezone"] = np.where(pd.isna(tz), DEFAULT_TIMEZONE, tz).astype(object)
        return out

    def hcp_rows(self, hcp_ids: list[str]) -> pd.DataFrame:
        """Reference rows for ``hcp_ids`` in order; unknown HCPs get the default time zone."""
        rows = self.hcps.reindex(pd.Index(hcp_ids, name="hcp_id"))
        rows["timezone"] = rows["timezone"].fillna(DEFAULT_TIMEZONE)
        rows["known"] = pd.Index(hcp_ids).isin(self.hcps.index)
        return rows

    def lifecycle_of(self, hcp_ids: list[str], codes: np.ndarray | None = None) -> np.ndarray:
        """Lifecycle names per HCP: from feature codes when given, else the reference tables."""
        if codes is not None:
            return np.asarray([*LIFECYCLES, ""], dtype=object)[np.where(codes < 0, len(LIFECYCLES), codes)]
        return self.hcp_rows(hcp_ids)["lifecycle"].fillna("").to_numpy(dtype=object)

    def rep_hcps(self, rep_id: str) -> list[str]:
        """HCPs owned by ``rep_id`` (sorted)."""
        return sorted(self.hcps.index[self.hcps["rep_id"].to_numpy() == rep_id].astype(str))

    def territory_hcps(self, rep_id: str) -> list[str]:
        """HCPs in the regions of ``rep_id``'s HCPs (their own and others'), sorted."""
        regions = self.hcps.loc[self.hcps["rep_id"].to_numpy() == rep_id, "region"].unique()
        return sorted(self.hcps.index[self.hcps["region"].isin(regions).to_numpy()].astype(str))

    @cached_property
    def book_sizes(self) -> dict[str, int]:
        """HCPs owned per rep."""
        if "rep_id" not in self.hcps or not len(self.hcps):
            return {}
        return {str(k): int(v) for k, v in self.hcps["rep_id"].dropna().astype(str).value_counts().items()}

    @cached_property
    def capacities(self) -> dict[str, tuple[int, int]]:
        """(visits, messages) per day of every rep with both figures."""
        reps = self.reps.dropna(subset=["visit_capacity_per_day", "message_capacity_per_day"])
        return {str(r): (int(v), int(m)) for r, v, m in zip(reps.index, reps["visit_capacity_per_day"], reps["message_capacity_per_day"])}

    def capacity(self, rep_id: str) -> tuple[int, int]:
        """(visits, messages) per day of ``rep_id``; KeyError when the rep is unknown."""
        row = self.reps.loc[rep_id]
        return int(row["visit_capacity_per_day"]), int(row["message_capacity_per_day"])


_NAT = np.iinfo(np.int64).min


def _ns(col: pd.Series) -> np.ndarray:
    """Timestamps as int64 UTC nanoseconds (NaT as the int64 minimum)."""
    ts = pd.to_datetime(col, utc=True)
    return ts.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").view(np.int64) if len(ts) else np.zeros(0, dtype=np.int64)


def _ns_scalar(when: datetime) -> int:
    return pd.Timestamp(when if when.tzinfo is not None else when.replace(tzinfo=UTC)).value


log = logging.getLogger(__name__)
# The dimension tables reference data reads: a change to any other table (touches, outcomes) is
# no reason to reload.
REFERENCE_TABLES = ("hcps", "reps", "products", "content")


def reference_etag(data_dir: str | Path) -> str | None:
    """The content hashes of the reference tables from the dataset's manifest; None when there is no dataset."""
    import json

    from contract.schema import MANIFEST_NAME

    path = Path(data_dir) / MANIFEST_NAME
    try:
        tables = json.loads(path.read_text()).get("tables", {})
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        # A dataset is replaced by one directory rename; a missing or torn manifest means "not now".
        return None
    return "|".join(f"{n}:{tables.get(n, {}).get('sha256', '')}" for n in REFERENCE_TABLES)


class LiveReference:
    """Reference data that follows its dataset: every ``refresh_s / 2`` seconds (a daemon thread)
    the manifest's hashes of the reference tables are compared and, when they changed, a new
    ``ReferenceData`` is loaded and swapped in with one assignment. A request therefore sees one
    consistent copy per attribute access, and a change reaches it within ``refresh_s`` (polling at
    half the bound leaves the other half for the load). ``refresh_s`` 0 loads once, never polls.
    Attribute access is delegated to the current copy, so it stands in for ``ReferenceData``.
    """

    def __init__(self, data_dir: str | Path, *, refresh_s: float = 60.0) -> None:
        self.data_dir = Path(data_dir)
        self.refresh_s = float(refresh_s)
        self._current = ReferenceData.empty()
        self._etag: str | None = None
        self.loaded_at: float | None = None
        self.reloads = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if not self.refresh():
            log.error(
                "reference data unavailable (no contract dataset at %s): time zones default, no content, no plans%s",
                self.data_dir,
                "; watching for it" if self.refresh_s > 0 else "",
            )
        if self.refresh_s > 0:
            # The thread holds only a weak reference: a dropped LiveReference stops its thread.
            threading.Thread(target=_poll, args=(weakref.ref(self), self._stop, self.refresh_s / 2), name="reference-refresh", daemon=True).start()

    @property
    def current(self) -> ReferenceData:
        """The copy requests read now."""
        return self._current

    def refresh(self) -> bool:
        """Reload if the reference tables changed since the last load; True when a copy is loaded (new or kept)."""
        import time

        with self._lock:  # one reload at a time; readers never wait for it
            etag = reference_etag(self.data_dir)
            if etag is None:
                return self._etag is not None
            if etag == self._etag:
                return True
            try:
                fresh = ReferenceData.load(self.data_dir)
            except Exception as exc:  # a half-written or broken dataset: keep serving the last good copy
                log.error("reference data reload from %s failed (%s); keeping the copy loaded before", self.data_dir, exc)
                return self._etag is not None
            self._current, self._etag, self.loaded_at = fresh, etag, time.time()
            self.reloads += 1
            if self.reloads > 1:
                log.info("reference data reloaded from %s (%d HCPs, %d content items)", self.data_dir, len(fresh.hcps), len(fresh.content))
            return True

    def stop(self) -> None:
        """Stop polling (the copy loaded last stays)."""
        self._stop.set()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names LiveReference itself lacks: ReferenceData's tables and methods.
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.__dict__["_current"], name)


def _poll(ref: weakref.ref[LiveReference], stop: threading.Event, every_s: float) -> None:
    while not stop.wait(every_s):
        live = ref()
        if live is None:
            return
        try:
            live.refresh()
        except Exception:  # never let the watcher die: the next poll tries again
            log.exception("reference data refresh failed")
        del live
