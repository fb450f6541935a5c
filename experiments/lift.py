"""`nba lift`: the measured lift of served suggestions over the randomised holdout, from what was recorded.

Inputs are only what production has: the audit trail (every served suggestion with the policy
that served it, so the holdout assignment is the recorded one, never recomputed), the feedback
on those suggestions (opened / attended = a positive response; accepted / done / dismissed /
snoozed = the rep's decision), and the CRM's weekly outcomes (prescriptions) plus the HCPs'
tiers from the contract dataset.

HCPs are the randomisation unit, so every figure is first reduced to one value per HCP (means
per HCP-week over the window), and intervals come from a bootstrap over HCPs stratified by arm
(a cluster bootstrap: an HCP's weeks stay together). Prescriptions are noisy and HCPs differ
widely in market size, so their lift is also given adjusted for each HCP's pre-window baseline
(CUPED: y - theta (x - mean x), theta re-estimated in every bootstrap replicate); both estimate
the same average effect, the adjusted one with a narrower interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import REP_TIME_CHANNELS, SEGMENTS

POSITIVE = ("opened", "attended")
DECISIONS = ("accepted", "done", "dismissed", "snoozed")
# Suggestions a rep acts on (the rest are sent by marketing automation and get no decision).
REP_CHANNELS = (*REP_TIME_CHANNELS, "wecom_1to1")


class LiftError(ValueError):
    """The recorded data cannot give a lift; the message says which input and why."""


@dataclass(frozen=True)
class Estimate:
    """A difference (served - holdout) with its bootstrap interval and the arms' means."""

    lift: float
    ci_low: float
    ci_high: float
    served: float
    holdout: float
    n_served: int
    n_holdout: int

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Flat figures named ``prefix_*``."""
        return {
            f"{prefix}_lift": self.lift, f"{prefix}_ci_low": self.ci_low, f"{prefix}_ci_high": self.ci_high,
            f"{prefix}_served": self.served, f"{prefix}_holdout": self.holdout,
        }


def _week(ts: pd.Series) -> pd.Series:
    """Monday (UTC date) of each timestamp."""
    t = pd.to_datetime(ts, utc=True)
    return (t.dt.tz_convert("UTC").dt.normalize() - pd.to_timedelta(t.dt.weekday, unit="D")).dt.tz_localize(None)


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


def hcp_table(suggestions: pd.DataFrame, feedback: pd.DataFrame, outcomes: pd.DataFrame | None = None, tiers: pd.Series | None = None,
              baseline_weeks: int = 12) -> pd.DataFrame:
    """One row per HCP served in the window: arm, tier, suggestions/responses per week, prescriptions per week and baseline."""
    if suggestions.empty:
        raise LiftError("audit trail: no suggestions in the window")
    s = suggestions.assign(hcp_id=suggestions["hcp_id"].astype(str), week=_week(suggestions["as_of"]))
    weeks = np.sort(s["week"].unique())
    n_weeks = len(weeks)
    holdout = assignments(s)
    out = pd.DataFrame({"holdout": holdout})
    out.index.name = "hcp_id"
    out["suggestions_per_week"] = s.groupby("hcp_id").size().reindex(out.index).to_numpy() / n_weeks
    fb = feedback[feedback["suggestion_id"].isin(set(s["suggestion_id"]))]
    pos = fb[fb["outcome"].isin(POSITIVE)].drop_duplicates("suggestion_id")
    hcp_of = s.set_index("suggestion_id")["hcp_id"]
    resp = hcp_of.reindex(pos["suggestion_id"]).value_counts()
    out["responses_per_week"] = resp.reindex(out.index).fillna(0).to_numpy() / n_weeks
    out["suggestions"] = out["suggestions_per_week"] * n_weeks
    out["responses"] = out["responses_per_week"] * n_weeks
    if tiers is not None:
        out["segment"] = tiers.reindex(out.index).astype(object).to_numpy()
    else:
        out["segment"] = _tiers_from_features(s).reindex(out.index).to_numpy()
    if outcomes is not None and len(outcomes):
        o = outcomes.assign(hcp_id=outcomes["hcp_id"].astype(str), week=pd.to_datetime(outcomes["week_start"]).dt.tz_localize(None))
        inside = o[o["week"].isin(weeks)]
        out["prescriptions_per_week"] = inside.groupby("hcp_id")["prescriptions"].mean().reindex(out.index).to_numpy()
        if baseline_weeks > 0:
            first = pd.Timestamp(weeks[0])
            before = o[(o["week"] < first) & (o["week"] >= first - pd.Timedelta(weeks=baseline_weeks))]
            out["prescriptions_baseline"] = before.groupby("hcp_id")["prescriptions"].mean().reindex(out.index).to_numpy()
    out.attrs["weeks"] = [pd.Timestamp(w).date().isoformat() for w in weeks]
    return out


def _tiers_from_features(s: pd.DataFrame) -> pd.Series:
    """Tier per HCP from the feature values each suggestion recorded (code or letter)."""
    first = s.drop_duplicates("hcp_id").set_index("hcp_id")["features_json"]

    def seg(text: str) -> Any:
        v = json.loads(text).get("segment") if isinstance(text, str) else None
        if isinstance(v, (int, float)) and 0 <= int(v) < len(SEGMENTS):
            return SEGMENTS[int(v)]
        return v if v in SEGMENTS else None

    return first.map(seg)


def bootstrap_diff(y: np.ndarray, holdout: np.ndarray, *, n_boot: int, confidence: float, seed: int, x: np.ndarray | None = None) -> Estimate:
    """Served minus holdout mean of per-HCP ``y``, percentile bootstrap over HCPs within each arm.

    With a baseline ``x`` the difference is CUPED-adjusted (theta re-fitted in each replicate).
    """
    y = np.asarray(y, dtype=np.float64)
    holdout = np.asarray(holdout, dtype=bool)
    ok = np.isfinite(y) if x is None else np.isfinite(y) & np.isfinite(x)
    y, holdout = y[ok], holdout[ok]
    xs = None if x is None else np.asarray(x, dtype=np.float64)[ok]
    t, c = np.flatnonzero(~holdout), np.flatnonzero(holdout)
    if len(t) < 2 or len(c) < 2:
        return Estimate(np.nan, np.nan, np.nan, float(y[t].mean()) if len(t) else np.nan, float(y[c].mean()) if len(c) else np.nan, len(t), len(c))
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
    if xs is not None:  # the arms' adjusted means, so that served - holdout = lift
        xc = xs - xs.mean()
        theta = float((xc * (y - y.mean())).mean() / (xc**2).mean()) if (xc**2).mean() > 0 else 0.0
        served, held = served - theta * float(xc[t].mean()), held - theta * float(xc[c].mean())
    reps = []
    chunk = max(1, 4_000_000 // max(len(y), 1))  # bound memory: [chunk, n] index blocks
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        reps.append(diff(t[rng.integers(0, len(t), (b, len(t)))], c[rng.integers(0, len(c), (b, len(c)))]))
    boots = np.concatenate(reps)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return Estimate(point, float(lo), float(hi), served, held, len(t), len(c))


def bootstrap_ratio_diff(num: np.ndarray, den: np.ndarray, holdout: np.ndarray, *, n_boot: int, confidence: float, seed: int) -> Estimate:
    """Served minus holdout of sum(num)/sum(den) (e.g. responses per suggestion), bootstrap over HCPs."""
    num, den, holdout = (np.asarray(a) for a in (num, den, holdout))
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
    s = suggestions[suggestions["channel"].isin(REP_CHANNELS)].assign(hcp_id=lambda d: d["hcp_id"].astype(str), week=lambda d: _week(d["as_of"]))
    d = feedback[feedback["outcome"].isin(DECISIONS) & feedback["suggestion_id"].isin(set(s["suggestion_id"]))]
    acc = d.assign(acc=d["outcome"].isin(("accepted", "done"))).groupby("suggestion_id")["acc"].any()
    s = s[s["suggestion_id"].isin(acc.index)].assign(accepted=lambda x: acc.reindex(x["suggestion_id"]).to_numpy(dtype=bool))
    s["arm"] = np.where(s["policy"].eq("holdout"), "holdout", "served")
    s["segment"] = tiers.reindex(s["hcp_id"]).to_numpy() if tiers is not None else _tiers_from_features(s).reindex(s["hcp_id"]).to_numpy()

    def table(keys: list[str]) -> pd.DataFrame:
        g = s.groupby(keys, observed=True)["accepted"].agg(["mean", "size"]).rename(columns={"mean": "rate", "size": "n"})
        return g.reset_index()

    return {"by_week": table(["week"]), "by_week_arm": table(["week", "arm"]), "by_tier": table(["segment"]), "by_tier_arm": table(["segment", "arm"]),
            "overall": pd.DataFrame({"rate": [float(s["accepted"].mean()) if len(s) else np.nan], "n": [len(s)]})}


def measure(per_hcp: pd.DataFrame, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, dict[str, Estimate]]:
    """Every lift figure from the per-HCP table: overall (key "all") and per tier."""
    metrics = {"responses_per_hcp_week": ("responses_per_week", None), "response_rate_per_suggestion": None}
    if "prescriptions_per_week" in per_hcp:
        metrics["prescriptions_per_hcp_week"] = ("prescriptions_per_week", None)
        if "prescriptions_baseline" in per_hcp and per_hcp["prescriptions_baseline"].notna().any():
            metrics["prescriptions_per_hcp_week_adjusted"] = ("prescriptions_per_week", "prescriptions_baseline")
    out: dict[str, dict[str, Estimate]] = {}
    groups = [("all", per_hcp), *[(s, per_hcp[per_hcp["segment"] == s]) for s in SEGMENTS]]
    for name, spec in metrics.items():
        out[name] = {}
        for i, (g, frame) in enumerate(groups):
            h = frame["holdout"].to_numpy(dtype=bool)
            kw = {"n_boot": n_boot, "confidence": confidence, "seed": seed + 7919 * i}
            if spec is None:
                out[name][g] = bootstrap_ratio_diff(frame["responses"].to_numpy(), frame["suggestions"].to_numpy(), h, **kw)
            else:
                ycol, xcol = spec
                out[name][g] = bootstrap_diff(frame[ycol].to_numpy(), h, x=None if xcol is None else frame[xcol].to_numpy(), **kw)
    return out


def read_inputs(audit_url: str, data_dir: str | None, since: datetime | None = None, until: datetime | None = None):
    """(suggestions, feedback, outcomes or None, tiers or None) of the window [since, until) by suggestion time ``as_of``."""
    from pathlib import Path

    from serving.audit import AuditTrail

    if audit_url.startswith("sqlite:///") and not Path(audit_url[len("sqlite:///"):]).exists():
        raise LiftError(f"audit_url {audit_url}: no such SQLite file (serve some suggestions first, or pass --audit-url)")
    audit = AuditTrail(audit_url)
    try:
        s = audit.read("suggestions")
        fb = audit.read("feedback")
    finally:
        audit.close()
    as_of = pd.to_datetime(s["as_of"], utc=True)
    keep = np.ones(len(s), dtype=bool)
    if since is not None:
        keep &= (as_of >= pd.Timestamp(since)).to_numpy()
    if until is not None:
        keep &= (as_of < pd.Timestamp(until)).to_numpy()
    s = s[keep]
    if s.empty:
        raise LiftError(f"audit trail {audit_url}: no suggestions between {since or 'the start'} and {until or 'now'}")
    outcomes = tiers = None
    if data_dir:
        from contract.io import read_frame

        d = Path(data_dir)
        if not d.exists():
            raise LiftError(f"data_dir {d}: no such contract dataset (outcomes and tiers are read from it)")
        try:
            outcomes = read_frame(d, "outcomes", columns=["hcp_id", "week_start", "prescriptions"])
        except FileNotFoundError:
            outcomes = None
        try:  # tiers from the CRM's HCP table; else from the feature values each suggestion recorded
            tiers = read_frame(d, "hcps", columns=["hcp_id", "segment"]).assign(hcp_id=lambda x: x["hcp_id"].astype(str)).set_index("hcp_id")["segment"]
        except FileNotFoundError:
            tiers = None
    return s, fb, outcomes, tiers


def lift_job(audit_url: str, data_dir: str | None, *, since: datetime | None = None, until: datetime | None = None, n_boot: int = 1000,
             confidence: float = 0.95, seed: int = 0, baseline_weeks: int = 12) -> dict[str, Any]:
    """Measure everything; returns {"per_hcp", "estimates", "acceptance", "figures"} (figures: flat JSON-ready)."""
    s, fb, outcomes, tiers = read_inputs(audit_url, data_dir, since, until)
    per_hcp = hcp_table(s, fb, outcomes, tiers, baseline_weeks)
    est = measure(per_hcp, n_boot=n_boot, confidence=confidence, seed=seed)
    acc = acceptance_rates(s, fb, tiers)
    figures: dict[str, Any] = {
        "weeks": len(per_hcp.attrs["weeks"]), "first_week": per_hcp.attrs["weeks"][0], "last_week": per_hcp.attrs["weeks"][-1],
        "hcps_served": int((~per_hcp["holdout"]).sum()), "hcps_holdout": int(per_hcp["holdout"].sum()),
        "holdout_share": float(per_hcp["holdout"].mean()), "suggestions": int(len(s)), "feedback_rows": int(fb["suggestion_id"].isin(set(s["suggestion_id"])).sum()),
        "confidence": confidence, "n_boot": n_boot,
    }
    for metric, by in est.items():
        for g, e in by.items():
            figures.update(e.as_dict(metric if g == "all" else f"{metric}_tier_{g}"))
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
        return t.replace(tzinfo=timezone.utc) if t.tzinfo is None else t

    a, b = parse(since, "--since"), parse(until, "--until")
    if a is not None and b is not None and b <= a:
        raise LiftError(f"--until {until} must be after --since {since}")
    return a, b


__all__ = ["Estimate", "LiftError", "acceptance_rates", "assignments", "bootstrap_diff", "bootstrap_ratio_diff", "hcp_table", "lift_job", "measure", "default_window"]
