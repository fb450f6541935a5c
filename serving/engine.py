"""The recommendation engine behind the API and the nightly batch: features -> policy -> guardrails -> slate.

Per request: read online features (degraded to a consent-safe rule policy when the store does
not answer), score every channel with the champion (or the rule policy for the holdout and when
the model fails), apply the configured guardrails, pick a slate with exploration, attach reasons
and a local time window, and append everything to the audit trail. All steps are column-wise
over HCPs; Python loops only build the JSON/audit rows at the boundary.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import CHANNELS, REP_TIME_CHANNELS
from features.rules import RuleThresholds, rule_based_actions
from serving.config import ServingConfig
from serving.exploration import explore_slate, in_holdout, unit_hash
from serving.guardrails import RULES, ContactState, apply_guardrails, explain_block
from serving.reasons import combine, history_reason, model_reason, policy_note
from serving.reference import ReferenceData
from serving.windows import window_table
from simulator.world import CONTENTLESS_MASK  # channels that carry no content (a phone call)

log = logging.getLogger(__name__)

C = len(CHANNELS)
# Channels whose suggestion is meaningless without a piece of content to send or show.
CONTENT_CHANNELS = np.array([ch in ("wechat_push", "wecom_1to1", "email", "webinar") for ch in CHANNELS])
REP_TIME = np.array([ch in REP_TIME_CHANNELS for ch in CHANNELS])
# The feature values each audit row keeps: what the rules and reasons read, plus the model's
# profile inputs, open rates and touch sequence so drift monitoring can read what serving saw.
AUDIT_FEATURES = (
    "is_missing", "segment", "lifecycle", "consecutive_unopened_pushes", "days_since_last_touch", "touches_total", "seq_len",
    *[f"consent_{ch}" for ch in CHANNELS], *[f"{ch}_sent_7d" for ch in CHANNELS], *[f"{ch}_opened_90d" for ch in CHANNELS],
    *[f"{ch}_sent_90d" for ch in CHANNELS],
    "hospital_tier", "department", "title", "is_kol", "beds", "potential_boxes_month", "support_share", "profile_completeness",
    *[f"{ch}_open_rate_30d" for ch in CHANNELS], *[f"{ch}_sent_30d" for ch in CHANNELS],  # a rate with its denominator
    "seq_channel", "seq_content_id", "seq_response", "seq_gap_days",
    "suggestions_accepted_90d", "suggestions_dismissed_90d", "suggestions_done_90d",
)
# Numeric columns the engine itself reads (guardrails, reasons, plans): converted in one pandas call.
NUMERIC_FEATURES = (
    *[f"consent_{ch}" for ch in CHANNELS],
    *[f"{ch}_{kind}_{w}" for ch in CHANNELS for kind in ("sent", "opened") for w in ("7d", "30d", "90d")],
    *[f"days_since_last_{ch}" for ch in CHANNELS],
    "consecutive_unopened_pushes", "lifecycle", "potential_boxes_month",
)
_CHANNEL_NAMES = np.asarray(CHANNELS, dtype=object)


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
        self.m = frame[present].to_numpy(dtype=np.float64, na_value=np.nan) if present else np.zeros((self.n, 0))

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
    """``n`` random 128-bit hex ids (uuid4().hex's shape) from one system call instead of ``n``."""
    raw = os.urandom(16 * n).hex()
    return np.asarray([raw[32 * i : 32 * (i + 1)] for i in range(n)], dtype=object)


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
    no_suggestion: list[str] = field(default_factory=list)  # HCPs every channel of whom was blocked
    potential: Any = None  # [N] potential boxes per month per requested HCP (0 when unknown)
    # Wall time of each stage (features, model, audit, total) in ms: the benchmark's breakdown.
    timings_ms: dict[str, float] = field(default_factory=dict)
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


def contact_state(frame: pd.DataFrame | FeatureMatrix, lifecycle: np.ndarray) -> ContactState:
    """The guardrails' view of each HCP from online features (CHANNELS column order)."""
    num = frame if isinstance(frame, FeatureMatrix) else FeatureMatrix(frame)
    consent = num.block("consent_{}", 0.0) > 0
    sent_7d = num.block("{}_sent_7d").astype(np.int64)
    sent_30 = num.block("{}_sent_30d")
    opened_30 = num.block("{}_opened_30d")
    # Only pushes carry an exact streak; elsewhere "every touch this month unanswered" stands in.
    streak = np.where(opened_30 > 0, 0, sent_30).astype(np.int64)
    streak[:, CHANNELS.index("wechat_push")] = num.col("consecutive_unopened_pushes").astype(np.int64)
    days = num.block("days_since_last_{}", np.inf)
    return ContactState(consent=consent, sent_7d=sent_7d, unanswered_streak=streak, days_since_last=days, lifecycle=np.asarray(lifecycle, dtype=object))


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


class Recommender:
    """Holds the loaded dependencies; ``recommend`` scores requests, ``feedback`` closes the loop."""

    def __init__(self, cfg: ServingConfig, *, features_cfg: Any = None, store: Any = None, model: Any = None, model_error: str | None = None,
                 reference: ReferenceData | None = None, audit: Any = None) -> None:
        self.cfg = cfg
        self.features_cfg = features_cfg
        self.store = store
        self.model = model
        self.model_error = model_error
        self.reference = reference or ReferenceData.empty()
        self.audit = audit
        self.policy = cfg.guardrails.policy()
        self.thresholds = RuleThresholds(cfg.rules.unopened_pushes, cfg.rules.strong_interest)
        self._topics = self.reference.content_topics()

    @classmethod
    def from_config(cls, cfg: ServingConfig, *, features_cfg: Any = None) -> "Recommender":
        """Load features store, champion, reference tables and audit trail; failures are recorded, not raised."""
        from serving.audit import AuditTrail
        from serving.scoring import ModelUnavailable, load_champion

        if features_cfg is None:
            from features import load_features_config

            features_cfg = load_features_config(cfg.features_config)
        store = None
        try:
            from features import open_store

            store = open_store(features_cfg)
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
            reference = ReferenceData.load(data_dir)
        except Exception as exc:
            log.error("reference data unavailable (%s): time zones default, no content, no plans", exc)
            reference = ReferenceData.empty()
        if cfg.audit_url.startswith("sqlite:///"):
            from pathlib import Path

            Path(cfg.audit_url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        audit = AuditTrail(cfg.audit_url)  # SQLite in WAL with synchronous=FULL: durable at commit
        return cls(cfg, features_cfg=features_cfg, store=store, model=model, model_error=model_error, reference=reference, audit=audit)

    @property
    def ready(self) -> bool:
        """Ready to serve: a champion is loaded (or the deployment is rules-only by config)."""
        return self.model is not None or not self.cfg.require_model

    @property
    def model_version(self) -> str | None:
        """``name/version`` of the loaded champion, or None."""
        return self.model.label if self.model is not None else None

    def fetch_features(self, hcp_ids: list[str]) -> tuple[pd.DataFrame | None, str | None]:
        """Online features for ``hcp_ids``, or (None, why) when the store does not answer."""
        if self.store is None:
            return None, "feature store not opened"
        try:
            from features import get_online_features

            return get_online_features(self.store, hcp_ids), None
        except Exception as exc:
            log.error("online features failed: %s", exc)
            return None, f"{type(exc).__name__}: {exc}"

    def recommend(self, hcp_ids: list[str], *, k: int | None = None, channels: list[str] | None = None, as_of: datetime | None = None,
                  rep_id: str | None = None, record: bool = True, explore: bool = True, features: pd.DataFrame | None = None) -> Suggestions:
        """Top-k suggestions for each HCP (see module docstring); ``features`` skips the online read."""
        cfg = self.cfg
        k = cfg.default_k if k is None else k
        if not 1 <= k <= C:
            raise RequestError(f"k: must be between 1 and {C}, got {k}")
        if not hcp_ids:
            raise RequestError("hcp_ids: give at least one HCP id")
        as_of = datetime.now(timezone.utc) if as_of is None else (as_of.replace(tzinfo=timezone.utc) if as_of.tzinfo is None else as_of.astimezone(timezone.utc))
        request_allowed = np.ones(C, dtype=bool)
        if channels:
            unknown = [c for c in channels if c not in CHANNELS]
            if unknown:
                raise RequestError(f"channels: unknown channel(s) {unknown}; known: {', '.join(CHANNELS)}")
            request_allowed = np.isin(_CHANNEL_NAMES, channels)
        ids = [str(h) for h in hcp_ids]
        n = len(ids)
        rows_n = np.arange(n)
        request_id = uuid.uuid4().hex
        t_start = time.perf_counter()
        ref = self.reference.lookup(ids)
        notes: list[str] = []
        frame, feat_err = (features, None) if features is not None else self.fetch_features(ids)
        t_features = time.perf_counter() - t_start
        t_model = 0.0
        degraded_features = frame is None
        approved = self.reference.approved_content(as_of, self.cfg.content_valid_days)

        if degraded_features:
            notes.append(f"features unavailable ({feat_err}): consent cannot be checked, only {', '.join(cfg.degraded_channels)} suggested")
            consent_ok = np.isin(_CHANNEL_NAMES, cfg.degraded_channels)
            frame = pd.DataFrame({"hcp_id": ids, **{f"consent_{ch}": np.full(n, ok) for ch, ok in zip(CHANNELS, consent_ok)}, "visit_sent_90d": 0})
        num = FeatureMatrix(frame)
        if "lifecycle" in num:
            lifecycle = self.reference.lifecycle_of(ids, num.col("lifecycle", -1).astype(np.int64))
        else:
            lifecycle = np.where(pd.isna(ref["lifecycle"]), "", ref["lifecycle"]).astype(object)
        rules = rule_based_actions(frame, self._topics, thresholds=self.thresholds)
        state = contact_state(num, lifecycle)

        holdout = in_holdout(ids, cfg.exploration.holdout_share, cfg.exploration.salt)
        policy = np.where(holdout, "holdout", "fallback").astype(object)
        score = rules.score.copy()
        expected = rules.expected.copy()
        products = np.where(pd.isna(ref["main_product_id"]), "", ref["main_product_id"]).astype(object)
        content = np.repeat(self.reference.best_content_by_topic(approved, products, rules.topic)[:, None], C, axis=1)
        weekday = np.repeat(rules.weekday[:, None], C, axis=1)
        daypart = np.repeat(rules.daypart[:, None], C, axis=1)
        model_version = self.model_version
        use_model = ~holdout & (self.model is not None) & (not degraded_features)
        if self.model is None and not degraded_features:
            notes.append(f"model unavailable: {self.model_error}")
        if use_model.any():
            try:
                from serving.scoring import score_channels

                t0 = time.perf_counter()
                rows = np.flatnonzero(use_model)
                sub = frame if len(rows) == n else frame.iloc[rows].reset_index(drop=True)
                scores = score_channels(self.model.bundle, sub, approved)
                score[rows], expected[rows] = np.where(scores.allowed, scores.prob, -np.inf), scores.expected
                content[rows], weekday[rows], daypart[rows] = scores.content_id, scores.weekday, scores.daypart
                policy[rows] = "model"
                t_model = time.perf_counter() - t0
            except Exception as exc:  # a failing model degrades to the rules, never a 500
                log.exception("model scoring failed")
                notes.append(f"model scoring failed ({type(exc).__name__}: {exc}): rule-based suggestions")
                use_model[:] = False

        content_ok = ~CONTENT_CHANNELS[None, :] | pd.notna(content)
        g = apply_guardrails(state, np.arange(C), content_ok, self.policy)
        with np.errstate(invalid="ignore"):  # -inf x 0 where a rule already blocked
            final = np.where(g.allowed & request_allowed[None, :], score * g.weight, -np.inf)
        raw = np.where(request_allowed[None, :], score, -np.inf)
        top_raw = raw.argmax(1)

        eps = np.where(use_model & explore, cfg.exploration.epsilon, 0.0)
        day = as_of.date().isoformat()
        u = unit_hash([f"{h}|{day}" for h in ids], f"explore|{cfg.exploration.salt}")
        slate, prop, valid = choose_slate(final, k, eps, cfg.exploration.top_m, u)
        greedy = final.argmax(1)
        explored = use_model & (slate[:, 0] != greedy)

        # Flatten to one row per served suggestion.
        row_idx, pos = np.nonzero(valid)
        ch = slate[row_idx, pos]
        pol = policy[row_idx].copy()
        pol[(pos == 0) & explored[row_idx]] = "explore"
        overridden = ~g.allowed[rows_n, top_raw]
        override_text = np.full(n, "", dtype=object)
        if overridden.any():
            for rule in RULES:  # five rules, each vectorised over HCPs
                hit = overridden & g.blocked_by[rule][rows_n, top_raw]
                for i in np.flatnonzero(hit):  # only HCPs whose top choice a rule overrode
                    c = int(top_raw[i])
                    row = {"sent_7d": state.sent_7d[i, c], "unanswered_streak": state.unanswered_streak[i, c], "lifecycle": lifecycle[i]}
                    override_text[i] = f"rule override: the {'model' if use_model[i] else 'rules'}' first choice {CHANNELS[c]} — " + explain_block(rule, CHANNELS[c], row, self.policy)
        # Rules applied to a suggestion: any rule that removed a channel scored above it.
        rules_applied: list[list[str]] = [[] for _ in range(len(ch))]
        above_served = raw[row_idx] > raw[row_idx, ch][:, None]
        for rule in RULES:
            above = g.blocked_by[rule][row_idx] & request_allowed[None, :] & above_served
            for j in np.flatnonzero(above.any(1)):
                rules_applied[j].append(rule)
        tz = ref["timezone"][row_idx]
        start_ns, end_ns, start_iso, end_iso = window_table(as_of, tz, weekday[row_idx, ch], daypart[row_idx, ch])

        long_w = "90d" if "visit_sent_90d" in frame.columns else "30d"
        is_model = np.isin(pol, ["model", "explore"])
        main = np.where(is_model, model_reason(ch, expected[row_idx, ch]), np.where(pos == 0, rules.reason[row_idx], ""))
        if degraded_features:
            hist = np.full(len(ch), "", dtype=object)
            notes_col = np.full(len(ch), "degraded mode: feature store unavailable, rule-based suggestion; check consent in the CRM before contacting", dtype=object)
        else:
            sent = num.block("{}_sent_" + long_w).astype(np.int64)
            opened = num.block("{}_opened_" + long_w).astype(np.int64)
            hist = history_reason(ch, sent[row_idx, ch], opened[row_idx, ch], long_w)
            notes_col = policy_note(pol)
        degraded = degraded_features | (pol == "fallback")
        reasons = combine(main, hist, np.where(pos == 0, rules.history_reason[row_idx], ""), np.where(pos == 0, override_text[row_idx], ""), notes_col)
        served_content = content[row_idx, ch]

        columns = {
            "suggestion_id": new_ids(len(ch)),
            "hcp_id": np.asarray(ids, dtype=object)[row_idx],
            "rep_id": np.full(len(ch), rep_id, dtype=object) if rep_id is not None else ref["rep_id"][row_idx],
            "rank": pos + 1,
            "channel": _CHANNEL_NAMES[ch],
            "content_id": np.where(~CONTENTLESS_MASK[ch] & (CONTENT_CHANNELS[ch] | pd.notna(served_content)), served_content, None),
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
            "reasons": reasons,
        }
        result = Suggestions(columns, request_id, as_of, model_version, degraded_features, notes)
        result.no_suggestion = np.asarray(ids, dtype=object)[~valid[:, 0]].tolist()
        result.potential = num.col("potential_boxes_month")
        t_audit = time.perf_counter()
        if record and self.audit is not None:
            self.record(result, frame, row_idx)
        t_end = time.perf_counter()
        result.timings_ms = {"features": t_features * 1e3, "model": t_model * 1e3, "audit": (t_end - t_audit) * 1e3, "total": (t_end - t_start) * 1e3}
        return result

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
        feats = [doc if is_first else shared_features(sid[j]) for doc, is_first, j in zip(np.asarray(per_hcp, dtype=object)[row_idx].tolist(), first.tolist(), first_of[row_idx].tolist())]
        memo: dict[tuple, str] = {}  # few distinct (rule, rules applied) pairs per request
        rules = [memo.get(key) or memo.setdefault(key, json.dumps({"fired": key[0], "applied": list(key[1])}))
                 for key in zip(f["rule_fired"].tolist(), map(tuple, f["rules_applied"]))]
        reasons = [json.dumps(rs, ensure_ascii=False) for rs in f["reasons"]]
        return self.audit.record_columns({
            "suggestion_id": sid, "request_id": result.request_id, "hcp_id": f["hcp_id"], "rep_id": f["rep_id"],
            "as_of": result.as_of, "rank": f["rank"], "channel": f["channel"], "content_id": f["content_id"],
            "window_start": f["window_start"], "window_end": f["window_end"], "expected_response": f["expected_response"],
            "propensity": f["propensity"], "policy": f["policy"], "model_version": result.model_version, "degraded": f["degraded"],
            "features_json": feats, "rules_json": rules, "reasons_json": reasons,
        })

    def feedback(self, item: dict[str, Any]) -> dict[str, Any]:
        """Store one outcome durably (idempotent by feedback id), then push it to the online store."""
        stored = self.audit.record_feedback(item)
        pushed, push_error = False, None
        if stored.created and self.features_cfg is not None:
            try:
                pushed = self._push(item)
            except Exception as exc:  # stored already: the nightly build catches up
                log.error("feedback %s stored but not pushed online: %s", item["feedback_id"], exc)
                push_error = f"{type(exc).__name__}: {exc}"
        return {"feedback_id": stored.feedback_id, "created": stored.created, "pushed_online": pushed, "push_error": push_error}

    def _push(self, item: dict[str, Any]) -> bool:
        from serving.feedback import push_feedback

        served = self.audit.suggestion(item["suggestion_id"])
        push_feedback(self.features_cfg, self.store, self.audit, served["hcp_id"])
        return True
