"""`nba train`, `nba tune`, `nba evaluate`, `nba promote` and `nba bench train`.

Only typer and the standard library at module level: torch, mlflow and optuna load inside the
commands, so `nba --help` stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer

CONFIG_HELP = "Training config YAML (default: configs/training.yaml)."


def _load(config: Optional[Path], overrides: dict[str, Any], sets: list[str]) -> Any:
    from nba.configuration import load_config, parse_override
    from training.config import TrainingConfig

    merged = dict(overrides)
    for text in sets or []:
        key, value = parse_override(text)
        merged[key] = value
    return load_config(TrainingConfig, "training", config, overrides=merged)


def _quiet_threads() -> None:
    # Must precede the torch import: with busy-waiting OpenMP threads, two threads on a shared
    # 2-core machine ran 10-30x slower than one (measured); passive waiting removes that cliff.
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _explain(metrics: dict[str, Any], run_id: Optional[str]) -> None:
    """Print the notes on alarming-looking figures (training.metric_notes) to stderr and keep them as the MLflow run's description."""
    from training.metric_notes import metric_notes

    notes = metric_notes(metrics)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    if notes and run_id:
        from mlflow import MlflowClient

        # MLflow shows this tag as the run's description, beside the metrics it explains.
        MlflowClient().set_tag(run_id, "mlflow.note.content", "\n\n".join(f"- {n}" for n in notes))


def register(app: typer.Typer, bench_app: typer.Typer, judge: Optional[Callable[[], Any]] = None) -> None:
    """Add the training stage's commands to the root and bench apps.

    ``judge`` returns a ``training.evaluation.PolicyJudge`` (the composition root passes the
    simulator's, ``nba.wiring.simulator_judge``): `nba evaluate`'s true policy values and `nba tune`'s
    ``objective: simulator`` come from it. Called only when a command runs, so `nba --help` stays instant.
    """

    @app.command("train")
    def train_cmd(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        training_set: Optional[Path] = typer.Option(None, "--training-set", help="Parquet training set instead of the feature store."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Contract dataset the feature stage reads."),
        encoder: Optional[str] = typer.Option(None, "--encoder", help="transformer | gru"),
        objective: Optional[str] = typer.Option(None, "--objective", help="naive | ips | dr"),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed."),
        set_: list[str] = typer.Option([], "--set", help="Any config key, e.g. --set model.d_model=32 (repeatable)."),
    ) -> None:
        """Train the next-best-action model, log it to MLflow and register it as `challenger`."""
        _quiet_threads()
        from training.jobs import train_job, write_json_line

        cfg = _load(
            config,
            {
                "training_set": str(training_set) if training_set else None,
                "data_dir": str(data_dir) if data_dir else None,
                "model.encoder": encoder,
                "loss.objective": objective,
                "epochs": epochs,
                "seed": seed,
            },
            set_,
        )
        source = f"training set {cfg.training_set}" if cfg.training_set else f"the feature store over {cfg.data_dir}"
        typer.echo(
            f"[train] {cfg.model.encoder} d{cfg.model.d_model} x {cfg.model.n_layers}, objective {cfg.loss.objective}, {cfg.epochs} epochs: "
            f"reading {source} (Feast and torch load first, ~10-20 s), then one progress bar per epoch",
            err=True,
        )
        res = train_job(cfg)
        _explain(res["metrics"], res.get("run_id"))
        figures = {k.replace("/", "_"): v for k, v in res["metrics"].items()}
        figures.update(
            {
                "run_id": res["run_id"],
                "model_version": res["model_version"],
                "seconds_per_epoch_median": float(sorted(res["seconds_per_epoch"])[len(res["seconds_per_epoch"]) // 2]),
            }
        )
        typer.echo(write_json_line(figures))

    @app.command("tune")
    def tune_cmd(
        trials: Optional[int] = typer.Option(None, "--trials", help="Number of Optuna trials."),
        storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (sqlite:///... or postgresql+psycopg://...); never the MLflow DB."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        training_set: Optional[Path] = typer.Option(None, "--training-set", help="Parquet training set instead of the feature store."),
        study: Optional[str] = typer.Option(None, "--study", help="Study name (workers sharing a storage and study cooperate)."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Processes running trials at once against the one study (use a PostgreSQL storage)."),
        set_: list[str] = typer.Option([], "--set", help="Any config key (repeatable)."),
    ) -> None:
        """Search hyper-parameters with Optuna TPE + median pruning; each trial is a nested MLflow run."""
        _quiet_threads()
        from training.jobs import write_json_line
        from training.tuning import tune_job

        cfg = _load(
            config,
            {
                "tune.trials": trials,
                "tune.storage": storage,
                "tune.study_name": study,
                "tune.workers": workers,
                "training_set": str(training_set) if training_set else None,
            },
            set_,
        )
        typer.echo(
            f"[tune] {cfg.tune.trials} trials of up to {cfg.epochs} epochs into study {cfg.tune.study_name!r}: reading the data first; "
            f"then a line per trial and per epoch",
            err=True,
        )
        typer.echo(write_json_line(tune_job(cfg, judge=judge() if judge else None)))

    @app.command("evaluate")
    def evaluate_cmd(
        version: Optional[str] = typer.Option(None, "--version", help="Registered model version (default: the challenger)."),
        weeks: Optional[int] = typer.Option(None, "--weeks", help="Simulated weeks (default: the dataset's length)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        training_set: Optional[Path] = typer.Option(None, "--training-set", help="Parquet training set instead of the feature store."),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Simulated dataset (with _ground_truth)."),
        imitation: bool = typer.Option(False, "--imitation", help="Also simulate the network's policy heads (imitation of the logs for a naive model)."),
        served_checks: bool = typer.Option(
            True,
            "--served-checks/--no-served-checks",
            help="With ground truth: also serve the world through the serving engine and check repetition, overrides, calibration.",
        ),
        start: Optional[str] = typer.Option(
            None, "--start", help="end: continue after the logged year with its history; beginning: replay it from week 0 (config: sim_start)."
        ),
        set_: list[str] = typer.Option([], "--set", help="Any config key (repeatable)."),
    ) -> None:
        """Offline metrics, off-policy estimates vs the simulator's truth, and the true policy value of a model vs every baseline and partial oracle."""
        _quiet_threads()
        from training.evaluation import evaluate_job
        from training.jobs import write_json_line

        cfg = _load(
            config, {"training_set": str(training_set) if training_set else None, "data_dir": str(data_dir) if data_dir else None, "sim_start": start}, set_
        )
        figures = evaluate_job(cfg, version, weeks=weeks, imitation=imitation, judge=judge() if judge else None, served_checks=served_checks)
        _explain(figures, None)
        typer.echo(write_json_line(figures))

    @app.command("promote")
    def promote_cmd(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        set_: list[str] = typer.Option([], "--set", help="Any config key (repeatable)."),
    ) -> None:
        """Make the `challenger` the `champion` only on evidence: the lower bound of its off-policy gain over the champion
        (the first model: over the logged policy) under a trusted overlap verdict, or the simulator's true value."""
        from training.jobs import write_json_line
        from training.promotion import PromotionError, promote_job

        try:
            res = promote_job(_load(config, {}, set_))
        except PromotionError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"{'promoted' if res['promoted'] else 'not promoted'}: {res['reason']}", err=True)
        typer.echo(write_json_line(res))

    @bench_app.command("train")
    def bench_train_cmd(
        hcps: int = typer.Option(100_000, "--hcps", help="Synthetic HCPs."),
        weeks: int = typer.Option(52, "--weeks", help="Weeks of history."),
        epochs: int = typer.Option(1, "--epochs", help="Epochs to time."),
        max_batches: Optional[int] = typer.Option(None, "--max-batches", help="Stop each epoch after this many batches (extrapolates the epoch time)."),
        encoders: str = typer.Option("transformer,gru", "--encoders", help="Comma-separated encoders to time, each with its own epoch."),
        rows_per_hcp_week: Optional[float] = typer.Option(
            None, "--rows-per-hcp-week", help="Decision rows per HCP and week (default: as measured on the simulator, ~1.09)."
        ),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        set_: list[str] = typer.Option([], "--set", help="Any config key (repeatable)."),
    ) -> None:
        """Time a training epoch per encoder and peak memory on a simulator-shaped HCPs x weeks training set."""
        _quiet_threads()
        from training.bench import ROWS_PER_HCP_WEEK, bench_train
        from training.jobs import write_json_line

        cfg = _load(config, {}, set_)
        names = [e.strip() for e in encoders.split(",") if e.strip()]
        bad = [e for e in names if e not in ("transformer", "gru")]
        if bad or not names:
            raise typer.BadParameter(f"--encoders: expected transformer and/or gru, got {encoders!r}")
        per_week = ROWS_PER_HCP_WEEK if rows_per_hcp_week is None else rows_per_hcp_week
        if per_week <= 0:
            raise typer.BadParameter(f"--rows-per-hcp-week must be > 0, got {per_week}")
        typer.echo(
            write_json_line(bench_train(cfg, hcps=hcps, weeks=weeks, epochs=epochs, max_batches=max_batches, encoders=names, rows_per_hcp_week=per_week))
        )
