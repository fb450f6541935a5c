"""`nba replay`: what a changed serving config would have done on the last weeks of the imported logs.

Before go-live a brand team changes caps, cool-downs, window rules, lifecycle weights or the
channels it uses. This replays the config as loaded (BASELINE) and the changed one (CHANGED) over
the same logged decisions with the registered model, and reports for each, and CHANGED minus
BASELINE:

- the schedule the weekly batch would have written: each week's decision through the engine's
  own feasible-first path (``Recommender.recommend``, the nightly batch's call) over that week's
  point-in-time feature rows; suggestions per rep per day (the contract's owning rep, calendar
  days of the window, by each suggestion's local day) and the channel mix;
- suggestions that break the config's rules, checked again per served action with
  ``serving.guardrails`` (the engine is feasible first: anything above 0 is a bug);
- the logged touches the config's rules would have blocked, per rule: what the change forbids;
- the off-policy estimate of the served policy's value on the logged decisions
  (``training.served_ope``), with the config's rules evaluated on each decision's features as
  masks, and the paired CHANGED minus BASELINE difference with its HCP-clustered interval.

The state the rules see is the decision week's point-in-time features, as the weekly batch sees
them. For a logged touch, the HCP's earlier logged touches of the same week are added to its
7-day counts and its channel windows (a second visit on Thursday counts Tuesday's); item and topic
rules and cool-downs see the week's start only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import CHANNELS, DAYPART_HOURS, DAYPARTS
from serving.config import ServingConfig
from serving.guardrails import RULES, ContactState, GuardrailPolicy, apply_guardrails, window_state

C = len(CHANNELS)
# What a replay can count against a suggestion or a logged touch: the strategy's channels first,
# then serving's rules in the order the guardrails check them, then the slot (suggestions only).
CHANNEL_RULE = "channels"
SLOT_RULE = "working_hours"
LOGGED_RULES: tuple[str, ...] = (CHANNEL_RULE, *RULES)
SUGGESTION_RULES: tuple[str, ...] = (*LOGGED_RULES, SLOT_RULE)
DAY_NS = 86_400 * 10**9


class ReplayError(ValueError):
    """An expected condition that stops a replay (no data, too few weeks): one line for the user."""


@dataclass
class Logs:
    """The logged decisions: every row encoded, and the replayed window's rows with their raw features."""

    frame: pd.DataFrame  # the window's decision rows (features + labels), sorted by week, HCP, touch time
    data: Any  # training.dataset.EncodedData of ``frame``'s rows, same order
    prep: Any  # training.jobs.Prepared: the weeks before the window as ``train`` (the logging policy's support)
    weeks: list[pd.Timestamp]  # Mondays (UTC) of the replayed weeks
    weeks_available: int  # distinct weeks in the logs
    fingerprint: str
    source: str


@dataclass
class Outcome:
    """One config's replay: flat figures plus what the tests and the comparison need."""

    figures: dict[str, Any]
    suggestions: pd.DataFrame
    per_rep: pd.Series  # suggestions per owning rep over the window
    rows: dict[str, np.ndarray] = field(default_factory=dict)  # served-policy rows for OPE


def _say(progress: Callable[[str], None] | None, text: str) -> None:
    if progress is not None:
        progress(text)


def stderr_progress(text: str) -> None:
    """Progress label on stderr (the JSON line owns stdout's end)."""
    print(text, file=sys.stderr, flush=True)


# --- inputs ---------------------------------------------------------------------------------------


def load_model(cfg: ServingConfig, version: str | None = None) -> Any:
    """The registered champion (``cfg.model_alias``), or version ``version`` of ``cfg.model_name``: a ``serving.scoring.LoadedModel``."""
    import os

    from serving.scoring import LoadedModel, ModelUnavailable, load_champion

    if version is None:
        return load_champion(cfg.tracking_uri, cfg.model_name, cfg.model_alias)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from training.artifacts import load_bundle
    from training.tracking import bundle_path

    if cfg.tracking_uri.startswith("sqlite:///") and not os.path.exists(cfg.tracking_uri[len("sqlite:///") :]):
        raise ModelUnavailable(f"no MLflow store at {cfg.tracking_uri}: train a model first (nba train)")
    mlflow.set_tracking_uri(cfg.tracking_uri)
    try:
        MlflowClient().get_model_version(cfg.model_name, str(version))
    except MlflowException:
        raise ModelUnavailable(f"--version {version}: registered model {cfg.model_name!r} has no such version at {cfg.tracking_uri}") from None
    try:
        bundle = load_bundle(bundle_path(cfg.model_name, str(version)))
    except Exception as exc:
        raise ModelUnavailable(f"{cfg.model_name} version {version} failed to load: {exc}") from exc
    return LoadedModel(bundle, cfg.model_name, str(version), f"version {version}")


def resolve_data_dir(cfg: ServingConfig, data_dir: str | Path | None = None) -> Path:
    """The contract dataset: ``data_dir``, else the serving config's, else the features config's."""
    if data_dir is not None:
        return Path(data_dir)
    if cfg.data_dir:
        return Path(cfg.data_dir)
    from features import load_features_config

    return Path(load_features_config(cfg.features_config).data_dir)


def load_logs(
    cfg: ServingConfig,
    bundle: Any,
    reference: Any,
    *,
    weeks: int,
    data_dir: str | Path,
    training_set: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Logs:
    """Point-in-time decision rows of the logs (``training.data.load_training_set``), encoded with the bundle's vocabulary and scaler.

    The last ``weeks`` distinct weeks are replayed; the weeks before them stay as the logging
    policy's support (and, where propensities are missing, its estimate), as ``training.jobs.prepare_data``
    splits them; at least one week is kept before the window.
    """
    from training.data import load_training_set
    from training.dataset import encode_frame
    from training.jobs import Prepared

    data_dir = Path(data_dir)
    if training_set is None and not data_dir.exists():
        raise ReplayError(f"--data-dir {data_dir}: no such contract dataset (run nba import first)")
    _say(progress, f"replay: point-in-time features of the logged decisions ({training_set or data_dir})")
    ts = load_training_set(str(training_set) if training_set else None, str(data_dir), cfg.features_config)
    frame = ts.frame
    if not len(frame):
        raise ReplayError(f"{ts.source}: no logged decisions (outbound touchpoints) to replay")
    stamp = pd.to_datetime(frame["event_timestamp"], utc=True)
    distinct = np.sort(stamp.unique())
    if len(distinct) < 2:
        raise ReplayError(f"{ts.source}: the logs span {len(distinct)} week; a replay needs one week before the replayed ones")
    n = min(int(weeks), len(distinct) - 1)
    window = distinct[-n:]
    start = window[0]
    sort = frame.assign(_w=stamp, _t=pd.to_datetime(frame["label_ts"], utc=True) if "label_ts" in frame else stamp)
    sort = sort.sort_values(["_w", "hcp_id", "_t"], kind="stable").reset_index(drop=True)
    before = (sort["_w"] < start).to_numpy()
    frame = sort.drop(columns=["_w", "_t"])
    _say(progress, f"replay: encoding {len(frame)} decision rows ({int((~before).sum())} in the {n} replayed weeks)")
    data = encode_frame(frame, bundle.vocab, bundle.scaler, bundle.model.config.max_seq_len)
    item_products = reference.content_products(bundle.vocab)
    hcp_products = reference.hcps["main_product_id"].astype(str) if "main_product_id" in reference.hcps else None
    if hcp_products is not None:
        hcp_products.index = hcp_products.index.astype(str)
    empty = data.subset(np.zeros(len(frame), dtype=bool))
    prep = Prepared(data.subset(before), empty, bundle.vocab, bundle.scaler, ts.fingerprint, ts.source, None, item_products, hcp_products, empty)
    return Logs(frame[~before].reset_index(drop=True), data.subset(~before), prep, [pd.Timestamp(w) for w in window], len(distinct), ts.fingerprint, ts.source)


# --- the rules' view of each decision --------------------------------------------------------------


def earlier_in_week(hcp_id: np.ndarray, week: np.ndarray, touch_ns: np.ndarray, channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per logged touch: the HCP's earlier logged touches of the same week per channel [N, C], and days since the latest of them [N, C] (inf: none)."""
    n = len(hcp_id)
    counts = np.zeros((n, C), dtype=np.int64)
    gap = np.full((n, C), np.inf)
    if not n:
        return counts, gap
    key = pd.factorize(pd.Series(hcp_id, dtype=object).astype(str) + "|" + pd.Series(week).astype(str))[0]
    order = np.lexsort((np.arange(n), touch_ns, key))
    k, t, ch = key[order], touch_ns[order], np.asarray(channel, dtype=np.int64)[order]
    idx = np.arange(n)
    start = np.r_[0, np.flatnonzero(np.diff(k)) + 1]
    group_start = np.repeat(start, np.diff(np.r_[start, n]))
    for c in range(C):
        is_c = (ch == c).astype(np.int64)
        before = np.cumsum(is_c) - is_c  # touches on c before each position, over everything sorted
        counts[order, c] = before - before[group_start]
        last = np.maximum.accumulate(np.where(is_c == 1, idx, -1))
        prev = np.r_[-1, last[:-1]]
        ok = prev >= group_start
        gap[order[ok], c] = (t[ok] - t[prev[ok]]) / DAY_NS
    return counts, gap


def decision_state(
    frame: pd.DataFrame, policy: GuardrailPolicy, reference: Any, approved: list[str], *, earlier: tuple[np.ndarray, np.ndarray] | None = None
) -> ContactState:
    """The guardrails' view of each row (``serving.engine.contact_state``), with ``earlier`` (counts, days since) touches of the week added."""
    from features.contact_history import recent_contacts
    from serving.engine import FeatureMatrix, contact_state, window_inputs

    ids = frame["hcp_id"].astype(str).tolist()
    num = FeatureMatrix(frame)
    if "lifecycle" in num:
        lifecycle = reference.lifecycle_of(ids, num.col("lifecycle", -1).astype(np.int64))
    else:
        lifecycle = reference.lifecycle_of(ids)
    state = contact_state(num, lifecycle)
    if not policy.window_rules and earlier is None:
        return state
    counts, since = window_inputs(frame, policy)
    sent = state.sent_7d
    if earlier is not None:
        n_before, gap = earlier
        sent = sent + n_before
        counts = {**{float(w): v + n_before for w, v in counts.items()}, 0.0: n_before.astype(np.float64)}
        since = np.fmin(since, gap)
    window = None
    if policy.window_rules:
        window = window_state(
            recent_contacts(frame), policy, channel_counts=counts, days_since=since, content_topics=reference.content_topics(), candidates=approved
        )
    return replace(state, sent_7d=sent, window=window)


def first_rule(blocked: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """[M] the first rule in ``names`` whose mask is True per entry ("" when none)."""
    n = len(next(iter(blocked.values()))) if blocked else 0
    out = np.full(n, "", dtype=object)
    for name in reversed(names):
        hit = blocked.get(name)
        if hit is not None:
            out[np.asarray(hit, dtype=bool)] = name
    return out


def logged_action_rules(
    state: ContactState, channel: np.ndarray, content: np.ndarray, approved: set[str], policy: GuardrailPolicy, channels_ok: np.ndarray
) -> np.ndarray:
    """[N] the first rule that would have blocked each logged (channel, content) ("" when allowed).

    A logged touch without content passes the content rule (the CRM records calls and visits so);
    one with content needs it approved for the week, as a suggestion does.
    """
    n = len(channel)
    rows = np.arange(n)
    ch = np.asarray(channel, dtype=np.int64)
    ids = np.asarray(content, dtype=object)
    has = pd.notna(ids) & (ids != "")
    action = np.full((n, C), None, dtype=object)
    action[rows[has], ch[has]] = ids[has]
    ok = np.ones((n, C), dtype=bool)
    ok[rows, ch] = ~has | np.isin(ids, list(approved))
    g = apply_guardrails(state, np.arange(C), ok, policy, action_content=action)
    blocked = {CHANNEL_RULE: ~np.asarray(channels_ok, dtype=bool)[ch], **{r: g.blocked_by[r][rows, ch] for r in RULES}}
    return first_rule(blocked, LOGGED_RULES)


def suggestion_rules(
    state: ContactState, suggestions: pd.DataFrame, row_of: np.ndarray, approved: set[str], policy: GuardrailPolicy, channels_ok: np.ndarray
) -> np.ndarray:
    """[S] the first rule each served suggestion breaks ("" when none), checked per action with ``serving.guardrails``, independent of the engine's masks.

    Content channels need an approved item; any item named must be approved; in-person channels
    must fall in working hours (local weekday and daypart of the suggested window).
    """
    from features.rules import working_hours_mask
    from serving.engine import CONTENT_CHANNELS

    s = len(suggestions)
    if not s:
        return np.zeros(0, dtype=object)
    n = state.consent.shape[0]
    ch = pd.Index(CHANNELS).get_indexer(suggestions["channel"].astype(str))
    ids = suggestions["content_id"].to_numpy(dtype=object)
    has = pd.notna(ids)
    action = np.full((n, C), None, dtype=object)
    action[row_of[has], ch[has]] = ids[has]
    ok = np.ones((n, C), dtype=bool)
    ok[row_of, ch] = np.where(has, np.isin(ids, list(approved)), ~CONTENT_CHANNELS[ch])
    g = apply_guardrails(state, np.arange(C), ok, policy, action_content=action)
    local = [datetime.fromisoformat(str(x)) for x in suggestions["window_start_local"].tolist()]
    weekday = np.array([t.weekday() for t in local], dtype=np.int64)
    hour = np.array([t.hour for t in local], dtype=np.int64)
    starts = np.array([DAYPART_HOURS[d][0] for d in DAYPARTS])
    ends = np.array([DAYPART_HOURS[d][1] for d in DAYPARTS])
    inside = (hour[:, None] >= starts[None, :]) & (hour[:, None] < ends[None, :])
    daypart = np.where(inside.any(1), inside.argmax(1), -1)
    hours_ok = np.where(daypart >= 0, working_hours_mask()[ch, weekday, np.maximum(daypart, 0)], False)
    blocked = {CHANNEL_RULE: ~np.asarray(channels_ok, dtype=bool)[ch], **{r: g.blocked_by[r][row_of, ch] for r in RULES}, SLOT_RULE: ~hours_ok}
    return first_rule(blocked, SUGGESTION_RULES)


def ope_masks(state: ContactState, week_approved: np.ndarray, policy: GuardrailPolicy, channels_ok: np.ndarray, vocab: Any) -> tuple[np.ndarray, np.ndarray]:
    """(channel_allowed [N, C], item_allowed [N, V]) of the config's rules per decision row, for the served policy.

    Channels: every rule that does not depend on the item (consent, caps, cool-downs, channel
    windows, lifecycle blocks) and the strategy's channels; items: approved for the decision week
    (``week_approved`` [N, V]) and not blocked by an item or topic window rule.
    """
    pre = apply_guardrails(state, np.arange(C), np.ones(C, dtype=bool), policy)
    channel_allowed = pre.allowed & np.asarray(channels_ok, dtype=bool)[None, :]
    item_allowed = np.array(week_approved, dtype=bool, copy=True)
    w = state.window
    if w is not None and len(w.item_row):
        code = vocab.encode(np.asarray(w.item_id, dtype=object)).astype(np.int64)
        known = code > 1  # NONE and unknown items: nothing to block in the model's vocabulary
        item_allowed[w.item_row[known], code[known]] = False
    return channel_allowed, item_allowed


# --- per config ----------------------------------------------------------------------------------


def rep_day_load(suggestions: pd.DataFrame, reps: list[str], days: list[date]) -> tuple[np.ndarray, pd.Series]:
    """([reps, days] suggestions per rep and local day of the suggested window, each rep's total)."""
    grid = np.zeros((len(reps), len(days)))
    if len(suggestions) and reps and days:
        r = pd.Index(reps).get_indexer(suggestions["rep_id"].astype(object).where(suggestions["rep_id"].notna(), "").astype(str))
        d = pd.Index(days).get_indexer([date.fromisoformat(str(x)[:10]) for x in suggestions["window_start_local"].tolist()])
        ok = (r >= 0) & (d >= 0)
        np.add.at(grid, (r[ok], d[ok]), 1.0)
    return grid, pd.Series(grid.sum(1), index=pd.Index(reps, name="rep_id"))


def channel_mix(suggestions: pd.DataFrame) -> dict[str, float]:
    """Share of suggestions per channel (CHANNELS order; 0 where none)."""
    counts = suggestions["channel"].value_counts() if len(suggestions) else pd.Series(dtype=np.int64)
    total = max(int(counts.sum()), 1)
    return {ch: float(counts.get(ch, 0)) / total for ch in CHANNELS}


def _channels_ok(channels: list[str] | None) -> np.ndarray:
    return np.ones(C, dtype=bool) if not channels else np.isin(np.asarray(CHANNELS, dtype=object), channels)


def replay_config(
    cfg: ServingConfig,
    model: Any,
    reference: Any,
    logs: Logs,
    *,
    channels: list[str] | None = None,
    label: str = "",
    ctx: Any = None,
    progress: Callable[[str], None] | None = None,
) -> Outcome:
    """Replay one serving config over the logged window: schedule, rule checks, blocked logged touches, served-policy rows."""
    from serving.engine import Recommender, feasibility_summary

    policy = cfg.guardrails.policy()
    rec = Recommender(cfg, model=model, reference=reference)
    ok_channels = _channels_ok(channels)
    frame = logs.frame
    stamp = pd.to_datetime(frame["event_timestamp"], utc=True)
    touch_ns = pd.to_datetime(frame["label_ts"], utc=True).astype("int64").to_numpy() if "label_ts" in frame else stamp.astype("int64").to_numpy()
    logged_ch = frame["label_channel"].to_numpy(dtype=np.int64)
    logged_ct = frame["label_content_id"].to_numpy(dtype=object)
    earlier = earlier_in_week(frame["hcp_id"].to_numpy(dtype=object), stamp.astype("int64").to_numpy(), touch_ns, logged_ch)
    n, v = len(frame), len(model.bundle.vocab)
    logged_rule = np.full(n, "", dtype=object)
    channel_allowed = np.zeros((n, C), dtype=bool)
    item_allowed = np.zeros((n, v), dtype=bool)
    parts, feas, violations, decisions = [], [], [], 0
    for i, week in enumerate(logs.weeks):
        _say(progress, f"replay {label}: week {i + 1}/{len(logs.weeks)} ({week.date()})")
        rows = np.flatnonzero((stamp == week).to_numpy())
        if not len(rows):
            continue
        as_of = week.to_pydatetime()
        approved = reference.approved_content(as_of, cfg.content_valid_days)
        approved_set = set(approved)
        week_rows = frame.iloc[rows].reset_index(drop=True)
        # The weekly batch: one decision per HCP on the week's point-in-time features.
        first = ~week_rows["hcp_id"].duplicated().to_numpy()
        feats = week_rows[first].reset_index(drop=True)
        ids = feats["hcp_id"].astype(str).tolist()
        decisions += len(ids)
        res = rec.recommend(ids, as_of=as_of, record=False, explore=True, features=feats, channels=channels or None)
        feas.append(res.feasibility)
        s = res.frame.assign(week=week.date().isoformat())
        state = decision_state(feats, policy, reference, approved)
        row_of = pd.Index(ids).get_indexer(s["hcp_id"].astype(str))
        violations.append(suggestion_rules(state, s, row_of, approved_set, policy, ok_channels))
        parts.append(s)
        # Each logged touch: the rules on the week's state plus the HCP's earlier touches that week.
        wstate = decision_state(week_rows, policy, reference, approved, earlier=(earlier[0][rows], earlier[1][rows]))
        logged_rule[rows] = logged_action_rules(wstate, logged_ch[rows], logged_ct[rows], approved_set, policy, ok_channels)
        week_items = np.broadcast_to(model.bundle.vocab.mask(approved), (len(rows), v))
        channel_allowed[rows], item_allowed[rows] = ope_masks(wstate, week_items, policy, ok_channels, model.bundle.vocab)
    suggestions = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["hcp_id", "rep_id", "channel", "content_id", "window_start_local"])
    broke = np.concatenate(violations) if violations else np.zeros(0, dtype=object)

    owners = reference.lookup(sorted(frame["hcp_id"].astype(str).unique()))["rep_id"]
    reps = sorted({str(r) for r in owners if r is not None and not pd.isna(r)})
    first_day = logs.weeks[0].date()
    days = [first_day + timedelta(days=d) for d in range(7 * len(logs.weeks))]
    grid, per_rep = rep_day_load(suggestions, reps, days)
    flat = grid.ravel()
    fig: dict[str, Any] = {
        "suggestions_count": len(suggestions),
        "suggestions_per_rep_day_mean": float(flat.mean()) if flat.size else 0.0,
        "suggestions_per_rep_day_p90": float(np.quantile(flat, 0.9)) if flat.size else 0.0,
        "suggestions_per_hcp_week_mean": len(suggestions) / max(decisions, 1),
        "suggestions_without_rep_count": int(suggestions["rep_id"].isna().sum()) if len(suggestions) else 0,
        "suggestion_violations_count": int((broke != "").sum()),
    }
    fig.update({f"channel_share_{ch}": share for ch, share in channel_mix(suggestions).items()})
    fig.update({f"suggestion_violations_{r}_count": int((broke == r).sum()) for r in SUGGESTION_RULES})
    fig["engine_first_choice_overridden_count"] = int(feasibility_summary(feas)["first_choice_overridden"])
    blocked = logged_rule != ""
    fig["logged_touches_blocked_count"] = int(blocked.sum())
    fig["logged_touches_blocked_share"] = float(blocked.mean()) if n else 0.0
    for r in LOGGED_RULES:
        hit = logged_rule == r
        fig[f"logged_touches_blocked_{r}_count"] = int(hit.sum())
        fig[f"logged_touches_blocked_{r}_share"] = float(hit.mean()) if n else 0.0
    out = Outcome(fig, suggestions, per_rep)
    if ctx is not None:
        _say(progress, f"replay {label}: the served policy on {n} logged decisions")
        out.rows = served_rows(cfg, model.bundle, logs, ctx, channel_allowed, item_allowed)
    return out


# --- off-policy estimates ------------------------------------------------------------------------


def ope_settings(cfg: ServingConfig, *, n_boot: int, propensity: str) -> Any:
    """The evaluation's OPE settings (training.config.OpeSection) with this serving config's exploration."""
    from training.config import OpeSection

    return OpeSection(n_boot=n_boot, propensity=propensity, epsilon=cfg.exploration.epsilon, top_m=cfg.exploration.top_m)


def served_rows(
    cfg: ServingConfig, bundle: Any, logs: Logs, ctx: Any, channel_allowed: np.ndarray, item_allowed: np.ndarray, batch_size: int = 512
) -> dict[str, np.ndarray]:
    """The served policy's rows under ``cfg`` (training.served_ope.served_rows): serving's masks narrowed by the config's rules."""
    from training import served_ope

    masks = served_ope.served_masks(bundle, logs.data, logs.prep.item_products, logs.prep.hcp_products)
    return served_ope.served_rows(
        bundle,
        logs.data,
        ctx,
        epsilon=cfg.exploration.epsilon,
        top_m=cfg.exploration.top_m,
        batch_size=batch_size,
        masks=masks,
        channel_allowed=channel_allowed,
        item_allowed=item_allowed,
    )


def ope_figures(rows: dict[str, np.ndarray], ope_cfg: Any, seed: int) -> dict[str, Any]:
    """Every estimator's value and interval, diagnostics and the verdict, on the rows with a propensity."""
    from training import served_ope
    from training.propensity import ESTIMATED, LOGGED

    if not rows:
        return {}
    _, fig = served_ope.estimates(rows, ope_cfg, seed)
    src = rows.get("propensity_source")
    if src is not None:
        fig["ope_rows_logged_propensity_count"] = int((src == LOGGED).sum())
        fig["ope_rows_estimated_propensity_count"] = int((src == ESTIMATED).sum())
    names = {"ope_rows": "ope_rows_count", "ope_rows_dropped_no_propensity": "ope_rows_without_propensity_count"}
    return {names.get(k, k): v for k, v in fig.items()}


def ope_deltas(changed: dict[str, np.ndarray], baseline: dict[str, np.ndarray], ope_cfg: Any, seed: int) -> dict[str, Any]:
    """CHANGED minus BASELINE per estimator on the same logged rows, each with its paired HCP-clustered interval."""
    from training import served_ope
    from training.ope import ESTIMATORS

    if not changed or not baseline or not served_ope.usable(changed).any():
        return {}
    out: dict[str, Any] = {}
    for name in ESTIMATORS:
        d = served_ope.versus(changed, baseline, ope_cfg.model_copy(update={"estimator": name}), seed)
        out.update({f"delta_ope_{name}_value": d.value, f"delta_ope_{name}_ci_low": d.ci_low, f"delta_ope_{name}_ci_high": d.ci_high})
    return out


# --- the comparison ------------------------------------------------------------------------------


def compare(baseline: dict[str, Any], changed: dict[str, Any]) -> dict[str, Any]:
    """Figures prefixed ``baseline_`` and ``changed_``, and ``delta_`` = CHANGED minus BASELINE for every number both have."""
    out: dict[str, Any] = {}
    for key in sorted(set(baseline) | set(changed)):
        b, c = baseline.get(key), changed.get(key)
        out[f"baseline_{key}"], out[f"changed_{key}"] = b, c
        numeric = all(isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_)) for x in (b, c))
        if numeric and not key.endswith(("_ci_low", "_ci_high")):
            out[f"delta_{key}"] = float(c) - float(b) if isinstance(b, (float, np.floating)) or isinstance(c, (float, np.floating)) else int(c) - int(b)
    return out


def config_changes(baseline: ServingConfig, changed: ServingConfig, channels: list[str] | None) -> list[str]:
    """The keys whose values differ (dotted), and the strategy's channels when narrowed."""
    from training.tracking import flatten

    a, b = flatten(baseline.model_dump(mode="json")), flatten(changed.model_dump(mode="json"))
    out = [f"{k}={b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if channels:
        out.append(f"channels={','.join(channels)}")
    return out


def run_replay(
    baseline: ServingConfig,
    changed: ServingConfig,
    *,
    weeks: int = 13,
    data_dir: str | Path | None = None,
    version: str | None = None,
    training_set: str | Path | None = None,
    channels: list[str] | None = None,
    n_boot: int = 1000,
    propensity: str = "auto",
    seed: int = 0,
    progress: Callable[[str], None] | None = stderr_progress,
    ope: bool = True,
) -> tuple[dict[str, Any], dict[str, Outcome]]:
    """Load the model(s), reference tables and logs, then replay BASELINE and CHANGED over the last ``weeks``; (flat figures, each config's Outcome)."""
    from serving.reference import ReferenceData

    check_channels(channels)
    import torch

    torch.set_num_threads(baseline.torch_threads)
    _say(progress, "replay: loading the model")
    models: dict[tuple[str, str, str], Any] = {}

    def model_for(cfg: ServingConfig) -> Any:
        key = (cfg.tracking_uri, cfg.model_name, cfg.model_alias if version is None else str(version))
        if key not in models:
            models[key] = load_model(cfg, version)
        return models[key]

    base_model, new_model = model_for(baseline), model_for(changed)
    if new_model is not base_model and not _same_encoding(base_model.bundle, new_model.bundle):
        raise ReplayError("the changed config names a model with another vocabulary or scaler than the baseline's: replay them one at a time")
    data_dir = resolve_data_dir(baseline, data_dir)
    try:
        reference = ReferenceData.load(data_dir)
    except FileNotFoundError as exc:
        raise ReplayError(str(exc)) from None
    logs = load_logs(baseline, base_model.bundle, reference, weeks=weeks, data_dir=data_dir, training_set=training_set, progress=progress)
    figures, outcomes = replay_pair(
        baseline,
        changed,
        base_model,
        new_model,
        reference,
        logs,
        channels=channels,
        n_boot=n_boot,
        propensity=propensity,
        seed=seed,
        progress=progress,
        ope=ope,
    )
    if weeks > len(logs.weeks):
        figures["note"] = (
            f"the logs span {logs.weeks_available} weeks: replayed the last {len(logs.weeks)}, one week kept before them for the logging policy's support"
        )
    return figures, outcomes


def check_channels(channels: list[str] | None) -> None:
    """Fail naming ``--channels`` when it lists a channel the contract does not know."""
    unknown = [c for c in channels or [] if c not in CHANNELS]
    if unknown:
        raise ReplayError(f"--channels: unknown channel(s) {', '.join(unknown)}; known: {', '.join(CHANNELS)}")


def missing_rule_columns(frame: pd.DataFrame) -> list[str]:
    """Feature columns serving's rules read that the logged rows lack (each defaults quietly in the engine: say so)."""
    want = [
        *(f"consent_{ch}" for ch in CHANNELS),
        *(f"{ch}_sent_7d" for ch in CHANNELS),
        *(f"{ch}_sent_30d" for ch in CHANNELS),
        *(f"{ch}_opened_30d" for ch in CHANNELS),
        *(f"days_since_last_{ch}" for ch in CHANNELS),
        "consecutive_unopened_pushes",
        "lifecycle",
        "seq_channel",
        "seq_content_id",
        "seq_gap_days",
        "item_hist_content_id",
        *(f"cr_{ch}_days_since" for ch in CHANNELS),
    ]
    have = set(frame.columns)
    return [c for c in want if c not in have]


def replay_pair(
    baseline: ServingConfig,
    changed: ServingConfig,
    base_model: Any,
    new_model: Any,
    reference: Any,
    logs: Logs,
    *,
    channels: list[str] | None = None,
    n_boot: int = 1000,
    propensity: str = "auto",
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    ope: bool = True,
) -> tuple[dict[str, Any], dict[str, Outcome]]:
    """BASELINE and CHANGED (narrowed to ``channels``) over the same logged window: both configs' figures, the deltas and the window's facts."""
    from training import served_ope

    check_channels(channels)
    missing = missing_rule_columns(logs.frame)
    if missing:
        _say(progress, f"warning: the logged rows lack feature columns the rules read (they default as in the engine): {', '.join(missing)}")
    ctx = None
    if ope:
        _say(progress, "replay: the logging policy's support" + (" and propensities" if propensity == "auto" else ""))
        ctx = served_ope.build_context(
            base_model.bundle, logs.prep, logs.data, propensity=propensity, seed=seed, contentless=base_model.bundle.contentless, progress=progress is not None
        )
    outcomes = {
        "baseline": replay_config(baseline, base_model, reference, logs, label="baseline", ctx=ctx, progress=progress),
        "changed": replay_config(changed, new_model, reference, logs, channels=channels, label="changed", ctx=ctx, progress=progress),
    }
    per_config = {k: dict(o.figures) for k, o in outcomes.items()}
    if ope:
        _say(progress, f"replay: off-policy estimates ({n_boot} HCP-clustered resamples)")
        for name, cfg in (("baseline", baseline), ("changed", changed)):
            per_config[name].update(ope_figures(outcomes[name].rows, ope_settings(cfg, n_boot=n_boot, propensity=propensity), seed))
    figures = compare(per_config["baseline"], per_config["changed"])
    if ope:
        figures.update(ope_deltas(outcomes["changed"].rows, outcomes["baseline"].rows, ope_settings(changed, n_boot=n_boot, propensity=propensity), seed))
    hcps = logs.frame["hcp_id"].astype(str)
    figures.update(
        {
            "model_version": base_model.label if new_model is base_model else f"{base_model.label} vs {new_model.label}",
            "changes": config_changes(baseline, changed, channels),
            "weeks_count": len(logs.weeks),
            "weeks_available_count": logs.weeks_available,
            "window_start": logs.weeks[0].date().isoformat(),
            "window_end": (logs.weeks[-1].date() + timedelta(days=6)).isoformat(),
            "days_count": 7 * len(logs.weeks),
            "logged_touches_count": len(logs.frame),
            "decisions_replayed_count": int((~pd.DataFrame({"h": hcps, "w": logs.frame["event_timestamp"].astype(str)}).duplicated()).sum()),
            "hcps_count": int(hcps.nunique()),
            "reps_count": int(len(outcomes["baseline"].per_rep)),
            "missing_rule_columns": missing,
            "data_fingerprint": logs.fingerprint,
            "data_source": logs.source,
        }
    )
    return figures, outcomes


def _same_encoding(a: Any, b: Any) -> bool:
    return (
        tuple(a.vocab.ids) == tuple(b.vocab.ids)
        and tuple(a.scaler.columns) == tuple(b.scaler.columns)
        and np.array_equal(a.scaler.mean, b.scaler.mean)
        and np.array_equal(a.scaler.std, b.scaler.std)
        and a.model.config.max_seq_len == b.model.config.max_seq_len
    )


# --- the readable table --------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.3f}"
    return str(v)


def format_table(figures: dict[str, Any]) -> str:
    """BASELINE, CHANGED and the delta side by side, the lines a brand team reads first."""
    lines = [
        f"replay of {figures.get('window_start')} .. {figures.get('window_end')} ({figures.get('weeks_count')} weeks), model {figures.get('model_version')}: "
        f"{_fmt(figures.get('logged_touches_count'))} logged touches, {_fmt(figures.get('decisions_replayed_count'))} HCP-week decisions, "
        f"{_fmt(figures.get('reps_count'))} reps",
        "changes: " + ("; ".join(figures.get("changes") or []) or "none (CHANGED = BASELINE)"),
    ]
    if figures.get("note"):
        lines.append(f"note: {figures['note']}")
    if figures.get("missing_rule_columns"):
        lines.append(f"warning: the logs lack columns the rules read (defaulted as the engine does): {', '.join(figures['missing_rule_columns'])}")
    rows: list[tuple[str, str]] = [
        ("suggestions", "suggestions_count"),
        ("suggestions per rep per day, mean", "suggestions_per_rep_day_mean"),
        ("suggestions per rep per day, p90", "suggestions_per_rep_day_p90"),
        ("suggestions per HCP-week", "suggestions_per_hcp_week_mean"),
        *[(f"share {ch}", f"channel_share_{ch}") for ch in CHANNELS],
        ("suggestions breaking a rule (must be 0)", "suggestion_violations_count"),
        ("logged touches blocked", "logged_touches_blocked_count"),
        ("logged touches blocked, share", "logged_touches_blocked_share"),
        *[(f"  blocked by {r}", f"logged_touches_blocked_{r}_count") for r in LOGGED_RULES],
    ]
    est = figures.get("changed_ope_estimator") or figures.get("baseline_ope_estimator") or "dr"
    for name in dict.fromkeys(("dr", "snips", "switch_dr", "dr_os", "switch_dr_ba", est)):
        rows.append((f"OPE {name} value" + (" (chosen)" if name == est else ""), f"ope_{name}_value"))
    rows += [
        ("OPE logged policy value", "ope_logged_value"),
        ("OPE rows", "ope_rows_count"),
        ("OPE rows without propensity", "ope_rows_without_propensity_count"),
        ("OPE support mass", "ope_diag_support_mass"),
        ("OPE ESS", "ope_diag_ess"),
    ]
    table = [("metric", "baseline", "changed", "delta")]
    for title, key in rows:
        if f"baseline_{key}" not in figures and f"changed_{key}" not in figures:
            continue
        b, c = figures.get(f"baseline_{key}"), figures.get(f"changed_{key}")
        d = figures.get(f"delta_{key}")
        if key.startswith("ope_") and key.endswith("_value") and f"baseline_{key[:-6]}_ci_low" in figures:
            stem = key[:-6]
            b = f"{_fmt(b)} [{_fmt(figures.get(f'baseline_{stem}_ci_low'))}, {_fmt(figures.get(f'baseline_{stem}_ci_high'))}]"
            c = f"{_fmt(c)} [{_fmt(figures.get(f'changed_{stem}_ci_low'))}, {_fmt(figures.get(f'changed_{stem}_ci_high'))}]"
            if f"delta_{stem}_ci_low" in figures:
                d = f"{_fmt(d)} [{_fmt(figures.get(f'delta_{stem}_ci_low'))}, {_fmt(figures.get(f'delta_{stem}_ci_high'))}]"
        table.append((title, b if isinstance(b, str) else _fmt(b), c if isinstance(c, str) else _fmt(c), d if isinstance(d, str) else _fmt(d)))
    widths = [max(len(r[i]) for r in table) for i in range(4)]
    for j, r in enumerate(table):
        lines.append("  ".join([r[0].ljust(widths[0]), *(x.rjust(w) for x, w in zip(r[1:], widths[1:]))]))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    for side in ("baseline", "changed"):
        if figures.get(f"{side}_ope_verdict"):
            lines.append(f"OPE {side}: {figures[f'{side}_ope_verdict']}")
    return "\n".join(lines)
