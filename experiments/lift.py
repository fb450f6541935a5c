"""`nba lift`: the measured lift of served suggestions over the randomised holdout, from what was recorded.

Inputs are only what production has, never the simulator's truth: the audit trail (every served
suggestion with the policy that served it, so the holdout assignment is the recorded one, never
recomputed), the feedback on those suggestions (opened / attended = a positive response;
accepted / done / dismissed / snoozed = the rep's decision), and the contract dataset that came
through `nba import`: weekly ``outcomes`` (prescriptions), ``touchpoints`` (every contact and its
response, suggested or not) and the HCPs' tiers (``hcp_profile_history`` as of each HCP's first
suggestion, else ``hcps``).

HCPs are the randomisation unit, so every figure is first reduced to one value per HCP (means
per HCP-week from the HCP's first suggestion in the window to its end), and intervals come from
a bootstrap over HCPs stratified by arm (a cluster bootstrap: an HCP's weeks stay together).
Prescriptions are noisy and HCPs differ widely in market size, so their lift is also given
adjusted for each HCP's baseline, the weeks before its first suggestion ever (CUPED:
y - theta (x - mean x), theta = cov(y, x) / var(x) pooled over the arms and re-fitted in every
bootstrap replicate); both estimate the same average effect, the adjusted one with a narrower
interval when the baseline predicts the window.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import REP_TIME_CHANNELS, SEGMENTS

POSITIVE = ("opened", "attended")
DECISIONS = ("accepted", "done", "dismissed", "snoozed")
# Suggestions a rep acts on (the rest are sent by marketing automation and get no decision).
REP_CHANNELS = (*REP_TIME_CHANNELS, "wecom_1to1")
OUTCOME_COLUMNS = ["hcp_id", "week_start", "prescriptions"]
TOUCH_COLUMNS = ["hcp_id", "ts", "direction", "opened", "attended"]
GROUPS = ("all", *SEGMENTS)


class LiftError(ValueError):
    """The recorded data cannot give a lift; the message says which input and why."""


@dataclass(frozen=True)
class Estimate:
    """A difference (served - holdout) with its bootstrap interval, the arms' means and, when adjusted, theta."""

    lift: float
    ci_low: float
    ci_high: float
    served: float
    holdout: float
    n_served: int
    n_holdout: int
    theta: float | None = None

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Flat figures named ``prefix_*``."""
        out = {
            f"{prefix}_lift": self.lift,
            f"{prefix}_ci_low": self.ci_low,
            f"{prefix}_ci_high": self.ci_high,
            f"{prefix}_served": self.served,
            f"{prefix}_holdout": self.holdout,
        }
        if self.theta is not None:
            out[f"{prefix}_theta"] = self.theta
        return out


def _week(ts: Any) -> pd.Series:
    """Monday (UTC date, naive) of each timestamp or date."""
    t = pd.to_datetime(pd.Series(ts), utc=True)
    return (t.dt.normalize() - pd.to_timedelta(t.dt.weekday, unit="D")).dt.tz_localize(None)


def assignments(suggestions: pd.DataFrame) -> pd.Series:
    """Arm of each HCP from the recorded policies: True = holdout. Mixed assignment is an error."""
    is_holdout = suggestions["policy"].astype(str).eq("holdout")
    per = is_holdout.groupby(suggestions["hcp_id"].astype(str)).agg(["any", "all"])
    mixed = per.index[per["any"] & ~per["all"]]
    if len(mixed):
        raise LiftError(
            f"audit trail: HCP {mixed[0]!r} (and {len(mixed) - 1} more) was served both as holdout and not within the window; "
            "the holdout share or salt changed: narrow --since/--until to one assignment"
        )
    return per["any"].rename("holdout")


def _period_means(values: pd.DataFrame, covered: np.ndarray, lo: pd.Series, hi: pd.Series) -> pd.Series:
    """Per HCP, the mean weekly value over the covered weeks in [lo, hi) (a covered week without a row counts 0); NaN without any.

    ``values``: columns hcp_id, week, value (one row per HCP-week); ``lo``/``hi``: per-HCP bounds.
    """
    lo_i = np.searchsorted(covered, lo.to_numpy(dtype="datetime64[ns]"), "left")
    hi_i = np.searchsorted(covered, hi.to_numpy(dtype="datetime64[ns]"), "left")
    n = pd.Series(hi_i - lo_i, index=lo.index, dtype=np.float64)
    v = values[values["hcp_id"].isin(lo.index)]
    w = v["week"].to_numpy(dtype="datetime64[ns]")
    inside = (w >= lo.reindex(v["hcp_id"]).to_numpy(dtype="datetime64[ns]")) & (w < hi.reindex(v["hcp_id"]).to_numpy(dtype="datetime64[ns]"))
    total = v[inside].groupby("hcp_id")["value"].sum().reindex(lo.index).fillna(0.0)
    return (total / n.where(n > 0)).astype(np.float64)


def prescription_table(outcomes: pd.DataFrame, start: pd.Series, seen: pd.Series, end: pd.Timestamp, baseline_weeks: int) -> pd.DataFrame:
    """Per HCP: prescriptions per week from its ``start`` week to ``end`` (inclusive) and over the ``baseline_weeks`` before ``seen``.

    Boxes of all our products add up within a week. A week counts when the table holds any row
    that week (the CRM delivered it); an HCP without a row in such a week prescribed nothing.
    """
    source = outcomes.attrs.get("source", "table 'outcomes'")
    o = pd.DataFrame(
        {
            "hcp_id": outcomes["hcp_id"].astype(str).to_numpy(),
            "week": _week(outcomes["week_start"]).to_numpy(),
            "value": pd.to_numeric(outcomes["prescriptions"], errors="coerce").to_numpy(dtype=np.float64),
        }
    )
    weekly = o.groupby(["hcp_id", "week"], as_index=False)["value"].sum()
    covered = np.sort(o["week"].unique()).astype("datetime64[ns]")
    first, stop = start.min(), end + pd.Timedelta(weeks=1)
    in_window = covered[(covered >= first.to_datetime64()) & (covered < stop.to_datetime64())]
    if not len(in_window):
        span = f"{pd.Timestamp(covered[0]).date()} to {pd.Timestamp(covered[-1]).date()}" if len(covered) else "no weeks at all"
        raise LiftError(
            f"{source}: no prescriptions in the window's weeks {first.date()} to {end.date()} (the table covers {span}); "
            "import the CRM's outcomes for those weeks or narrow --since/--until"
        )
    out = pd.DataFrame(index=start.index)
    out["prescriptions_per_week"] = _period_means(weekly, covered, start, pd.Series(stop, index=start.index))
    has_rows = weekly.loc[(weekly["week"] >= first) & (weekly["week"] < stop), "hcp_id"].unique()
    out.attrs.update(outcome_weeks_in_window=int(len(in_window)), hcps_without_outcome_rows=int((~start.index.isin(has_rows)).sum()))
    if baseline_weeks > 0:
        out["prescriptions_baseline"] = _period_means(weekly, covered, seen - pd.Timedelta(weeks=baseline_weeks), seen)
        lo = (seen.min() - pd.Timedelta(weeks=baseline_weeks)).to_datetime64()
        out.attrs["baseline_weeks_covered"] = int(((covered >= lo) & (covered < seen.max().to_datetime64())).sum())
    return out


def touch_table(touchpoints: pd.DataFrame, start: pd.Series, end: pd.Timestamp) -> pd.DataFrame | None:
    """Per HCP: outbound touches and positive responses (opened or attended) per week from ``start`` to ``end``; None when the table stops before the window."""
    t = touchpoints[touchpoints["direction"].astype(str).eq("outbound")]
    if t.empty:
        return None
    week = _week(t["ts"]).to_numpy(dtype="datetime64[ns]")
    stop = end + pd.Timedelta(weeks=1)
    if week.max() < start.min().to_datetime64():
        return None
    # Weeks after the table's last touch are not delivered yet: they count for neither arm.
    weeks = pd.date_range(start.min(), min(end, pd.Timestamp(week.max())), freq="7D").to_numpy(dtype="datetime64[ns]")
    resp = t["opened"].eq(True).to_numpy() | t["attended"].eq(True).to_numpy()  # attended is null off meetings
    base = pd.DataFrame({"hcp_id": t["hcp_id"].astype(str).to_numpy(), "week": week})
    out = pd.DataFrame(index=start.index)
    hi = pd.Series(stop, index=start.index)
    out["touches_per_week"] = _period_means(base.assign(value=1.0), weeks, start, hi)
    out["touch_responses_per_week"] = _period_means(base.assign(value=resp.astype(np.float64)), weeks, start, hi)
    return out


def hcp_table(
    suggestions: pd.DataFrame,
    feedback: pd.DataFrame,
    outcomes: pd.DataFrame | None = None,
    tiers: pd.Series | None = None,
    baseline_weeks: int = 12,
    *,
    first_seen: pd.Series | None = None,
    touchpoints: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per HCP served in the window: arm, tier, exposure, suggestions/responses per week, prescriptions per week and baseline.

    ``first_seen``: each HCP's first suggestion time in the whole audit trail (default: in the
    window); its baseline is the ``baseline_weeks`` before that week, so it is never treated.
    """
    if suggestions.empty:
        raise LiftError("audit trail: no suggestions in the window")
    s = suggestions.assign(hcp_id=suggestions["hcp_id"].astype(str).to_numpy(), week=_week(suggestions["as_of"]).to_numpy())
    holdout = assignments(s)
    last = pd.Timestamp(s["week"].max())
    start = s.groupby("hcp_id")["week"].min().reindex(holdout.index)
    seen = start
    if first_seen is not None:  # never later than the window's first suggestion
        ever = _week(first_seen.reindex(holdout.index)).set_axis(holdout.index).fillna(start)
        seen = pd.Series(np.minimum(ever.to_numpy(dtype="datetime64[ns]"), start.to_numpy(dtype="datetime64[ns]")), index=holdout.index)
    out = pd.DataFrame({"holdout": holdout})
    out.index.name = "hcp_id"
    out["start_week"] = start
    out["exposure_weeks"] = ((last - start).dt.days // 7 + 1).astype(np.int64)
    out["suggestions"] = s.groupby("hcp_id").size().reindex(out.index).fillna(0).to_numpy(dtype=np.float64)
    fb = feedback[feedback["suggestion_id"].isin(set(s["suggestion_id"]))]
    pos = fb[fb["outcome"].isin(POSITIVE)].drop_duplicates("suggestion_id")
    hcp_of = s.set_index("suggestion_id")["hcp_id"]
    out["responses"] = hcp_of.reindex(pos["suggestion_id"]).value_counts().reindex(out.index).fillna(0).to_numpy(dtype=np.float64)
    out["suggestions_per_week"] = out["suggestions"] / out["exposure_weeks"]
    out["responses_per_week"] = out["responses"] / out["exposure_weeks"]
    out["segment"] = (tiers.reindex(out.index) if tiers is not None else _tiers_from_features(s).reindex(out.index)).astype(object).to_numpy()
    attrs: dict[str, Any] = {"weeks": [d.date().isoformat() for d in pd.date_range(start.min(), last, freq="7D")]}
    if outcomes is not None:
        rx = prescription_table(outcomes, start, seen, last, baseline_weeks)
        out = out.join(rx)
        attrs.update(rx.attrs)
    if touchpoints is not None:
        tp = touch_table(touchpoints, start, last)
        if tp is not None:
            out = out.join(tp)
            out["touches"] = out["touches_per_week"] * out["exposure_weeks"]
            out["touch_responses"] = out["touch_responses_per_week"] * out["exposure_weeks"]
    out.attrs = attrs
    return out


def _tiers_from_features(s: pd.DataFrame) -> pd.Series:
    """Tier per HCP from the feature values its first suggestion recorded (code or letter)."""
    first = s.sort_values("as_of").drop_duplicates("hcp_id").set_index("hcp_id")["features_json"]

    def seg(text: str) -> Any:
        v = json.loads(text).get("segment") if isinstance(text, str) else None
        if isinstance(v, (int, float)) and 0 <= int(v) < len(SEGMENTS):
            return SEGMENTS[int(v)]
        return v if v in SEGMENTS else None

    return first.map(seg)


def contract_tiers(hcps: pd.DataFrame | None, history: pd.DataFrame | None, at: pd.Series) -> pd.Series:
    """Tier per HCP from the contract: ``hcp_profile_history`` as of ``at`` (the HCP's first suggestion), else ``hcps``.

    The export-day ``hcps.segment`` may already reflect the experiment (support share moves with
    prescriptions); a tier fixed before the first suggestion is not, so subgroups stay comparable.
    """
    tier = pd.Series(None, index=at.index, dtype=object)
    if history is not None and len(history):
        ns = "datetime64[ns, UTC]"  # parquet gives microseconds, the audit trail nanoseconds: merge_asof needs one unit
        h = history.assign(hcp_id=history["hcp_id"].astype(str), valid_from=pd.to_datetime(history["valid_from"], utc=True).astype(ns))
        h = h.dropna(subset=["segment"]).sort_values("valid_from")
        q = pd.DataFrame({"hcp_id": at.index.astype(str), "t": pd.to_datetime(pd.Series(at.to_numpy()), utc=True).astype(ns).to_numpy()}).sort_values("t")
        m = pd.merge_asof(q, h[["hcp_id", "valid_from", "segment"]], left_on="t", right_on="valid_from", by="hcp_id")
        tier = tier.fillna(m.set_index("hcp_id")["segment"].reindex(at.index))
    if hcps is not None and len(hcps):
        tier = tier.fillna(hcps.assign(hcp_id=hcps["hcp_id"].astype(str)).drop_duplicates("hcp_id").set_index("hcp_id")["segment"].reindex(at.index))
    return tier.where(tier.isin(SEGMENTS), None)


def cluster_means(y: np.ndarray, holdout: np.ndarray, clusters: np.ndarray, x: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Rows reduced to one mean per cluster (HCP): (y, holdout, x). A cluster in both arms is an error."""
    codes, names = pd.factorize(pd.Series(clusters).astype(str))
    n = np.bincount(codes).astype(np.float64)
    h = np.bincount(codes, weights=np.asarray(holdout, dtype=np.float64))
    mixed = (h > 0) & (h < n)
    if mixed.any():
        raise LiftError(f"HCP {names[np.argmax(mixed)]!r} has rows in both arms; the unit of randomisation must be the HCP")
    mean = lambda v: np.bincount(codes, weights=np.asarray(v, dtype=np.float64)) / n  # noqa: E731
    return mean(y), h > 0, None if x is None else mean(x)


def cuped_theta(y: np.ndarray, x: np.ndarray) -> float:
    """The regression coefficient of ``y`` on the baseline ``x`` pooled over both arms (0 when ``x`` is constant)."""
    xc = np.asarray(x, dtype=np.float64) - np.mean(x)
    var = float((xc**2).mean())
    return float((xc * (np.asarray(y, dtype=np.float64) - np.mean(y))).mean() / var) if var > 0 else 0.0


def bootstrap_diff(
    y: np.ndarray, holdout: np.ndarray, *, n_boot: int, confidence: float, seed: int, x: np.ndarray | None = None, clusters: np.ndarray | None = None
) -> Estimate:
    """Served minus holdout mean of ``y``, percentile bootstrap within each arm.

    One value per HCP, or rows with ``clusters`` (the HCP of each row): rows are then reduced to
    HCP means and whole HCPs are resampled. With a baseline ``x`` the difference is CUPED-adjusted
    (theta re-fitted in each replicate; the point estimate's theta is returned).
    """
    y = np.asarray(y, dtype=np.float64)
    holdout = np.asarray(holdout, dtype=bool)
    ok = np.isfinite(y) if x is None else np.isfinite(y) & np.isfinite(np.asarray(x, dtype=np.float64))
    y, holdout = y[ok], holdout[ok]
    xs = None if x is None else np.asarray(x, dtype=np.float64)[ok]
    if clusters is not None:
        y, holdout, xs = cluster_means(y, holdout, np.asarray(clusters)[ok], xs)
    t, c = np.flatnonzero(~holdout), np.flatnonzero(holdout)
    if len(t) < 2 or len(c) < 2:
        return Estimate(
            np.nan,
            np.nan,
            np.nan,
            float(y[t].mean()) if len(t) else np.nan,
            float(y[c].mean()) if len(c) else np.nan,
            len(t),
            len(c),
            None if xs is None else np.nan,
        )
    rng = np.random.default_rng(seed)

    def diff(ti: np.ndarray, ci: np.ndarray) -> np.ndarray:
        # ti, ci: [B, n] resampled indices (B = 1 for the point estimate)
        d = y[ti].mean(1) - y[ci].mean(1)
        if xs is None:
            return d
        yy, xx = np.concatenate([y[ti], y[ci]], 1), np.concatenate([xs[ti], xs[ci]], 1)
        xc = xx - xx.mean(1, keepdims=True)
        var = (xc**2).mean(1)
        theta = np.where(var > 0, ((yy - yy.mean(1, keepdims=True)) * xc).mean(1) / np.where(var > 0, var, 1.0), 0.0)
        return d - theta * (xs[ti].mean(1) - xs[ci].mean(1))

    point = float(diff(t[None, :], c[None, :])[0])
    served, held = float(y[t].mean()), float(y[c].mean())
    theta = None
    if xs is not None:  # the arms' adjusted means, so that served - holdout = lift
        theta = cuped_theta(y, xs)
        xc = xs - xs.mean()
        served, held = served - theta * float(xc[t].mean()), held - theta * float(xc[c].mean())
    reps = []
    chunk = max(1, 4_000_000 // max(len(y), 1))  # bound memory: [chunk, n] index blocks
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        reps.append(diff(t[rng.integers(0, len(t), (b, len(t)))], c[rng.integers(0, len(c), (b, len(c)))]))
    boots = np.concatenate(reps)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return Estimate(point, float(lo), float(hi), served, held, len(t), len(c), theta)


def bootstrap_ratio_diff(num: np.ndarray, den: np.ndarray, holdout: np.ndarray, *, n_boot: int, confidence: float, seed: int) -> Estimate:
    """Served minus holdout of sum(num)/sum(den) (e.g. responses per suggestion), bootstrap over HCPs."""
    num, den, holdout = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64), np.asarray(holdout, dtype=bool)
    ok = np.isfinite(num) & np.isfinite(den)
    num, den, holdout = num[ok], den[ok], holdout[ok]
    t, c = np.flatnonzero(~holdout), np.flatnonzero(holdout)
    if len(t) < 2 or len(c) < 2 or den[t].sum() == 0 or den[c].sum() == 0:
        return Estimate(np.nan, np.nan, np.nan, np.nan, np.nan, len(t), len(c))
    rng = np.random.default_rng(seed)

    def rate(idx: np.ndarray) -> np.ndarray:
        d = den[idx].sum(-1)
        return np.divide(num[idx].sum(-1), d, out=np.full(d.shape, np.nan, dtype=np.float64), where=d > 0)

    point_t, point_c = float(rate(t)), float(rate(c))
    boots = rate(t[rng.integers(0, len(t), (n_boot, len(t)))]) - rate(c[rng.integers(0, len(c), (n_boot, len(c)))])
    alpha = (1 - confidence) / 2
    lo, hi = np.nanquantile(boots, [alpha, 1 - alpha])
    return Estimate(point_t - point_c, float(lo), float(hi), point_t, point_c, len(t), len(c))


def acceptance_rates(suggestions: pd.DataFrame, feedback: pd.DataFrame, tiers: pd.Series | None = None) -> dict[str, pd.DataFrame]:
    """Reps' acceptance of rep-executed suggestions: per week and per tier (and arm).

    A suggestion counts once, by the rep's decisions on it: accepted when it was accepted or
    done, else not accepted when dismissed or snoozed; suggestions without a decision are left out.
    """
    s = suggestions[suggestions["channel"].isin(REP_CHANNELS)].assign(hcp_id=lambda d: d["hcp_id"].astype(str), week=lambda d: _week(d["as_of"]).to_numpy())
    d = feedback[feedback["outcome"].isin(DECISIONS) & feedback["suggestion_id"].isin(set(s["suggestion_id"]))]
    acc = d.assign(acc=d["outcome"].isin(("accepted", "done"))).groupby("suggestion_id")["acc"].any()
    s = s[s["suggestion_id"].isin(acc.index)].assign(accepted=lambda x: acc.reindex(x["suggestion_id"]).to_numpy(dtype=bool))
    s["arm"] = np.where(s["policy"].eq("holdout"), "holdout", "served")
    s["segment"] = tiers.reindex(s["hcp_id"]).to_numpy() if tiers is not None else _tiers_from_features(s).reindex(s["hcp_id"]).to_numpy()

    def table(keys: list[str]) -> pd.DataFrame:
        g = s.groupby(keys, observed=True)["accepted"].agg(["mean", "size"]).rename(columns={"mean": "rate", "size": "n"})
        return g.reset_index()

    return {
        "by_week": table(["week"]),
        "by_week_arm": table(["week", "arm"]),
        "by_tier": table(["segment"]),
        "by_tier_arm": table(["segment", "arm"]),
        "overall": pd.DataFrame({"rate": [float(s["accepted"].mean()) if len(s) else np.nan], "n": [len(s)]}),
    }


def metric_specs(per_hcp: pd.DataFrame) -> dict[str, tuple[str, str, str | None]]:
    """Metric name -> (kind, column(s), baseline) for what the per-HCP table holds; kind "mean" or "ratio"."""
    specs: dict[str, tuple[str, str, str | None]] = {
        "responses_per_hcp_week": ("mean", "responses_per_week", None),
        "response_rate_per_suggestion": ("ratio", "responses/suggestions", None),
    }
    if "touches_per_week" in per_hcp:
        specs["touches_per_hcp_week"] = ("mean", "touches_per_week", None)
        specs["touch_responses_per_hcp_week"] = ("mean", "touch_responses_per_week", None)
        specs["responses_per_touch"] = ("ratio", "touch_responses/touches", None)
    if "prescriptions_per_week" in per_hcp:
        specs["prescriptions_per_hcp_week"] = ("mean", "prescriptions_per_week", None)
        if "prescriptions_baseline" in per_hcp and per_hcp["prescriptions_baseline"].notna().any():
            specs["prescriptions_per_hcp_week_adjusted"] = ("mean", "prescriptions_per_week", "prescriptions_baseline")
    return specs


def measure(per_hcp: pd.DataFrame, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """Every lift figure from the per-HCP table: overall (key "all") and per tier.

    An HCP without a baseline (none of the weeks before its first suggestion was delivered)
    gets the pooled mean baseline: it then adds no adjustment, and raw and adjusted figures
    cover the same HCPs.
    """
    specs = metric_specs(per_hcp)
    frame_all = per_hcp
    if "prescriptions_per_hcp_week_adjusted" in specs:
        b = per_hcp["prescriptions_baseline"]
        frame_all = per_hcp.assign(prescriptions_baseline=b.fillna(b.mean()))
    out: dict[str, dict[str, Estimate]] = {}
    groups = [("all", frame_all), *[(s, frame_all[frame_all["segment"] == s]) for s in SEGMENTS]]
    for name, (kind, cols, xcol) in specs.items():
        out[name] = {}
        for i, (g, frame) in enumerate(groups):
            h = frame["holdout"].to_numpy(dtype=bool)
            kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed + 7919 * i}
            if kind == "ratio":
                num, den = cols.split("/")
                out[name][g] = bootstrap_ratio_diff(frame[num].to_numpy(), frame[den].to_numpy(), h, **kw)
            else:
                out[name][g] = bootstrap_diff(frame[cols].to_numpy(), h, x=None if xcol is None else frame[xcol].to_numpy(), **kw)
    return out


def safe_url(url: str) -> str:
    """The URL with any password masked, for messages and reports."""
    try:
        import sqlalchemy as sa

        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given (it has no password to hide then)
        return url


def read_audit(audit_url: str, since: datetime | None = None, until: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """(suggestions delivered in [since, until) by ``as_of``, their feedback, each served HCP's first suggestion time in the whole trail).

    Selected in SQL on the trail's indexes, never by loading whole tables; a clear error when the
    trail is missing, unreachable, empty, or holds nothing in the window.
    """
    import sqlalchemy as sa

    shown = safe_url(audit_url)
    if audit_url.startswith("sqlite:///") and not Path(audit_url[len("sqlite:///") :]).exists():
        raise LiftError(f"audit_url {shown}: no such SQLite file (serve some suggestions first, or pass --audit-url)")
    from serving.audit import AuditTrail, AuditTrailMissing

    try:
        audit = AuditTrail(audit_url)
        try:
            n, lo, hi = audit.span()
            if n == 0:
                raise LiftError(f"audit trail {shown}: table 'suggestions' has no rows (nothing was served yet)")
            s = audit.read_window(since, until, delivered_only=True)
            if s.empty:
                raise LiftError(
                    f"audit trail {shown}: no suggestions between {since or 'the start'} and {until or 'now'} that reached "
                    f"their caller (table 'suggestions' has as_of from {lo} to {hi})"
                )
            fb, first_seen = audit.feedback_in_window(since, until), audit.first_seen(since, until)
        finally:
            audit.close()
    except (sa.exc.DBAPIError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError, AuditTrailMissing) as exc:  # unreachable, refused, not a database, bad URL
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise LiftError(f"audit_url {shown}: cannot read the audit trail ({first})") from None
    return s, fb, first_seen


def _contract_frame(d: Path, name: str, columns: list[str], required: bool) -> pd.DataFrame | None:
    """One contract table's columns; a missing table is None (or an error when ``required``), a missing column an error naming it."""
    from contract.io import read_frame, table_path

    path = table_path(d, name)
    if not path.exists():
        if required:
            raise LiftError(f"data_dir {d}: table '{name}' ({path.name}) not found; import the CRM export holding it with `nba import`")
        return None
    import pyarrow.parquet as pq

    present = set(pq.read_schema(path).names)
    missing = [c for c in columns if c not in present]
    if missing:
        raise LiftError(f"{path}: column(s) {missing} missing (`nba lift` needs {columns} of table '{name}')")
    frame = read_frame(d, name, columns=columns)
    frame.attrs["source"] = str(path)
    return frame


@dataclass
class LiftInputs:
    """What `nba lift` reads: the window's suggestions, all feedback, and the contract tables (None where absent)."""

    suggestions: pd.DataFrame
    feedback: pd.DataFrame
    first_seen: pd.Series
    outcomes: pd.DataFrame | None
    tiers: pd.Series | None
    tier_source: str
    touchpoints: pd.DataFrame | None


def read_inputs(audit_url: str, data_dir: str | Path | None, since: datetime | None = None, until: datetime | None = None) -> LiftInputs:
    """The audit trail's suggestions in the window [since, until) by suggestion time ``as_of``, its feedback, and the contract dataset's tables."""
    s, fb, first_seen = read_audit(audit_url, since, until)
    shown = safe_url(audit_url)
    arm = assignments(s)
    window = f"between {since or 'the start'} and {until or 'now'}"
    if arm.sum() < 2:
        raise LiftError(
            f"audit trail {shown}: {int(arm.sum())} holdout HCP(s) {window} (table 'suggestions', column 'policy' = 'holdout'); "
            "a lift needs at least 2: set the serving config's exploration.holdout_share > 0"
        )
    if (~arm).sum() < 2:
        raise LiftError(
            f"audit trail {shown}: {int((~arm).sum())} served (non-holdout) HCP(s) {window} (table 'suggestions', column 'policy'); a lift needs at least 2"
        )
    if data_dir is None:
        raise LiftError("no contract dataset: pass --data DIR (the `nba import` target with tables 'outcomes' and 'hcps') or set lift.data_dir")
    d = Path(data_dir)
    if not d.is_dir():
        raise LiftError(f"data_dir {d}: no such contract dataset (outcomes and tiers are read from it; run `nba import` into it)")
    outcomes = _contract_frame(d, "outcomes", OUTCOME_COLUMNS, required=True)
    hcps = _contract_frame(d, "hcps", ["hcp_id", "segment"], required=False)
    history = _contract_frame(d, "hcp_profile_history", ["hcp_id", "valid_from", "segment"], required=False)
    touchpoints = _contract_frame(d, "touchpoints", TOUCH_COLUMNS, required=False)
    if hcps is None and history is None:
        tiers, source = None, "serving features recorded with the first suggestion (no hcps table)"
    else:
        tiers = contract_tiers(hcps, history, first_seen.reindex(arm.index))
        source = "hcp_profile_history as of the first suggestion, else hcps" if history is not None else "hcps"
    return LiftInputs(s, fb, first_seen, outcomes, tiers, source, touchpoints)


def _say(progress: bool, msg: str) -> None:
    if progress:
        print(f"[lift] {msg}", file=sys.stderr, flush=True)


def lift_job(
    audit_url: str,
    data_dir: str | Path | None,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    baseline_weeks: int = 12,
    progress: bool = False,
) -> dict[str, Any]:
    """Measure everything; returns {"per_hcp", "estimates", "acceptance", "figures"} (figures: flat JSON-ready)."""
    _say(progress, f"reading the audit trail {safe_url(audit_url)}")
    inp = read_inputs(audit_url, data_dir, since, until)
    s, fb = inp.suggestions, inp.feedback
    _say(progress, f"{len(s)} suggestions; outcomes, tiers and touchpoints from {data_dir}; per-HCP table")
    per_hcp = hcp_table(s, fb, inp.outcomes, inp.tiers, baseline_weeks, first_seen=inp.first_seen, touchpoints=inp.touchpoints)
    _say(progress, f"bootstrap over {len(per_hcp)} HCPs ({n_boot} replicates per metric and tier)")
    est = measure(per_hcp, n_boot=n_boot, confidence=confidence, seed=seed)
    acc = acceptance_rates(s, fb, inp.tiers)
    a = per_hcp.attrs
    figures: dict[str, Any] = {
        "audit_url": safe_url(audit_url),
        "data_dir": str(data_dir),
        "weeks": len(a["weeks"]),
        "first_week": a["weeks"][0],
        "last_week": a["weeks"][-1],
        "hcps_served": int((~per_hcp["holdout"]).sum()),
        "hcps_holdout": int(per_hcp["holdout"].sum()),
        "holdout_share": float(per_hcp["holdout"].mean()),
        "suggestions": int(len(s)),
        "feedback_rows": int(fb["suggestion_id"].isin(set(s["suggestion_id"])).sum()),
        "confidence": confidence,
        "n_boot": n_boot,
        "seed": seed,
        "bootstrap_unit": "hcp",
        "tier_source": inp.tier_source,
        "hcps_without_tier": int(per_hcp["segment"].isna().sum()),
        "touchpoints_used": "touches_per_week" in per_hcp,
        "outcome_weeks_in_window": a.get("outcome_weeks_in_window", 0),
        "hcps_without_outcome_rows": a.get("hcps_without_outcome_rows"),
        "baseline_weeks": baseline_weeks,
        "baseline_weeks_covered": a.get("baseline_weeks_covered", 0),
        "hcps_without_baseline": int(per_hcp["prescriptions_baseline"].isna().sum()) if "prescriptions_baseline" in per_hcp else None,
    }
    for seg in SEGMENTS:
        g = per_hcp[per_hcp["segment"] == seg]
        figures[f"hcps_served_tier_{seg}"], figures[f"hcps_holdout_tier_{seg}"] = int((~g["holdout"]).sum()), int(g["holdout"].sum())
    for metric, by in est.items():
        for g, e in by.items():
            figures.update(e.as_dict(metric if g == "all" else f"{metric}_tier_{g}"))
    raw, adj = est.get("prescriptions_per_hcp_week", {}).get("all"), est.get("prescriptions_per_hcp_week_adjusted", {}).get("all")
    if raw is not None and adj is not None and raw.ci_high > raw.ci_low:
        figures["prescriptions_adjusted_ci_width_ratio"] = (adj.ci_high - adj.ci_low) / (raw.ci_high - raw.ci_low)
    if baseline_weeks == 0:
        _say(progress, "lift.baseline_weeks is 0: no baseline-adjusted prescriptions")
    elif "prescriptions_per_hcp_week_adjusted" not in est:
        _say(progress, f"no outcomes in the {baseline_weeks} weeks before the first suggestions: no baseline-adjusted prescriptions")
    figures["acceptance_rate"] = float(acc["overall"]["rate"].iloc[0])
    for _, r in acc["by_tier"].iterrows():
        figures[f"acceptance_rate_tier_{r['segment']}"] = float(r["rate"])
    for _, r in acc["by_week"].iterrows():
        figures[f"acceptance_rate_week_{pd.Timestamp(r['week']).date().isoformat()}"] = float(r["rate"])
    return {"per_hcp": per_hcp, "estimates": est, "acceptance": acc, "figures": figures}


def default_window(since: str | None, until: str | None) -> tuple[datetime | None, datetime | None]:
    """Parse --since/--until (ISO dates or times; naive = UTC)."""

    def parse(text: str | None, flag: str) -> datetime | None:
        if not text:
            return None
        try:
            t = datetime.fromisoformat(text)
        except ValueError as exc:
            raise LiftError(f"{flag}: {text!r} is not an ISO date or time ({exc})") from None
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t

    a, b = parse(since, "--since"), parse(until, "--until")
    if a is not None and b is not None and b <= a:
        raise LiftError(f"--until {until} must be after --since {since}")
    return a, b


__all__ = [
    "Estimate",
    "LiftError",
    "LiftInputs",
    "acceptance_rates",
    "assignments",
    "bootstrap_diff",
    "bootstrap_ratio_diff",
    "cluster_means",
    "contract_tiers",
    "cuped_theta",
    "default_window",
    "hcp_table",
    "lift_job",
    "measure",
    "metric_specs",
    "prescription_table",
    "read_inputs",
    "touch_table",
]
