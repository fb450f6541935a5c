"""`nba bench ope`: does the off-policy estimate of the served policy cover its true value, across worlds?

Per (world, seed): simulate a year, build the feature store, train the default model on the
training weeks, then estimate the served policy's value on the test weeks from the logs alone
(training.served_ope: as `nba evaluate` does) twice, with the logged propensities and with them
removed (the reps' policy estimated, as on CRM logs without propensities); the served rows and the
truth are cached per run (``cache_path``), so a changed estimator re-judges every run in seconds. The simulator's truth
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

from training.ope import ESTIMATORS


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _variant(
    bundle: Any, prep: Any, data: Any, ope_cfg: Any, seed: int, batch_size: int, *, drop_propensity: bool
) -> tuple[dict[str, Any], dict[str, Any], np.ndarray]:
    """(behaviour figures, rows, usable) of the served policy on ``data``; with ``drop_propensity`` the logs' propensities are removed first."""
    from training import served_ope

    if drop_propensity:
        data = data.subset(np.arange(len(data)))
        data.arrays["propensity"] = np.full(len(data), np.nan, dtype=np.float32)
    ctx = served_ope.build_context(bundle, prep, data, propensity="auto", seed=seed, contentless=bundle.contentless)
    masks = served_ope.served_masks(bundle, data, prep.item_products, prep.hcp_products)
    rows = served_ope.served_rows(bundle, data, ctx, epsilon=ope_cfg.epsilon, top_m=ope_cfg.top_m, batch_size=batch_size, masks=masks)
    rows["logged_channel"] = np.asarray(data.arrays["label_channel"]).astype(np.int64)
    return dict(ctx.behaviour_figures), rows, served_ope.usable(rows)


# What a run's cache keeps per propensity variant: every column the estimators and the judge read.
CACHE_COLUMNS = (
    "reward",
    "propensity",
    "pi_logged",
    "q_logged",
    "q_target",
    "support_mass",
    "feasible_logged",
    "hcp_id",
    "top_prob",
    "top_channel",
    "chosen_channel",
    "logged_channel",
    "propensity_source",
)
VARIANTS = (("logged", False), ("estimated", True))


def cache_path(cfg: Any, world: str, seed: int) -> Path:
    """Where one (world, seed)'s served rows and truth are cached: keyed by everything that changes them (size, epochs, training keys)."""
    import hashlib

    key = json.dumps({"hcps": cfg.hcps, "days": cfg.days, "epochs": cfg.epochs, "training": cfg.training}, sort_keys=True, default=str)
    return Path(cfg.workdir) / "cache" / f"{world}-{seed}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"


def save_run(path: Path, meta: dict[str, Any], variants: dict[str, dict[str, Any]]) -> None:
    """Write one run's cache: per variant its rows (CACHE_COLUMNS), usable mask, truth and behaviour figures; ``meta`` as JSON."""
    arrays: dict[str, np.ndarray] = {}
    info = {"meta": meta, "variants": {}}
    for name, v in variants.items():
        for k in CACHE_COLUMNS:
            if k in v["rows"]:
                col = np.asarray(v["rows"][k])
                arrays[f"{name}/{k}"] = col.astype(str) if col.dtype.kind == "O" else col
        arrays[f"{name}/keep"] = np.asarray(v["keep"], dtype=bool)
        info["variants"][name] = {"truth": v["truth"], "covered": v["covered"], "figures": v["figures"]}
    arrays["info"] = np.array(json.dumps(info, default=float))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


def load_run(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(meta, variants) of a cache written by ``save_run``."""
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        variants: dict[str, dict[str, Any]] = {}
        for name, v in info["variants"].items():
            rows = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"{name}/") and k != f"{name}/keep"}
            variants[name] = {"rows": rows, "keep": z[f"{name}/keep"], **v}
    return info["meta"], variants


def _ope_section(cfg: Any) -> Any:
    """The training config's ``ope`` section with the bench's training keys and resamples."""
    from nba.configuration import load_config
    from training.config import TrainingConfig

    ope_keys = {k: v for k, v in cfg.training.items() if k.startswith("ope.")}
    return load_config(TrainingConfig, "training", overrides=ope_keys).ope.model_copy(update={"n_boot": cfg.n_boot})


def simulate_and_serve(world: str, seed: int, cfg: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Simulate, train and build the served policy's rows with both propensity variants, judged by the simulator's truth: (meta, variants)."""
    from experiments.sim_judge import ope_truth
    from experiments.worlds_bench import simulate_world, train_world
    from training.artifacts import load_bundle

    t0 = time.perf_counter()
    workdir, data_dir, features_cfg = simulate_world(world, seed, cfg, spare_days=14)
    # The bundle's vocabulary and scaler are the ones fitted on prep's training weeks: its encoding is the model's.
    bundle_dir, tcfg, prep = train_world(data_dir, workdir, features_cfg, cfg.epochs, seed, cfg.training)
    t_train = time.perf_counter() - t0
    ope_cfg = tcfg.ope
    bundle = load_bundle(bundle_dir)
    data = prep.test if prep.test is not None and len(prep.test) else prep.val
    variants: dict[str, dict[str, Any]] = {}
    for variant, drop in VARIANTS:
        figures, rows, keep = _variant(bundle, prep, data, ope_cfg, seed, tcfg.batch_size, drop_propensity=drop)
        truth, covered = ope_truth(data_dir, rows, data, bundle.vocab, keep)
        variants[variant] = {"rows": rows, "keep": keep, "truth": truth, "covered": covered, "figures": figures}
    meta = {"test_rows": len(data), "train_s": t_train, "serve_s": time.perf_counter() - t0 - t_train}
    return meta, variants


def judge(world: str, seed: int, meta: dict[str, Any], variants: dict[str, dict[str, Any]], ope_cfg: Any) -> dict[str, Any]:
    """Every estimator's figures on one run's cached rows, each interval judged against the truth."""
    from training import served_ope

    out: dict[str, Any] = {"world": world, "seed": seed, "test_rows": meta["test_rows"]}
    for variant, _ in VARIANTS:
        v = variants[variant]
        _, figures = served_ope.estimates(v["rows"], ope_cfg, seed)
        figures.update(v["figures"])
        truth = v["truth"]
        out[f"{variant}_truth"] = truth
        out[f"{variant}_truth_mass_covered"] = v["covered"]
        for est in ESTIMATORS:
            if f"ope_{est}_value" not in figures:
                continue
            val, lo, hi = figures[f"ope_{est}_value"], figures[f"ope_{est}_ci_low"], figures[f"ope_{est}_ci_high"]
            out[f"{variant}_{est}_value"] = val
            out[f"{variant}_{est}_ci_low"] = lo
            out[f"{variant}_{est}_ci_high"] = hi
            out[f"{variant}_{est}_covers"] = bool(lo <= truth <= hi)
            out[f"{variant}_{est}_abs_error_rel"] = abs(val - truth) / truth if truth else float("nan")
            out[f"{variant}_{est}_ci_width"] = hi - lo
        for key in (
            "ope_verdict_trusted",
            "ope_diag_ess",
            "ope_diag_support_mass",
            "ope_diag_mean_weight",
            "ope_feasible_logged_share",
            "ope_rows",
            "ope_matched_rows",
            "ope_reward_model_error",
            "behaviour_heldout_log_loss",
            "behaviour_marginal_log_loss",
            "behaviour_ece",
        ):
            if key in figures:
                out[f"{variant}_{key.replace('ope_', '')}"] = figures[key]
    return out


def run_world(world: str, seed: int, cfg: Any) -> dict[str, Any]:
    """One (world, seed): simulate, train and serve (or read the run's cache), then estimate and judge both propensity variants.

    The cache (``cache_path``) holds the served rows and the truth, so changing an estimator or
    its interval re-judges every run in seconds; delete ``<workdir>/cache`` to retrain.
    """
    t0 = time.perf_counter()
    path = cache_path(cfg, world, seed)
    cached = path.exists()
    if cached:
        meta, variants = load_run(path)
    else:
        meta, variants = simulate_and_serve(world, seed, cfg)
        save_run(path, meta, variants)
    out = judge(world, seed, meta, variants, _ope_section(cfg))
    out["cached"] = cached
    out["train_s"] = meta["train_s"]
    out["seconds"] = time.perf_counter() - t0
    return out


def summarise(rows: list[dict[str, Any]], chosen: str) -> dict[str, Any]:
    """Coverage, median relative absolute error and median interval width per estimator and propensity variant; the chosen estimator's against the targets."""
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
            width = [r[f"{variant}_{est}_ci_width"] for r in rows if np.isfinite(r.get(f"{variant}_{est}_ci_width", np.nan))]
            if width:  # a narrow interval is the point: coverage alone is won by a blanket
                out[f"{variant}_{est}_median_ci_width"] = float(np.median(width))
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
        # Rows written before the ends were kept carry only the width: draw those centred.
        w = np.array([r.get(f"{variant}_{chosen}_ci_width", np.nan) for r in rows])
        lo = np.array([r.get(f"{variant}_{chosen}_ci_low", v[i] - w[i] / 2) for i, r in enumerate(rows)])
        hi = np.array([r.get(f"{variant}_{chosen}_ci_high", v[i] + w[i] / 2) for i, r in enumerate(rows)])
        yerr = np.vstack([np.maximum(v - lo, 0), np.maximum(hi - v, 0)])
        ax.errorbar(x + (j - 0.5) * 0.25, v, yerr=yerr, fmt="o", color=colours[variant], label=f"{chosen}, {variant} propensities")
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
