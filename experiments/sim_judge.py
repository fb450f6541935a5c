"""The simulator as judge of training's policies: `nba evaluate`'s simulated figures and `nba tune`'s ``objective: simulator``.

Judging code, so it lives in ``experiments`` and may read the simulator's ground truth
(production packages never import the simulator; tests/nba/test_layering.py holds them to it).
The composition root (``nba.wiring``) hands ``SIMULATOR_JUDGE`` to ``training.evaluation.evaluate_job``
and ``training.tuning.tune_job``. Every policy acts week by week in
``simulator.environment.Environment`` replaying the logged year: the logged behaviour policy,
the brief's rules, the oracle (upper bound), popularity, a non-sequential model on aggregate
features, and our model. The model and the aggregate baseline see only what a real policy
could: features computed by the feature stage's pure as-of transforms from the contract-shaped
history the environment has produced so far.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import numpy as np

from contract.schema import SEGMENTS
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
        as_of = dt.datetime.combine(obs.week_start, dt.time(), tzinfo=dt.UTC)
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
        Whether a channel carries content here is the simulated world's rule (what it accepts).
        """
        from simulator.actions import Actions
        from simulator.constraints import fit_rep_capacity

        elig = obs.eligibility
        contentless = elig.contentless  # [C] what this world accepts without content
        score = np.where(elig.channel & ((content >= 0) | contentless[None, :]), p, -np.inf)
        k = min(self.k, elig.max_touches, score.shape[1])
        for _ in range(6):
            order = np.argsort(-score, axis=1, kind="stable")[:, :k]
            hcp = np.repeat(np.arange(score.shape[0]), k)
            ch = order.reshape(-1)
            good = np.isfinite(score[hcp, ch])
            hcp, ch = hcp[good], ch[good]
            ct = np.where(contentless[ch], -1, content[hcp, ch])
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
        best_content = np.where(b.contentless[None, :], -1, sim_of_vocab[np.concatenate([x[1] for x in parts])])
        return np.concatenate([x[0] for x in parts]).astype(np.float64), best_content, np.concatenate([x[2] for x in parts]).astype(np.int64)

    def score_batch(self, model: Any, batch: Any, content_mask: Any) -> tuple[Any, Any, Any]:
        """[B, C] best predicted P(response) over allowed (content, slot) (training.policy.channel_scores), that content, that slot."""
        import torch

        from training.policy import channel_scores

        score, content, slot = channel_scores(
            model,
            model.state(batch),
            content_mask=content_mask,
            slot_allowed=torch.from_numpy(self.slot_allowed),
            contentless=torch.from_numpy(self.bundle.contentless),
        )
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

        heads = model.heads(model.state(batch))
        content = heads["content"].unsqueeze(1).masked_fill(~content_mask, float("-inf"))  # [B, C, V]
        ok = torch.isfinite(content.max(-1).values) | torch.from_numpy(self.bundle.contentless)
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


def simulated_policy_value(
    bundle: Any, data_dir: str, features_config: str | None, *, weeks: int | None = None, start: str = "end", progress: bool = False, seed_offset: int = 0
) -> dict[str, float]:
    """The model policy's true value in the simulator over ``weeks`` from ``start``, and its share of the oracle's gain.

    The logged and oracle runs do not depend on the model: they are cached per (data_dir, weeks,
    start) in this process, so tuning trials pay only for the model's own run.
    """
    from features.config import load_features_config
    from simulator.environment import Environment, share_of_oracle_gain
    from simulator.policies import BehaviourPolicy, OraclePolicy

    logged = logged_history(data_dir, start)
    # Tuning: the world's draws offset from the dataset's seed, which `nba evaluate` reports with.
    key = (str(data_dir), weeks, start, seed_offset)
    if key not in _REFERENCE_VALUES:
        ref = {}
        for who in ("logged", "oracle"):
            env = Environment.from_data_dir(data_dir, start=start, seed_offset=seed_offset)  # type: ignore[arg-type]
            ref[who] = env.run(BehaviourPolicy(env.cfg) if who == "logged" else OraclePolicy(env), weeks=weeks).value
        _REFERENCE_VALUES[key] = ref
    ref = _REFERENCE_VALUES[key]
    fcfg = load_features_config(features_config, overrides={"data_dir": data_dir})
    env = Environment.from_data_dir(data_dir, start=start, seed_offset=seed_offset)  # type: ignore[arg-type]
    value = env.run(
        ModelPolicy(bundle, fcfg, env.cfg.oracle_touches_per_week, logged=logged), weeks=weeks, progress=progress, desc="simulate policy model"
    ).value
    return {
        "responses_per_hcp_week": value["expected_responses_per_hcp_week"],
        "share_of_oracle_gain": share_of_oracle_gain(value, ref["logged"], ref["oracle"], VALUE_KEY),
    }


def week_mondays(times: Any) -> list:
    """Each decision time's week as the date of its Monday (UTC): the simulator's state is weekly, so a day-grain row (any weekday) is judged in its week's."""
    import pandas as pd

    when = pd.to_datetime(times)
    return list((when - pd.to_timedelta(when.weekday, unit="D")).normalize().date)


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
    day = week_mondays(val.week[idx])
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


def judge_evaluation(run: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Simulated figures of ``training.evaluation.EvaluationInputs``: OPE vs the truth, every policy's true value, the oracle gap.

    Returns (figures, each policy's ``RunResult.value``). Every policy starts where
    ``cfg.sim_start`` says and runs the same ``run.weeks``.
    """
    from experiments.oracle_gap import gap_figures, logs_posterior_makers, partial_oracle_makers
    from features.config import load_features_config
    from simulator.environment import Environment, share_of_oracle_gain
    from simulator.policies import BehaviourPolicy, OraclePolicy, RuleBasedPolicy

    cfg, bundle, pop, agg = run.cfg, run.bundle, run.popularity, run.aggregate
    figures: dict[str, Any] = {}
    data = run.data if getattr(run, "data", None) is not None else run.prep.val
    truth, covered = ope_truth(cfg.data_dir, run.rows, data, bundle.vocab, run.known)
    figures["ope_true_response_rate"] = truth
    figures["ope_truth_probability_mass_covered"] = covered
    for est_name in ("dm", "ips", "snips", "dr", "switch_dr", "dr_os", "dm_rc", "switch_dr_ba", "switch_dr_bb"):
        if f"ope_{est_name}_ci_low" in run.figures:
            figures[f"ope_{est_name}_error_vs_truth"] = run.figures[f"ope_{est_name}_value"] - truth
            figures[f"ope_{est_name}_ci_covers_truth"] = bool(run.figures[f"ope_{est_name}_ci_low"] <= truth <= run.figures[f"ope_{est_name}_ci_high"])

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
        **({"imitation": lambda env: HeadsPolicy(bundle, fcfg, k, logged=logged)} if run.imitation else {}),
        **(partial_oracle_makers() if run.partial_oracles else {}),
        # After the logs: the oracle believing each HCP's posterior from its logged year, the
        # ceiling of what learning from these logs can reach.
        **(logs_posterior_makers(cfg.data_dir) if run.partial_oracles and start == "end" else {}),
    }
    values: dict[str, dict[str, Any]] = {}
    for who, make in policies.items():
        env = Environment.from_data_dir(cfg.data_dir, start=start)  # the dataset's own draws: tuning selects on others (tune.sim_seed_offset)
        values[who] = env.run(make(env), weeks=run.weeks, progress=run.progress, desc=f"simulate policy {who}").value
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
    if getattr(run, "served_checks", True):
        figures.update(served_checks(cfg, bundle, fcfg, start=start, weeks=n_weeks, k=k, progress=run.progress))
    if run.partial_oracles:
        shares = {who: figures.get(f"sim_{who}_share_of_oracle_gain", 1.0 if who == "oracle" else 0.0) for who in values}
        worth = {
            "channel": shares["population_channel"] - shares["population"],
            "topic": shares["population_topic"] - shares["population"],
            "timing": shares["population_timing"] - shares["population"],
            "timing_given_rest": 1.0 - shares["oracle_no_timing"],
            "fatigue_given_rest": 1.0 - shares["oracle_no_fatigue"],
        }
        figures.update({k: v for k, v in gap_figures({"share": {}, "worth": worth}).items()})
        # How far the model is from a policy knowing the world's population laws but nothing per HCP.
        figures["gap_model_minus_population_oracle_share"] = shares["model"] - shares["population"]
        if "oracle_from_logs" in shares:
            figures["gap_model_minus_oracle_from_logs_share"] = shares["model"] - shares["oracle_from_logs"]
    return figures, values


def served_checks(cfg: Any, bundle: Any, features_cfg: Any, *, start: str, weeks: int, k: int, progress: bool = True) -> dict[str, Any]:
    """The model served through the serving engine (guardrails, window rules, calibration) and the rule policy, judged in the world.

    Figures are ``served_*`` (the same keys as ``nba bench worlds`` rows) and ``served_check_*``,
    the checks every world must pass: repetition within 30 days no more than the logged reps',
    first choices overridden by a rule at most 2%, |mean expected - mean realised| response on
    served suggestions at most 0.03, and the rule policy at least the logged policy.
    """
    from experiments.worlds_bench import CHECKS, judge_world, world_checks

    if progress:
        print("simulating the policy as served (serving engine) and the rule policy", file=sys.stderr, flush=True)
    row = judge_world(Path(cfg.data_dir), None, features_cfg, weeks=weeks, k=k, seed=cfg.seed, bundle=bundle, start=start, trained=False)
    keys = (
        "model_share_of_oracle_gain",
        "model_touches",
        "logged_touches",
        "rules_share_of_oracle_gain",
        "model_repeat_share_30d",
        "logged_repeat_share_30d",
        "rules_repeat_share_30d",
        "model_conference_within_60d_share",
        "logged_conference_within_60d_share",
        "model_department_meeting_within_21d_share",
        "logged_department_meeting_within_21d_share",
        "model_override_share",
        "model_raw_infeasible_share",
        "model_mean_expected",
        "model_mean_realised",
        "model_calibration_gap",
        "rules_vs_logged_value_ratio",
    )
    out: dict[str, Any] = {f"served_{key}": row[key] for key in keys if key in row}
    checks = world_checks(row)
    out.update({f"served_check_{name}": bool(checks[name]) for name in CHECKS})
    out["served_checks_passed"] = int(sum(checks.values()))
    out["served_checks_total"] = len(CHECKS)
    return out


class SimulatorJudge:
    """``training.evaluation.PolicyJudge`` backed by the simulator's ground truth."""

    def evaluate(self, run: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        """See ``judge_evaluation``."""
        return judge_evaluation(run)

    def policy_value(
        self, bundle: Any, data_dir: str, features_config: str | None, *, weeks: int | None = None, start: str = "end", seed_offset: int = 0
    ) -> dict[str, float]:
        """See ``simulated_policy_value``."""
        return simulated_policy_value(bundle, data_dir, features_config, weeks=weeks, start=start, seed_offset=seed_offset)


SIMULATOR_JUDGE = SimulatorJudge()
