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

VALUE_KEY = "expected_positive_responses"


def _slot_allowed() -> np.ndarray:
    """[C, 28] True where the slot is allowed for the channel (rep-time channels: Mon-Fri working dayparts)."""
    from simulator.constraints import WORK_DAYPARTS, WORK_WEEKDAYS
    from simulator.world import WORKDAY_ONLY_MASK

    day = np.arange(N_DAYS * N_DAYPARTS) // N_DAYPARTS
    part = np.arange(N_DAYS * N_DAYPARTS) % N_DAYPARTS
    work = (day < WORK_WEEKDAYS) & (part < WORK_DAYPARTS)
    return np.where(WORKDAY_ONLY_MASK[:, None], work[None, :], True)


class _FeaturePolicy:
    """Shared plumbing: features as of the week's Monday from the environment's history, top-k channels."""

    def __init__(self, features_cfg: Any, k: int, vocab: Any) -> None:
        self.features_cfg, self.k, self.vocab = features_cfg, k, vocab
        self._sim_vocab: np.ndarray | None = None

    def features(self, obs: Any) -> Any:
        """One feature row per HCP in the world's HCP order."""
        import pandas as pd

        from features import compute_features_asof

        tables = dict(obs.tables)
        tables["touchpoints"] = obs.history.touchpoints()
        tables["outcomes"] = obs.history.outcomes()
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
        """Top-k eligible channels per HCP by score ``p`` [n, C], trimmed to rep capacity."""
        from simulator.actions import Actions
        from simulator.constraints import fit_rep_capacity
        from simulator.world import CONTENTLESS_MASK

        elig = obs.eligibility
        score = np.where(elig.channel & ((content >= 0) | CONTENTLESS_MASK[None, :]), p, -np.inf)
        k = min(self.k, elig.max_touches, score.shape[1])
        order = np.argsort(-score, axis=1, kind="stable")[:, :k]
        hcp = np.repeat(np.arange(score.shape[0]), k)
        ch = order.reshape(-1)
        good = np.isfinite(score[hcp, ch])
        hcp, ch = hcp[good], ch[good]
        ct = np.where(CONTENTLESS_MASK[ch], -1, content[hcp, ch])
        s = slot[hcp, ch]
        acts = Actions(hcp, ch, ct, s // N_DAYPARTS, s % N_DAYPARTS)
        return acts.select(fit_rep_capacity(obs.public, elig, acts, score[hcp, ch]))


class ModelPolicy(_FeaturePolicy):
    """Our network: for every channel, the eligible (content, slot) with the highest predicted response."""

    def __init__(self, bundle: Any, features_cfg: Any, k: int, batch_size: int = 1024) -> None:
        super().__init__(features_cfg, k, bundle.vocab)
        self.bundle, self.batch_size = bundle, batch_size
        self.slot_allowed = _slot_allowed()

    def scores(self, obs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per HCP and channel: best predicted P(response), simulator content index, slot."""
        import torch

        from simulator.world import CONTENTLESS_MASK
        from training.dataset import NONE, encode_frame

        b = self.bundle
        data = encode_frame(self.features(obs), b.vocab, b.scaler, b.model.config.max_seq_len, with_labels=False)
        mask, sim_of_vocab = self.content_masks(obs)
        product = obs.public.hcp_product
        n, n_ch = len(data), len(CHANNELS)
        best_p = np.full((n, n_ch), -1.0)
        best_content = np.full((n, n_ch), -1, dtype=np.int64)
        best_slot = np.zeros((n, n_ch), dtype=np.int64)
        model = b.model.eval()
        with torch.no_grad():
            for start, batch in zip(range(0, n, self.batch_size), data.batches(self.batch_size)):
                rows = slice(start, start + len(batch["length"]))
                z = model.state(batch)
                m = torch.from_numpy(mask[product[rows]])  # [B, C, V]
                for c in range(n_ch):
                    allowed = m[:, c].clone()
                    if CONTENTLESS_MASK[c]:
                        allowed[:] = False
                        allowed[:, NONE] = True
                    for s in np.flatnonzero(self.slot_allowed[c]):
                        logits = model.response_logit_all_content(z, torch.full((len(z),), c), torch.full((len(z),), int(s)))
                        val, idx = logits.masked_fill(~allowed, float("-inf")).max(-1)
                        p = torch.sigmoid(val).numpy()
                        p = np.where(np.isfinite(val.numpy()), p, -1.0)
                        better = p > best_p[rows, c]
                        best_p[rows, c] = np.where(better, p, best_p[rows, c])
                        cand = np.where(CONTENTLESS_MASK[c], -1, sim_of_vocab[idx.numpy()])
                        best_content[rows, c] = np.where(better, cand, best_content[rows, c])
                        best_slot[rows, c] = np.where(better, s, best_slot[rows, c])
        return best_p, best_content, best_slot

    def __call__(self, obs: Any) -> Any:
        """This week's actions."""
        return self.choose(obs, *self.scores(obs))


class _PopularContent(_FeaturePolicy):
    """Content and slot from what was logged most (shared by the popularity and aggregate baselines)."""

    def __init__(self, popularity: Any, features_cfg: Any, k: int, vocab: Any) -> None:
        super().__init__(features_cfg, k, vocab)
        self.pop = popularity
        allowed = _slot_allowed()
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

    def __init__(self, model: Any, scaler: Any, popularity: Any, features_cfg: Any, k: int, vocab: Any) -> None:
        super().__init__(popularity, features_cfg, k, vocab)
        self.model, self.scaler = model, scaler

    def __call__(self, obs: Any) -> Any:
        """This week's actions."""
        static = self.scaler.transform(self.features(obs))
        content, slot = self.popular(obs)
        return self.choose(obs, self.model.response_probs(static), content, slot)


def _plots(mlflow: Any, calib: dict[str, tuple[np.ndarray, np.ndarray]], mix: dict[str, dict[str, int]], tiers: dict[str, dict[str, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.metrics import calibration_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    for name, (probs, labels) in calib.items():
        mean_p, rate, count = calibration_curve(probs, labels)
        ok = count > 0
        ax.plot(mean_p[ok], rate[ok], "o-", label=name)
    ax.set_xlabel("predicted P(response)")
    ax.set_ylabel("observed response rate")
    ax.legend()
    mlflow.log_figure(fig, "plots/calibration.png")
    plt.close(fig)

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


def evaluate_job(cfg: Any, version: str | None = None, *, weeks: int | None = None, n_boot: int = 200, progress: bool = True) -> dict[str, Any]:
    """Evaluate a registered model version (default: the challenger) against every baseline; return figures."""
    import mlflow
    from mlflow import MlflowClient

    from features.config import load_features_config
    from simulator.environment import Environment, share_of_oracle_gain
    from simulator.policies import BehaviourPolicy, OraclePolicy, RuleBasedPolicy
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

    # Off-policy estimates of the model policy from the logs alone.
    rows = policy_rows(bundle.model, prep.val, cfg.batch_size, k_content=cfg.candidate_content, k_slots=cfg.candidate_slots)
    for est_name, est in policy_estimates(rows, clip=None, n_boot=n_boot, seed=cfg.seed).items():
        figures[f"ope_{est_name}_response_rate"] = est.value
        figures[f"ope_{est_name}_ci_low"] = est.ci_low
        figures[f"ope_{est_name}_ci_high"] = est.ci_high
    figures["ope_matched_rows"] = int(rows["match"][np.isfinite(rows["propensity"])].sum())

    # True policy value in the simulator, every policy replaying the logged year from week 0.
    fcfg = load_features_config(cfg.features_config, overrides={"data_dir": cfg.data_dir})
    probe = Environment.from_data_dir(cfg.data_dir)
    k = probe.cfg.oracle_touches_per_week
    policies = {
        "logged": lambda env: BehaviourPolicy(env.cfg),
        "oracle": lambda env: OraclePolicy(env),
        "rules": lambda env: RuleBasedPolicy(env.cfg),
        "popularity": lambda env: PopularityPolicy(pop, fcfg, k, bundle.vocab),
        "aggregate": lambda env: AggregatePolicy(agg, bundle.scaler, pop, fcfg, k, bundle.vocab),
        "model": lambda env: ModelPolicy(bundle, fcfg, k),
    }
    values: dict[str, dict[str, Any]] = {}
    for who, make in policies.items():
        env = Environment.from_data_dir(cfg.data_dir)
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
    # OPE checked against the truth: the simulated per-touch response rate of the model policy.
    figures["ope_dr_error_vs_sim"] = figures.get("ope_dr_response_rate", np.nan) - values["model"]["response_rate_per_touch"]

    with mlflow.start_run(run_name=f"evaluate-v{mv.version}") as run:
        mlflow.set_tags({"stage": "evaluation", "model_version": str(mv.version), "data_fingerprint": prep.fingerprint})
        mlflow.log_metrics({k.replace("offline_", "offline/").replace("sim_", "sim/").replace("ope_", "ope/"): float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)})
        mlflow.log_dict(values, "evaluation/simulator_values.json")
        tiers = {who: {s: v["by_segment"][s]["expected_responses_per_hcp_week"] for s in SEGMENTS} for who, v in values.items()}
        calib = {"model": (model_pred["response_prob"], prep.val.arrays["label_response"]), "aggregate": (agg.predict(prep.val, pop)["response_prob"], prep.val.arrays["label_response"])}
        _plots(mlflow, calib, {"logged": values["logged"]["touches_by_channel"], "model": values["model"]["touches_by_channel"]}, tiers)
        figures["evaluation_run_id"] = run.info.run_id
    client = MlflowClient()
    client.set_model_version_tag(name, str(mv.version), tracking.POLICY_VALUE_TAG, repr(values["model"]["expected_responses_per_hcp_week"]))
    client.set_model_version_tag(name, str(mv.version), "share_of_oracle_gain", repr(figures["sim_model_share_of_oracle_gain"]))
    return figures
