"""Closed loop: the served system (``serving.engine.Recommender``) run against the simulator, week by week.

Each week: features as of Monday 00:00 UTC from everything the CRM has logged so far (the
dataset's history plus what the loop produced), ``Recommender.recommend`` for every HCP with
the configured holdout share and exploration, recorded to a real audit trail; reps accept or
dismiss the rep-executed suggestions (visit, meeting, phone, 1:1 message), marketing sends the
rest; what the simulator's rules allow is executed (``simulator.environment.Environment.step``),
and the outcome flows back through the service's own feedback path (``Recommender.feedback``:
idempotent, in the audit trail): accepted / dismissed (with a reason) / done, opened / attended.
Weekly prescriptions land in a contract ``outcomes`` table, as a CRM export would deliver them.

The truth is kept apart, for evaluation only (``_ground_truth/closed_loop_truth.parquet``): per
HCP-week the oracle's expected responses of what was executed and expected prescriptions, in
the observed world and, with ``counterfactual``, in two shadow worlds run in lock step from the
same state and seed where everyone is served (no holdout) and everyone is held out. Their
difference is the true average lift the randomised holdout estimates.

Usage::

    from experiments.closed_loop import run_closed_loop
    summary = run_closed_loop("DATA_DIR", "OUT_DIR", ClosedLoopConfig(weeks=12, seed=1), model=loaded_model)
    # OUT_DIR/audit.db (or audit_url), OUT_DIR/data (contract dataset), OUT_DIR/_ground_truth/...
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import CHANNELS, DAYPART_HOURS, DAYPARTS, FEEDBACK_REASONS, MEETING_CHANNELS, SEGMENTS
from experiments.lift_config import ClosedLoopConfig

_CH = {c: i for i, c in enumerate(CHANNELS)}
_DP_OF_HOUR = {DAYPART_HOURS[d][0]: i for i, d in enumerate(DAYPARTS)}
_MEETING = np.isin(np.asarray(CHANNELS), MEETING_CHANNELS)
# Reasons reps give when they pass on a suggestion (FEEDBACK_REASONS order, capacity excluded:
# that one is given only when the rep's week was full).
_DISMISS_P = np.array([0.3, 0.15, 0.2, 0.12, 0.08, 0.1, 0.0, 0.05])
STREAM_REPS = 11  # seed stream of the reps' decisions (the simulator uses 1-3)
TRUTH_FILE = "closed_loop_truth.parquet"
WORLDS = ("observed", "all_served", "all_holdout")


@dataclass
class WeekPlan:
    """The served suggestions of one week turned into simulator actions, with what became of each."""

    actions: Any  # simulator.actions.Actions (executed rows only)
    row: np.ndarray  # [executed] row of the served frame behind each action
    accepted: np.ndarray  # [rows] rep accepted (True for marketing-sent channels)
    rep_row: np.ndarray  # [rows] a rep-executed channel
    status: np.ndarray  # [rows] executed | dismissed | capacity | ineligible | no_content
    reason: np.ndarray  # [rows] dismissal reason or None
    counts: dict[str, int] = field(default_factory=dict)


def week_as_of(public: Any, week: int) -> dt.datetime:
    """Monday 00:00 UTC of simulated ``week``: when the week's suggestions are computed."""
    return dt.datetime.combine(public.week_start_date(week), dt.time(), tzinfo=dt.UTC)


def local_slots(window_start_local: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weekday 0=Mon, daypart index) of ISO local window starts (``Recommender`` windows start on a daypart)."""
    wd = np.empty(len(window_start_local), dtype=np.int64)
    dp = np.empty(len(window_start_local), dtype=np.int64)
    for i, s in enumerate(window_start_local):
        t = dt.datetime.fromisoformat(str(s))
        wd[i] = t.weekday()
        dp[i] = _DP_OF_HOUR.get(t.hour, 0)
    return wd, dp


def plan_week(frame: pd.DataFrame, obs: Any, cfg: ClosedLoopConfig, first_number: int) -> WeekPlan:
    """Reps' decisions and the simulator's rules applied to one week's served suggestions (pure, seeded)."""
    from simulator.actions import Actions
    from simulator.constraints import WORK_DAYPARTS, WORK_WEEKDAYS, fit_rep_capacity
    from simulator.policies import ContentIndex
    from simulator.world import REP_CHANNEL_MASK, WORKDAY_ONLY_MASK

    pub, elig = obs.public, obs.eligibility
    n = len(frame)
    pos = pd.Index(pub.hcp_ids).get_indexer(frame["hcp_id"].astype(str))
    if (pos < 0).any():
        raise ValueError(f"served HCP {frame['hcp_id'].iloc[int(np.flatnonzero(pos < 0)[0])]!r} is not in the simulated world")
    hcp = pos.astype(np.int64)
    ch = frame["channel"].map(_CH).to_numpy(dtype=np.int64)
    wd, dp = local_slots(frame["window_start_local"].to_numpy(dtype=object))
    # Reps meet HCPs in working hours: a weekend or evening slot moves to the nearest working one.
    work = WORKDAY_ONLY_MASK[ch]
    moved = work & ((wd >= WORK_WEEKDAYS) | (dp >= WORK_DAYPARTS))
    wd = np.where(work, np.minimum(wd, WORK_WEEKDAYS - 1), wd)
    dp = np.where(work, np.minimum(dp, WORK_DAYPARTS - 1), dp)

    content_index = {c: i for i, c in enumerate(pub.content_ids)}
    content = np.array([content_index.get(c, -1) if isinstance(c, str) else -1 for c in frame["content_id"]], dtype=np.int64)
    product = pub.hcp_product[hcp]
    ok_content = (content >= 0) & elig.content[product, ch, np.maximum(content, 0)]
    # Content the simulator cannot use on this channel this week: marketing attaches the week's campaign item.
    idx = ContentIndex(elig, obs.week, pub)
    campaign = idx.campaign[idx.key(product, ch)]
    contentless = elig.contentless  # what this world accepts without content
    substituted = ~contentless[ch] & ~ok_content & (campaign >= 0)
    content = np.where(contentless[ch], -1, np.where(ok_content, content, campaign))
    has_content = contentless[ch] | (content >= 0)

    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, obs.week, STREAM_REPS]))
    u = rng.random((2, n))
    rep_row = REP_CHANNEL_MASK[ch]
    p_accept = np.array([cfg.acceptance[s] for s in SEGMENTS])[pub.hcp_segment[hcp]]
    accepted = ~rep_row | (u[0] < p_accept)
    reason_draw = np.minimum((u[1][:, None] > np.cumsum(_DISMISS_P / _DISMISS_P.sum())[None, :]).sum(1), len(FEEDBACK_REASONS) - 1)
    eligible = elig.channel[hcp, ch] & has_content
    cand = accepted & eligible
    # At most max_touches per HCP, best-ranked first (the slate holds distinct channels).
    order = np.lexsort((frame["rank"].to_numpy(), hcp))
    seen = np.zeros(pub.n_hcps, dtype=np.int64)
    for i in order[cand[order]]:
        seen[hcp[i]] += 1
        if seen[hcp[i]] > elig.max_touches:
            cand[i] = False
    rows = np.flatnonzero(cand)
    acts = Actions(
        hcp[rows], ch[rows], content[rows], wd[rows], dp[rows], propensity=frame["propensity"].to_numpy(dtype=np.float64)[rows], suggestion=first_number + rows
    )
    priority = frame["expected_response"].to_numpy(dtype=np.float64)[rows] - frame["rank"].to_numpy()[rows]
    holdout = frame["policy"].to_numpy(dtype=object) == "holdout"
    if cfg.capacity_by_arm and holdout.any() and not holdout.all():
        keep = np.zeros(len(rows), dtype=bool)
        for arm_elig, in_arm in arm_capacities(pub, elig, hcp, holdout, rng):
            sel = np.flatnonzero(in_arm[rows])
            keep[sel] = fit_rep_capacity(pub, arm_elig, acts.select(sel), priority[sel])
    else:
        keep = fit_rep_capacity(pub, elig, acts, priority)
    status = np.full(n, "ineligible", dtype=object)
    status[~has_content & accepted] = "no_content"
    status[~accepted] = "dismissed"
    status[rows[keep]] = "executed"
    status[rows[~keep]] = "capacity"
    reason = np.full(n, None, dtype=object)
    reason[status == "dismissed"] = np.asarray(FEEDBACK_REASONS, dtype=object)[reason_draw[status == "dismissed"]]
    reason[status == "capacity"] = "capacity"
    reason[(status == "ineligible") & rep_row] = "already_contacted"
    reason[(status == "no_content") & rep_row] = "wrong_content"
    counts = {f"suggestions_{s}": int((status == s).sum()) for s in ("executed", "dismissed", "capacity", "ineligible", "no_content")}
    counts.update(rescheduled=int(moved.sum()), content_substituted=int(substituted.sum()))
    return WeekPlan(acts.select(keep), rows[keep], accepted, rep_row, status, reason, counts)


def arm_capacities(pub: Any, elig: Any, hcp: np.ndarray, holdout: np.ndarray, rng: np.random.Generator) -> list[tuple[Any, np.ndarray]]:
    """Each rep's weekly capacity split between the arms in proportion to their HCPs among this week's served ones.

    Returns [(eligibility with the arm's capacities, rows of the arm)] for holdout and served.
    Fractional shares are rounded at random (seeded) so each arm gets its share on average.
    """
    from dataclasses import replace

    n_reps = len(pub.rep_ids)
    rep_of = pub.hcp_rep
    served_hcps = np.unique(hcp)
    held_hcps = np.unique(hcp[holdout])
    n_all = np.bincount(rep_of[served_hcps], minlength=n_reps).astype(np.float64)
    frac = np.divide(np.bincount(rep_of[held_hcps], minlength=n_reps), n_all, out=np.zeros(n_reps), where=n_all > 0)
    u = rng.random((2, n_reps))
    out = []
    for cap_name, draw in (("rep_time_capacity", u[0]), ("message_capacity", u[1])):
        cap = np.asarray(getattr(elig, cap_name), dtype=np.float64)
        share = cap * frac
        held = np.floor(share) + (draw < share - np.floor(share))
        out.append((cap_name, held, cap - held))
    held_elig = replace(elig, **{name: h.astype(np.int64) for name, h, _ in out})
    served_elig = replace(elig, **{name: s.astype(np.int64) for name, _, s in out})
    return [(held_elig, holdout), (served_elig, ~holdout)]


def feedback_items(frame: pd.DataFrame, plan: WeekPlan, touches: Any, as_of: dt.datetime) -> list[dict[str, Any]]:
    """The week's feedback as the CRM and channels would send it to ``POST /feedback`` (ids deterministic per suggestion)."""
    sid = frame["suggestion_id"].to_numpy(dtype=object)
    items: list[dict[str, Any]] = []
    decided = as_of + dt.timedelta(hours=2)  # reps answer Monday morning (local +8 h: 10:00)
    for i in np.flatnonzero(plan.rep_row):
        st = plan.status[i]
        if st == "executed" or (plan.accepted[i] and st not in ("capacity", "ineligible", "no_content")):
            items.append({"feedback_id": f"{sid[i]}-accepted", "suggestion_id": sid[i], "outcome": "accepted", "reason": None, "ts": decided})
        else:
            items.append({"feedback_id": f"{sid[i]}-dismissed", "suggestion_id": sid[i], "outcome": "dismissed", "reason": plan.reason[i], "ts": decided})
    c = touches.cols
    number = c["suggestion"].astype(np.int64)
    mine = (number >= 0) & ~c["inbound"]
    # Executed actions carry first_number + frame row; recover the row from the plan.
    row_of = {int(n): int(r) for n, r in zip(plan.actions.suggestion, plan.row)}
    for j in np.flatnonzero(mine):
        r = row_of.get(int(number[j]))
        if r is None:
            continue
        ts = dt.datetime.fromtimestamp(int(c["ts_us"][j]) / 1e6, tz=dt.UTC)
        if plan.rep_row[r]:
            items.append({"feedback_id": f"{sid[r]}-done", "suggestion_id": sid[r], "outcome": "done", "reason": None, "ts": ts + dt.timedelta(minutes=30)})
        if c["opened"][j]:
            outcome = "attended" if _MEETING[int(c["channel"][j])] else "opened"
            items.append({"feedback_id": f"{sid[r]}-{outcome}", "suggestion_id": sid[r], "outcome": outcome, "reason": None, "ts": ts + dt.timedelta(hours=1)})
    return items


class _World:
    """One simulated world driven by one recommender: the observed one, or a counterfactual shadow."""

    def __init__(
        self, name: str, env: Any, make_rec: Any, reference: Any, logged: dict[str, Any], features_cfg: Any, cfg: ClosedLoopConfig, record: bool
    ) -> None:
        self.name, self.env, self.make_rec, self.logged, self.features_cfg, self.cfg, self.record = name, env, make_rec, logged, features_cfg, cfg, record
        self.reference = reference
        self.rec = make_rec(reference)
        self.n_content = env.tables["content"].num_rows
        self.ids = list(env.public.hcp_ids)
        self.truth: list[pd.DataFrame] = []
        self.counts: dict[str, int] = {}
        self.number = 0  # numeric suggestion ids in the simulator's touches
        self.suggestion_ids: list[str] = []
        self.feedback_created = 0

    def tables(self) -> dict[str, Any]:
        """Contract tables the CRM holds now: the dataset's history plus what this loop produced."""
        t = {**self.logged, **{k: self.env.tables[k] for k in ("products", "reps", "hcps", "content")}}
        return {**t, **self.env.history.contract_tables(self.logged)}

    def features(self, as_of: dt.datetime) -> pd.DataFrame:
        """Model features for every HCP in world order, as of ``as_of``."""
        from features import compute_features_asof

        frame = compute_features_asof(self.tables(), as_of, self.features_cfg)
        pos = pd.Index(frame["hcp_id"]).get_indexer(self.ids)
        if (pos < 0).any():
            raise RuntimeError(f"features: {int((pos < 0).sum())} HCPs of the world have no feature row")
        return frame.iloc[pos].reset_index(drop=True)

    def step(self, served_week: int) -> None:
        """Serve, decide, execute and (observed world) feed back one week."""
        env, cfg = self.env, self.cfg
        obs = env.observe()
        as_of = week_as_of(env.public, obs.week)
        if env.tables["content"].num_rows != self.n_content:
            # Drift added campaign content: the service's reference tables learn it, as after a CRM import.
            self.reference = _with_content(self.reference, env.tables["content"])
            self.rec, self.n_content = self.make_rec(self.reference), env.tables["content"].num_rows
        feats = self.features(as_of)
        # With a population shift only onboarded HCPs are in the CRM yet.
        active = env.active_hcps() if hasattr(env, "active_hcps") else np.ones(len(self.ids), dtype=bool)
        ids = [h for h, a in zip(self.ids, active) if a]
        feats = feats[active].reset_index(drop=True)
        res = self.rec.recommend(ids, k=cfg.k, as_of=as_of, features=feats, record=self.record)
        frame = res.frame.reset_index(drop=True)
        plan = plan_week(frame, obs, cfg, self.number)
        self.number += len(frame)
        self.suggestion_ids.extend(frame["suggestion_id"].tolist())
        step = env.step(plan.actions, obs.eligibility)
        for k, v in plan.counts.items():
            self.counts[k] = self.counts.get(k, 0) + v
        self.counts["simulator_violations"] = self.counts.get("simulator_violations", 0) + int(sum(step.violations.values()))
        if self.record:
            items = feedback_items(frame, plan, step.touches, as_of)
            many = getattr(self.rec, "feedback_many", None)  # one transaction where the service offers it
            results = many(items) if many is not None else [self.rec.feedback(item) for item in items]
            self.feedback_created += sum(int(r["created"]) for r in results)
        self.truth.append(_truth_rows(self.name, served_week, obs.week, env, step, frame))


def _truth_rows(world: str, served_week: int, week: int, env: Any, step: Any, frame: pd.DataFrame) -> pd.DataFrame:
    """Per HCP of one week: the oracle's expected and the realised responses and prescriptions."""
    pub = env.public
    n = pub.n_hcps
    c = step.touches.cols
    out = ~c["inbound"]
    hcp = c["hcp"][out].astype(np.int64)
    served = np.bincount(pd.Index(pub.hcp_ids).get_indexer(frame["hcp_id"].astype(str)), minlength=n)
    holdout = np.zeros(n, dtype=bool)
    holdout[pd.Index(pub.hcp_ids).get_indexer(frame.loc[frame["policy"] == "holdout", "hcp_id"].astype(str))] = True
    return pd.DataFrame(
        {
            "world": world,
            "served_week": served_week,
            "week_start": pd.Timestamp(pub.week_start_date(week)),
            "hcp_id": pub.hcp_ids,
            "segment": np.asarray(SEGMENTS, dtype=object)[pub.hcp_segment],
            "holdout_served": holdout,
            "suggestions": served,
            "touches": np.bincount(hcp, minlength=n),
            "expected_responses": np.bincount(hcp, weights=c["p_response"][out].astype(np.float64), minlength=n),
            "responses": np.bincount(hcp, weights=c["opened"][out].astype(np.float64), minlength=n),
            "expected_prescriptions": np.asarray(step.expected_prescriptions, dtype=np.float64),
            "prescriptions": np.asarray(step.outcomes["prescriptions"], dtype=np.float64),
        }
    )


def true_lift(truth: pd.DataFrame, hcp_ids: Any = None, metrics: tuple[str, ...] = ("expected_responses", "expected_prescriptions")) -> dict[str, Any]:
    """The true lift per HCP-week from a truth table: all-served minus all-holdout (average effect), overall and per tier.

    ``hcp_ids`` restricts to the HCPs a measurement covered. Also returns the within-sample
    difference of the observed world's served and holdout arms (what was really served).
    """
    t = truth if hcp_ids is None else truth[truth["hcp_id"].isin(set(map(str, hcp_ids)))]
    per_hcp = t.groupby(["world", "hcp_id", "segment"], observed=True)[list(metrics)].mean().reset_index()
    out: dict[str, Any] = {}
    groups = [("all", None), *[(s, s) for s in SEGMENTS]]
    worlds = set(per_hcp["world"])
    for m in metrics:
        for name, seg in groups:
            p = per_hcp if seg is None else per_hcp[per_hcp["segment"] == seg]
            if {"all_served", "all_holdout"} <= worlds:
                a = p[p["world"] == "all_served"].set_index("hcp_id")[m]
                b = p[p["world"] == "all_holdout"].set_index("hcp_id")[m]
                out[f"{m}:{name}:ate"] = float((a - b.reindex(a.index)).mean()) if len(a) else float("nan")
            obs = t[t["world"] == "observed"]
            if seg is not None:
                obs = obs[obs["segment"] == seg]
            arm = obs.groupby("hcp_id")["holdout_served"].any()
            vals = obs.groupby("hcp_id")[m].mean()
            ho = arm.reindex(vals.index).fillna(False).to_numpy(dtype=bool)
            out[f"{m}:{name}:sample"] = float(vals[~ho].mean() - vals[ho].mean()) if ho.any() and (~ho).any() else float("nan")
    return out


def _recommender_factories(serving_cfg: Any, cfg: ClosedLoopConfig, model: Any, audit: Any) -> dict[str, Any]:
    """Per world, ``reference -> Recommender``: observed (configured holdout), everyone served, everyone held out."""
    from serving.engine import Recommender

    exp = serving_cfg.exploration.model_copy(update={"holdout_share": cfg.holdout_share, "epsilon": cfg.epsilon, "salt": cfg.holdout_salt})
    scfg = serving_cfg.model_copy(update={"exploration": exp})
    all_in = scfg.model_copy(update={"exploration": exp.model_copy(update={"holdout_share": 0.0})})
    why = None if model is not None else "closed loop run without a model"
    return {
        "observed": lambda ref: Recommender(scfg, model=model, model_error=why, reference=ref, audit=audit),
        "all_served": lambda ref: Recommender(all_in, model=model, model_error=why, reference=ref),
        # Without a model every HCP gets the rule-based policy: exactly what the holdout is served.
        "all_holdout": lambda ref: Recommender(all_in, model=None, model_error="counterfactual: everyone held out", reference=ref),
    }


def _environment(data_dir: Path, cfg: ClosedLoopConfig) -> Any:
    from simulator.environment import Environment

    env = Environment.from_data_dir(data_dir, start="end", seed=cfg.seed)
    if cfg.drift:
        try:
            env.inject_drift(cfg.drift)  # weeks counted from the first served week
        except ValueError as exc:
            raise ValueError(f"closed_loop.drift: {exc}") from None
    return env


def _with_content(reference: Any, content: Any) -> Any:
    """``reference`` with its content table replaced by the contract ``content`` table."""
    from serving.reference import ReferenceData

    c = content.select(["content_id", "product_id", "topic", "approved_from", "approved_until"]).to_pandas().set_index("content_id")
    return ReferenceData(reference.hcps, reference.reps, c)


def _fast_sqlite(audit: Any) -> None:
    """WAL with synchronous=NORMAL on every connection of a simulation's SQLite audit trail.

    The service wants each feedback durable when it answers (an fsync per commit, ~8 ms here);
    a simulated run writes ~10,000 feedback rows a week through the same path, and losing its
    last commits to a power cut only means re-running it. Same rows, same idempotency checks.
    """
    import sqlalchemy as sa

    with audit.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    audit.engine.dispose()
    sa.event.listen(audit.engine, "connect", lambda dbapi_conn, _: dbapi_conn.execute("PRAGMA synchronous=NORMAL"))


def run_closed_loop(
    data_dir: str | Path,
    out_dir: str | Path,
    cfg: ClosedLoopConfig | None = None,
    *,
    serving_cfg: Any = None,
    model: Any = None,
    features_cfg: Any = None,
    audit_url: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Serve a simulated dataset's world for ``cfg.weeks`` weeks after its logged period; write audit trail, CRM data and truth.

    ``data_dir``: a simulated contract dataset (``nba simulate``; needs ``_ground_truth``).
    ``model``: a ``serving.scoring.LoadedModel`` (None: rules-only deployment, lift ~0).
    ``audit_url``: default ``sqlite:///OUT_DIR/audit.db``; it must hold no suggestions yet.
    Returns a summary (paths, counts, true lifts); also written to ``OUT_DIR/closed_loop.json``.
    """
    import pyarrow as pa

    from contract.io import read_manifest, read_table, staged_dir, write_tables
    from features.config import FeaturesConfig
    from serving.audit import AuditTrail
    from serving.config import ServingConfig
    from serving.reference import ReferenceData

    cfg = cfg or ClosedLoopConfig()
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if not (data_dir / "_ground_truth").is_dir():
        raise FileNotFoundError(f"{data_dir}: no _ground_truth/ (a simulated dataset from `nba simulate` is needed)")
    out_dir.mkdir(parents=True, exist_ok=True)
    serving_cfg = serving_cfg or ServingConfig()
    features_cfg = features_cfg or FeaturesConfig()
    audit_url = audit_url or f"sqlite:///{(out_dir / 'audit.db').resolve()}"
    audit = AuditTrail(audit_url)
    try:
        if audit.engine.dialect.name == "sqlite":
            _fast_sqlite(audit)
        if audit.span()[0]:  # a count on the index, not the whole table
            raise ValueError(f"audit trail {audit_url} already holds suggestions: give a fresh audit trail (a run is not appended twice)")
        # Every table of the dataset travels to the loop's CRM data (the contract may hold more than these).
        names = {"products", "reps", "hcps", "content", "touchpoints", "outcomes", "feedback", *read_manifest(data_dir).get("tables", {})}
        logged = {name: read_table(data_dir, name) for name in sorted(names)}
        reference = ReferenceData.load(data_dir)
        makers = _recommender_factories(serving_cfg, cfg, model, audit)
        names = WORLDS if cfg.counterfactual else WORLDS[:1]
        worlds = [_World(w, _environment(data_dir, cfg), makers[w], reference, logged, features_cfg, cfg, record=(w == "observed")) for w in names]
        first_week = worlds[0].env.week
        weeks = range(cfg.weeks)
        if progress:
            from tqdm import tqdm

            weeks = tqdm(weeks, desc=f"closed loop ({len(worlds)} world{'s' * (len(worlds) > 1)})", unit="wk")
        for i in weeks:
            for w in worlds:
                w.step(i)

        obs = worlds[0]
        truth = pd.concat([t for w in worlds for t in w.truth], ignore_index=True)
        gt = out_dir / "_ground_truth"
        gt.mkdir(exist_ok=True)
        tmp = gt / f".{TRUTH_FILE}.tmp"
        truth.to_parquet(tmp, index=False)
        tmp.replace(gt / TRUTH_FILE)
        # The CRM's view after the loop: the dataset's history plus the served weeks, touches
        # naming the audit trail's suggestion ids.
        tp = obs.env.history.touchpoints()
        numbers = obs.env.history.touches().cols["suggestion"].astype(np.int64)
        sids = np.asarray(obs.suggestion_ids, dtype=object)
        real = pa.array(np.where(numbers >= 0, sids[np.maximum(numbers, 0)] if len(sids) else None, None), type=pa.string())
        tp = tp.set_column(tp.schema.get_field_index("suggestion_id"), "suggestion_id", real)
        tables = {**logged, **{k: obs.env.tables[k] for k in ("products", "reps", "hcps", "content")}}
        tables["touchpoints"] = pa.concat_tables([logged["touchpoints"], tp.cast(logged["touchpoints"].schema)])
        tables["outcomes"] = pa.concat_tables([logged["outcomes"], obs.env.history.outcomes().cast(logged["outcomes"].schema)])
        with staged_dir(out_dir / "data") as stage:
            write_tables(stage, tables, source="closed-loop", extra={"closed_loop": cfg.model_dump(mode="json")})
        summary: dict[str, Any] = {
            "audit_url": audit_url,
            "data_dir": str(out_dir / "data"),
            "truth_path": str(gt / TRUTH_FILE),
            "first_week_start": week_as_of(obs.env.public, first_week).date().isoformat(),
            "weeks": cfg.weeks,
            "hcps": len(obs.ids),
            "model_version": obs.rec.model_version,
            "config": cfg.model_dump(mode="json"),
            "counts": {w.name: w.counts for w in worlds},
            "feedback_created": obs.feedback_created,
            "true_lift": true_lift(truth),
        }
        tmp = out_dir / ".closed_loop.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
        tmp.replace(out_dir / "closed_loop.json")
        return summary
    finally:
        audit.close()
