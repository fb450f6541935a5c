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

from contract.schema import CHANNELS, SEGMENTS


@dataclass
class EvaluationInputs:
    """What a judge gets from ``evaluate_job``: the model, its data and baselines, the OPE rows and figures so far."""

    cfg: Any  # TrainingConfig
    bundle: Any  # training.artifacts.ModelBundle
    prep: Any  # training.jobs.Prepared (the bundle's vocabulary and scaler)
    popularity: Any  # training.baselines.Popularity
    aggregate: Any  # training.baselines.AggregateModel
    rows: dict[str, np.ndarray]  # training.train.policy_rows on the validation weeks
    known: np.ndarray  # [rows] rows with a logged propensity
    figures: dict[str, Any]  # offline and OPE figures
    weeks: int | None = None
    progress: bool = True
    imitation: bool = False
    partial_oracles: bool = True


class PolicyJudge(Protocol):
    """Measures policies in a world with known truth (a simulator); production code only calls it."""

    def evaluate(self, run: EvaluationInputs) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """(figures, each policy's value dict with ``expected_responses_per_hcp_week``, ``by_segment``, ``touches_by_channel``)."""

    def policy_value(self, bundle: Any, data_dir: str, features_config: str | None, *, weeks: int | None = None, start: str = "end") -> dict[str, float]:
        """The model policy's ``responses_per_hcp_week`` and ``share_of_oracle_gain``."""


def has_ground_truth(data_dir: Any) -> bool:
    """Whether ``data_dir`` holds a simulator's ground truth (only then can a judge measure policies in it)."""
    from contract.schema import GROUND_TRUTH_DIR

    return (Path(data_dir) / GROUND_TRUTH_DIR / "world.json").exists()


def _plots(mlflow: Any, calib: dict[str, tuple[np.ndarray, np.ndarray]], mix: dict[str, dict[str, int]], tiers: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.jobs import _calibration_plot

    _calibration_plot(mlflow, calib, "plots/calibration.png")
    if not mix:
        return

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(mix), 1)
    for i, (name, counts) in enumerate(mix.items()):
        total = max(sum(counts.values()), 1)
        ax.bar(np.arange(len(CHANNELS)) + i * width, [counts.get(c, 0) / total for c in CHANNELS], width, label=name)
    ax.set_xticks(np.arange(len(CHANNELS)) + 0.4 - width / 2, CHANNELS, rotation=30, ha="right")
    ax.set_ylabel("share of touches")
    ax.legend()
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/channel_mix.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(tiers), 1)
    for i, (name, per_tier) in enumerate(tiers.items()):
        ax.bar(np.arange(len(SEGMENTS)) + i * width, [per_tier[s] for s in SEGMENTS], width, label=name)
    ax.set_xticks(np.arange(len(SEGMENTS)) + 0.4 - width / 2, SEGMENTS)
    ax.set_ylabel("expected positive responses per HCP-week")
    ax.legend(fontsize=7)
    fig.tight_layout()
    mlflow.log_figure(fig, "plots/value_by_tier.png")
    plt.close(fig)


def evaluate_job(cfg: Any, version: str | None = None, *, weeks: int | None = None, n_boot: int = 200, progress: bool = True,
                 imitation: bool = False, partial_oracles: bool = True, judge: PolicyJudge | None = None) -> dict[str, Any]:
    """Evaluate a registered model version (default: the challenger) against every baseline; return figures.

    With a ``judge`` and a dataset with ground truth, the judge adds each policy's true value
    (``sim_*``), OPE against the truth and the oracle gap, and the model version is tagged with its
    policy value (what ``nba promote`` compares). ``imitation`` also judges the network's policy
    heads (for a ``naive`` model, imitation of the logs); ``partial_oracles`` adds the oracle-gap
    decomposition. The simulated policies start where ``cfg.sim_start`` says (see TrainingConfig).
    """
    import mlflow
    from mlflow import MlflowClient

    from training import tracking
    from training.artifacts import load_bundle
    from training.baselines import AggregateModel, Popularity
    from training.jobs import configure_torch, prepare_data
    from training.train import metrics_from_predictions, policy_estimates, policy_rows, predict

    tracking.setup(cfg.tracking)
    configure_torch(cfg)
    name = cfg.tracking.registered_model
    mv = MlflowClient().get_model_version(name, str(version)) if version else tracking.version_for_alias(name, tracking.CHALLENGER)
    if mv is None:
        raise ValueError(f"registered model {name!r} has no '{tracking.CHALLENGER}' version: run `nba train` first, or pass --version")
    bundle = load_bundle(tracking.bundle_path(name, str(mv.version)))
    prep = prepare_data(cfg, bundle.vocab, bundle.scaler)
    figures: dict[str, Any] = {"model_version": int(mv.version)}

    # Offline metrics on the validation weeks: model and baselines.
    model_pred = predict(bundle.model, prep.val, cfg.batch_size)
    pop = Popularity.fit(prep.train, len(bundle.vocab))
    agg = AggregateModel(len(bundle.scaler.columns), cfg.seed).fit(prep.train)
    offline = {"model": metrics_from_predictions(model_pred, prep.val), "popularity": metrics_from_predictions(pop.predict(prep.val), prep.val), "aggregate": metrics_from_predictions(agg.predict(prep.val, pop), prep.val)}
    for who, m in offline.items():
        figures.update({f"offline_{who}_{k}": v for k, v in m.items()})
    labels = prep.val.arrays["label_response"]
    calibrated = bundle.expected_response(model_pred["response_prob"])
    if len(labels):
        # The bundle's calibrator was fitted on these very rows: report the out-of-sample (cross-fitted by HCP) ECE instead.
        from training.calibration import fit_and_check

        figures["offline_model_response_ece_calibrated_crossfit"] = fit_and_check(model_pred["response_prob"], labels, prep.val.hcp_id)[1]["ece_after"]

    # Off-policy estimates of the model policy from the logs alone.
    rows = policy_rows(bundle.model, prep.val, cfg.batch_size, temperature=cfg.ope_temperature, calibrator=bundle.calibrator, contentless=bundle.contentless)
    for est_name, est in policy_estimates(rows, clip=None, n_boot=n_boot, seed=cfg.seed).items():
        figures[f"ope_{est_name}_response_rate"] = est.value
        figures[f"ope_{est_name}_ci_low"] = est.ci_low
        figures[f"ope_{est_name}_ci_high"] = est.ci_high
        figures[f"ope_{est_name}_effective_sample_size"] = est.ess
    known = np.isfinite(rows["propensity"]) & (rows["propensity"] > 0)
    figures["ope_target_temperature"] = cfg.ope_temperature
    figures["ope_rows"] = int(known.sum())
    figures["ope_matched_probability_mass"] = float(rows["match"][known].sum())

    values: dict[str, dict[str, Any]] = {}
    if judge is not None and has_ground_truth(cfg.data_dir):
        judged, values = judge.evaluate(EvaluationInputs(cfg, bundle, prep, pop, agg, rows, known, dict(figures), weeks, progress, imitation, partial_oracles))
        figures.update(judged)

    with mlflow.start_run(run_name=f"evaluate-v{mv.version}") as run:
        mlflow.set_tags({"stage": "evaluation", "model_version": str(mv.version), "data_fingerprint": prep.fingerprint})
        mlflow.log_metrics({k.replace("offline_", "offline/").replace("sim_", "sim/").replace("ope_", "ope/"): float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)})
        if values:
            mlflow.log_dict(values, "evaluation/simulator_values.json")
        tiers = {who: {s: v["by_segment"][s]["expected_responses_per_hcp_week"] for s in SEGMENTS} for who, v in values.items()}
        calib = {"model (raw)": (model_pred["response_prob"], labels), "model (calibrated)": (calibrated, labels), "aggregate": (agg.predict(prep.val, pop)["response_prob"], prep.val.arrays["label_response"])}
        mix = {"logged": values["logged"]["touches_by_channel"], "model": values["model"]["touches_by_channel"]} if values else {}
        _plots(mlflow, calib, mix, tiers)
        figures["evaluation_run_id"] = run.info.run_id
    if not values:
        return figures  # no true policy value: nothing for `nba promote` to compare
    n_weeks, start = figures["sim_weeks"], cfg.sim_start
    client = MlflowClient()
    client.set_model_version_tag(name, str(mv.version), tracking.POLICY_VALUE_TAG, repr(values["model"]["expected_responses_per_hcp_week"]))
    # Values are comparable only when measured on the same data, from the same start, over the same weeks.
    client.set_model_version_tag(name, str(mv.version), tracking.POLICY_SETTING_TAG, f"data={prep.fingerprint} start={start} weeks={n_weeks}")
    client.set_model_version_tag(name, str(mv.version), "share_of_oracle_gain", repr(figures["sim_model_share_of_oracle_gain"]))
    return figures
