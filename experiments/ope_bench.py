"""`nba bench ope`: does the off-policy estimate of the served policy cover its true value, across worlds?

Per (world, seed): simulate a year, build the feature store, train the default model on the
training weeks, then estimate the served policy's value on the test weeks from the logs alone
(training.served_ope: as `nba evaluate` does) twice, with the logged propensities and with them
removed (the reps' policy estimated, as on CRM logs without propensities). The simulator's truth
(the served policy's true P(response) on the same logged decisions, experiments.sim_judge.ope_truth)
judges each estimator's interval. Reported: coverage and median absolute error relative to the
truth per estimator, the verdicts, and the overlap diagnostics. Worlds and seeds come from
configs/ope_bench.yaml's ``report`` split; its ``select`` split (where the estimator and thresholds
may be chosen) shares none of them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ESTIMATORS = ("ips", "snips", "dm", "dr", "switch_dr", "dr_os")


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _variant(
    bundle: Any, prep: Any, data: Any, ope_cfg: Any, seed: int, batch_size: int, *, drop_propensity: bool
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """(figures, rows, usable) of the served policy's estimates on ``data``; with ``drop_propensity`` the logs' propensities are removed first."""
    from training import served_ope

    if drop_propensity:
        data = data.subset(np.arange(len(data)))
        data.arrays["propensity"] = np.full(len(data), np.nan, dtype=np.float32)
    ctx = served_ope.build_context(bundle, prep, data, propensity="auto", seed=seed, contentless=bundle.contentless)
    masks = served_ope.served_masks(bundle, data, prep.item_products, prep.hcp_products)
    rows = served_ope.served_rows(bundle, data, ctx, epsilon=ope_cfg.epsilon, top_m=ope_cfg.top_m, batch_size=batch_size, masks=masks)
    _, figures = served_ope.estimates(rows, ope_cfg, seed)
    figures.update(ctx.behaviour_figures)
    return figures, rows, served_ope.usable(rows)


def run_world(world: str, seed: int, cfg: Any) -> dict[str, Any]:
    """One (world, seed): simulate, train, estimate with logged and with estimated propensities, judge against the truth."""
    from experiments.sim_judge import ope_truth
    from experiments.worlds_bench import simulate_world, train_world
    from training.artifacts import load_bundle

    t0 = time.perf_counter()
    workdir, data_dir, features_cfg = simulate_world(world, seed, cfg, spare_days=14)
    # The bundle's vocabulary and scaler are the ones fitted on prep's training weeks: its encoding is the model's.
    bundle_dir, tcfg, prep = train_world(data_dir, workdir, features_cfg, cfg.epochs, seed, cfg.training)
    t_train = time.perf_counter() - t0
    ope_cfg = tcfg.ope.model_copy(update={"n_boot": cfg.n_boot})
    bundle = load_bundle(bundle_dir)
    data = prep.test if prep.test is not None and len(prep.test) else prep.val
    out: dict[str, Any] = {"world": world, "seed": seed, "test_rows": len(data)}
    for variant, drop in (("logged", False), ("estimated", True)):
        figures, rows, keep = _variant(bundle, prep, data, ope_cfg, seed, tcfg.batch_size, drop_propensity=drop)
        truth, covered = ope_truth(data_dir, rows, data, bundle.vocab, keep)
        out[f"{variant}_truth"] = truth
        out[f"{variant}_truth_mass_covered"] = covered
        for est in ESTIMATORS:
            if f"ope_{est}_value" not in figures:
                continue
            v, lo, hi = figures[f"ope_{est}_value"], figures[f"ope_{est}_ci_low"], figures[f"ope_{est}_ci_high"]
            out[f"{variant}_{est}_value"] = v
            out[f"{variant}_{est}_covers"] = bool(lo <= truth <= hi)
            out[f"{variant}_{est}_abs_error_rel"] = abs(v - truth) / truth if truth else float("nan")
            out[f"{variant}_{est}_ci_width"] = hi - lo
        for key in (
            "ope_verdict_trusted",
            "ope_diag_ess",
            "ope_diag_support_mass",
            "ope_diag_mean_weight",
            "ope_feasible_logged_share",
            "ope_rows",
            "behaviour_heldout_log_loss",
            "behaviour_marginal_log_loss",
            "behaviour_ece",
        ):
            if key in figures:
                out[f"{variant}_{key.replace('ope_', '')}"] = figures[key]
    out["seconds"] = time.perf_counter() - t0
    out["train_s"] = t_train
    return out


def summarise(rows: list[dict[str, Any]], chosen: str) -> dict[str, Any]:
    """Coverage and median relative absolute error per estimator and propensity variant; the chosen estimator's against the targets."""
    out: dict[str, Any] = {"runs": len(rows)}
    for variant in ("logged", "estimated"):
        for est in ESTIMATORS:
            cov = [r[f"{variant}_{est}_covers"] for r in rows if f"{variant}_{est}_covers" in r and np.isfinite(r[f"{variant}_truth"])]
            err = [
                r[f"{variant}_{est}_abs_error_rel"] for r in rows if f"{variant}_{est}_abs_error_rel" in r and np.isfinite(r[f"{variant}_{est}_abs_error_rel"])
            ]
            if cov:
                out[f"{variant}_{est}_coverage"] = float(np.mean(cov))
            if err:
                out[f"{variant}_{est}_median_abs_error_rel"] = float(np.median(err))
        trusted = [bool(r.get(f"{variant}_verdict_trusted")) for r in rows]
        out[f"{variant}_verdict_trusted_share"] = float(np.mean(trusted)) if trusted else float("nan")
        ess = [r[f"{variant}_diag_ess"] for r in rows if f"{variant}_diag_ess" in r]
        out[f"{variant}_ess_median"] = float(np.median(ess)) if ess else float("nan")
    out["chosen_estimator"] = chosen
    for variant in ("logged", "estimated"):
        cov, err = out.get(f"{variant}_{chosen}_coverage", float("nan")), out.get(f"{variant}_{chosen}_median_abs_error_rel", float("nan"))
        out[f"{variant}_chosen_coverage_ge_0_90"] = bool(cov >= 0.90)
        out[f"{variant}_chosen_median_error_le_0_10"] = bool(err <= 0.10)
    return out


def plot(rows: list[dict[str, Any]], path: Path, chosen: str) -> None:
    """Per run the chosen estimator's interval (both propensity variants) against the truth: one colour per series."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(rows)), 4))
    x = np.arange(len(rows))
    colours = {"logged": "tab:blue", "estimated": "tab:orange"}
    for j, variant in enumerate(("logged", "estimated")):
        v = np.array([r.get(f"{variant}_{chosen}_value", np.nan) for r in rows])
        w = np.array([r.get(f"{variant}_{chosen}_ci_width", np.nan) for r in rows])
        ax.errorbar(x + (j - 0.5) * 0.25, v, yerr=w / 2, fmt="o", color=colours[variant], label=f"{chosen}, {variant} propensities (interval centred)")
    ax.plot(x, [r["logged_truth"] for r in rows], "k_", markersize=14, label="truth (served policy)")
    ax.set_xticks(x, [f"{r['world']}/{r['seed']}" for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("P(response) per logged decision")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_ope(cfg: Any, split: str = "report", *, worlds: list[str] | None = None, seeds: list[int] | None = None, chosen: str = "dr") -> dict[str, Any]:
    """Every (world, seed) of the split: rows written to the workdir, the summary returned (load printed beside it)."""
    sp = cfg.split(split)
    pairs = [(w, s) for w in (worlds or sp.worlds) for s in (seeds or sp.seeds)]
    other = cfg.split("select" if split == "report" else "report")
    if split == "report" and {s for _, s in pairs} & set(other.seeds):
        raise ValueError("the report split never uses a select seed")
    Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()[0]
    rows: list[dict[str, Any]] = []
    for i, (world, seed) in enumerate(pairs, 1):
        _log(f"{i}/{len(pairs)} world {world} seed {seed}: simulate, train, estimate")
        row = run_world(world, seed, cfg)
        _log(
            f"{world}/{seed}: truth {row['logged_truth']:.3f}, {chosen} {row.get(f'logged_{chosen}_value', float('nan')):.3f} "
            f"(covers {row.get(f'logged_{chosen}_covers')}), estimated-propensity {chosen} {row.get(f'estimated_{chosen}_value', float('nan')):.3f} "
            f"(covers {row.get(f'estimated_{chosen}_covers')}), {row['seconds']:.0f} s"
        )
        rows.append(row)
        (Path(cfg.workdir) / f"rows-{split}.json").write_text(json.dumps(rows, indent=1, default=float))
    summary = summarise(rows, chosen)
    plot(rows, Path(cfg.workdir) / f"ope-coverage-{split}.png", chosen)
    summary.update(
        split=split,
        hcps=cfg.hcps,
        days=cfg.days,
        epochs=cfg.epochs,
        n_boot=cfg.n_boot,
        load_avg_1m_start=load_start,
        load_avg_1m_end=os.getloadavg()[0],
        rows_path=str(Path(cfg.workdir) / f"rows-{split}.json"),
        plot_path=str(Path(cfg.workdir) / f"ope-coverage-{split}.png"),
    )
    return summary


__all__ = ["bench_ope", "run_world", "summarise"]
