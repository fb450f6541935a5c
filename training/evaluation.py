"""`nba evaluate`: offline metrics, off-policy estimates and true policy value in the simulator.

Evaluation code, so it may read the simulator's ground truth (training never does). Every
policy acts week by week in ``simulator.environment.Environment`` replaying the logged year:
the logged behaviour policy, the brief's rules, the oracle (upper bound), popularity, a
non-sequential model on aggregate features, and our model. The model and the aggregate
baseline see only what a real policy could: features computed by the feature stage's pure
as-of transforms from the contract-shaped history the environment has produced so far.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from contract.schema import CHANNELS, SEGMENTS
from training.model import N_DAYPARTS, N_DAYS
from training.policy import working_hours_slots

VALUE_KEY = "expected_positive_responses"


class _FeaturePolicy:
    """Shared plumbing: features as of the week's Monday from the environment's history, top-k channels."""

    def __init__(self, features_cfg: Any, k: int, vocab: Any, logged: dict[str, Any] | None = None) -> None:
        self.features_cfg, self.k, self.vocab = features_cfg, k, vocab
        # The dataset's own touchpoints/outcomes when the world continues from the end of its logs:
        # a deployed policy knows every HCP's logged history, not only what it has done itself.
        self.logged = logged
        self._sim_vocab: np.ndarray | None = None

    def features(self, obs: Any) -> Any:
        """One feature row per HCP in the world's HCP order."""
        import pandas as pd

        from features import compute_features_asof

        tables = {**obs.tables, **obs.history.contract_tables(self.logged)}
        as_of = dt.datetime.combine(obs.week_start, dt.time(), tzinfo=dt.timezone.utc)
        frame = compute_features_asof(tables, as_of, self.features_cfg)
        pos = pd.Index(frame["hcp_id"]).get_indexer(obs.public.hcp_ids)
        if (pos < 0).any():
            raise RuntimeError(f"features: {int((pos < 0).sum())} HCPs of the world have no feature row")
        return frame.iloc[pos].reset_index(drop=True)

    def content_masks(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """([P, C, V] eligible content in vocabulary space, [V] simulator content index of each vocab id)."""
        if self._sim_vocab is None:
            self._sim_vocab = self.vocab.encode(np.asarray(obs.public.content_ids, dtype=object))
        known = np.flatnonzero(self._sim_vocab >= 2)
        elig = obs.eligibility.content  # [P, C, K]
        mask = np.zeros((*elig.shape[:2], len(self.vocab)), dtype=bool)
        mask[:, :, self._sim_vocab[known]] = elig[:, :, known]
        sim_of_vocab = np.full(len(self.vocab), -1, dtype=np.int64)
        sim_of_vocab[self._sim_vocab[known]] = known
        return mask, sim_of_vocab

    def choose(self, obs: Any, p: np.ndarray, content: np.ndarray, slot: np.ndarray) -> Any:
        """Top-k eligible channels per HCP by score ``p`` [n, C], within rep capacity.

        Like the oracle (``simulator.policies.best_actions``), a touch the rep has no capacity
        for is replaced by the HCP's next-best channel rather than dropped, a few rounds deep.
        """
        from simulator.actions import Actions
        from simulator.constraints import fit_rep_capacity
        from simulator.world import CONTENTLESS_MASK

        elig = obs.eligibility
        score = np.where(elig.channel & ((content >= 0) | CONTENTLESS_MASK[None, :]), p, -np.inf)
        k = min(self.k, elig.max_touches, score.shape[1])
        for _ in range(6):
            order = np.argsort(-score, axis=1, kind="stable")[:, :k]
            hcp = np.repeat(np.arange(score.shape[0]), k)
            ch = order.reshape(-1)
            good = np.isfinite(score[hcp, ch])
            hcp, ch = hcp[good], ch[good]
            ct = np.where(CONTENTLESS_MASK[ch], -1, content[hcp, ch])
            s = slot[hcp, ch]
            acts = Actions(hcp, ch, ct, s // N_DAYPARTS, s % N_DAYPARTS)
            keep = fit_rep_capacity(obs.public, elig, acts, score[hcp, ch])
            if keep.all():
                break
            score = score.copy()
            score[hcp[~keep], ch[~keep]] = -np.inf
        return acts.select(keep)


class ModelPolicy(_FeaturePolicy):
    """Our network: for every channel, the eligible (content, slot) with the highest predicted response."""

    def __init__(self, bundle: Any, features_cfg: Any, k: int, batch_size: int = 1024, logged: dict[str, Any] | None = None) -> None:
        super().__init__(features_cfg, k, bundle.vocab, logged)
        self.bundle, self.batch_size = bundle, batch_size
        self.slot_allowed = working_hours_slots()

    def scores(self, obs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per HCP and channel: score (-1 where not allowed), simulator content index, slot; batches through ``score_batch``."""
        import torch

        from simulator.world import CONTENTLESS_MASK
        from training.dataset import encode_frame

        b = self.bundle
        data = encode_frame(self.features(obs), b.vocab, b.scaler, b.model.config.max_seq_len, with_labels=False)
        mask, sim_of_vocab = self.content_masks(obs)
        product = obs.public.hcp_product
        parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        model = b.model.eval()
        with torch.no_grad():
            for start, batch in zip(range(0, len(data), self.batch_size), data.batches(self.batch_size)):
                rows = slice(start, start + len(batch["length"]))
                p, content, slot = self.score_batch(model, batch, torch.from_numpy(mask[product[rows]]))
                parts.append((p.numpy(), content.numpy(), slot.numpy()))
        best_content = np.where(CONTENTLESS_MASK[None, :], -1, sim_of_vocab[np.concatenate([x[1] for x in parts])])
        return np.concatenate([x[0] for x in parts]).astype(np.float64), best_content, np.concatenate([x[2] for x in parts]).astype(np.int64)

    def score_batch(self, model: Any, batch: Any, content_mask: Any) -> tuple[Any, Any, Any]:
        """[B, C] best predicted P(response) over allowed (content, slot) (training.policy.channel_scores), that content, that slot."""
        import torch

        from simulator.world import CONTENTLESS_MASK
        from training.policy import channel_scores

        score, content, slot = channel_scores(model, model.state(batch), content_mask=content_mask, slot_allowed=torch.from_numpy(self.slot_allowed), contentless=torch.from_numpy(CONTENTLESS_MASK))
        return torch.where(torch.isfinite(score), torch.sigmoid(score), torch.full_like(score, -1.0)), content, slot

    def __call__(self, obs: Any) -> Any:
        """This week's actions."""
        return self.choose(obs, *self.scores(obs))


class HeadsPolicy(ModelPolicy):
    """The network's policy heads instead of its response head: channels by the channel head, the content
    and slot heads' favourites. For a ``naive`` model that is imitation of the reps' logged choices."""

    def score_batch(self, model: Any, batch: Any, content_mask: Any) -> tuple[Any, Any, Any]:
        """[B, C] channel-head probability (-1 where no eligible content), the content head's best eligible item, the slot head's best allowed slot."""
        import torch

        from simulator.world import CONTENTLESS_MASK

        heads = model.heads(model.state(batch))
        content = heads["content"].unsqueeze(1).masked_fill(~content_mask, float("-inf"))  # [B, C, V]
        ok = torch.isfinite(content.max(-1).values) | torch.from_numpy(CONTENTLESS_MASK)
        slot = heads["slot"].unsqueeze(1).masked_fill(~torch.from_numpy(self.slot_allowed).unsqueeze(0), float("-inf")).argmax(-1)  # [B, C]
        p = torch.softmax(heads["channel"], -1)
        return torch.where(ok, p, torch.full_like(p, -1.0)), content.argmax(-1), slot


class _PopularContent(_FeaturePolicy):
    """Content and slot from what was logged most (shared by the popularity and aggregate baselines)."""

    def __init__(self, popularity: Any, features_cfg: Any, k: int, vocab: Any, logged: dict[str, Any] | None = None) -> None:
        super().__init__(features_cfg, k, vocab, logged)
        self.pop = popularity
        allowed = working_hours_slots()
        self.slot = np.where(allowed, popularity.channel_slot_counts + 1e-3 * (N_DAYS * N_DAYPARTS - np.arange(N_DAYS * N_DAYPARTS)), -1).argmax(1)

    def popular(self, obs: Any) -> tuple[np.ndarray, np.ndarray]:
        """[n, C] most-logged eligible content (simulator index or -1) and the channel's most-logged slot."""
        mask, sim_of_vocab = self.content_masks(obs)
        counts = np.where(mask, self.pop.content_counts[None, None, :] + 1e-6, -1.0)  # [P, C, V]
        best = counts.argmax(-1)
        sim = np.where(counts.max(-1) > 0, sim_of_vocab[best], -1)  # [P, C]
        content = sim[obs.public.hcp_product]
        return content, np.tile(self.slot, (len(content), 1))


class PopularityPolicy(_PopularContent):
    """The most-logged channels, with their most-logged content and slot, for everyone."""

    def __call__(self, obs: Any) -> Any:
        """This week's actions."""
        content, slot = self.popular(obs)
        p = np.tile(self.pop.channel_probs, (len(content), 1))
        return self.choose(obs, p, content, slot)


class AggregatePolicy(_PopularContent):
    """Non-sequential model: channels ranked by a linear response model on aggregate features."""

    def __init__(self, model: Any, scaler: Any, popularity: Any, features_cfg: Any, k: int, vocab: Any, logged: dict[str, Any] | None = None) -> None:
        super().__init__(popularity, features_cfg, k, vocab, logged)
        self.model, self.scaler = model, scaler

    def __call__(self, obs: Any) -> Any:
        """This week's actions."""
        static = self.scaler.transform(self.features(obs))
        content, slot = self.popular(obs)
        return self.choose(obs, self.model.response_probs(static), content, slot)


_REFERENCE_VALUES: dict[tuple[str, int | None, str], dict[str, Any]] = {}


def logged_history(data_dir: Any, start: str) -> dict[str, Any] | None:
    """The dataset's touchpoints and outcomes when policies continue from the end of its logs (None from the beginning)."""
    if start == "beginning":
        return None
    if start != "end":
        raise ValueError(f"sim_start must be 'end' or 'beginning', got {start!r}")
    from contract.io import read_table

    return {name: read_table(data_dir, name) for name in ("touchpoints", "outcomes")}


def simulated_policy_value(bundle: Any, data_dir: str, features_config: str | None, *, weeks: int | None = None, start: str = "end",
                           progress: bool = False) -> dict[str, float]:
    """The model policy's true value in the simulator over ``weeks`` from ``start``, and its share of the oracle's gain.

    The logged and oracle runs do not depend on the model: they are cached per (data_dir, weeks,
    start) in this process, so tuning trials pay only for the model's own run.
    """
    from features.config import load_features_config
    from simulator.environment import Environment, share_of_oracle_gain
    from simulator.policies import BehaviourPolicy, OraclePolicy

    logged = logged_history(data_dir, start)
    key = (str(data_dir), weeks, start)
    if key not in _REFERENCE_VALUES:
        ref = {}
        for who in ("logged", "oracle"):
            env = Environment.from_data_dir(data_dir, start=start)  # type: ignore[arg-type]
            ref[who] = env.run(BehaviourPolicy(env.cfg) if who == "logged" else OraclePolicy(env), weeks=weeks).value
        _REFERENCE_VALUES[key] = ref
    ref = _REFERENCE_VALUES[key]
    fcfg = load_features_config(features_config, overrides={"data_dir": data_dir})
    env = Environment.from_data_dir(data_dir, start=start)  # type: ignore[arg-type]
    value = env.run(ModelPolicy(bundle, fcfg, env.cfg.oracle_touches_per_week, logged=logged), weeks=weeks, progress=progress).value
    return {"responses_per_hcp_week": value["expected_responses_per_hcp_week"], "share_of_oracle_gain": share_of_oracle_gain(value, ref["logged"], ref["oracle"], VALUE_KEY)}


def _has_ground_truth(data_dir: Any) -> bool:
    from pathlib import Path

    from contract.schema import GROUND_TRUTH_DIR

    return (Path(data_dir) / GROUND_TRUTH_DIR / "world.json").exists()


def ope_truth(data_dir: Any, rows: dict[str, np.ndarray], val: Any, vocab: Any, keep: np.ndarray) -> tuple[float, float]:
    """The simulator's true value of the stochastic target policy on the logged validation rows ``keep``.

    Per row: sum over the target's most likely (channel, content) pairs of pi x the oracle's true
    P(response) at the logged slot, in the true hidden state of that logged week (replayed),
    renormalised over the pairs kept. Returns (mean true response rate, mean probability mass covered).
    """
    import pandas as pd

    from simulator.evaluation import logged_states

    idx = np.flatnonzero(keep)
    top_p = rows["top_prob"][idx]
    covered = top_p.sum(1)
    truth = np.full(len(idx), np.nan)
    weeks = pd.to_datetime(val.week[idx]).normalize()
    day = weeks.date if hasattr(weeks, "date") else weeks
    sim_of_vocab: np.ndarray | None = None
    hcp_pos: np.ndarray | None = None
    slot = val.arrays["label_slot"][idx].astype(np.int64)
    wanted = set(day)
    for obs, state, oracle in logged_states(data_dir):
        if obs.week_start not in wanted:
            continue
        if sim_of_vocab is None:
            sim = pd.Index(obs.public.content_ids).get_indexer(pd.Series(vocab.decode(np.arange(len(vocab))), dtype=object))
            sim_of_vocab = np.where(np.arange(len(vocab)) >= 2, sim, -1)
            hcp_pos = pd.Index(obs.public.hcp_ids).get_indexer(val.hcp_id[idx])
        r = np.flatnonzero(np.asarray(day) == obs.week_start)
        k = top_p.shape[1]
        hcp = np.repeat(hcp_pos[r], k)
        ch = rows["top_channel"][idx][r].reshape(-1).astype(np.int64)
        ct = sim_of_vocab[rows["top_content"][idx][r].reshape(-1).astype(np.int64)]
        s = np.repeat(slot[r], k)
        p_true = oracle.expected_response(state, obs.week, hcp, ch, ct, s // N_DAYPARTS, s % N_DAYPARTS).reshape(len(r), k)
        truth[r] = (top_p[r] * p_true).sum(1) / np.maximum(covered[r], 1e-12)
    ok = np.isfinite(truth)
    return (float(truth[ok].mean()) if ok.any() else float("nan")), float(covered.mean()) if len(covered) else float("nan")


def _plots(mlflow: Any, calib: dict[str, tuple[np.ndarray, np.ndarray]], mix: dict[str, dict[str, int]], tiers: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.jobs import _calibration_plot

    _calibration_plot(mlflow, calib, "plots/calibration.png")

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
                 imitation: bool = False, partial_oracles: bool = True) -> dict[str, Any]:
    """Evaluate a registered model version (default: the challenger) against every baseline; return figures.

    ``imitation`` also simulates the network's policy heads (``HeadsPolicy``: for a ``naive`` model,
    imitation of the logs); ``partial_oracles`` adds the oracle-gap decomposition (training.oracle_gap).
    The simulated policies start where ``cfg.sim_start`` says (see TrainingConfig).
    """
    import mlflow
    from mlflow import MlflowClient

    from features.config import load_features_config
    from simulator.environment import Environment, share_of_oracle_gain
    from simulator.policies import BehaviourPolicy, OraclePolicy, RuleBasedPolicy
    from training.oracle_gap import gap_figures, logs_posterior_makers, partial_oracle_makers
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
    rows = policy_rows(bundle.model, prep.val, cfg.batch_size, temperature=cfg.ope_temperature, calibrator=bundle.calibrator)
    for est_name, est in policy_estimates(rows, clip=None, n_boot=n_boot, seed=cfg.seed).items():
        figures[f"ope_{est_name}_response_rate"] = est.value
        figures[f"ope_{est_name}_ci_low"] = est.ci_low
        figures[f"ope_{est_name}_ci_high"] = est.ci_high
        figures[f"ope_{est_name}_effective_sample_size"] = est.ess
    known = np.isfinite(rows["propensity"]) & (rows["propensity"] > 0)
    figures["ope_target_temperature"] = cfg.ope_temperature
    figures["ope_rows"] = int(known.sum())
    figures["ope_matched_probability_mass"] = float(rows["match"][known].sum())
    has_truth = _has_ground_truth(cfg.data_dir)
    if has_truth:
        truth, covered = ope_truth(cfg.data_dir, rows, prep.val, bundle.vocab, known)
        figures["ope_true_response_rate"] = truth
        figures["ope_truth_probability_mass_covered"] = covered
        for est_name in ("dm", "ips", "snips", "dr"):
            if f"ope_{est_name}_ci_low" in figures:
                figures[f"ope_{est_name}_error_vs_truth"] = figures[f"ope_{est_name}_response_rate"] - truth
                figures[f"ope_{est_name}_ci_covers_truth"] = bool(figures[f"ope_{est_name}_ci_low"] <= truth <= figures[f"ope_{est_name}_ci_high"])

    # True policy value in the simulator: every policy from the same start (cfg.sim_start), over the same weeks.
    fcfg = load_features_config(cfg.features_config, overrides={"data_dir": cfg.data_dir})
    start = cfg.sim_start
    logged = logged_history(cfg.data_dir, start)
    probe = Environment.from_data_dir(cfg.data_dir)
    k = probe.cfg.oracle_touches_per_week
    policies = {
        "logged": lambda env: BehaviourPolicy(env.cfg),
        "oracle": lambda env: OraclePolicy(env),
        "rules": lambda env: RuleBasedPolicy(env.cfg),
        "popularity": lambda env: PopularityPolicy(pop, fcfg, k, bundle.vocab),
        "aggregate": lambda env: AggregatePolicy(agg, bundle.scaler, pop, fcfg, k, bundle.vocab, logged),
        "model": lambda env: ModelPolicy(bundle, fcfg, k, logged=logged),
        **({"imitation": lambda env: HeadsPolicy(bundle, fcfg, k, logged=logged)} if imitation else {}),
        **(partial_oracle_makers() if partial_oracles else {}),
        # After the logs: the oracle believing each HCP's posterior from its logged year, the
        # ceiling of what learning from these logs can reach.
        **(logs_posterior_makers(cfg.data_dir) if partial_oracles and start == "end" else {}),
    }
    values: dict[str, dict[str, Any]] = {}
    for who, make in policies.items():
        env = Environment.from_data_dir(cfg.data_dir, start=start)
        if progress:
            print(f"simulating policy {who!r}", flush=True)
        values[who] = env.run(make(env), weeks=weeks, progress=progress).value
    n_weeks = values["logged"]["weeks"]
    for who, v in values.items():
        figures[f"sim_{who}_responses_per_hcp_week"] = v["expected_responses_per_hcp_week"]
        figures[f"sim_{who}_response_rate_per_touch"] = v["response_rate_per_touch"]
        figures[f"sim_{who}_violations"] = int(sum(v["violations"].values()))
        if who not in ("logged", "oracle"):
            figures[f"sim_{who}_share_of_oracle_gain"] = share_of_oracle_gain(v, values["logged"], values["oracle"], VALUE_KEY)
    for seg in SEGMENTS:
        seg_vals = {who: v["by_segment"][seg] for who, v in values.items()}
        if seg_vals["oracle"][VALUE_KEY] != seg_vals["logged"][VALUE_KEY]:
            figures[f"sim_model_share_of_oracle_gain_tier_{seg}"] = share_of_oracle_gain(seg_vals["model"], seg_vals["logged"], seg_vals["oracle"], VALUE_KEY)
    baselines = ("logged", "rules", "popularity", "aggregate")
    figures["sim_model_beats_every_baseline"] = bool(all(values["model"][VALUE_KEY] > values[b][VALUE_KEY] for b in baselines))
    figures["sim_weeks"] = n_weeks
    figures["sim_start_week"] = int(probe.cfg.weeks if start == "end" else 0)
    if partial_oracles:
        shares = {who: figures.get(f"sim_{who}_share_of_oracle_gain", 1.0 if who == "oracle" else 0.0) for who in values}
        worth = {"channel": shares["population_channel"] - shares["population"], "topic": shares["population_topic"] - shares["population"],
                 "timing": shares["population_timing"] - shares["population"], "timing_given_rest": 1.0 - shares["oracle_no_timing"],
                 "fatigue_given_rest": 1.0 - shares["oracle_no_fatigue"]}
        figures.update({k: v for k, v in gap_figures({"share": {}, "worth": worth}).items()})
        # How far the model is from a policy knowing the world's population laws but nothing per HCP.
        figures["gap_model_minus_population_oracle_share"] = shares["model"] - shares["population"]
        if "oracle_from_logs" in shares:
            figures["gap_model_minus_oracle_from_logs_share"] = shares["model"] - shares["oracle_from_logs"]

    with mlflow.start_run(run_name=f"evaluate-v{mv.version}") as run:
        mlflow.set_tags({"stage": "evaluation", "model_version": str(mv.version), "data_fingerprint": prep.fingerprint})
        mlflow.log_metrics({k.replace("offline_", "offline/").replace("sim_", "sim/").replace("ope_", "ope/"): float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)})
        mlflow.log_dict(values, "evaluation/simulator_values.json")
        tiers = {who: {s: v["by_segment"][s]["expected_responses_per_hcp_week"] for s in SEGMENTS} for who, v in values.items()}
        calib = {"model (raw)": (model_pred["response_prob"], labels), "model (calibrated)": (calibrated, labels), "aggregate": (agg.predict(prep.val, pop)["response_prob"], prep.val.arrays["label_response"])}
        _plots(mlflow, calib, {"logged": values["logged"]["touches_by_channel"], "model": values["model"]["touches_by_channel"]}, tiers)
        figures["evaluation_run_id"] = run.info.run_id
    client = MlflowClient()
    client.set_model_version_tag(name, str(mv.version), tracking.POLICY_VALUE_TAG, repr(values["model"]["expected_responses_per_hcp_week"]))
    # Values are comparable only when measured on the same data, from the same start, over the same weeks.
    client.set_model_version_tag(name, str(mv.version), tracking.POLICY_SETTING_TAG, f"data={prep.fingerprint} start={start} weeks={n_weeks}")
    client.set_model_version_tag(name, str(mv.version), "share_of_oracle_gain", repr(figures["sim_model_share_of_oracle_gain"]))
    return figures
