"""`nba evaluate`: offline metrics and off-policy estimates of a registered model, and a judge's true policy value.

Training code, so it never reads a simulator: the offline metrics (model and baselines on the
validation weeks) and the off-policy estimates come from the logs alone. Where the dataset has
a simulator's ground truth, the figures that need it (each policy's true value in the simulated
world, OPE against the truth, the oracle gap) come from a ``PolicyJudge`` that the composition
root hands in (``nba.wiring``: ``experiments.sim_judge.SIMULATOR_JUDGE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from contract.schema import SEGMENTS


@dataclass
class EvaluationInputs:
    """What a judge gets from ``evaluate_job``: the model, its data and baselines, the OPE rows and figures so far."""

    cfg: Any  # TrainingConfig
    bundle: Any  # training.artifacts.ModelBundle
    prep: Any  # training.jobs.Prepared (the bundle's vocabulary and scaler)
    popularity: Any  # training.baselines.Popularity
    aggregate: Any  # training.baselines.AggregateModel
    rows: dict[str, np.ndarray]  # training.served_policy.served_policy_rows on the evaluated weeks (with top_* of the target)
    known: np.ndarray  # [rows] rows with a logged propensity
    figures: dict[str, Any]  # offline and OPE figures
    weeks: int | None = None
    progress: bool = True
    imitation: bool = False
    partial_oracles: bool = True
    data: Any = None
    served_checks: bool = True  # also serve the world through the serving engine and check repetition, overrides, calibration  # the evaluated split (EncodedData): the test weeks, else the validation weeks


class PolicyJudge(Protocol):
    """Measures policies in a world with known truth (a simulator); production code only calls it."""

    def evaluate(self, run: EvaluationInputs) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """(figures, each policy's value dict with ``expected_responses_per_hcp_week``, ``by_segment``, ``touches_by_channel``)."""

    def policy_value(
        self, bundle: Any, data_dir: str, features_config: str | None, *, weeks: int | None = None, start: str = "end", seed_offset: int = 0
    ) -> dict[str, float]:
        """The model policy's ``responses_per_hcp_week`` and ``share_of_oracle_gain``."""


def has_ground_truth(data_dir: Any) -> bool:
    """Whether ``data_dir`` holds a simulator's ground truth (only then can a judge measure policies in it)."""
    from contract.schema import GROUND_TRUTH_DIR

    return (Path(data_dir) / GROUND_TRUTH_DIR / "world.json").exists()


def windows_overlap(a: str, b: str) -> bool:
    """Whether two ``start..end`` date windows share a day (False when either is unknown)."""
    if not a or not b or ".." not in a or ".." not in b:
        return False
    a0, a1 = a.split("..")
    b0, b1 = b.split("..")
    return a0 <= b1 and b0 <= a1


def _load_version(name: str, mv: Any) -> Any:
    from training import tracking
    from training.artifacts import load_bundle

    return load_bundle(tracking.bundle_path(name, str(mv.version)))


def _same_encoding(a: Any, b: Any) -> bool:
    return (
        tuple(a.vocab.ids) == tuple(b.vocab.ids)
        and a.scaler.columns == b.scaler.columns
        and np.array_equal(a.scaler.mean, b.scaler.mean)
        and np.array_equal(a.scaler.std, b.scaler.std)
    )


def evaluate_job(
    cfg: Any,
    version: str | None = None,
    *,
    weeks: int | None = None,
    progress: bool = True,
    imitation: bool = False,
    partial_oracles: bool = True,
    judge: PolicyJudge | None = None,
    served_checks: bool = True,
) -> dict[str, Any]:
    """Evaluate a registered model version (default: the challenger) as it would be served; return figures.

    On any dataset: offline metrics and off-policy estimates of the served policy (training.served_ope)
    on the test weeks, against the logged policy and the current champion on the same rows, with
    HCP-clustered intervals, overlap diagnostics and a verdict; the model version is tagged with
    them (what `nba promote` gates on). With a ``judge`` and a dataset with ground truth, the judge
    adds each policy's true value (``sim_*``), OPE against the truth and the oracle gap.
    ``imitation`` also judges the network's policy heads; ``partial_oracles`` adds the oracle-gap
    decomposition. The simulated policies start where ``cfg.sim_start`` says (see TrainingConfig).
    """
    import sys

    import mlflow
    from mlflow import MlflowClient

    from training import served_ope, tracking
    from training.baselines import AggregateModel, Popularity
    from training.dataset import weeks_window
    from training.jobs import configure_torch, prepare_data
    from training.propensity import source_summary
    from training.train import metrics_from_predictions, predict

    def say(text: str) -> None:
        if progress:
            print(text, file=sys.stderr, flush=True)

    tracking.setup(cfg.tracking)
    device = configure_torch(cfg)
    name = cfg.tracking.registered_model
    client = MlflowClient()
    mv = client.get_model_version(name, str(version)) if version else tracking.version_for_alias(name, tracking.CHALLENGER)
    if mv is None:
        from nba.errors import NotReadyError  # a ValueError: one clean line from the CLI

        raise NotReadyError(f"registered model {name!r} has no '{tracking.CHALLENGER}' version: run `nba train` first, or pass --version")
    champion_mv = tracking.version_for_alias(name, tracking.CHAMPION)
    if champion_mv is not None and str(champion_mv.version) == str(mv.version):
        champion_mv = None
    say(f"evaluate: loading model version {mv.version} and its data")
    bundle = _load_version(name, mv)
    prep = prepare_data(cfg, bundle.vocab, bundle.scaler)
    # Report on the test weeks, which nothing selected on; without them, on the validation weeks, flagged.
    data, split = (prep.test, "test") if prep.test is not None and len(prep.test) else (prep.val, "validation")
    window = weeks_window(data)
    selection = (mv.tags or {}).get(tracking.SELECTION_WINDOW_TAG) or str(bundle.meta.get("selection_window", ""))
    overlaps = split != "test" or windows_overlap(window, selection)
    figures: dict[str, Any] = {
        "model_version": int(mv.version),
        "evaluation_split": split,
        "evaluation_window": window,
        "selection_window": selection,
        "split_overlaps_selection": bool(overlaps),
        "evaluation_rows": len(data),
    }
    if overlaps:
        say(
            f"warning: the evaluated weeks ({window}) overlap the weeks that selected this model ({selection or 'unknown'}): "
            "the figures are optimistic; set test_weeks > 0 and retrain"
        )

    # Offline metrics on the evaluated weeks: model and baselines.
    say(f"evaluate: offline metrics on {len(data)} {split} rows")
    model_pred = predict(bundle.model, data, cfg.batch_size, device)
    pop = Popularity.fit(prep.train, len(bundle.vocab))
    agg = AggregateModel(len(bundle.scaler.columns), cfg.seed).fit(prep.train)
    agg_pred = agg.predict(data, pop)
    offline = {
        "model": metrics_from_predictions(model_pred, data),
        "popularity": metrics_from_predictions(pop.predict(data), data),
        "aggregate": metrics_from_predictions(agg_pred, data),
    }
    for who, m in offline.items():
        figures.update({f"offline_{who}_{k}": v for k, v in m.items()})
    labels = data.arrays["label_response"]
    calibrated = bundle.expected_response(model_pred["response_prob"])
    if len(labels):
        from training.metrics import expected_calibration_error

        # The calibrator was fitted on the validation weeks: on test weeks this is out of sample.
        figures["offline_model_response_ece_calibrated"] = expected_calibration_error(calibrated, labels)

    # Off-policy estimates of the served policy, from the logs alone.
    say("evaluate: off-policy estimates of the policy as served")
    ctx = served_ope.build_context(bundle, prep, data, propensity=cfg.ope.propensity, seed=cfg.seed, contentless=bundle.contentless, progress=progress)
    figures.update(ctx.behaviour_figures)
    masks = served_ope.served_masks(bundle, data, prep.item_products, prep.hcp_products)
    rows = served_ope.served_rows(bundle, data, ctx, epsilon=cfg.ope.epsilon, top_m=cfg.ope.top_m, batch_size=cfg.batch_size, masks=masks, device=device)
    figures.update({f"ope_{k}": v for k, v in source_summary(rows["propensity_source"]).items()})
    est, ope_figures = served_ope.estimates(rows, cfg.ope, cfg.seed)
    figures.update(ope_figures)
    figures["ope_support_mass"] = figures.get("ope_diag_support_mass", float("nan"))
    if champion_mv is not None and est:
        say(f"evaluate: the champion (version {champion_mv.version}) on the same rows")
        champ = _load_version(name, champion_mv)
        champ_data = data
        if not _same_encoding(bundle, champ):
            cprep = prepare_data(cfg, champ.vocab, champ.scaler)
            champ_data = cprep.test if split == "test" else cprep.val
        cmasks = served_ope.served_masks(champ, champ_data, prep.item_products, prep.hcp_products)
        crows = served_ope.served_rows(
            champ, champ_data, ctx, epsilon=cfg.ope.epsilon, top_m=cfg.ope.top_m, batch_size=cfg.batch_size, masks=cmasks, device=device
        )
        crows["propensity"], crows["propensity_source"] = rows["propensity"], rows["propensity_source"]
        diff = served_ope.versus(rows, crows, cfg.ope, cfg.seed)
        _, cfig = served_ope.estimates(crows, cfg.ope, cfg.seed)
        figures.update(
            {
                "champion_version": int(champion_mv.version),
                "ope_champion_value": cfig.get("ope_value", float("nan")),
                "ope_champion_ci_low": cfig.get("ope_ci_low", float("nan")),
                "ope_champion_ci_high": cfig.get("ope_ci_high", float("nan")),
                "ope_vs_champion": diff.value,
                "ope_vs_champion_ci_low": diff.ci_low,
                "ope_vs_champion_ci_high": diff.ci_high,
            }
        )

    values: dict[str, dict[str, Any]] = {}
    if judge is not None and has_ground_truth(cfg.data_dir):
        known = served_ope.usable(rows)
        judged, values = judge.evaluate(
            EvaluationInputs(cfg, bundle, prep, pop, agg, rows, known, dict(figures), weeks, progress, imitation, partial_oracles, data, served_checks)
        )
        figures.update(judged)
        if "served_checks_passed" in figures:
            say(served_checks_line(figures))

    setting = f"data={prep.fingerprint} {split}={window} estimator={cfg.ope.estimator} n_boot={cfg.ope.n_boot} eps={cfg.ope.epsilon} top_m={cfg.ope.top_m}"
    with mlflow.start_run(run_name=tracking.evaluation_run_name(mv.version, cfg.ope.estimator, window or "none")) as run:
        mlflow.set_tags({"stage": "evaluation", "model_version": str(mv.version), "data_fingerprint": prep.fingerprint})
        tracking.log_evaluation_params(
            mlflow,
            model_version=str(mv.version),
            champion_version=str(figures.get("champion_version", "none")),
            evaluation_setting=setting,
            data_fingerprint=prep.fingerprint,
            estimator=cfg.ope.estimator,
            n_boot=cfg.ope.n_boot,
            test_window=window or "none",
            evaluation_split=split,
            propensity=cfg.ope.propensity,
            split_overlaps_selection=bool(overlaps),
        )
        if "ope_value" in figures:
            tracking.log_policy_value(
                mlflow,
                figures["ope_value"],
                figures["ope_ci_low"],
                figures["ope_ci_high"],
                vs_champion_ci_low=figures.get("ope_vs_champion_ci_low"),
                vs_logged_ci_low=figures.get("ope_vs_logged_ci_low"),
            )
        mlflow.log_metrics({_metric_name(k): float(v) for k, v in figures.items() if isinstance(v, (int, float)) and np.isfinite(v)})
        mlflow.log_dict({k: v for k, v in figures.items()}, "evaluation/figures.json")
        if values:
            mlflow.log_dict(values, "evaluation/simulator_values.json")
        _log_plots(
            mlflow,
            figures,
            values,
            {
                "model (raw)": (model_pred["response_prob"], labels),
                "model (calibrated)": (calibrated, labels),
                "aggregate": (agg_pred["response_prob"], labels),
            },
        )
        figures["evaluation_run_id"] = run.info.run_id

    tags = {
        tracking.OPE_SETTING_TAG: setting,
        tracking.OPE_ESTIMATOR_TAG: cfg.ope.estimator,
        tracking.OPE_VERDICT_TAG: "trusted" if figures.get("ope_verdict_trusted") else "untrusted",
        tracking.OPE_VERDICT_REASON_TAG: str(figures.get("ope_verdict", ""))[:4000],
    }
    for tag, key in (
        (tracking.OPE_VALUE_TAG, "ope_value"),
        (tracking.OPE_CI_LOW_TAG, "ope_ci_low"),
        (tracking.OPE_CI_HIGH_TAG, "ope_ci_high"),
        (tracking.OPE_VS_LOGGED_TAG, "ope_vs_logged"),
        (tracking.OPE_VS_LOGGED_CI_LOW_TAG, "ope_vs_logged_ci_low"),
        (tracking.OPE_VS_CHAMPION_TAG, "ope_vs_champion"),
        (tracking.OPE_VS_CHAMPION_CI_LOW_TAG, "ope_vs_champion_ci_low"),
    ):
        if key in figures:
            tags[tag] = repr(float(figures[key]))
    if "champion_version" in figures:
        tags[tracking.OPE_CHAMPION_VERSION_TAG] = str(figures["champion_version"])
    if values:
        # Values are comparable only when measured on the same data, from the same start, over the same weeks.
        tags[tracking.POLICY_VALUE_TAG] = repr(values["model"]["expected_responses_per_hcp_week"])
        tags[tracking.POLICY_SETTING_TAG] = f"data={prep.fingerprint} start={cfg.sim_start} weeks={figures['sim_weeks']}"
        tags["share_of_oracle_gain"] = repr(figures["sim_model_share_of_oracle_gain"])
    tracking.set_evaluation_tags(client, name, str(mv.version), tags)
    return figures


def served_checks_line(figures: dict[str, Any]) -> str:
    """One line for people: the served policy's share of the oracle's gain and the per-world checks, with their figures."""
    f = figures

    def mark(name: str) -> str:
        return "ok" if f.get(f"served_check_{name}") else "FAILED"

    return (
        f"served (engine) share of the oracle's gain {f.get('served_model_share_of_oracle_gain', float('nan')):.3f}; checks "
        f"{f['served_checks_passed']}/{f['served_checks_total']}: repeat within 30 d {f.get('served_model_repeat_share_30d', float('nan')):.2f} "
        f"<= logged {f.get('served_logged_repeat_share_30d', float('nan')):.2f} {mark('repeat_le_logged')}; "
        f"first choices overridden {f.get('served_model_override_share', float('nan')):.3f} <= 0.02 {mark('override_le_2pct')}; "
        f"|expected - realised| {f.get('served_model_calibration_gap', float('nan')):.3f} <= 0.03 {mark('calibration_gap_le_0_03')}; "
        f"rules / logged value {f.get('served_rules_vs_logged_value_ratio', float('nan')):.3f} >= 1 {mark('rules_ge_logged')}"
    )


def _metric_name(key: str) -> str:
    """MLflow metric names by family (``ope/dr_value``), as reviewers filter them."""
    for prefix in ("offline_", "sim_", "ope_", "behaviour_"):
        if key.startswith(prefix):
            return prefix[:-1] + "/" + key[len(prefix) :]
    return key


def _log_plots(mlflow: Any, figures: dict[str, Any], values: dict[str, dict[str, Any]], calib: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """The evaluation's plots: policy value with intervals (one colour per policy), calibration, channel mix and value by tier."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training import evaluation_plots as plots

    policy: dict[str, tuple[float, float, float]] = {}
    if "ope_value" in figures:
        est = figures.get("ope_estimator", "dr")
        policy[f"model ({est})"] = (figures["ope_value"], figures["ope_ci_low"], figures["ope_ci_high"])
    if "ope_champion_value" in figures:
        policy[f"champion v{figures['champion_version']}"] = (figures["ope_champion_value"], figures["ope_champion_ci_low"], figures["ope_champion_ci_high"])
    if "ope_logged_value" in figures:
        lv = figures["ope_logged_value"]
        policy["logged (observed)"] = (lv, lv, lv)
    if "ope_true_response_rate" in figures and np.isfinite(figures["ope_true_response_rate"]):
        t = figures["ope_true_response_rate"]
        policy["model (truth)"] = (t, t, t)
    figs = {
        "plots/policy_value.png": plots.policy_value_plot(policy, "P(response) per logged decision, policy as served"),
        "plots/calibration.png": plots.calibration_plot(calib),
    }
    if values:
        mix = {"logged": values["logged"]["touches_by_channel"], "model": values["model"]["touches_by_channel"]}
        tiers = {who: {s: v["by_segment"][s]["expected_responses_per_hcp_week"] for s in SEGMENTS} for who, v in values.items()}
        figs.update({"plots/channel_mix.png": plots.channel_mix_plot(mix), "plots/value_by_tier.png": plots.value_by_tier_plot(tiers)})
    for path, fig in figs.items():
        plots.log_figure(mlflow, fig, path)  # tight bounding box: the legends sit outside the axes
        plt.close(fig)
