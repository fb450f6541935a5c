"""``nba bench worlds``: the product judged across a family of worlds, never one.

For each (world preset, seed) of a split: simulate a logged year (``simulator.worlds``), build the
feature store and train the default model on those logs exactly as a customer would (the same
``features`` and ``training`` calls as ``nba train``), then serve the world for ``weeks`` weeks
after its logs through the serving engine itself (``serving.engine.Recommender``: masks,
guardrails, window rules, calibration) and judge what was done against the world's truth:

- ``share``: (V_served - V_logged) / (V_oracle - V_logged), V = expected positive responses of the
  executed touches (the oracle's probabilities: far less noise than realised counts), the logged
  reps' behaviour policy and the myopic oracle continuing from the same state and seed;
- the rule policy (the holdout and degraded-mode policy) served the same way, against the logged policy;
- repetition: share of touches with content that repeat an item the HCP got within 30 days;
- wear-out: share of conferences within 60 days and department meetings within 21 days of the last;
- first choices a rule had to override after masking, and before it (the model's unmasked view);
- |mean expected - mean realised| response of the served model's executed suggestions.

The ``report`` split's seeds are disjoint from ``select``'s (``experiments.worlds_config``):
quote figures from ``report`` only. Progress goes to stderr; the last stdout line is one JSON object.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from contract.schema import CHANNELS

VALUE_KEY = "expected_positive_responses"


def _log(msg: str) -> None:
    print(f"[bench worlds] {msg}", file=sys.stderr, flush=True)


class ServedPolicy:
    """A simulator policy that asks the serving engine for each week's slate and executes it.

    Reps work down a slate of ``touches + 1`` suggestions and do the best-ranked ``touches`` that
    the world allows and their capacity fits (every rep-executed suggestion accepted: the policy
    is judged, not the reps' compliance). The oracle and training's rule likewise replace a touch
    the rep has no time for by the HCP's next-best channel.
    """

    def __init__(self, rec: Any, features_cfg: Any, logged: dict[str, Any], touches: int, seed: int) -> None:
        from experiments.lift_config import ClosedLoopConfig
        from experiments.sim_judge import _FeaturePolicy

        self.rec, self.touches = rec, touches
        k = min(touches + 1, len(CHANNELS))
        self.k = k
        self.features = _FeaturePolicy(features_cfg, k, None, logged).features
        # Every rep-executed suggestion accepted: the policy is judged, not the reps' compliance.
        self.plan_cfg = ClosedLoopConfig(weeks=1, seed=seed, k=k, acceptance=dict.fromkeys("ABCD", 1.0), capacity_by_arm=False, counterfactual=False)
        self.expected: dict[int, float] = {}  # suggestion number -> served expected response
        self.policy_of: dict[int, str] = {}
        self.overridden: list[float] = []
        self.raw_infeasible: list[float] = []
        self.next_number = 0
        self.shift_from = 0  # first suggestion number served under the current outcome shift
        self.counts: dict[str, int] = {}  # what became of the suggestions (experiments.closed_loop.plan_week)

    def __call__(self, obs: Any) -> Any:
        """This week's executed actions, from the served slate."""
        from experiments.closed_loop import plan_week, week_as_of

        as_of = week_as_of(obs.public, obs.week)
        self.refit_outcome_shift(obs)
        frame = self.features(obs)
        ids = frame["hcp_id"].astype(str).tolist()
        result = self.rec.recommend(ids, k=self.k, as_of=as_of, record=False, explore=False, features=frame)
        f = result.feasibility
        if f.get("decisions"):
            self.overridden.append(f["first_choice_overridden"] / f["decisions"])
            self.raw_infeasible.append(f["unmasked_first_infeasible"] / f["decisions"])
        served = result.frame
        plan = plan_week(served, obs, self.plan_cfg, self.next_number)
        for key, value in plan.counts.items():
            self.counts[key] = self.counts.get(key, 0) + int(value)
        numbers = self.next_number + np.arange(len(served))
        self.expected.update(zip(numbers.tolist(), served["expected_response"].astype(float).tolist()))
        self.policy_of.update(zip(numbers.tolist(), served["policy"].astype(str).tolist()))
        self.next_number += len(served)
        acts = plan.actions
        rank = served["rank"].to_numpy()[plan.row]
        order = np.lexsort((rank, acts.hcp))
        first = np.r_[True, acts.hcp[order][1:] != acts.hcp[order][:-1]]
        nth = np.arange(len(order)) - np.maximum.accumulate(np.where(first, np.arange(len(order)), 0))
        keep = np.zeros(len(acts), dtype=bool)
        keep[order[nth < self.touches]] = True
        return acts.select(keep)

    def refit_outcome_shift(self, obs: Any) -> None:
        """The weekly outcome refit a service does from its audit trail (``serving.outcome_calibration``), from the outcomes observed so far."""
        oc = self.rec.cfg.outcome_calibration
        if not oc.enabled or self.rec.model is None or not obs.history.weeks:
            return
        from serving.outcome_calibration import OutcomeShift

        cols = obs.history.touches().cols
        sug = np.asarray(cols["suggestion"], dtype=np.int64)
        pick = np.flatnonzero((sug >= self.shift_from) & ~np.asarray(cols["inbound"], dtype=bool))
        pick = np.array([i for i in pick if self.policy_of.get(int(sug[i])) == "model"], dtype=np.int64)
        current = self.rec.outcome_shift
        if current.model_version != self.rec.model_version:
            current = OutcomeShift(self.rec.model_version)
        expected = np.array([self.expected[int(sug[i])] for i in pick])
        realised = np.asarray(cols["opened"], dtype=np.float64)[pick] if len(pick) else np.zeros(0)
        now = dt.datetime.combine(obs.week_start, dt.time(), tzinfo=dt.UTC)
        nxt = current.update(expected, realised, prior_rows=oc.prior_rows, min_rows=oc.min_rows, max_abs_shift=oc.max_abs_shift, now=now)
        if nxt is not current:
            self.shift_from = self.next_number
        self.rec.outcome_shift = nxt


def _first_ts_us(env: Any) -> int:
    return env.public.week_start_us(env.week)


def _run(env: Any, policy: Any, weeks: int) -> dict[str, Any]:
    """Run ``weeks`` weeks; the run's value and the served period's repetition and wear-out shares."""
    from simulator.metrics import repeat_share, window_shares

    # A world continued after its logs keeps only the served weeks' touches: repetition and
    # wear-out are judged within them, alike for every policy.
    since = _first_ts_us(env)
    result = env.run(policy, weeks)
    touches = result.history.touches().cols
    out = {
        "value": result.value[VALUE_KEY],
        "touches": result.value["touches"],
        "violations": int(sum(result.value["violations"].values())),
        "repeat_share_30d": repeat_share(touches, days=30, since=since),
        **{
            f"{ch}_within_{d}d_share": v
            for (ch, d), v in zip(
                (("conference", 60), ("department_meeting", 21)), window_shares(touches, {"conference": 60, "department_meeting": 21}, since=since).values()
            )
        },
        "_touches": touches,
        "_p": result.p_response,
    }
    return out


def _calibration_gap(run: dict[str, Any], policy: ServedPolicy, which: str = "model") -> tuple[float, float, float]:
    """(mean expected, mean realised P, rows) over executed outbound touches that served ``which`` suggestions."""
    cols, p = run["_touches"], run["_p"]
    sug = np.asarray(cols["suggestion"], dtype=np.int64)
    out = ~np.asarray(cols["inbound"], dtype=bool) & (sug >= 0)
    exp, real = [], []
    for i in np.flatnonzero(out):
        s = int(sug[i])
        if policy.policy_of.get(s) == which and s in policy.expected:
            exp.append(policy.expected[s])
            real.append(float(p[i]))
    if not exp:
        return float("nan"), float("nan"), 0.0
    return float(np.mean(exp)), float(np.mean(real)), float(len(exp))


def judge_world(
    data_dir: Path,
    bundle_dir: Path | None,
    features_cfg: Any,
    *,
    weeks: int,
    k: int,
    seed: int,
    serving_overrides: dict[str, Any] | None = None,
    bundle: Any = None,
    start: str = "end",
    trained: bool = True,
) -> dict[str, Any]:
    """Serve a simulated dataset's world after its logs with the model (and with the rules alone); judge both.

    The model comes from ``bundle_dir`` or an already loaded ``bundle``; ``trained`` also runs
    training's decision rule without the serving engine (what the engine costs or adds).
    """
    from contract.io import read_manifest, read_table
    from nba.configuration import load_config
    from serving.config import ServingConfig
    from serving.engine import Recommender
    from serving.reference import ReferenceData
    from serving.scoring import LoadedModel
    from simulator.environment import Environment, share_of_oracle_gain
    from simulator.policies import BehaviourPolicy, OraclePolicy
    from training.artifacts import load_bundle

    names = {"products", "reps", "hcps", "content", "touchpoints", "outcomes", *read_manifest(data_dir).get("tables", {})}
    logged = {n: read_table(data_dir, n) for n in sorted(names)}
    reference = ReferenceData.load(data_dir)

    # The shipped serving config, with no holdout and no exploration (each arm is one policy for
    # everyone) and the world's own business rules declared as window rules, as a customer
    # declares the rules it knows: the minimum gap between two touches on a channel.
    def env() -> Any:
        return Environment.from_data_dir(data_dir, start=start)

    e = env()
    base = load_config(ServingConfig, "serving")
    world_rules = [{"name": f"world_{ch}_{7 * w}d", "channel": ch, "days": 7 * w, "max": 1} for ch, w in e.cfg.constraints.min_weeks_between.items() if w > 0]
    # Added to the shipped rules, not in their place: where both bound a channel the stricter one holds
    # (replacing conference_60d by a world's 4-week gap let a third of the conferences fall within 60 days).
    kept = [r.model_dump() for r in base.guardrails.window_rules]
    overrides = {
        "exploration.holdout_share": 0.0,
        "exploration.epsilon": 0.0,
        "require_model": False,
        "guardrails.window_rules": kept + world_rules,
        **(serving_overrides or {}),
    }
    serving_cfg = load_config(ServingConfig, "serving", overrides=overrides)

    out: dict[str, Any] = {}
    runs = {"logged": _run(e, BehaviourPolicy(e.cfg), weeks)}
    e = env()
    runs["oracle"] = _run(e, OraclePolicy(e), weeks)
    arms: dict[str, ServedPolicy] = {}
    model = None
    if bundle is None and bundle_dir is not None:
        bundle = load_bundle(bundle_dir)
    if bundle is not None:
        model = LoadedModel(bundle, "bench-worlds", "1", "champion")
    if model is not None and trained:
        # Training's decision rule without the serving engine (masks of the world only): what
        # serving's guardrails, window rules and slate cost or add.
        from experiments.sim_judge import ModelPolicy

        e = env()
        runs["trained"] = _run(e, ModelPolicy(model.bundle, features_cfg, k, logged=logged), weeks)
    for arm, m in (("model", model), ("rules", None)):
        if arm == "model" and m is None:
            continue
        rec = Recommender(serving_cfg, features_cfg=features_cfg, model=m, reference=reference)
        arms[arm] = ServedPolicy(rec, features_cfg, logged, k, seed)
        runs[arm] = _run(env(), arms[arm], weeks)
    v_logged, v_oracle = runs["logged"]["value"], runs["oracle"]["value"]
    for arm, r in runs.items():
        out[f"{arm}_value"] = r["value"]
        out[f"{arm}_touches"] = r["touches"]
        out[f"{arm}_repeat_share_30d"] = r["repeat_share_30d"]
        out[f"{arm}_conference_within_60d_share"] = r["conference_within_60d_share"]
        out[f"{arm}_department_meeting_within_21d_share"] = r["department_meeting_within_21d_share"]
        out[f"{arm}_violations"] = r["violations"]
        if arm not in ("logged", "oracle"):
            out[f"{arm}_share_of_oracle_gain"] = share_of_oracle_gain({VALUE_KEY: r["value"]}, {VALUE_KEY: v_logged}, {VALUE_KEY: v_oracle})
    for arm, policy in arms.items():
        out.update({f"{arm}_{key}": value for key, value in policy.counts.items()})
        out[f"{arm}_override_share"] = float(np.mean(policy.overridden)) if policy.overridden else float("nan")
        out[f"{arm}_raw_infeasible_share"] = float(np.mean(policy.raw_infeasible)) if policy.raw_infeasible else float("nan")
    if "model" in arms:
        exp, real, rows = _calibration_gap(runs["model"], arms["model"])
        out.update(model_mean_expected=exp, model_mean_realised=real, model_calibration_rows=rows, model_calibration_gap=abs(exp - real))
    out["rules_vs_logged_value_ratio"] = runs["rules"]["value"] / v_logged if v_logged else float("nan")
    return out


def _train(data_dir: Path, workdir: Path, features_cfg: Any, epochs: int, seed: int, training: dict[str, Any]) -> Path:
    """Build the feature store and train the default model on the world's logs; the bundle's folder."""
    return train_world(data_dir, workdir, features_cfg, epochs, seed, training)[0]


def train_world(data_dir: Path, workdir: Path, features_cfg: Any, epochs: int, seed: int, training: dict[str, Any]) -> tuple[Path, Any, Any]:
    """Build the feature store and train the default model on the world's logs: (bundle folder, training config, its encoded splits).

    The splits are returned so a caller evaluating the model reads the training set once, not again.
    """
    import yaml

    from features import apply, build_sources
    from nba.configuration import load_config
    from training.config import TrainingConfig, workdir_overrides
    from training.jobs import prepare_data, train_job

    build_sources(features_cfg)
    apply(features_cfg)
    feat_yaml = workdir / "features.yaml"
    feat_yaml.write_text(yaml.safe_dump(features_cfg.model_dump(mode="json"), sort_keys=False))
    cfg = load_config(
        TrainingConfig,
        "training",
        overrides={
            **workdir_overrides(workdir, data_dir, feat_yaml),
            "epochs": epochs,
            "seed": seed,
            **training,
        },
    )
    prep = prepare_data(cfg)
    trained = train_job(cfg, prep=prep, register=False, log_model=False, progress=False)
    return Path(trained["bundle"]), cfg, prep


def simulate_world(world: str, seed: int, cfg: Any, *, spare_days: int) -> tuple[Path, Path, Any]:
    """A fresh ``<workdir>/<world>-<seed>`` with the world's logged year simulated into ``data``; (workdir, data_dir, features config).

    The logged year ends ``spare_days`` before today (whatever the day, the contract refuses future
    timestamps, and served weeks must fit after it), on a Monday.
    """
    import shutil

    from features import load_features_config
    from simulator.generate import simulate
    from simulator.worlds import world_config

    workdir = (Path(cfg.workdir) / f"{world}-{seed}").resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    data_dir = workdir / "data"
    start = dt.date.today() - dt.timedelta(days=cfg.days + spare_days)
    start -= dt.timedelta(days=start.weekday())
    simulate(world_config(world, hcps=cfg.hcps, days=cfg.days, seed=seed, out=str(data_dir), start_date=start.isoformat()), progress=False)
    features_cfg = load_features_config(overrides={"data_dir": str(data_dir), "workspace_dir": str(workdir / "features")}).resolved()
    return workdir, data_dir, features_cfg


def run_world(world: str, seed: int, cfg: Any, *, train: bool = True) -> dict[str, Any]:
    """One (world, seed): simulate, train, serve and judge; figures and timings."""
    t0 = time.perf_counter()
    workdir, data_dir, features_cfg = simulate_world(world, seed, cfg, spare_days=7 * (cfg.weeks + 2))
    t_sim = time.perf_counter() - t0
    bundle = _train(data_dir, workdir, features_cfg, cfg.epochs, seed, cfg.training) if train else None
    t_train = time.perf_counter() - t0 - t_sim
    figures = judge_world(data_dir, bundle, features_cfg, weeks=cfg.weeks, k=cfg.k, seed=seed)
    t_judge = time.perf_counter() - t0 - t_sim - t_train
    return {"world": world, "seed": seed, **figures, "simulate_s": t_sim, "train_s": t_train, "judge_s": t_judge}


CHECKS = ("repeat_le_logged", "override_le_2pct", "calibration_gap_le_0_03", "rules_ge_logged")


def world_checks(row: dict[str, Any]) -> dict[str, bool]:
    """The checks every world must pass (issue 13), from one ``judge_world`` row; a missing figure fails."""

    def num(key: str, default: float = float("nan")) -> float:
        v = row.get(key, default)
        return float(v) if v is not None else default

    return {
        "repeat_le_logged": num("model_repeat_share_30d") <= num("logged_repeat_share_30d") + 1e-9,
        # No model arm (rules-only) means no first choice to override.
        "override_le_2pct": (0.0 if np.isnan(num("model_override_share")) else num("model_override_share")) <= 0.02,
        "calibration_gap_le_0_03": num("model_calibration_gap") <= 0.03,
        "rules_ge_logged": num("rules_value") >= num("logged_value"),
    }


def summarise(rows: list[dict[str, Any]], held_out_worlds: set[str] | None = None) -> dict[str, Any]:
    """Median and worst share of the oracle's gain and the per-world checks, over the rows of a split."""
    df = pd.DataFrame(rows)
    out: dict[str, Any] = {"pairs": len(df), "worlds": ",".join(dict.fromkeys(df["world"])), "seeds": ",".join(str(s) for s in dict.fromkeys(df["seed"]))}
    for arm in ("model", "rules", "trained"):
        col = f"{arm}_share_of_oracle_gain"
        if col in df:
            per_world = df.groupby("world", sort=False)[col].median()
            out[f"{arm}_share_median"] = float(df[col].median())
            out[f"{arm}_share_worst_world_median"] = float(per_world.min())
            out[f"{arm}_share_worst_pair"] = float(df[col].min())
            out.update({f"{arm}_share_{w}": float(v) for w, v in per_world.items()})
            if held_out_worlds:
                held = df[df["world"].isin(held_out_worlds)][col]
                out[f"{arm}_share_median_unselected_worlds"] = float(held.median()) if len(held) else float("nan")
    passed = pd.DataFrame([world_checks(r) for r in rows])
    for name in CHECKS:
        out[f"pairs_{name}"] = int(passed[name].sum())
    for col in (
        "model_repeat_share_30d",
        "logged_repeat_share_30d",
        "rules_repeat_share_30d",
        "model_override_share",
        "model_raw_infeasible_share",
        "model_calibration_gap",
        "model_conference_within_60d_share",
        "logged_conference_within_60d_share",
        "rules_vs_logged_value_ratio",
    ):
        if col in df:
            out[f"{col}_median"] = float(df[col].median())
            out[f"{col}_worst"] = float(df[col].min() if col == "rules_vs_logged_value_ratio" else df[col].max())
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Share of the oracle's gain per world (median over seeds, bars min to max) per policy: one colour per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.DataFrame(rows)
    worlds = list(dict.fromkeys(df["world"]))
    fig, ax = plt.subplots(figsize=(1.4 * len(worlds) + 2, 4))
    arms = [a for a in ("model", "trained", "rules") if f"{a}_share_of_oracle_gain" in df]
    width = 0.8 / max(1, len(arms))
    colours = {"model": "tab:blue", "trained": "tab:green", "rules": "tab:orange"}
    for j, arm in enumerate(arms):
        colour = colours[arm]
        med = df.groupby("world", sort=False)[f"{arm}_share_of_oracle_gain"].median().reindex(worlds)
        lo = df.groupby("world", sort=False)[f"{arm}_share_of_oracle_gain"].min().reindex(worlds)
        hi = df.groupby("world", sort=False)[f"{arm}_share_of_oracle_gain"].max().reindex(worlds)
        x = np.arange(len(worlds)) + j * width
        ax.bar(x, med, width, color=colour, label={"model": "served model", "trained": "training's rule, no serving rules", "rules": "rule policy"}[arm])
        ax.errorbar(x, med, yerr=[med - lo, hi - med], fmt="none", ecolor="black", capsize=3, lw=1)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(np.arange(len(worlds)) + width * (len(arms) - 1) / 2, worlds, rotation=20)
    ax.set_ylabel("share of the oracle's gain over the logged policy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bench_worlds(cfg: Any, split: str = "report", *, worlds: list[str] | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
    """Every (world, seed) of the split (or the given subset): rows written to the workdir, summary returned."""
    import os

    sp = cfg.split(split)
    chosen_worlds = worlds or sp.worlds
    chosen_seeds = seeds or sp.seeds
    other = cfg.split("select" if split == "report" else "report")
    if split == "report" and set(chosen_seeds) & set(other.seeds):
        raise ValueError(f"seeds {sorted(set(chosen_seeds) & set(other.seeds))} belong to the select split: the report split never uses them")
    pairs = [(w, s) for w in chosen_worlds for s in chosen_seeds]
    load_start = os.getloadavg()[0]
    rows = []
    Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    for i, (world, seed) in enumerate(pairs, 1):
        _log(f"{i}/{len(pairs)} world {world} seed {seed}: simulate, train, serve {cfg.weeks} weeks")
        row = run_world(world, seed, cfg)
        _log(
            f"{world}/{seed}: model share {row.get('model_share_of_oracle_gain', float('nan')):.3f}, rules share {row['rules_share_of_oracle_gain']:.3f}, "
            f"repeat {row.get('model_repeat_share_30d', float('nan')):.2f} (logged {row['logged_repeat_share_30d']:.2f}), "
            f"calibration gap {row.get('model_calibration_gap', float('nan')):.3f}"
        )
        rows.append({k: v for k, v in row.items() if not k.startswith("_")})
        (Path(cfg.workdir) / f"rows-{split}.json").write_text(json.dumps(rows, indent=1, default=float))
    held_out = set(cfg.report.worlds) - set(cfg.select.worlds) if split == "report" else None
    summary = summarise(rows, held_out)
    plot(rows, Path(cfg.workdir) / f"share-by-world-{split}.png")
    summary.update(
        split=split,
        hcps=cfg.hcps,
        days=cfg.days,
        served_weeks=cfg.weeks,
        epochs=cfg.epochs,
        load_avg_1m_start=load_start,
        load_avg_1m_end=os.getloadavg()[0],
        rows_path=str(Path(cfg.workdir) / f"rows-{split}.json"),
        plot_path=str(Path(cfg.workdir) / f"share-by-world-{split}.png"),
        channels=len(CHANNELS),
    )
    return summary


__all__ = ["ServedPolicy", "bench_worlds", "judge_world", "run_world", "simulate_world", "summarise", "train_world"]
