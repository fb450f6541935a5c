"""Off-policy evaluation of a model *as it would be served*, from the logs alone.

One place that turns (bundle, logged rows) into estimates a reviewer can trust or reject:
the served policy per logged decision (training.served_policy), propensities where the logs have
none (training.propensity), the estimators with HCP-clustered intervals, overlap diagnostics and a
verdict (training.ope). `nba evaluate`, `nba train`'s selection figure, `nba replay` and
`nba bench ope` all call it, so they estimate the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Context:
    """What a logged decision could take, read once per dataset: support per product and the reps' estimated policy."""

    support: tuple[np.ndarray, np.ndarray] | None = None  # (row codes [N], tables [P, C, V]) for the evaluated rows
    behaviour: Any = None  # training.propensity.BehaviourModel, fitted on the training weeks, or None
    behaviour_figures: dict[str, Any] = field(default_factory=dict)


def served_masks(bundle: Any, data: Any, item_products: Any, hcp_products: Any) -> dict[str, Any]:
    """The per-row masks serving applies before ranking that the logs can show: consent, own product, each channel's items."""
    from contract.schema import CHANNELS
    from training.served_policy import consent_from_static, own_product_rows
    from training.suitability import from_meta

    return {
        "channel_allowed": consent_from_static(data.arrays["static"], bundle.scaler, CHANNELS),
        "item_allowed": own_product_rows(item_products, hcp_products, data.hcp_id, bundle.model.config.n_content),
        "pair_mask": from_meta(bundle.meta, bundle.vocab),
    }


def build_context(bundle: Any, prep: Any, data: Any, *, propensity: str = "auto", seed: int = 0, contentless: Any = None, progress: bool = False) -> Context:
    """Support tables and, where ``data`` has rows without a logged propensity and ``propensity`` is "auto", the reps' estimated policy."""
    import sys

    from training.served_policy import product_support, support_rows

    n_ch, n_v = bundle.model.config.n_channels, bundle.model.config.n_content
    by_product, union = product_support(prep.train, prep.hcp_products, n_ch, n_v)
    ctx = Context(support=support_rows(by_product, union, prep.hcp_products, data.hcp_id))
    p = data.arrays["propensity"].astype(np.float64)
    missing = ~(np.isfinite(p) & (p > 0) & (p <= 1))
    if propensity == "auto" and missing.any() and len(prep.train):
        from training.propensity import behaviour_diagnostics, fit_behaviour

        if progress:
            print(f"estimating the reps' policy: {int(missing.sum())} of {len(p)} logged rows carry no propensity", file=sys.stderr, flush=True)
        ctx.behaviour = fit_behaviour(
            prep.train,
            item_products=prep.item_products,
            hcp_products=prep.hcp_products,
            seed=seed,
            contentless=None if contentless is None else np.asarray(contentless, dtype=bool),
        )
        ctx.behaviour_figures = {f"behaviour_{k}": v for k, v in behaviour_diagnostics(ctx.behaviour, data).items() if isinstance(v, (int, float, str, bool))}
    return ctx


def served_rows(
    bundle: Any,
    data: Any,
    ctx: Context,
    *,
    epsilon: float,
    top_m: int,
    batch_size: int,
    masks: dict[str, Any],
    channel_allowed: np.ndarray | None = None,
    item_allowed: np.ndarray | None = None,
    device: Any = "cpu",
) -> dict[str, np.ndarray]:
    """The served policy's rows (training.served_policy.served_policy_rows) with propensities filled and their source per row.

    ``channel_allowed``/``item_allowed`` narrow serving's masks further (`nba replay`'s rules).
    """
    from training.propensity import LOGGED, fill_propensities
    from training.served_policy import served_policy_rows

    ch = masks.get("channel_allowed")
    if channel_allowed is not None:
        ch = channel_allowed if ch is None else ch & channel_allowed
    it = masks.get("item_allowed")
    if item_allowed is not None:
        it = item_allowed if it is None else it & item_allowed
    rows = served_policy_rows(
        bundle.model,
        data,
        batch_size,
        device,
        epsilon=epsilon,
        top_m=top_m,
        channel_allowed=ch,
        item_allowed=it,
        pair_mask=masks.get("pair_mask"),
        contentless=bundle.contentless,
        calibrator=bundle.calibrator,
        support=ctx.support,
    )
    logged = rows["propensity"]
    estimated = ctx.behaviour.propensity(data) if ctx.behaviour is not None else np.full(len(logged), np.nan)
    if ctx.behaviour is None:
        rows["propensity_source"] = np.where(np.isfinite(logged) & (logged > 0), LOGGED, -1).astype(np.int8)  # -1: none, row dropped
    else:
        rows["propensity"], rows["propensity_source"] = fill_propensities(logged, estimated)
    return rows


def usable(rows: dict[str, np.ndarray]) -> np.ndarray:
    """Rows the estimators can use: a propensity in (0, 1] (logged, served or estimated)."""
    p = rows["propensity"]
    return np.isfinite(p) & (p > 0) & (p <= 1)


def subset(rows: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    """The same rows dict restricted to ``keep``."""
    return {k: v[keep] for k, v in rows.items()}


def estimates(rows: dict[str, np.ndarray], ope_cfg: Any, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(every estimator's Estimate, figures: diagnostics, verdict, the chosen estimator's value) on usable rows."""
    from training import ope

    keep = usable(rows)
    r = subset(rows, keep)
    figures: dict[str, Any] = {"ope_rows": int(keep.sum()), "ope_rows_dropped_no_propensity": int((~keep).sum())}
    if not keep.any():
        figures.update({"ope_verdict_trusted": False, "ope_verdict": "no logged row has a propensity (logged or estimated): nothing to estimate"})
        return {}, figures
    groups = r["hcp_id"]
    est = ope.estimate_all(r, groups=groups, n_boot=ope_cfg.n_boot, alpha=ope_cfg.alpha, seed=seed, tau=ope_cfg.switch_tau, lam=ope_cfg.shrink_lambda)
    diag = ope.diagnostics(r["propensity"], r["pi_logged"], groups=groups, support_mass=r["support_mass"])
    trusted, why = ope.verdict(diag, min_ess=ope_cfg.min_ess, min_support=ope_cfg.min_support)
    figures.update({f"ope_diag_{k}": v for k, v in diag.items()})
    figures["ope_feasible_logged_share"] = float(r["feasible_logged"].mean())
    figures.update({"ope_verdict_trusted": bool(trusted), "ope_verdict": why})
    for name, e in est.items():
        figures.update({f"ope_{name}_value": e.value, f"ope_{name}_ci_low": e.ci_low, f"ope_{name}_ci_high": e.ci_high, f"ope_{name}_ess": e.ess})
    # What the bias-aware interval rests on: how many logged decisions the target would also have
    # taken, and the reward model's error on them (dm_rc - dm; positive: the model under-predicts).
    figures["ope_matched_rows"] = int((r["pi_logged"] > 0).sum())
    figures["ope_reward_model_error"] = est["dm_rc"].value - est["dm"].value
    chosen = est[ope_cfg.estimator]
    figures.update({"ope_estimator": ope_cfg.estimator, "ope_value": chosen.value, "ope_ci_low": chosen.ci_low, "ope_ci_high": chosen.ci_high})
    logged = r["reward"]
    figures["ope_logged_value"] = float(logged.mean())
    diff = ope.paired_difference(
        r,
        ope.logged_rows(logged, r["propensity"]),
        ope_cfg.estimator,
        groups=groups,
        n_boot=ope_cfg.n_boot,
        alpha=ope_cfg.alpha,
        seed=seed,
        tau=ope_cfg.switch_tau,
        lam=ope_cfg.shrink_lambda,
    )
    figures.update({"ope_vs_logged": diff.value, "ope_vs_logged_ci_low": diff.ci_low, "ope_vs_logged_ci_high": diff.ci_high})
    return est, figures


def versus(rows_a: dict[str, np.ndarray], rows_b: dict[str, np.ndarray], ope_cfg: Any, seed: int) -> Any:
    """Policy A minus policy B on the same usable logged rows (same cluster resamples): an Estimate."""
    from training import ope

    keep = usable(rows_a) & usable(rows_b)
    a, b = subset(rows_a, keep), subset(rows_b, keep)
    b["propensity"] = a["propensity"]  # one logging policy: the same propensities on both sides
    return ope.paired_difference(
        a, b, ope_cfg.estimator, groups=a["hcp_id"], n_boot=ope_cfg.n_boot, alpha=ope_cfg.alpha, seed=seed, tau=ope_cfg.switch_tau, lam=ope_cfg.shrink_lambda
    )
