"""The recommendation engine behind the API and the nightly batch: features -> guardrail masks -> policy -> slate.

Per request: read online features (degraded to a consent-safe rule policy when the store does
not answer), turn the configured guardrails into masks first (consent, caps, cool-downs, window
rules on channels and items, lifecycle blocks, the request's channels and planning horizon),
score only what may be done with the champion (or the rule policy for the holdout and when the
model fails), pick a slate with exploration among feasible actions, attach reasons (which rule
removed what the model preferred) and a local time window, and append everything to the audit
trail. All steps are column-wise over HCPs; Python loops only build the JSON/audit rows at the
boundary.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import CHANNELS, REP_TIME_CHANNELS
from features.contact_history import recent_contacts
from features.rules import RuleActions, RuleFacts, RuleSignals, RuleThresholds, rule_based_actions, rule_signals
from serving.clock import approval_basis
from serving.config import ServingConfig
from serving.exploration import explore_slate, in_holdout, unit_hash
from serving.guardrails import RULES, ContactState, GuardrailPolicy, GuardrailResult, apply_guardrails, window_state
from serving.messages import check_locale
from serving.reasons import override_reason, suggestion_reasons
from serving.reference import ReferenceData
from serving.scoring import contentless_channels  # channels that carry no content (the champion's, else the config's)
from serving.windows import day_slot_mask, local_days, nearest_slot, window_table, working_hours_mask

log = logging.getLogger(__name__)

C = len(CHANNELS)
# Channels whose suggestion is meaningless without a piece of content to send or show.
CONTENT_CHANNELS = np.array([ch in ("wechat_push", "wecom_1to1", "email", "webinar") for ch in CHANNELS])
REP_TIME = np.array([ch in REP_TIME_CHANNELS for ch in CHANNELS])
# The feature values each audit row keeps: what the rules and reasons read, plus the model's
# profile inputs, open rates and touch sequence so drift monitoring can read what serving saw.
AUDIT_FEATURES = (
    "is_missing",
    "segment",
    "lifecycle",
    "consecutive_unopened_pushes",
    "days_since_last_touch",
    "touches_total",
    "seq_len",
    *[f"consent_{ch}" for ch in CHANNELS],
    *[f"{ch}_sent_7d" for ch in CHANNELS],
    *[f"{ch}_opened_90d" for ch in CHANNELS],
    *[f"{ch}_sent_90d" for ch in CHANNELS],
    "hospital_tier",
    "department",
    "title",
    "is_kol",
    "beds",
    "potential_boxes_month",
    "support_share",
    "profile_completeness",
    *[f"{ch}_open_rate_30d" for ch in CHANNELS],
    *[f"{ch}_sent_30d" for ch in CHANNELS],  # a rate with its denominator
    "seq_channel",
    "seq_content_id",
    "seq_response",
    "seq_gap_days",
    "suggestions_accepted_90d",
    "suggestions_dismissed_90d",
    "suggestions_done_90d",
)
# Numeric columns the engine itself reads (guardrails, reasons, plans): converted in one pandas call.
NUMERIC_FEATURES = (
    *[f"consent_{ch}" for ch in CHANNELS],
    *[f"{ch}_{kind}_{w}" for ch in CHANNELS for kind in ("sent", "opened") for w in ("7d", "30d", "90d")],
    *[f"days_since_last_{ch}" for ch in CHANNELS],
    "consecutive_unopened_pushes",
    "lifecycle",
    "potential_boxes_month",
)
_CHANNEL_NAMES = np.asarray(CHANNELS, dtype=object)
WINDOWS = ("week", "today")
# How far ahead a decision_date may lie: the week the model plans over.
MAX_DAYS_AHEAD = 6
# Subtracted from an entry past its rep's capacity: below every allowed score (probabilities, rule scores), order kept.
CAPACITY_DEMOTION = 1e9


def numeric_columns(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """float64 [N, len(names)] of ``frame``'s columns ``names``: ``frame[names].to_numpy(dtype=float64, na_value=nan)``, read from its blocks.

    Selecting columns by name builds a new frame (~0.5 ms for a single-HCP online frame, whatever
    its row count); the blocks give the same values with a few numpy copies. Columns of an
    extension or non-numeric dtype, and frames with repeated column names, go through pandas.
    """
    n = len(frame)
    if not names:
        return np.zeros((n, 0))
    mgr = getattr(frame, "_mgr", None)
    blknos, blklocs = getattr(mgr, "blknos", None), getattr(mgr, "blklocs", None)
    if blknos is None or blklocs is None or not frame.columns.is_unique:
        return frame[list(names)].to_numpy(dtype=np.float64, na_value=np.nan)
    pos = frame.columns.get_indexer(list(names))
    if (pos < 0).any():
        raise KeyError(f"{[c for c, p in zip(names, pos) if p < 0]} not in the frame's columns")
    out = np.empty((n, len(names)))
    nos, locs = blknos[pos], blklocs[pos]
    for b in np.unique(nos).tolist():
        j = np.flatnonzero(nos == b)
        values = mgr.blocks[b].values
        if isinstance(values, np.ndarray) and values.ndim == 2 and values.dtype.kind in "biuf":
            out[:, j] = values[locs[j]].T
        else:  # extension arrays, objects, datetimes: pandas' own conversion, column by column
            for k in j.tolist():
                out[:, k] = frame.iloc[:, int(pos[k])].to_numpy(dtype=np.float64, na_value=np.nan)
    return out


class FeatureMatrix:
    """The numeric feature columns of an online frame as one float64 matrix.

    Per-column pandas access costs ~0.1 ms a call whatever the row count, which dominated a
    single-HCP request; one conversion up front and numpy slices afterwards cost microseconds.
    """

    def __init__(self, frame: pd.DataFrame, names: tuple[str, ...] = NUMERIC_FEATURES) -> None:
        have = set(frame.columns)
        present = [c for c in names if c in have]
        self.n = len(frame)
        self.pos = {c: i for i, c in enumerate(present)}
        self.m = numeric_columns(frame, present)

    def __contains__(self, name: str) -> bool:
        return name in self.pos

    def col(self, name: str, default: float = 0.0) -> np.ndarray:
        """[N] column, ``default`` where absent or missing."""
        j = self.pos.get(name)
        if j is None:
            return np.full(self.n, default)
        v = self.m[:, j]
        return np.where(np.isnan(v), default, v)

    def block(self, pattern: str, default: float = 0.0) -> np.ndarray:
        """[N, C] of ``pattern.format(channel)`` columns in CHANNELS order, ``default`` where absent or missing."""
        idx = np.array([self.pos.get(pattern.format(ch), -1) for ch in CHANNELS])
        have = idx >= 0
        if not have.any():
            return np.full((self.n, C), default)
        out = np.full((self.n, C), np.nan)
        out[:, have] = self.m[:, idx[have]]
        return np.where(np.isnan(out), default, out)


def freeze_heap() -> None:
    """Move everything loaded so far out of the garbage collector's reach (call once after start-up).

    feast, torch, mlflow and pandas leave ~0.5M long-lived objects; every full collection would
    walk them all in the middle of some request (a tail-latency spike). They live as long as the
    process, so freezing them costs nothing.
    """
    import gc

    gc.collect()
    gc.freeze()


def new_ids(n: int) -> np.ndarray:
    """``n`` time-ordered UUIDv7 hex ids (uuid.hex's shape; ``serving.ids``): the audit trail's keys sort by time."""
    from serving.ids import uuid7_hex

    return uuid7_hex(n)


def data_span(features_cfg: Any) -> tuple[int, int] | None:
    """(first, last) feature snapshot in epoch seconds from the features build manifest, or None where there is none."""
    try:
        from features.build import read_build_manifest

        manifest = read_build_manifest(features_cfg)
        return int(manifest["first_snapshot_s"]), int(manifest["last_snapshot_s"])
    except Exception:  # a replica without the build's sources: no warning rather than no service
        return None


def store_down(exc: BaseException) -> bool:
    """Whether an exception says the online store did not answer (a connection or timeout error of its client)."""
    return isinstance(exc, (OSError, TimeoutError)) or type(exc).__module__.split(".")[0] == "redis"


class RequestError(ValueError):
    """A request the caller must fix; the message names the field."""


@dataclass
class Suggestions:
    """A scored request: one entry per served suggestion in each column array, plus request facts.

    ``columns`` are plain arrays (what the API and the audit trail read); ``frame`` builds a
    DataFrame of them on first use (the nightly batch, plans and tests), so a single-HCP request
    never pays for one.
    """

    columns: dict[str, Any]
    request_id: str
    as_of: datetime
    model_version: str | None
    degraded_features: bool
    notes: list[str] = field(default_factory=list)
    caller: str | None = None  # the API key's name that asked: recorded with each suggestion in the audit trail
    no_suggestion: list[str] = field(default_factory=list)  # HCPs every channel of whom was blocked
    unknown_hcp_ids: list[str] = field(default_factory=list)  # in no reference table and not online
    degraded_hcp_ids: list[str] = field(default_factory=list)  # served without their online features (outage, or absent from the store)
    warnings: list[str] = field(default_factory=list)  # what the caller should know (as_of far from the data, unknown ids)
    potential: Any = None  # [N] potential boxes per month per requested HCP (0 when unknown)
    # Wall time of each stage (features, model, audit, total) in ms: the benchmark's breakdown.
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Feasible-first bookkeeping (see ``feasibility_summary``): HCP decisions, first choices a rule
    # had to override after masking (0 by construction), and unmasked first choices that were infeasible.
    feasibility: dict[str, Any] = field(default_factory=dict)
    _frame: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def frame(self) -> pd.DataFrame:
        """The suggestions as a DataFrame (window times as tz-aware UTC timestamps)."""
        if self._frame is None:
            cols = dict(self.columns)
            for c in ("window_start", "window_end"):
                cols[c] = pd.to_datetime(np.asarray(cols[c], dtype=np.int64), utc=True)
            self._frame = pd.DataFrame(cols)
        return self._frame


@lru_cache(maxsize=32)
def _window_columns(columns: tuple[str, ...], rules: tuple) -> tuple[list[tuple[int, int, str]], list[tuple[int, str]]]:
    """The aggregate columns the channel window rules read: (window, channel, count column) and (channel, days-since column).

    Counts grow with the window, so per rule only the longest window not beyond its days
    matters (``cr_<ch>_sent_<w>d``, else ``<ch>_sent_<w>d``).
    """
    import re

    have = set(columns)
    counts: list[tuple[int, int, str]] = []
    since: list[tuple[int, str]] = []
    for rule in rules:
        if rule.scope != "channel":
            continue
        j = CHANNELS.index(rule.channel)
        windows = {int(m.group(2)): c for c in columns if (m := re.fullmatch(rf"(cr_)?{rule.channel}_sent_(\d+)d", c)) and int(m.group(2)) <= rule.days}
        if windows:
            w = max(windows)
            counts.append((w, j, f"cr_{rule.channel}_sent_{w}d" if f"cr_{rule.channel}_sent_{w}d" in have else f"{rule.channel}_sent_{w}d"))
        since += [(j, c) for c in (f"days_since_last_{rule.channel}", f"cr_{rule.channel}_days_since") if c in have]
    return counts, since


def window_inputs(frame: pd.DataFrame, policy: GuardrailPolicy) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Exact touch counts by window (days -> [N, C]) and days since the last touch [N, C] on the channels the window rules cover, from aggregates."""
    counts_cols, since_cols = _window_columns(tuple(map(str, frame.columns)), tuple(policy.window_rules))
    n = len(frame)
    names = [c for *_, c in counts_cols] + [c for _, c in since_cols]
    values = numeric_columns(frame, names)
    counts: dict[int, np.ndarray] = {}
    for k, (w, j, _) in enumerate(counts_cols):
        counts.setdefault(w, np.zeros((n, C)))[:, j] = np.nan_to_num(values[:, k], nan=0.0)
    since = np.full((n, C), np.inf)
    for k, (j, _) in enumerate(since_cols, start=len(counts_cols)):
        since[:, j] = np.fmin(since[:, j], values[:, k])
    return counts, since


def contact_state(
    frame: pd.DataFrame | FeatureMatrix,
    lifecycle: np.ndarray,
    *,
    history: pd.DataFrame | None = None,
    policy: GuardrailPolicy | None = None,
    content_topics: dict[str, str] | None = None,
    candidates: list[str] = (),
    contacts: Any = None,
) -> ContactState:
    """The guardrails' view of each HCP from online features (CHANNELS column order).

    With ``policy`` window rules and ``history`` (the online frame, touch sequence and item history
    columns), also what the window rules block (``ContactState.window``); ``contacts`` is
    ``recent_contacts(history)`` when the caller has it already.
    """
    num = frame if isinstance(frame, FeatureMatrix) else FeatureMatrix(frame)
    consent = num.block("consent_{}", 0.0) > 0
    sent_7d = num.block("{}_sent_7d").astype(np.int64)
    sent_30 = num.block("{}_sent_30d")
    opened_30 = num.block("{}_opened_30d")
    # Only pushes carry an exact streak; elsewhere "every touch this month unanswered" stands in.
    streak = np.where(opened_30 > 0, 0, sent_30).astype(np.int64)
    streak[:, CHANNELS.index("wechat_push")] = num.col("consecutive_unopened_pushes").astype(np.int64)
    days = num.block("days_since_last_{}", np.inf)
    window = None
    if policy is not None and policy.window_rules and history is not None:
        from features.contact_history import recent_contacts

        counts, since = window_inputs(history, policy)
        window = window_state(
            contacts if contacts is not None else recent_contacts(history),
            policy,
            channel_counts=counts,
            days_since=since,
            content_topics=content_topics,
            candidates=candidates,
        )
    return ContactState(
        consent=consent, sent_7d=sent_7d, unanswered_streak=streak, days_since_last=days, lifecycle=np.asarray(lifecycle, dtype=object), window=window
    )


def block_context(state: ContactState, i: int, c: int, content_id: Any = None) -> dict[str, Any]:
    """The facts ``explain_block`` reads about HCP row ``i`` and channel ``c`` (with ``content_id``, the item rule's)."""
    row: dict[str, Any] = {"sent_7d": state.sent_7d[i, c], "unanswered_streak": state.unanswered_streak[i, c], "lifecycle": state.lifecycle[i]}
    w = state.window
    if w is not None:
        if w.channel_rule[i, c] >= 0:
            row.update(window_rule=int(w.channel_rule[i, c]), window_count=int(w.channel_count[i, c]), window_days=float(w.channel_days[i, c]))
        elif content_id is not None and (j := w.item_entry(i, content_id)) >= 0:
            row.update(window_rule=int(w.item_rule[j]), window_count=int(w.item_count[j]), window_days=float(w.item_age[j]), content_id=content_id)
    return row


def feasibility_summary(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and shares over requests: first choices overridden after masking, unmasked first choices infeasible (by rule)."""
    n = sum(p.get("decisions", 0) for p in parts)
    over = sum(p.get("first_choice_overridden", 0) for p in parts)
    inf = sum(p.get("unmasked_first_infeasible", 0) for p in parts)
    by_rule: dict[str, int] = {}
    for p in parts:
        for r, v in p.get("unmasked_first_infeasible_by_rule", {}).items():
            by_rule[r] = by_rule.get(r, 0) + int(v)
    return {
        "decisions": n,
        "first_choice_overridden": over,
        "first_choice_overridden_share": over / n if n else 0.0,
        "unmasked_first_infeasible": inf,
        "unmasked_first_infeasible_share": inf / n if n else 0.0,
        "unmasked_first_infeasible_by_rule": by_rule,
    }


def choose_slate(score: np.ndarray, k: int, epsilon: np.ndarray, top_m: int, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slate of up to ``k`` allowed channels per row, with inclusion probabilities.

    score: [N, C], -inf = not allowed. epsilon: [N] exploration rate per row (0 = greedy).
    Exploration draws only among allowed channels. Returns (slate [N, k], propensity [N, k],
    valid [N, k] bool: False where fewer than k channels were allowed).
    """
    n = score.shape[0]
    ranked = np.argsort(-score, axis=1, kind="stable")
    n_allowed = np.isfinite(score).sum(1)
    slate = np.zeros((n, k), dtype=np.int64)
    prop = np.ones((n, k))
    m_eff = np.minimum(top_m, np.maximum(n_allowed, 1))
    for m in np.unique(m_eff):  # at most top_m groups
        for eps in np.unique(epsilon[m_eff == m]):
            rows = np.flatnonzero((m_eff == m) & (epsilon == eps))
            s, p = explore_slate(ranked[rows], k, float(eps), int(m), u[rows])
            slate[rows], prop[rows] = s, p
    valid = np.take_along_axis(np.isfinite(score), slate, 1)
    return slate, prop, valid


@dataclass(frozen=True)
class RuleView:
    """The rule policy as a request reads it: every HCP's rule and topic facts, and the full answer on the rule rows only."""

    rule: np.ndarray  # [N] object, which rule fires (RULE_NAMES)
    topic: np.ndarray  # [N] preferred topic index (-1 unknown)
    facts: RuleFacts  # [N]; the content facts (talk_topic, repeated, other_topic) hold on the rule rows only
    actions: RuleActions | None  # rule_based_actions over the rule rows, in their order (None: none)


class Recommender:
    """Holds the loaded dependencies; ``recommend`` scores requests, ``feedback`` closes the loop."""

    def __init__(
        self,
        cfg: ServingConfig,
        *,
        features_cfg: Any = None,
        store: Any = None,
        model: Any = None,
        model_error: str | None = None,
        reference: ReferenceData | None = None,
        audit: Any = None,
    ) -> None:
        self.cfg = cfg
        self.features_cfg = features_cfg
        self.store = store
        self.model = model
        self.model_error = model_error
        self.reference = reference or ReferenceData.empty()
        self.audit = audit
        self.policy = cfg.guardrails.policy()
        # Online reads fail fast behind a breaker (serving.circuit); the span of the feature data
        # (first, last snapshot, epoch s) dates the data for the as_of warning, when known.
        from serving.circuit import CircuitBreaker

        self.breaker = CircuitBreaker(cfg.online_read.cooloff_s)
        self.data_span: tuple[int, int] | None = None
        self.thresholds = RuleThresholds(cfg.rules.unopened_pushes, cfg.rules.strong_interest)
        from serving.outcome_calibration import OutcomeShift

        # The champion's expected responses as its served outcomes corrected them (serving.outcome_calibration).
        self.outcome_shift = OutcomeShift(None)

    @property
    def _topics(self) -> dict[str, str]:
        # Read per request: the reference data may have been reloaded since start-up.
        return self.reference.content_topics()

    @classmethod
    def from_config(cls, cfg: ServingConfig, *, features_cfg: Any = None) -> Recommender:
        """Load features store, champion, reference tables and audit trail; failures are recorded, not raised."""
        from serving.audit import AuditTrail
        from serving.scoring import ModelUnavailable, load_champion

        if features_cfg is None:
            from features import load_features_config

            features_cfg = load_features_config(cfg.features_config)
        if cfg.data_dir:
            # Serving's own dataset: the feedback push reads the HCP histories from it, as the reference data does.
            from pathlib import Path

            features_cfg = features_cfg.model_copy(update={"data_dir": Path(cfg.data_dir).resolve()})
        store = None
        try:
            from features import open_store
            from features.online import bound_redis_client

            store = open_store(features_cfg)
            bound_redis_client(store, connect_timeout_s=cfg.online_read.connect_timeout_ms / 1e3, read_timeout_s=cfg.online_read.read_timeout_ms / 1e3)
        except Exception as exc:  # the service still answers, degraded
            log.error("feature store unavailable at start-up: %s", exc)
        model, model_error = None, None
        try:
            import torch

            torch.set_num_threads(cfg.torch_threads)
            model = load_champion(cfg.tracking_uri, cfg.model_name, cfg.model_alias)
        except ModelUnavailable as exc:
            model_error = str(exc)
            log.error("%s", exc)
        data_dir = cfg.data_dir or str(features_cfg.data_dir)
        try:
            reference = ReferenceData.watch(data_dir, refresh_s=cfg.reference_refresh_s)
        except Exception as exc:
            log.error("reference data unavailable (%s): time zones default, no content, no plans", exc)
            reference = ReferenceData.empty()
        if cfg.audit_url.startswith("sqlite:///"):
            from pathlib import Path

            Path(cfg.audit_url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        audit = AuditTrail(cfg.audit_url, create=cfg.audit_create)  # SQLite in WAL with synchronous=FULL: durable at commit
        engine = cls(cfg, features_cfg=features_cfg, store=store, model=model, model_error=model_error, reference=reference, audit=audit)
        engine.data_span = data_span(features_cfg)
        return engine

    @property
    def ready(self) -> bool:
        """Ready to serve: a champion is loaded (or the deployment is rules-only by config)."""
        return self.model is not None or not self.cfg.require_model

    @property
    def model_version(self) -> str | None:
        """``name/version`` of the loaded champion, or None."""
        return self.model.label if self.model is not None else None

    def fetch_features(self, hcp_ids: list[str]) -> tuple[pd.DataFrame | None, str | None]:
        """Online features for ``hcp_ids``, or (None, why) when the store does not answer (or its circuit is open)."""
        if self.store is None:
            return None, "feature store not opened"
        if not self.breaker.allow():
            return None, self.breaker.why_open()
        try:
            from features import get_online_features

            frame = get_online_features(self.store, hcp_ids)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.breaker.state == "closed":  # once per outage, not once per request
                log.error("online features failed, serving degraded: %s", error)
            self.breaker.failure(error)
            return None, error
        self.breaker.success()
        return frame, None

    def as_of_warnings(self, as_of: datetime) -> list[str]:
        """A warning when ``as_of`` lies far beyond the newest feature snapshot or before the oldest (the features may not describe it)."""
        if self.data_span is None:
            return []
        first, last = (datetime.fromtimestamp(x, UTC) for x in self.data_span)
        limit = timedelta(days=self.cfg.as_of_warn_days)
        if as_of > last + limit:
            return [
                f"as_of {as_of.date().isoformat()} is {(as_of - last).days} days after the newest feature snapshot ({last.date().isoformat()}): "
                "features describe the HCPs as they were then; rebuild and materialise the features, or check as_of"
            ]
        if as_of < first - limit:
            return [
                f"as_of {as_of.date().isoformat()} is {(first - as_of).days} days before the oldest feature snapshot ({first.date().isoformat()}): "
                "online features describe a later time"
            ]
        return []

    def horizon(
        self, as_of: datetime, timezones: np.ndarray, window: str | None = None, decision_date: date | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Allowed slots [N or 1, C, 28] (working hours, and one local day when asked) and each row's planned local date (None: the week).

        ``window="today"`` plans each HCP's local today (dayparts not yet over); ``decision_date``
        plans that local date (today up to ``MAX_DAYS_AHEAD`` days ahead); neither: the coming week.
        """
        if window is not None and window not in WINDOWS:
            raise RequestError(f"window: must be one of {', '.join(WINDOWS)}, got {window!r}")
        if window is not None and decision_date is not None:
            raise RequestError("decision_date: give either window or decision_date, not both")
        week = working_hours_mask()[None]
        if window != "today" and decision_date is None:
            return week, None
        days, today, first = local_days(as_of, timezones, decision_date)
        if decision_date is not None:
            if (days < today).any():
                raise RequestError(f"decision_date: {decision_date.isoformat()} is before today ({min(today).isoformat()}) in the HCP's time zone")
            if (days > today + timedelta(days=MAX_DAYS_AHEAD)).any():
                raise RequestError(
                    f"decision_date: {decision_date.isoformat()} is more than {MAX_DAYS_AHEAD} days after today ({max(today).isoformat()}); "
                    "ask for the coming week without a decision_date"
                )
        return week & day_slot_mask(days, first)[:, None, :], days

    def recommend(
        self,
        hcp_ids: list[str],
        *,
        k: int | None = None,
        channels: list[str] | None = None,
        as_of: datetime | None = None,
        rep_id: str | None = None,
        record: bool = True,
        explore: bool = True,
        features: pd.DataFrame | None = None,
        window: str | None = None,
        decision_date: date | None = None,
        request_ids: list[str] | None = None,
        clock: datetime | None = None,
        locale: str | None = None,
        caller: str | None = None,
    ) -> Suggestions:
        """Top-k feasible suggestions for each HCP (see module docstring); ``features`` skips the online read.

        ``locale``: the language of the reasons (``serving.messages``; None: the config's).

        ``clock``: the server's time, which judges content approval (``serving.clock``; None: ``as_of`` does, for backtests and batch runs).
        ``request_ids`` (one per HCP) keeps each micro-batched caller's own request id on its rows (``serving.batching``).
        ``caller``: the API key's name (``serving.auth``), recorded with the suggestions.

        ``window``: "week" (default: the next occurrence of the best slot in the coming week) or
        "today" (only the HCP's local today, dayparts not yet over); ``decision_date``: one local date.
        """
        cfg = self.cfg
        k = cfg.default_k if k is None else k
        if not 1 <= k <= C:
            raise RequestError(f"k: must be between 1 and {C}, got {k}")
        if not hcp_ids:
            raise RequestError("hcp_ids: give at least one HCP id")
        try:
            locale = check_locale(locale or cfg.locale)
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        as_of = datetime.now(UTC) if as_of is None else (as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of.astimezone(UTC))
        request_allowed = np.ones(C, dtype=bool)
        if channels:
            unknown = [c for c in channels if c not in CHANNELS]
            if unknown:
                raise RequestError(f"channels: unknown channel(s) {unknown}; known: {', '.join(CHANNELS)}")
            request_allowed = np.isin(_CHANNEL_NAMES, channels)
        ids = [str(h) for h in hcp_ids]
        n = len(ids)
        rows_n = np.arange(n)
        request_id = new_ids(1)[0]
        t_start = time.perf_counter()
        ref = self.reference.lookup(ids)
        slot_ok, plan_days = self.horizon(as_of, ref["timezone"], window, decision_date)
        slot_any = slot_ok.any(-1)  # [N or 1, C]: the channel has a slot in the horizon
        notes: list[str] = []
        if plan_days is not None and not slot_any.any(1).all():
            notes.append("no slot left on the planned day for some HCPs (their local day is over): nothing suggested for them")
        frame, feat_err = (features, None) if features is not None else self.fetch_features(ids)
        t_features = time.perf_counter() - t_start
        t_model = 0.0
        degraded_features = frame is None
        # Unknown: in no reference table and not online (listed in the answer, nothing suggested).
        # Known but absent online: the store is empty or half loaded, which must not read as "no
        # suggestions": those HCPs are served degraded, like a store outage, and flagged.
        have_reference = len(self.reference.hcps) > 0
        missing_online = (
            np.ones(n, dtype=bool)
            if frame is None
            else (frame["is_missing"].to_numpy(dtype=bool) if "is_missing" in frame.columns else np.zeros(n, dtype=bool))
        )
        unknown = ~ref["known"] & missing_online if have_reference else np.zeros(n, dtype=bool)
        not_loaded = ref["known"] & missing_online & (frame is not None) if have_reference else np.zeros(n, dtype=bool)
        row_degraded = np.full(n, degraded_features) | not_loaded
        # Content must stay approved through the planned day as well as the configured validity.
        valid_days = self.cfg.content_valid_days if plan_days is None else max(self.cfg.content_valid_days, (max(plan_days) - as_of.date()).days + 1.0)
        approved = self.reference.approved_content(*approval_basis(as_of, valid_days, clock))

        if degraded_features:
            notes.append(f"features unavailable ({feat_err}): consent cannot be checked, only {', '.join(cfg.degraded_channels)} suggested")
            consent_ok = np.isin(_CHANNEL_NAMES, cfg.degraded_channels)
            frame = pd.DataFrame({"hcp_id": ids, **{f"consent_{ch}": np.full(n, ok) for ch, ok in zip(CHANNELS, consent_ok)}, "visit_sent_90d": 0})
        elif not_loaded.any():
            missing_ids = np.asarray(ids, dtype=object)[not_loaded].tolist()
            notes.append(
                f"features missing online for {len(missing_ids)} known HCP(s) ({', '.join(missing_ids[:10])}{', ...' if len(missing_ids) > 10 else ''}): "
                f"the online store is empty or partly loaded; rule-based suggestions on {', '.join(cfg.degraded_channels)} only, flagged degraded"
            )
            consent_ok = np.isin(_CHANNEL_NAMES, cfg.degraded_channels)
            frame = frame.copy()
            for ch, ok in zip(CHANNELS, consent_ok):
                col = f"consent_{ch}"
                if col in frame.columns:
                    frame[col] = np.where(not_loaded, ok, frame[col].to_numpy()).astype(frame[col].dtype)
        num = FeatureMatrix(frame)
        if "lifecycle" in num:
            lifecycle = self.reference.lifecycle_of(ids, num.col("lifecycle", -1).astype(np.int64))
        else:
            lifecycle = np.where(pd.isna(ref["lifecycle"]), "", ref["lifecycle"]).astype(object)
        products = np.where(pd.isna(ref["main_product_id"]), "", ref["main_product_id"]).astype(object)
        contacts = recent_contacts(frame)  # once for the rules' content choice and the window rules
        contentless = contentless_channels(self.model, cfg.contentless_channels)
        # Which rule fires and the topic facts are read for every HCP (rule_fired, the engagement
        # reason); the rules' ranking, slots and content only for the HCPs the model does not score.
        signals = rule_signals(frame, self._topics, self.thresholds)
        state = contact_state(
            num,
            lifecycle,
            history=None if degraded_features else frame,
            policy=self.policy,
            content_topics=self._topics,
            candidates=approved,
            contacts=contacts,
        )
        # Feasible first: every rule that does not depend on the content chosen is a channel mask
        # before anything is scored, and the item window rules a content mask inside scoring.
        pre = apply_guardrails(state, np.arange(C), np.ones(C, dtype=bool), self.policy)
        channel_ok = pre.allowed & request_allowed[None, :] & slot_any & ~unknown[:, None]
        blocked = (state.window.item_row, state.window.item_id) if state.window is not None else None

        holdout = in_holdout(ids, cfg.exploration.holdout_share, cfg.exploration.salt)
        policy = np.where(holdout, "holdout", "fallback").astype(object)
        # The model's rows are written below, the rules' after it (``_rule_rows``).
        score, expected = np.empty((n, C)), np.empty((n, C))
        content, weekday, daypart = np.full((n, C), None, dtype=object), np.zeros((n, C), dtype=np.int64), np.zeros((n, C), dtype=np.int64)
        # The policy's unmasked view (what it would choose without the rules), for reasons and statistics.
        raw_score, raw_content = np.empty((n, C)), np.full((n, C), None, dtype=object)
        model_version = self.model_version
        use_model = ~holdout & (self.model is not None) & ~row_degraded
        if self.model is None and not degraded_features:
            notes.append(f"model unavailable: {self.model_error}")
        if use_model.any():
            try:
                from serving.scoring import score_channels

                t0 = time.perf_counter()
                rows = np.flatnonzero(use_model)
                sub = frame if len(rows) == n else frame.iloc[rows].reset_index(drop=True)
                sub_blocked = None
                if blocked is not None:
                    at = np.full(n, -1)
                    at[rows] = np.arange(len(rows))
                    keep = at[blocked[0]] >= 0
                    sub_blocked = (at[blocked[0][keep]], blocked[1][keep])
                scores = score_channels(
                    self.model.bundle,
                    sub,
                    approved,
                    channel_allowed=channel_ok[rows],
                    blocked_items=sub_blocked,
                    slot_allowed=None if plan_days is None else slot_ok[rows],
                    products=(self.reference.content_products(self.model.bundle.vocab), products[rows]),
                )
                shifted = self.outcome_shift.apply(scores.expected) if self.outcome_shift.model_version == model_version else scores.expected
                score[rows], expected[rows] = np.where(scores.allowed, scores.prob, -np.inf), shifted
                content[rows], weekday[rows], daypart[rows] = scores.content_id, scores.weekday, scores.daypart
                raw_score[rows], raw_content[rows] = scores.raw_prob, scores.raw_content_id
                policy[rows] = "model"
                t_model = time.perf_counter() - t0
            except Exception as exc:  # a failing model degrades to the rules, never a 500
                log.exception("model scoring failed")
                notes.append(f"model scoring failed ({type(exc).__name__}: {exc}): rule-based suggestions")
                use_model[:] = False

        rule_rows = ~use_model
        rules = self._rule_rows(frame, signals, rule_rows, approved, products, contentless, contacts)
        if rule_rows.any():
            # The rules' own per-channel content and slots, and the same as the unmasked view.
            part = rules.actions
            score[rule_rows], expected[rule_rows] = part.score, part.expected
            content[rule_rows], weekday[rule_rows], daypart[rule_rows] = part.content, part.weekday, part.daypart
            raw_score[rule_rows], raw_content[rule_rows] = part.score, part.content
            # The rules' slots moved into the horizon (working hours, the planned day), and an item a
            # window rule blocks dropped where content is optional (elsewhere the channel is blocked).
            slots = slot_ok[rule_rows] if slot_ok.shape[0] > 1 else slot_ok
            weekday[rule_rows], daypart[rule_rows], _ = nearest_slot(weekday[rule_rows], daypart[rule_rows], slots)
            if state.window is not None:
                drop = (state.window.item_lookup(content) >= 0) & ~CONTENT_CHANNELS[None, :] & rule_rows[:, None]
                content = np.where(drop, None, content)
        g = self._check(state, content, approved)
        feasible = g.allowed & request_allowed[None, :] & slot_any & ~unknown[:, None]
        with np.errstate(invalid="ignore"):  # -inf x 0 where a rule already blocked
            final = np.where(feasible, score * g.weight, -np.inf)
        # The request's channels and horizon frame the question; only the rules count as overriding.
        raw = np.where(request_allowed[None, :] & slot_any, raw_score, -np.inf)
        top_raw = raw.argmax(1)
        g_raw = self._check(state, raw_content, None)
        infeasible_raw = np.isfinite(raw[rows_n, top_raw]) & ~g_raw.allowed[rows_n, top_raw]

        # Entries past the reps' capacity rank below every other allowed channel: their HCPs' acted-on
        # suggestions go to channels the rep can make, and they stay as the slate's last resort.
        capacity_blocked = self.capacity_mask(
            final, ref["rep_id"] if rep_id is None else np.full(n, rep_id, dtype=object), one_day=plan_days is not None, groups=request_ids
        )
        ranking = np.where(capacity_blocked & np.isfinite(final), final - CAPACITY_DEMOTION, final) if capacity_blocked.any() else final

        eps = np.where(use_model & explore, cfg.exploration.epsilon, 0.0)
        day = as_of.date().isoformat()
        u = unit_hash([f"{h}|{day}" for h in ids], f"explore|{cfg.exploration.salt}")
        slate, prop, valid = choose_slate(ranking, k, eps, cfg.exploration.top_m, u)
        greedy = ranking.argmax(1)
        explored = use_model & (slate[:, 0] != greedy)
        # Invariant check: the served first choice passes every rule (0 overrides after masking).
        first = slate[:, 0]
        served_ok = feasible[rows_n, first] & (np.asarray(~CONTENT_CHANNELS)[first] | pd.notna(content[rows_n, first]))
        overridden_after = valid[:, 0] & ~served_ok
        if overridden_after.any():
            log.error("%d served first choices fail a rule after masking", int(overridden_after.sum()))

        # Flatten to one row per served suggestion.
        row_idx, pos = np.nonzero(valid)
        ch = slate[row_idx, pos]
        pol = policy[row_idx].copy()
        pol[(pos == 0) & explored[row_idx]] = "explore"
        override_text = np.full(n, "", dtype=object)
        first_blocked_by = np.full(n, None, dtype=object)
        by_rule: dict[str, int] = {}
        if infeasible_raw.any():
            for rule in RULES:  # six rules, each vectorised over HCPs
                hit = infeasible_raw & g_raw.blocked_by[rule][rows_n, top_raw]
                if hit.any():
                    by_rule[rule] = int(hit.sum())
                    first_blocked_by[hit] = rule
                for i in np.flatnonzero(hit):  # only HCPs whose preferred action a rule removed
                    c = int(top_raw[i])
                    item = raw_content[i, c]
                    override_text[i] = override_reason(rule, CHANNELS[c], block_context(state, i, c, None if pd.isna(item) else item), self.policy, locale)
        # Rules applied to a suggestion: any rule that removed a channel scored above it, or its own preferred item.
        rules_applied: list[list[str]] = [[] for _ in range(len(ch))]
        above_served = raw[row_idx] > raw[row_idx, ch][:, None]
        own = np.zeros((len(ch), C), dtype=bool)
        own[np.arange(len(ch)), ch] = True
        for rule in RULES:
            above = g_raw.blocked_by[rule][row_idx] & request_allowed[None, :] & (above_served | own)
            for j in np.flatnonzero(above.any(1)):
                rules_applied[j].append(rule)
        tz = ref["timezone"][row_idx]
        start_ns, end_ns, start_iso, end_iso = window_table(
            as_of, tz, weekday[row_idx, ch], daypart[row_idx, ch], None if plan_days is None else plan_days[row_idx]
        )

        served_content = content[row_idx, ch]
        content_col = np.where(~contentless[ch] & (CONTENT_CHANNELS[ch] | pd.notna(served_content)), served_content, None)
        degraded = row_degraded[row_idx] | (pol == "fallback")
        long_w = 90 if "visit_sent_90d" in frame.columns else 30
        # Reasons in the request's locale, about the served channel only (serving.reasons); HCPs without
        # their features (store down, or not loaded) get no history and a check-consent note.
        reasons = suggestion_reasons(
            locale=locale,
            channel=ch,
            rank=pos,
            policy=pol,
            hcp_row=row_idx,
            expected=expected[row_idx, ch],
            rules=rules,
            weekday=weekday[row_idx, ch],
            daypart=daypart[row_idx, ch],
            content_id=content_col,
            content_topics=self._topics,
            sent=None if degraded_features else num.block(f"{{}}_sent_{long_w}d")[row_idx, ch],
            opened=None if degraded_features else num.block(f"{{}}_opened_{long_w}d")[row_idx, ch],
            window_days=long_w,
            override=np.where(pos == 0, override_text[row_idx], ""),
            no_features=row_degraded[row_idx],
            store_down=degraded_features,
        )

        columns = {
            "suggestion_id": new_ids(len(ch)),
            "hcp_id": np.asarray(ids, dtype=object)[row_idx],
            "rep_id": np.full(len(ch), rep_id, dtype=object) if rep_id is not None else ref["rep_id"][row_idx],
            "rank": pos + 1,
            "channel": _CHANNEL_NAMES[ch],
            "content_id": content_col,
            "window_start": start_ns,
            "window_end": end_ns,
            "window_start_local": start_iso,
            "window_end_local": end_iso,
            "timezone": tz,
            "expected_response": expected[row_idx, ch].astype(np.float64),
            "priority_score": np.where(np.isfinite(final[row_idx, ch]), final[row_idx, ch], 0.0),
            "propensity": prop[row_idx, pos],
            "policy": pol,
            "degraded": degraded,
            "rule_fired": rules.rule[row_idx],
            "rules_applied": rules_applied,
            "first_choice_blocked_by": np.where(pos == 0, first_blocked_by[row_idx], None),
            "reasons": reasons,
        }
        if request_ids is not None:
            columns["request_id"] = np.asarray(request_ids, dtype=object)[row_idx]
        result = Suggestions(columns, request_id, as_of, model_version, bool(row_degraded.any()), notes, caller=caller)
        result.unknown_hcp_ids = np.asarray(ids, dtype=object)[unknown].tolist()
        result.degraded_hcp_ids = np.asarray(ids, dtype=object)[row_degraded].tolist()
        result.warnings = self.as_of_warnings(as_of)
        result.no_suggestion = np.asarray(ids, dtype=object)[~valid[:, 0]].tolist()
        result.potential = num.col("potential_boxes_month")
        result.feasibility = {
            "decisions": n,
            "first_choice_overridden": int(overridden_after.sum()),
            "unmasked_first_infeasible": int(infeasible_raw.sum()),
            "unmasked_first_infeasible_by_rule": by_rule,
        }
        t_audit = time.perf_counter()
        if record and self.audit is not None:
            self.record(result, frame, row_idx)
        t_end = time.perf_counter()
        result.timings_ms = {"features": t_features * 1e3, "model": t_model * 1e3, "audit": (t_end - t_audit) * 1e3, "total": (t_end - t_start) * 1e3}
        return result

    def _rule_rows(
        self,
        frame: pd.DataFrame,
        signals: RuleSignals,
        rule_rows: np.ndarray,
        approved: list[str],
        products: np.ndarray,
        contentless: np.ndarray,
        contacts: Any,
    ) -> RuleView:
        """The rule policy on the ``rule_rows`` of ``frame`` (holdout, degraded, no or failing model), with every row's rule and topic facts."""
        rows = np.flatnonzero(rule_rows)
        n = len(frame)
        talk, repeated, other = signals.topic.copy(), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        actions = None
        if len(rows):
            whole = len(rows) == n
            # Every step of the rules is row-wise: the rows' answers equal those over the whole frame.
            actions = rule_based_actions(
                frame if whole else frame.iloc[rows].reset_index(drop=True),
                self._topics,
                thresholds=self.thresholds,
                items=self.reference.content_items(approved),
                product_ids=products if whole else products[rows],
                no_repeat_days=self.cfg.rules.no_repeat_days,
                carries_content=~contentless,
                contacts=contacts if whole else contacts.take(rows),
                sentences=False,
                signals=signals if whole else None,
            )  # serving.reasons words the facts in the request's locale
            f = actions.facts
            talk[rows], repeated[rows], other[rows] = f.talk_topic, f.repeated, f.other_topic
        s = signals
        facts = RuleFacts(
            unopened=s.unopened,
            forwards=s.forwards,
            favourites=s.favourites,
            replies=s.replies,
            short_days=int(s.short[:-1]),
            talk_topic=talk,
            repeated=repeated,
            other_topic=other,
            topic_hits=s.topic_hits,
            seq_len=s.seq_len,
            no_repeat_days=self.cfg.rules.no_repeat_days,
        )
        return RuleView(s.rule, s.topic, facts, actions)

    def refresh_outcome_shift(self, now: datetime | None = None) -> dict[str, Any]:
        """Adopt the newest stored outcome shift of the champion, or refit it from the audit trail's outcomes when it is due."""
        cfg = self.cfg.outcome_calibration
        if not cfg.enabled or self.audit is None or self.model_version is None:
            return {}
        from serving.hcp_locks import hcp_locks
        from serving.outcome_calibration import LOCK_ID, load_shift, refit

        now = now or datetime.now(UTC)
        # One refit at a time across workers and replicas (the audit database's lock): whoever comes
        # second finds the first one's update fresh and adopts it instead of adding another for the same outcomes.
        with hcp_locks(self.audit.engine, [LOCK_ID]):
            latest = load_shift(self.audit.engine, self.model_version)
            fresh = latest.fitted_at is not None and (now - latest.fitted_at).total_seconds() < 0.5 * cfg.refresh_s
            self.outcome_shift = (
                latest
                if fresh
                else refit(self.audit.engine, latest, prior_rows=cfg.prior_rows, min_rows=cfg.min_rows, max_abs_shift=cfg.max_abs_shift, now=now)
            )
        s = self.outcome_shift
        return {"shift": s.shift, "rows": s.rows, "mean_expected": s.mean_expected, "mean_realised": s.mean_realised}

    def capacity_mask(self, score: np.ndarray, rep_of: np.ndarray, *, one_day: bool, groups: list[str] | None = None) -> np.ndarray:
        """[N, C] rep-time and 1:1 entries past the reps' capacity in the horizon (``serving.capacity``).

        ``groups`` (a request id per row, for micro-batched callers): each caller's HCPs share capacity
        only among themselves, so a caller gets what it would have got alone.
        """
        cap = self.cfg.capacity
        out = np.zeros(score.shape, dtype=bool)
        if not cap.enabled or not len(self.reference.reps):
            return out
        from serving.capacity import fit_budget, request_budget

        days = 1 if one_day else cap.working_days
        rep_of = np.asarray(rep_of, dtype=object)
        parts = [np.arange(len(rep_of))] if groups is None else [np.flatnonzero(np.asarray(groups, dtype=object) == g) for g in dict.fromkeys(groups)]
        for rows in parts:
            budget = request_budget(rep_of[rows], self.reference.capacities, self.reference.book_sizes, days, cap.utilisation, floor=cap.ranks)
            out[rows] = fit_budget(score[rows], rep_of[rows], budget, cap.ranks)
        return out

    def _check(self, state: ContactState, content: np.ndarray, approved: list[str] | None) -> GuardrailResult:
        """Every rule on each (HCP, channel) with its content: content channels need an item (approved, when ``approved`` is given)."""
        has = pd.notna(content)
        if approved is not None and has.any():
            # A set lookup per entry: np.isin over object arrays sorts both sides (~0.5 ms a request).
            ok = frozenset(approved)
            has = has & np.fromiter((x in ok for x in content.ravel().tolist()), dtype=bool, count=content.size).reshape(content.shape)
        return apply_guardrails(state, np.arange(C), ~CONTENT_CHANNELS[None, :] | has, self.policy, action_content=content)

    def record(self, result: Suggestions, frame: pd.DataFrame, row_idx: np.ndarray) -> int:
        """Append the served suggestions to the audit trail with the feature values they saw."""
        import json

        from serving.audit import shared_features

        f = result.columns
        cols = [c for c in AUDIT_FEATURES if c in frame.columns]
        # One JSON document per HCP, serialised column-wise by pandas, kept on its first row; the
        # HCP's other rows point at that row.
        per_hcp = frame[cols].to_json(orient="records", lines=True).splitlines() if cols and len(frame) else ["{}"] * len(frame)
        first = np.asarray(f["rank"]) == 1
        first_of = np.full(len(frame), -1)
        first_of[row_idx[first]] = np.flatnonzero(first)
        sid = f["suggestion_id"]
        feats = [
            doc if is_first else shared_features(sid[j])
            for doc, is_first, j in zip(np.asarray(per_hcp, dtype=object)[row_idx].tolist(), first.tolist(), first_of[row_idx].tolist())
        ]
        memo: dict[tuple, str] = {}  # few distinct (rule, rules applied) pairs per request
        rules = [
            memo.get(key) or memo.setdefault(key, json.dumps({"fired": key[0], "applied": list(key[1]), "first_choice_blocked_by": key[2]}))
            for key in zip(f["rule_fired"].tolist(), map(tuple, f["rules_applied"]), f["first_choice_blocked_by"].tolist())
        ]
        reasons = [json.dumps(rs, ensure_ascii=False) for rs in f["reasons"]]
        return self.audit.record_columns(
            {
                "suggestion_id": sid,
                "request_id": f.get("request_id", result.request_id),
                "hcp_id": f["hcp_id"],
                "rep_id": f["rep_id"],
                "as_of": result.as_of,
                "rank": f["rank"],
                "channel": f["channel"],
                "content_id": f["content_id"],
                "window_start": f["window_start"],
                "window_end": f["window_end"],
                "expected_response": f["expected_response"],
                "propensity": f["propensity"],
                "policy": f["policy"],
                "model_version": result.model_version,
                "degraded": f["degraded"],
                "features_json": feats,
                "rules_json": rules,
                "reasons_json": reasons,
                "caller": result.caller,
            }
        )

    def feedback(self, item: dict[str, Any]) -> dict[str, Any]:
        """Store one outcome durably (idempotent by feedback id), then push it to the online store (``feedback_batch`` of one)."""
        return self.feedback_batch([item])["results"][0]

    def feedback_batch(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Store a batch of outcomes in one audit transaction (all or nothing, idempotent by feedback id), then one push for all affected HCPs.

        A replay of a feedback no successful push has read yet (the push failed, or the process
        died between the audit commit and the push) pushes it again. Per item: created,
        pushed_online, push_error.
        """
        from serving.feedback import push_log, stored_feedback_many

        stored = self.audit.record_feedback_many(items)
        results = [{"feedback_id": r.feedback_id, "created": r.created, "pushed_online": False, "push_error": None} for r in stored]
        pushed_hcps = 0
        if self.features_cfg is not None and results:
            info = stored_feedback_many(self.audit, [r["feedback_id"] for r in results])
            replays = [info[r["feedback_id"]][0] for r in results if not r["created"]]
            through = push_log(self.audit).pushed_through(replays) if replays else {}
            from serving.feedback import _utc

            done, need = set(), set()
            for r in results:
                hcp, received_at = info[r["feedback_id"]]
                if not r["created"] and hcp in through and through[hcp] >= _utc(received_at):
                    done.add(r["feedback_id"])
                else:
                    need.add(hcp)
            errors = self._push_many(sorted(need))
            pushed_hcps = sum(e is None for e in errors.values())
            for r in results:
                hcp = info[r["feedback_id"]][0]
                if r["feedback_id"] in done:
                    r["pushed_online"] = True
                else:
                    r["push_error"] = errors.get(hcp)
                    r["pushed_online"] = r["push_error"] is None
                    if r["push_error"] is not None:
                        log.error("feedback %s stored but not pushed online: %s", r["feedback_id"], r["push_error"])
        return {"results": results, "created": sum(r["created"] for r in results), "pushed_hcps": pushed_hcps}

    def _push(self, hcp_id: str) -> bool:
        error = self._push_many([hcp_id])[hcp_id]
        if error is not None:
            raise RuntimeError(error)
        return True

    def _push_many(self, hcp_ids: list[str]) -> dict[str, str | None]:
        """Push ``hcp_ids`` (grouped; each alone when the group fails for a bad row), behind the store's breaker: HCP -> error or None."""
        from serving.feedback import push_grouped, push_log

        if not hcp_ids:
            return {}
        if self.store is not None and not self.breaker.allow():
            # The store is down: fail fast (logged, so a replay or the catch-up pushes it later).
            push_log(self.audit).record_many(hcp_ids, {}, error=self.breaker.why_open())
            return dict.fromkeys(hcp_ids, f"ConnectionError: {self.breaker.why_open()}")

        def outage(exc: BaseException) -> bool:
            if self.store is not None and store_down(exc):  # a bad row is no outage: only the store's own errors trip the breaker
                self.breaker.failure(f"{type(exc).__name__}: {exc}")
                return True
            return False

        out = push_grouped(self.features_cfg, self.store, self.audit, hcp_ids, is_outage=outage)
        if self.store is not None and any(e is None for e in out.values()):
            self.breaker.success()
        return out

    def retry_pushes(self, limit: int = 100) -> dict[str, Any]:
        """Push again the feedback no successful push has read (at most ``limit`` HCPs): the background catch-up."""
        from serving.feedback import retry_unpushed

        if self.features_cfg is None or (self.store is not None and not self.breaker.allow()):
            return {"hcps": 0, "pushed": 0, "failed": {}}
        return retry_unpushed(self.features_cfg, self.store, self.audit, limit)
