"""`nba tune`: Optuna TPE with median pruning; every trial a nested MLflow run; the best retrained.

Optuna keeps its own database (SQLite by default, PostgreSQL for several workers): never the
MLflow one, whose alembic_version table would break Optuna's schema check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.config import TrainingConfig

# The validation metric trials are ranked by (higher is better) and pruned on, per epoch.
OBJECTIVE_METRIC = "val/response_auc"


def suggest(trial: Any, cfg: TrainingConfig) -> TrainingConfig:
    """A trial's config: the search space over encoder, width, depth, dropout, lr, objective, clip."""
    encoder = trial.suggest_categorical("model.encoder", ["transformer", "gru"])
    d_model = trial.suggest_categorical("model.d_model", [32, 64])
    update = {
        "model": cfg.model.model_copy(update={"encoder": encoder, "d_model": d_model, "n_layers": trial.suggest_int("model.n_layers", 1, 2), "dropout": trial.suggest_float("model.dropout", 0.0, 0.3), "n_heads": 4}),
        "loss": cfg.loss.model_copy(update={"objective": trial.suggest_categorical("loss.objective", ["ips", "dr"]), "ips_clip": trial.suggest_float("loss.ips_clip", 5.0, 100.0, log=True)}),
        "lr": trial.suggest_float("lr", 3e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
    }
    return TrainingConfig.model_validate({**cfg.model_dump(), **{k: (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in update.items()}})


def storage_url(url: str) -> str:
    """Create a SQLite storage's folder; other URLs pass through."""
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return url


def tune_job(cfg: TrainingConfig, *, progress: bool = True, retrain_best: bool = True) -> dict[str, Any]:
    """Run ``cfg.tune.trials`` trials into the shared study, then retrain and register the best config."""
    import mlflow
    import optuna

    from training import tracking
    from training.jobs import prepare_data, train_job

    tracking.setup(cfg.tracking)
    prep = prepare_data(cfg)
    sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=cfg.tune.startup_trials)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=cfg.tune.startup_trials, n_warmup_steps=cfg.tune.warmup_epochs)
    study = optuna.create_study(study_name=cfg.tune.study_name, storage=storage_url(cfg.tune.storage), sampler=sampler, pruner=pruner, direction="maximize", load_if_exists=True)
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = suggest(trial, cfg)

        def report(epoch: int, metrics: dict[str, float]) -> None:
            value = metrics.get(OBJECTIVE_METRIC, float("nan"))
            trial.report(value if np.isfinite(value) else 0.0, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: {OBJECTIVE_METRIC}={value:.4f} below the median")

        res = train_job(trial_cfg, prep=prep, register=False, nested=True, on_epoch=report, progress=False, log_model=False, tags={"optuna_trial": str(trial.number), "optuna_study": cfg.tune.study_name})
        return float(res["metrics"].get(OBJECTIVE_METRIC, float("nan")))

    with mlflow.start_run(run_name=f"tune-{cfg.tune.study_name}") as parent:
        mlflow.set_tags({"stage": "tuning", "optuna_storage": cfg.tune.storage.split("@")[-1], "data_fingerprint": prep.fingerprint})
        study.optimize(objective, n_trials=cfg.tune.trials, catch=())
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
        best = study.best_trial
        mlflow.log_params({f"best.{k}": v for k, v in best.params.items()})
        mlflow.log_metric("tune/best_value", best.value)
        out: dict[str, Any] = {
            "study": cfg.tune.study_name,
            "trials_total": len(study.trials),
            "trials_complete": len(complete),
            "trials_pruned": len(pruned),
            "best_trial": best.number,
            f"best_{OBJECTIVE_METRIC.replace('/', '_')}": best.value,
            "tune_run_id": parent.info.run_id,
        }
    if retrain_best:
        final = train_job(suggest(optuna.trial.FixedTrial(best.params), cfg), prep=prep, progress=progress)
        out.update({"final_run_id": final["run_id"], "model_version": final["model_version"]})
    return out
