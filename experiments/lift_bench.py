"""`nba bench lift`: closed-loop runs over seeds; how often the measured lift's interval covers the true lift.

Evaluation code: it reads the closed loop's kept-apart truth, which `nba lift` never does.
The true lift is the average effect over the measured HCPs (everyone served minus everyone
held out, from the lock-step counterfactual worlds); the within-sample difference of expected
values between the observed arms is reported beside it.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import SEGMENTS

# Measured metric -> the truth column it estimates.
PAIRS = {
    "responses_per_hcp_week": "expected_responses",
    "prescriptions_per_hcp_week": "expected_prescriptions",
    "prescriptions_per_hcp_week_adjusted": "expected_prescriptions",
}


def compare_to_truth(estimates: dict[str, dict[str, Any]], truth: dict[str, float]) -> list[dict[str, Any]]:
    """One row per (metric, group): measured lift, interval, true lift (ATE and within-sample), covered?"""
    rows = []
    for metric, col in PAIRS.items():
        for g in ("all", *SEGMENTS):
            e = estimates.get(metric, {}).get(g)
            ate = truth.get(f"{col}:{g}:ate", np.nan)
            if e is None or not np.isfinite(e.lift) or not np.isfinite(ate):
                continue
            sample = truth.get(f"{col}:{g}:sample", np.nan)
            rows.append(
                {
                    "metric": metric,
                    "group": g,
                    "lift": e.lift,
                    "ci_low": e.ci_low,
                    "ci_high": e.ci_high,
                    "true_lift": ate,
                    "true_lift_sample": sample,
                    "covered": bool(e.ci_low <= ate <= e.ci_high),
                    "covered_sample": bool(e.ci_low <= sample <= e.ci_high) if np.isfinite(sample) else None,
                }
            )
    return rows


def coverage_bench(
    data_dir: str | Path, workdir: str | Path, lift_cfg: Any, *, seeds: int = 3, serving_cfg: Any = None, model: Any = None, progress: bool = True
) -> dict[str, Any]:
    """Run the closed loop for ``seeds`` seeds, measure the lift of each, compare with the truth; return figures."""
    from experiments.closed_loop import TRUTH_FILE, run_closed_loop, true_lift
    from experiments.lift import lift_job

    workdir = Path(workdir)
    rows: list[dict[str, Any]] = []
    walls = []
    base = lift_cfg.closed_loop
    summary: dict[str, Any] = {}
    for i in range(seeds):
        cl = base.model_copy(update={"seed": base.seed + i, "counterfactual": True})
        out = workdir / f"seed-{cl.seed}"
        shutil.rmtree(out, ignore_errors=True)  # a bench run starts from an empty audit trail
        if progress:
            print(f"seed {cl.seed}: closed loop, {cl.weeks} weeks", flush=True)
        t0 = time.perf_counter()
        summary = run_closed_loop(data_dir, out, cl, serving_cfg=serving_cfg, model=model, progress=progress)
        walls.append(time.perf_counter() - t0)
        res = lift_job(
            summary["audit_url"],
            summary["data_dir"],
            n_boot=lift_cfg.n_boot,
            confidence=lift_cfg.confidence,
            seed=lift_cfg.seed,
            baseline_weeks=lift_cfg.baseline_weeks,
        )
        truth = true_lift(pd.read_parquet(out / "_ground_truth" / TRUTH_FILE), res["per_hcp"].index)
        for r in compare_to_truth(res["estimates"], truth):
            rows.append({"seed": cl.seed, **r})
        if progress:
            f = res["figures"]
            print(
                f"seed {cl.seed}: responses/HCP-week lift {f['responses_per_hcp_week_lift']:.4f} "
                f"[{f['responses_per_hcp_week_ci_low']:.4f}, {f['responses_per_hcp_week_ci_high']:.4f}], "
                f"true {truth['expected_responses:all:ate']:.4f}",
                flush=True,
            )
    df = pd.DataFrame(rows)
    figures: dict[str, Any] = {
        "seeds": seeds,
        "weeks": base.weeks,
        "hcps": summary.get("hcps"),
        "holdout_share": base.holdout_share,
        "confidence": lift_cfg.confidence,
        "model_version": summary.get("model_version"),
        "closed_loop_wall_s_median": float(np.median(walls)),
    }
    for metric in PAIRS:
        m = df[df["metric"] == metric] if len(df) else df
        if not len(m):
            continue
        overall = m[m["group"] == "all"]
        figures[f"{metric}_coverage_overall"] = float(overall["covered"].mean())
        figures[f"{metric}_coverage_overall_and_tiers"] = float(m["covered"].mean())
        figures[f"{metric}_cases"] = int(len(m))
        figures[f"{metric}_true_lift_mean"] = float(overall["true_lift"].mean())
        figures[f"{metric}_measured_lift_mean"] = float(overall["lift"].mean())
        figures[f"{metric}_ci_width_mean"] = float((overall["ci_high"] - overall["ci_low"]).mean())
        for _, r in overall.iterrows():
            s = int(r["seed"])
            figures[f"{metric}_seed{s}_lift"] = float(r["lift"])
            figures[f"{metric}_seed{s}_ci_low"] = float(r["ci_low"])
            figures[f"{metric}_seed{s}_ci_high"] = float(r["ci_high"])
            figures[f"{metric}_seed{s}_true_lift"] = float(r["true_lift"])
    if len(df):
        figures["coverage_all_cases"] = float(df["covered"].mean())
        cs = df["covered_sample"].dropna()
        figures["coverage_within_sample_truth"] = float(cs.astype(float).mean()) if len(cs) else float("nan")
        out = workdir / "coverage.csv"
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(".coverage.csv.tmp")
        df.to_csv(tmp, index=False)
        tmp.replace(out)
        figures["cases_csv"] = str(out)
    return figures
