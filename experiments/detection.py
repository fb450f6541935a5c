"""`nba bench monitor-detection`: does `nba monitor` flag injected drift and stay quiet without it?

Evaluation code. For each closed-loop seed and each scenario the served system runs against the
simulator (``experiments.closed_loop``) for ``reference_weeks + current_weeks`` weeks, drift
injected at the first current week (``simulator.drift``): none (same distribution), a channel's
response collapsing (the channel served most in the seed's no-drift run), a new content topic
appearing, or a population shift (a tier-skewed cohort onboarded). The monitor then compares the
audit trail's current weeks (from one week after the drift) with its reference weeks, exactly as
`nba monitor --reference A..B --current C..D` does. Detection rate: flagged drift-injected
cases; false-alarm rate: flagged no-drift cases.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

FLAGS = ("drift_detected", "data_drift", "population_drift", "response_drift", "activity_drift", "sequence_drift", "prediction_drift", "catalogue_drift")
# The served model's content vocabulary, kept beside the cases so --rescore DIR can re-run the catalogue check.
KNOWN_CONTENT = "model_content_ids.json"


def scenarios(at_week: int, channel: str, topic: str = "guideline") -> dict[str, dict[str, Any]]:
    """Drift specs (``DriftConfig`` form, weeks relative to the first served week) by scenario name."""
    return {
        "none": {},
        "channel_collapse": {"events": [{"week": at_week, "channel": channel, "delta_logit": -3.0}]},
        "new_topic": {"content": [{"week": at_week, "topic": topic, "items_per_product": 6, "quality": 1.5}]},
        "population_shift": {"population": [{"week": at_week, "share": 0.3, "tier_weights": [0.0, 0.2, 1.0, 3.0]}]},
    }


def _windows(first_week_start: str, burn_in_weeks: int, reference_weeks: int, current_weeks: int, lag: int) -> tuple[str, str]:
    start = dt.date.fromisoformat(first_week_start) + dt.timedelta(weeks=burn_in_weeks)
    ref = f"{start}..{start + dt.timedelta(weeks=reference_weeks)}"
    cur = f"{start + dt.timedelta(weeks=reference_weeks + lag)}..{start + dt.timedelta(weeks=reference_weeks + current_weeks)}"
    return ref, cur


def evaluate_case(
    audit_url: str, reference: str, current: str, monitor_cfg: Any, data_dir: str | Path | None = None, known_content: list[str] | None = None
) -> dict[str, Any]:
    """The monitor's comparison of two audit windows (no report files, no MLflow run).

    With ``data_dir`` (the served contract data) and ``known_content`` (the served model's content
    vocabulary) the approved catalogue is checked too, as `nba monitor` does.
    """
    from experiments import drift_stats as ds
    from experiments.monitor import catalogue_check, compare, parse_window, read_audit_window, read_catalogue, read_responses

    rw, cw = parse_window(reference, "--reference"), parse_window(current, "--current")
    ref, cur = read_audit_window(audit_url, rw), read_audit_window(audit_url, cw)
    if ref.empty or cur.empty:
        raise ValueError(f"{audit_url}: empty window (reference {len(ref)} rows, current {len(cur)} rows)")
    catalogue = None
    if data_dir is not None and known_content is not None:
        catalogue = catalogue_check(read_catalogue(data_dir), known_content, cur, ref)
    return compare(
        ds.served_features(ref),
        ds.served_features(cur),
        ds.served_predictions(ref),
        ds.served_predictions(cur),
        monitor_cfg,
        read_responses(audit_url, rw),
        read_responses(audit_url, cw),
        catalogue,
    )


def rescore(cases: list[dict[str, Any]], thresholds: Any) -> pd.DataFrame:
    """Re-apply the verdict with ``thresholds`` to stored comparisons (threshold tuning without re-simulating)."""
    from experiments import drift_stats as ds

    rows = []
    for c in cases:
        s = c["summary"]
        v = ds.verdict(
            pd.DataFrame(s["features"]),
            pd.DataFrame(s["sequences"]),
            s["predictions"],
            (s["predictions"] or {}).get("score_wasserstein_normed"),
            s["sequence_new_content_share"],
            thresholds,
            s.get("responses"),
            s.get("catalogue"),
        )
        rows.append({"seed": c["seed"], "scenario": c["scenario"], **{k: v[k] for k in FLAGS}})
    return pd.DataFrame(rows)


def rates(table: pd.DataFrame) -> dict[str, float]:
    """Detection rate per drift scenario and overall, false-alarm rate on the no-drift cases."""
    out: dict[str, float] = {}
    drift = table[table["scenario"] != "none"]
    none = table[table["scenario"] == "none"]
    for name, g in drift.groupby("scenario"):
        out[f"detection_rate_{name}"] = float(g["drift_detected"].mean())
    out["detection_rate"] = float(drift["drift_detected"].mean()) if len(drift) else float("nan")
    out["false_alarm_rate"] = float(none["drift_detected"].mean()) if len(none) else float("nan")
    return out


def responsive_channel(audit_url: str, window: str) -> str:
    """The channel with the most positive responses (opened / attended feedback) to served suggestions in ``window``."""
    import sqlalchemy as sa

    from experiments.monitor import parse_window
    from serving.audit import AuditTrail, feedback, suggestions

    w = parse_window(window, "--reference")
    trail = AuditTrail(audit_url)
    try:
        stmt = (
            sa.select(suggestions.c.channel, sa.func.count())
            .join(feedback, feedback.c.suggestion_id == suggestions.c.suggestion_id)
            .where(feedback.c.outcome.in_(["opened", "attended"]), suggestions.c.as_of >= w.start, suggestions.c.as_of < w.end)
            .group_by(suggestions.c.channel)
            .order_by(sa.func.count().desc())
        )
        with trail.engine.connect() as conn:
            top = conn.execute(stmt).first()
    finally:
        trail.close()
    if top is None:
        raise ValueError(f"{audit_url}: no positive responses in {window} to pick a channel to collapse")
    return str(top[0])


def detection_bench(
    cfg: Any,
    data_dir: str | Path,
    workdir: str | Path,
    *,
    model: Any = None,
    seeds: int = 5,
    burn_in_weeks: int = 10,
    reference_weeks: int = 3,
    current_weeks: int = 3,
    lag: int = 1,
    first_seed: int = 0,
    progress: bool = True,
    only: tuple[str, ...] | None = None,
    collapse_channel: str | None = None,
) -> dict[str, Any]:
    """Closed-loop runs per seed and scenario, the monitor on each; detection and false-alarm rates (``cfg``: ``ExperimentsConfig``)."""
    from experiments.closed_loop import run_closed_loop
    from experiments.config import serving_config

    if current_weeks <= lag:
        raise ValueError(f"current_weeks ({current_weeks}) must exceed the lag ({lag}): the current window would be empty")
    unknown = sorted(set(only or ()) - set(scenarios(0, "visit")))
    if unknown:
        raise ValueError(f"--scenarios: unknown {unknown}; known: {', '.join(scenarios(0, 'visit'))}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scfg = serving_config(cfg)
    base = cfg.lift.closed_loop
    cases: list[dict[str, Any]] = []
    walls: list[float] = []
    known = [str(c) for c in model.bundle.vocab.ids] if model is not None else None
    if known is not None:
        (workdir / KNOWN_CONTENT).write_text(json.dumps(known))
    # Serving first runs burn_in_weeks: switching from the logging policy to the model moves every
    # history feature (90-day counts, the last 20 touches) for months; monitoring starts after.
    weeks = burn_in_weeks + reference_weeks + current_weeks
    for seed in range(first_seed, first_seed + seeds):
        channel = collapse_channel
        for name in only or ("none", "channel_collapse", "new_topic", "population_shift"):
            spec = scenarios(burn_in_weeks + reference_weeks, channel or "wechat_push")[name]
            out = workdir / f"seed{seed}-{name}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh, empty audit trail per case
            cl = base.model_copy(update={"weeks": weeks, "seed": seed, "counterfactual": False, "drift": spec})
            if progress:
                print(f"[detection] seed {seed} {name}: closed loop {weeks} weeks", flush=True)
            t0 = time.perf_counter()
            summary = run_closed_loop(data_dir, out, cl, serving_cfg=scfg, model=model, progress=progress)
            walls.append(time.perf_counter() - t0)
            ref, cur = _windows(summary["first_week_start"], burn_in_weeks, reference_weeks, current_weeks, lag)
            if name == "none" and collapse_channel is None:
                # Collapse the channel that brings the most responses: drift where it matters.
                channel = responsive_channel(summary["audit_url"], ref)
            result = evaluate_case(summary["audit_url"], ref, cur, cfg.monitor, summary["data_dir"], known)
            case = {"seed": seed, "scenario": name, "drift": spec, "reference": ref, "current": cur, "summary": result}
            cases.append(case)
            if progress:
                print(
                    f"[detection] seed {seed} {name}: drift {result['drift_detected']} "
                    f"(data {result['data_drift']}, sequences {result['sequence_drift']}, predictions {result['prediction_drift']}, "
                    f"catalogue {result['catalogue_drift']}); "
                    f"{'; '.join(result['reasons'][:2]) or 'quiet'}",
                    flush=True,
                )
    table = rescore(cases, cfg.monitor.thresholds)
    path = workdir / "cases.json"
    tmp = path.with_name(".cases.json.tmp")
    tmp.write_text(json.dumps(cases, default=str))
    tmp.replace(path)
    figures: dict[str, Any] = {
        "seeds": seeds,
        "cases": len(cases),
        "burn_in_weeks": burn_in_weeks,
        "reference_weeks": reference_weeks,
        "current_weeks": current_weeks,
        "lag_weeks": lag,
        "hcps": summary.get("hcps"),
        "model_version": summary.get("model_version"),
        "closed_loop_wall_s_median": float(np.median(walls)),
        **rates(table),
        "cases_json": str(path),
    }
    for name in FLAGS[1:]:
        figures[f"{name}_flag_rate_none"] = float(table.loc[table["scenario"] == "none", name].mean())
    return figures


def cases_from_dir(workdir: Path, monitor_cfg: Any, burn_in_weeks: int, reference_weeks: int, current_weeks: int, lag: int = 1) -> list[dict[str, Any]]:
    """Monitor every finished case folder (``seed<N>-<scenario>`` with its closed_loop.json) of a run, again."""
    cases = []
    known_path = workdir / KNOWN_CONTENT
    known = json.loads(known_path.read_text()) if known_path.is_file() else None
    for case_dir in sorted(workdir.glob("seed*-*")):
        done = case_dir / "closed_loop.json"
        if not done.is_file():
            continue
        summary = json.loads(done.read_text())
        seed, name = case_dir.name[len("seed") :].split("-", 1)
        ref, cur = _windows(summary["first_week_start"], burn_in_weeks, reference_weeks, current_weeks, lag)
        result = evaluate_case(summary["audit_url"], ref, cur, monitor_cfg, summary.get("data_dir"), known)
        cases.append({"seed": int(seed), "scenario": name, "drift": summary["config"]["drift"], "reference": ref, "current": cur, "summary": result})
    return cases


def rescore_file(path: str | Path, thresholds: Any, monitor_cfg: Any = None, weeks: tuple[int, int, int] = (10, 3, 3)) -> dict[str, Any]:
    """Detection figures of stored cases under ``thresholds``: a ``cases.json``, or a run's folder (its audit trails monitored again)."""
    path = Path(path)
    if path.is_dir():
        cases = cases_from_dir(path, monitor_cfg, *weeks)
        if not cases:
            raise ValueError(f"--rescore: {path} holds no finished case (seed<N>-<scenario>/closed_loop.json)")
    elif path.is_file():
        cases = json.loads(path.read_text())
    else:
        raise ValueError(f"--rescore: {path} does not exist (a cases.json or the --workdir of `nba bench monitor-detection`)")
    table = rescore(cases, thresholds)
    figures: dict[str, Any] = {"cases": len(cases), "seeds": int(table["seed"].nunique()), **rates(table), "cases_json": str(path)}
    for name in FLAGS[1:]:
        figures[f"{name}_flag_rate_none"] = float(table.loc[table["scenario"] == "none", name].mean())
    return figures
