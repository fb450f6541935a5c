"""The recommendation engine behind the API and the nightly batch: features -> policy -> guardrails -> slate.

Per request: read online features (degraded to a consent-safe rule policy when the store does
not answer), score every channel with the champion (or the rule policy for the holdout and when
the model fails), apply the configured guardrails, pick a slate with exploration, attach reasons
and a local time window, and append everything to the audit trail. All steps are column-wise
over HCPs; Python loops only build the JSON/audit rows at the boundary.
"""

from __future__ import annotations

import logging
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
from serving.windows import next_windows

log = logging.getLogger(__name__)

C = len(CHANNELS)
# Channels whose suggestion is meaningless without a piece of content to send or show.
CONTENT_CHANNELS = np.array([ch in ("wechat_push", "wecom_1to1", "email", "webinar") for ch in CHANNELS])
REP_TIME = np.array([ch in REP_TIME_CHANNELS for ch in CHANNELS])
# The feature values each audit row keeps: what the rules and reasons read (the model's full
# input is reproducible from the feature store at the recorded time).
AUDIT_FEATURES = (
    "is_missing", "segment", "lifecycle", "consecutive_unopened_pushes", "days_since_last_touch", "touches_total", "seq_len",
    *[f"consent_{ch}" for ch in CHANNELS], *[f"{ch}_sent_7d" for ch in CHANNELS], *[f"{ch}_opened_90d" for ch in CHANNELS],
    *[f"{ch}_sent_90d" for ch in CHANNELS],
)


class RequestError(ValueError):
    """A request the caller must fix; the message names the field."""


@dataclass
class Suggestions:
    """A scored request: one row per served suggestion (column-wise), plus request facts."""

    frame: pd.DataFrame
    request_id: str
    as_of: datetime
    model_version: str | None
    degraded_features: bool
    notes: list[str] = field(default_factory=list)
    no_suggestion: list[str] = field(default_factory=list)  # HCPs every channel of whom was blocked
    potential: Any = None  # [N] potential boxes per month per requested HCP (0 when unknown)


def _col(frame: pd.DataFrame, name: str, default: float = 0.0) -> np.ndarray:
    if name in frame.columns:
        return frame[name].to_numpy(dtype=np.float64, na_value=default)
    return np.full(len(frame), default)


def _block(frame: pd.DataFrame, pattern: str, default: float = 0.0) -> np.ndarray:
    """[N, C] matrix of ``pattern.format(ch)`` columns in one conversion (per-column access is slow)."""
    names = [pattern.format(ch) for ch in CHANNELS]
    present = [c for c in names if c in frame.columns]
    if not present:
        return np.full((len(frame), C), default)
    out = frame.reindex(columns=names).to_numpy(dtype=np.float64, na_value=np.nan)
    return np.where(np.isnan(out), default, out)


def contact_state(frame: pd.DataFrame, lifecycle: np.ndarray) -> ContactState:
    """The guardrails' view of each HCP from online features (CHANNELS column order)."""
    consent = _block(frame, "consent_{}", 0.0) > 0
    sent_7d = _block(frame, "{}_sent_7d").astype(np.int64)
    sent_30 = _block(frame, "{}_sent_30d")
    opened_30 = _block(frame, "{}_opened_30d")
    # Only pushes carry an exact streak; elsewhere "every touch this month unanswered" stands in.
    streak = np.where(opened_30 > 0, 0, sent_30).astype(np.int64)
    streak[:, CHANNELS.index("wechat_push")] = _col(frame, "consecutive_unopened_pushes").astype(np.int64)
    days = _block(frame, "days_since_last_{}", np.inf)
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
        audit = AuditTrail(cfg.audit_url)
        if audit.engine.dialect.name == "sqlite":
            # WAL: one fsync per commit instead of several; still durable when the call returns.
            with audit.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
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
            request_allowed = np.isin(np.asarray(CHANNELS), channels)
        ids = [str(h) for h in hcp_ids]
        n = len(ids)
        request_id = uuid.uuid4().hex
        ref = self.reference.hcp_rows(ids)
        notes: list[str] = []
        frame, feat_err = (features, None) if features is not None else self.fetch_features(ids)
        degraded_features = frame is None
        approved = self.reference.approved_content(as_of, self.cfg.content_valid_days)

        if degraded_features:
            notes.append(f"features unavailable ({feat_err}): consent cannot be checked, only {', '.join(cfg.degraded_channels)} suggested")
            frame = pd.DataFrame({"hcp_id": ids})
            lifecycle = ref["lifecycle"].fillna("").to_numpy(dtype=object)
            consent_ok = np.tile(np.isin(np.asarray(CHANNELS), cfg.degraded_channels), (n, 1))
            for j, ch in enumerate(CHANNELS):
                frame[f"consent_{ch}"] = consent_ok[:, j]
            frame["visit_sent_90d"] = 0
        else:
            lifecycle = self.reference.lifecycle_of(ids, _col(frame, "lifecycle", -1).astype(np.int64)) if "lifecycle" in frame else ref["lifecycle"].fillna("").to_numpy(dtype=object)
        rules = rule_based_actions(frame, self._topics, thresholds=self.thresholds)
        state = contact_state(frame, lifecycle)

        holdout = in_holdout(ids, cfg.exploration.holdout_share, cfg.exploration.salt)
        policy = np.where(holdout, "holdout", "fallback").astype(object)
        score = rules.score.copy()
        expected = rules.expected.copy()
        content = np.tile(self.reference.best_content_by_topic(approved, ref["main_product_id"].fillna("").to_numpy(dtype=object), rules.topic)[:, None], (1, C))
        weekday = np.tile(rules.weekday[:, None], (1, C))
        daypart = np.tile(rules.daypart[:, None], (1, C))
        model_version = self.model_version
        use_model = ~holdout & (self.model is not None) & (not degraded_features)
        if self.model is None and not degraded_features:
            notes.append(f"model unavailable: {self.model_error}")
        if use_model.any():
            try:
                from serving.scoring import score_channels

                rows = np.flatnonzero(use_model)
                scores = score_channels(self.model.bundle, frame.iloc[rows].reset_index(drop=True), approved)
                score[rows], expected[rows] = scores.prob, scores.prob
                content[rows], weekday[rows], daypart[rows] = scores.content_id, scores.weekday, scores.daypart
                policy[rows] = "model"
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
        u = unit_hash([f"{h}|{as_of.date().isoformat()}" for h in ids], f"explore|{cfg.exploration.salt}")
        slate, prop, valid = choose_slate(final, k, eps, cfg.exploration.top_m, u)
        greedy = np.argsort(-final, axis=1, kind="stable")[:, :1]
        explored = use_model & (slate[:, 0] != greedy[:, 0])

        # Flatten to one row per served suggestion.
        row_idx, pos = np.nonzero(valid)
        ch = slate[row_idx, pos]
        pol = policy[row_idx].copy()
        pol[(pos == 0) & explored[row_idx]] = "explore"
        overridden = ~g.allowed[np.arange(n), top_raw]
        blocked_rule = np.full(n, "", dtype=object)
        override_text = np.full(n, "", dtype=object)
        for rule in RULES:  # five rules, each vectorised over HCPs
            hit = overridden & g.blocked_by[rule][np.arange(n), top_raw]
            blocked_rule[hit] = rule
            for i in np.flatnonzero(hit):  # only HCPs whose top choice a rule overrode
                c = int(top_raw[i])
                row = {"sent_7d": state.sent_7d[i, c], "unanswered_streak": state.unanswered_streak[i, c], "lifecycle": lifecycle[i]}
                override_text[i] = f"rule override: the {'model' if use_model[i] else 'rules'}' first choice {CHANNELS[c]} — " + explain_block(rule, CHANNELS[c], row, self.policy)
        # Rules applied to a suggestion: any rule that removed a channel scored above it.
        rules_applied = [[] for _ in range(len(ch))]
        for rule in RULES:
            blocked = g.blocked_by[rule] & request_allowed[None, :]
            above = blocked[row_idx] & (raw[row_idx] > raw[row_idx, ch][:, None])
            for j in np.flatnonzero(above.any(1)):
                rules_applied[j].append(rule)
        tz = ref["timezone"].to_numpy(dtype=object)[row_idx]
        start_utc, end_utc, start_iso, end_iso = next_windows(as_of, tz, weekday[row_idx, ch], daypart[row_idx, ch])

        long_w = "90d" if "visit_sent_90d" in frame else "30d"
        sent = _block(frame, "{}_sent_" + long_w).astype(np.int64)
        opened = _block(frame, "{}_opened_" + long_w).astype(np.int64)
        is_model = np.isin(pol, ["model", "explore"])
        main = np.where(is_model, model_reason(ch, expected[row_idx, ch]), np.where(pos == 0, rules.reason[row_idx], ""))
        hist = history_reason(ch, sent[row_idx, ch], opened[row_idx, ch], long_w) if not degraded_features else np.full(len(ch), "", dtype=object)
        degraded = degraded_features | (pol == "fallback")
        notes_col = policy_note(pol)
        if degraded_features:
            notes_col = np.full(len(ch), "degraded mode: feature store unavailable, rule-based suggestion; check consent in the CRM before contacting", dtype=object)
        reasons = combine(main, hist, np.where(pos == 0, rules.history_reason[row_idx], ""), np.where(pos == 0, override_text[row_idx], ""), notes_col)

        out = pd.DataFrame({
            "suggestion_id": [uuid.uuid4().hex for _ in range(len(ch))],
            "hcp_id": np.asarray(ids, dtype=object)[row_idx],
            "rep_id": rep_id if rep_id is not None else ref["rep_id"].to_numpy(dtype=object)[row_idx],
            "rank": pos + 1,
            "channel": np.asarray(CHANNELS, dtype=object)[ch],
            "content_id": np.where(CONTENT_CHANNELS[ch] | pd.notna(content[row_idx, ch]), content[row_idx, ch], None),
            "window_start": start_utc.array,
            "window_end": end_utc.array,
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
        })
        result = Suggestions(out, request_id, as_of, model_version, degraded_features, notes)
        result.no_suggestion = np.asarray(ids, dtype=object)[~valid[:, 0]].tolist()
        result.potential = _col(frame, "potential_boxes_month")
        if record and self.audit is not None:
            self.record(result, frame, row_idx)
        return result

    def record(self, result: Suggestions, frame: pd.DataFrame, row_idx: np.ndarray) -> int:
        """Append the served suggestions to the audit trail with the feature values they saw."""
        import json

        cols = [c for c in AUDIT_FEATURES if c in frame.columns]
        # One JSON document per HCP, serialised column-wise by pandas, shared by its k rows.
        per_hcp = frame[cols].to_json(orient="records", lines=True).splitlines() if cols and len(frame) else ["{}"] * len(frame)
        feats = np.asarray(per_hcp, dtype=object)[row_idx]
        f = result.frame
        rules = [json.dumps({"fired": rf, "applied": ra}) for rf, ra in zip(f["rule_fired"], f["rules_applied"])]
        reasons = [json.dumps(rs, ensure_ascii=False) for rs in f["reasons"]]
        starts = f["window_start"].astype(object).tolist()  # Timestamps are datetimes to SQLAlchemy
        ends = f["window_end"].astype(object).tolist()
        rows = [
            {
                "suggestion_id": sid, "request_id": result.request_id, "hcp_id": hcp, "rep_id": rep, "as_of": result.as_of,
                "rank": int(rank), "channel": chn, "content_id": cid, "window_start": ws, "window_end": we,
                "expected_response": float(er), "propensity": float(p), "policy": pol, "model_version": result.model_version,
                "degraded": bool(dg), "features_json": feat, "rules_json": rj, "reasons_json": rsj,
            }
            for sid, hcp, rep, rank, chn, cid, ws, we, er, p, pol, dg, feat, rj, rsj in zip(
                f["suggestion_id"], f["hcp_id"], f["rep_id"], f["rank"], f["channel"], f["content_id"], starts, ends,
                f["expected_response"], f["propensity"], f["policy"], f["degraded"], feats, rules, reasons,
            )
        ]
        return self.audit.record_suggestions(rows)

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
        from features import push_events

        served = self.audit.suggestion(item["suggestion_id"])
        ts = pd.Timestamp(item["ts"]).tz_convert("UTC") if pd.Timestamp(item["ts"]).tzinfo else pd.Timestamp(item["ts"]).tz_localize("UTC")
        outcome = item["outcome"]
        if outcome in ("accepted", "dismissed", "done", "snoozed"):
            events = pd.DataFrame({
                "feedback_id": [item["feedback_id"]], "suggestion_id": [item["suggestion_id"]], "hcp_id": [served["hcp_id"]],
                "rep_id": [served["rep_id"]], "ts": [ts], "decision": [outcome], "reason": [item.get("reason")],
            })
        else:  # the channel's own outcome: the HCP opened or attended what was sent
            channel = served["channel"]
            attended = outcome == "attended"
            events = pd.DataFrame({
                "event_id": [item["feedback_id"]], "hcp_id": [served["hcp_id"]], "rep_id": [served["rep_id"]], "ts": [ts],
                "channel": [channel], "content_id": [served["content_id"]], "direction": ["outbound"], "delivered": [True],
                "opened": [True], "read_seconds": [0.0], "forwarded": [False], "favourited": [False], "replied": [False],
                "attended": [attended if channel in ("department_meeting", "webinar", "conference") else None],
                "propensity": [served["propensity"]], "suggestion_id": [item["suggestion_id"]],
            })
        push_events(self.features_cfg, events, store=self.store)
        return True
