"""`nba tune`: Optuna TPE with median pruning; every trial a nested MLflow run; the best retrained.

Optuna keeps its own database (SQLite by default, PostgreSQL for several workers): never the
MLflow one, whose alembic_version table would break Optuna's schema check.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.config import TrainingConfig

if TYPE_CHECKING:
    from training.evaluation import PolicyJudge

# Trials are pruned per epoch on this validation metric (the policy value exists only after training)...
PRUNE_METRIC = "val/response_auc"
# ... and ranked by policy value (TuneSection.objective): the simulator's truth or the DR estimate.
OBJECTIVE_METRICS = {"simulator": "sim/share_of_oracle_gain", "ope_dr": "val/policy_value_dr"}


def resolve_objective(cfg: TrainingConfig, judged: bool = True) -> str:
    """``simulator`` or ``ope_dr``: ``auto`` picks the simulator when the dataset has ground truth and a judge (``judged``) can read it."""
    from training.evaluation import has_ground_truth

    if cfg.tune.objective != "auto":
        if cfg.tune.objective == "simulator" and not has_ground_truth(cfg.data_dir):
            raise ValueError(f"tune.objective=simulator: {cfg.data_dir} has no simulator ground truth; use tune.objective=ope_dr")
        if cfg.tune.objective == "simulator" and not judged:
            raise ValueError(
                "tune.objective=simulator: no simulator judge was given (`nba tune` wires one; tune_job(..., judge=...)); use tune.objective=ope_dr"
            )
        return cfg.tune.objective
    return "simulator" if judged and has_ground_truth(cfg.data_dir) else "ope_dr"


def suggest(trial: Any, cfg: TrainingConfig) -> TrainingConfig:
    """A trial's config: the search space over encoder, width, depth, dropout, lr, objective, clip."""
    encoder = trial.suggest_categorical("model.encoder", list(cfg.tune.encoders))
    d_model = trial.suggest_categorical("model.d_model", [32, 64])
    update = {
        "model": cfg.model.model_copy(
            update={
                "encoder": encoder,
                "d_model": d_model,
                "n_layers": trial.suggest_int("model.n_layers", 1, 2),
                "dropout": trial.suggest_float("model.dropout", 0.0, 0.3),
                "n_heads": 4,
                "history": trial.suggest_categorical("model.history", [True, False]),
                "content_tags": trial.suggest_categorical("model.content_tags", [True, False]),
            }
        ),
        "loss": cfg.loss.model_copy(
            update={
                "objective": trial.suggest_categorical("loss.objective", ["naive", "ips", "dr"]),
                "response_weighting": trial.suggest_categorical("loss.response_weighting", ["none", "ips"]),
                "ips_clip": trial.suggest_float("loss.ips_clip", 5.0, 100.0, log=True),
            }
        ),
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    }
    return TrainingConfig.model_validate({**cfg.model_dump(), **{k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in update.items()}})


def default_params(cfg: TrainingConfig) -> dict[str, Any]:
    """The configured model as a point of ``suggest``'s space (values outside it are left for the sampler)."""
    m, loss = cfg.model, cfg.loss
    params: dict[str, Any] = {
        "model.n_layers": m.n_layers,
        "model.dropout": m.dropout,
        "model.history": m.history,
        "model.content_tags": m.content_tags,
        "loss.objective": loss.objective,
        "loss.response_weighting": loss.response_weighting,
        "loss.ips_clip": loss.ips_clip,
        "lr": cfg.lr,
        "weight_decay": cfg.weight_decay,
    }
    if m.encoder in cfg.tune.encoders:
        params["model.encoder"] = m.encoder
    if m.d_model in (32, 64):
        params["model.d_model"] = m.d_model
    inside = {
        "model.n_layers": 1 <= m.n_layers <= 2,
        "model.dropout": 0.0 <= m.dropout <= 0.3,
        "loss.ips_clip": 5.0 <= loss.ips_clip <= 100.0,
        "lr": 3e-4 <= cfg.lr <= 1e-2,
        "weight_decay": 1e-6 <= cfg.weight_decay <= 1e-2,
    }
    return {k: v for k, v in params.items() if inside.get(k, True)}


def storage_url(url: str) -> str:
    """Create a SQLite storage's folder; other URLs pass through."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return url


def tune_job(cfg: TrainingConfig, *, progress: bool = True, retrain_best: bool = True, judge: PolicyJudge | None = None) -> dict[str, Any]:
    """Run ``cfg.tune.trials`` trials into the shared study, then register the best trial's model as challenger.

    ``judge`` (``training.evaluation.PolicyJudge``, handed in by the composition root) measures each
    trial's true policy value when the objective is ``simulator``.

    ``tune.workers`` > 1: that many processes run the trials at once against the one study (this
    one and ``tune.workers`` - 1 spawned ones, each reading the data itself); the trials are split
    between them, every trial a child of this run's MLflow run, and ``workers`` (data-parallel
    ranks) is shared out so the machine is not oversubscribed. Give them a PostgreSQL storage:
    SQLite serialises every write.

    The best trial's own saved bundle is registered when it is on this machine (no second training:
    the ranked model is exactly the registered one); otherwise (a trial of another worker) its
    config is retrained with ``retrain_best``.
    """
    import mlflow
    import optuna

    from training import tracking
    from training.jobs import prepare_data, train_job

    tracking.setup(cfg.tracking)
    ranked_by = resolve_objective(cfg, judged=judge is not None)
    metric = OBJECTIVE_METRICS[ranked_by]
    n_workers = cfg.tune.workers
    if n_workers > 1 and cfg.tune.storage.startswith("sqlite"):
        print(
            f"[tune] warning: {n_workers} workers on a SQLite storage wait on each other's writes; use tune.storage=postgresql+psycopg://...", file=sys.stderr
        )
    prep = prepare_data(cfg)
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(cfg)
    if not study.trials:
        # A new study tries the configured model first: the tuned result then never ranks below the default.
        study.enqueue_trial(default_params(cfg))
    first = len(study.trials)
    shares = [cfg.tune.trials // n_workers + (i < cfg.tune.trials % n_workers) for i in range(n_workers)]
    # Data-parallel ranks shared out between the tuning workers: their sum stays cfg.workers.
    trial_base = cfg.model_copy(update={"workers": max(1, cfg.workers // n_workers)})

    with mlflow.start_run(run_name=f"tune-{cfg.tune.study_name}") as parent:
        mlflow.set_tags(
            {
                "stage": "tuning",
                "ranked_by": f"{ranked_by} ({metric})",
                "optuna_storage": cfg.tune.storage.split("@")[-1],
                "data_fingerprint": prep.fingerprint,
                "optuna_workers": str(n_workers),
            }
        )
        helpers = _start_workers(trial_base, shares[1:], first, parent.info.run_id, judge, progress)
        try:
            _optimize(trial_base, study, prep, shares[0], first, judge, progress, parent_run_id=None, label="")
        except BaseException:
            for p in helpers:
                p.terminate()
            raise
        finally:
            for p in helpers:
                p.join()
        failed = [i + 1 for i, p in enumerate(helpers) if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"tuning worker(s) {failed} failed (their traceback is above); the study keeps the trials they finished")
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
        best = study.best_trial
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metric("tune/best_value", best.value)
        out: dict[str, Any] = {
            "study": cfg.tune.study_name,
            "trials_total": len(trials),
            "trials_complete": len(complete),
            "trials_pruned": len(pruned),
            "best_trial": best.number,
            "ranked_by": ranked_by,
            f"best_{metric.replace('/', '_')}": best.value,
            "tune_run_id": parent.info.run_id,
            "workers": n_workers,
        }
    bundle_dir = best.user_attrs.get("bundle")
    if bundle_dir and Path(bundle_dir).exists():
        from training.jobs import register_bundle

        version = register_bundle(cfg, best.user_attrs["run_id"], Path(bundle_dir), prep)
        out.update({"final_run_id": best.user_attrs["run_id"], "model_version": version})
    elif retrain_best:
        final = train_job(suggest(optuna.trial.FixedTrial(best.params), cfg), prep=prep, progress=progress)
        out.update({"final_run_id": final["run_id"], "model_version": final["model_version"]})
    return out


def _study(cfg: TrainingConfig) -> Any:
    """The shared study (created on first use); every worker opens it the same way."""
    import optuna

    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.tune.startup_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg.tune.startup_trials, n_warmup_steps=cfg.tune.warmup_epochs)
    return optuna.create_study(
        study_name=cfg.tune.study_name, storage=storage_url(cfg.tune.storage), sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True
    )


def _start_workers(cfg: TrainingConfig, shares: list[int], first: int, parent_run_id: str, judge: Any, progress: bool) -> list[Any]:
    """Spawn one process per share (fresh interpreters: no MLflow, Optuna or torch state inherited), each running ``tune_worker``."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = []
    for i, n in enumerate(shares, start=1):
        if n <= 0:
            continue
        p = ctx.Process(target=tune_worker, args=(cfg.model_dump(mode="json"), n, first, parent_run_id, judge, progress, i), name=f"nba-tune-worker-{i}")
        p.start()
        procs.append(p)
    return procs


def tune_worker(cfg_dump: dict[str, Any], n_trials: int, first: int, parent_run_id: str, judge: Any, progress: bool, index: int) -> None:
    """A spawned tuning worker: read the data, then run ``n_trials`` trials of the shared study under ``parent_run_id``."""
    import optuna

    from training import tracking
    from training.jobs import configure_torch, prepare_data

    cfg = TrainingConfig.model_validate(cfg_dump)
    tracking.setup(cfg.tracking)
    configure_torch(cfg)
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    _optimize(cfg, _study(cfg), prepare_data(cfg), n_trials, first, judge, progress, parent_run_id=parent_run_id, label=f"worker {index}")


def _optimize(
    cfg: TrainingConfig, study: Any, prep: Any, n_trials: int, first: int, judge: Any, progress: bool, *, parent_run_id: str | None, label: str
) -> None:
    """Run ``n_trials`` trials of ``study`` in this process; each a nested MLflow run (under ``parent_run_id`` when not the active run)."""
    import mlflow
    import optuna

    from training.jobs import train_job

    ranked_by = resolve_objective(cfg, judged=judge is not None)
    metric = OBJECTIVE_METRICS[ranked_by]

    prefix = f"[tune {label}]" if label else "[tune]"

    def say(text: str) -> None:
        # Trials take minutes each: a line per trial and per epoch on stderr, kept when redirected.
        if progress:
            print(f"{prefix} {text}", file=sys.stderr, flush=True)

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = suggest(trial, cfg)
        name = f"trial {trial.number} ({trial.number - first + 1}/{cfg.tune.trials} of this run)"
        m = trial_cfg.model
        say(f"{name}: {m.encoder} d{m.d_model} x {m.n_layers}, objective {trial_cfg.loss.objective}, lr {trial_cfg.lr:.2g}, {trial_cfg.epochs} epochs")

        def report(epoch: int, metrics: dict[str, float]) -> None:
            value = metrics.get(PRUNE_METRIC, float("nan"))
            say(f"{name} epoch {epoch + 1}/{trial_cfg.epochs}: {PRUNE_METRIC} {value:.4f}")
            trial.report(value if np.isfinite(value) else 0.0, epoch)
            if trial.should_prune():
                say(f"{name} pruned after epoch {epoch + 1}: {PRUNE_METRIC} below the median of earlier trials")
                raise optuna.TrialPruned(f"epoch {epoch}: {PRUNE_METRIC}={value:.4f} below the median")

        tags = {"optuna_trial": str(trial.number), "optuna_study": cfg.tune.study_name}
        if parent_run_id is not None:  # a spawned worker has no active parent run: name it, as MLflow's nesting does
            tags["mlflow.parentRunId"] = parent_run_id
        res = train_job(trial_cfg, prep=prep, register=False, nested=True, on_epoch=report, progress=False, log_model=False, tags=tags)
        if ranked_by == "simulator" and judge is not None:  # resolve_objective ranks by the simulator only with a judge
            from training.artifacts import load_bundle

            sim = judge.policy_value(
                load_bundle(res["bundle"]),
                cfg.data_dir,
                cfg.features_config,
                weeks=cfg.tune.sim_weeks,
                start=cfg.sim_start,
                seed_offset=cfg.tune.sim_seed_offset,
            )  # never evaluate's draws
            with mlflow.start_run(run_id=res["run_id"], nested=True):
                mlflow.log_metrics({f"sim/{k}": v for k, v in sim.items()})
            res["metrics"].update({f"sim/{k}": v for k, v in sim.items()})
        value = float(res["metrics"].get(metric, float("nan")))
        trial.set_user_attr("run_id", res["run_id"])
        trial.set_user_attr("bundle", res["bundle"])
        trial.set_user_attr("pid", os.getpid())
        done = [
            t.value for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and np.isfinite(t.value)
        ]
        best = max([*done, value]) if np.isfinite(value) else (max(done) if done else float("nan"))
        say(f"{name} done: {metric} {value:.4f} (best so far {best:.4f})")
        return value if np.isfinite(value) else float("-inf")

    study.optimize(objective, n_trials=n_trials, catch=())
