"""`nba ui`, `nba compare`, `nba monitor` and `nba bench monitor` / `monitor-detection`.

Only typer and the standard library at module level: mlflow, evidently and torch load inside
the commands, so `nba --help` stays instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer

CONFIG_HELP = "Experiments config YAML (default: configs/experiments.yaml)."
DRIFT_EXIT = 3  # `nba monitor` exit status when drift passes the thresholds


def _load(config: Optional[Path], overrides: dict[str, Any], sets: list[str]) -> Any:
    from experiments.config import load_experiments_config
    from nba.configuration import parse_override

    merged = dict(overrides)
    for text in sets or []:
        key, value = parse_override(text)
        merged[key] = value
    return load_experiments_config(config, overrides=merged)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
    raise typer.Exit(2)


def _world_overrides(base: dict[str, Any], sets: list[str] | None) -> dict[str, Any]:
    """A worlds/OPE bench config's overrides: the flags, then each ``--set``; ``training.*`` keys are kept whole (dots and all)."""
    from nba.configuration import parse_override

    overrides = dict(base)
    for text in sets or []:
        key, value = parse_override(text)
        if key.startswith("training."):
            overrides.setdefault("training", {})[key[len("training.") :]] = value
        else:
            overrides[key] = value
    return overrides


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add the experiments stage's commands to the root and bench apps."""
    from experiments.lift_cli import register_lift

    register_lift(app, bench_app)

    @app.command("ui")
    def ui_cmd(
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        port: Optional[int] = typer.Option(None, "--port", help="Port on 127.0.0.1 (0: any free port)."),
        set_: list[str] = typer.Option([], "--set", help="Any config key, e.g. --set ui.workers=2 (repeatable)."),
    ) -> None:
        """Start the MLflow UI on 127.0.0.1 against the project's tracking store (Ctrl-C stops it)."""
        from experiments.config import training_config
        from experiments.ui import start_ui, stop_ui, wait_ready

        cfg = _load(config, {"ui.port": port}, set_)
        tracking = training_config(cfg).tracking
        from nba.servers import ChildGuard

        proc, url = start_ui(tracking, cfg.ui.host, cfg.ui.port, cfg.ui.workers)
        with ChildGuard(proc) as guard:  # SIGTERM/SIGINT/SIGHUP stop the server's whole process group
            try:
                wait_ready(url, proc)
                typer.echo(
                    f"MLflow UI at {url} (store {tracking.uri}); compare runs of '{tracking.experiment}', live model: alias 'champion' of '{tracking.registered_model}'. Ctrl-C stops it."
                )
                proc.wait()
            except (RuntimeError, TimeoutError) as exc:
                stop_ui(proc)
                _fail(exc)
        if guard.signum is None and guard.exit_code:
            raise typer.Exit(guard.exit_code)

    @app.command("compare")
    def compare_cmd(
        experiment: Optional[str] = typer.Option(None, "--experiment", help="MLflow experiment (default: the training experiment)."),
        runs: list[str] = typer.Option([], "--runs", help="Run ids to compare (repeatable; default: the latest runs)."),
        as_json: bool = typer.Option(False, "--json", help="Print the comparison as one JSON object only."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        set_: list[str] = typer.Option([], "--set", help="Any config key, e.g. --set compare.max_runs=20 (repeatable)."),
    ) -> None:
        """Runs side by side (params, policy value, OPE with intervals, NDCG@10, calibration), champion vs challenger, and who would win promotion."""
        import json

        from experiments.compare import compare_runs, render
        from experiments.config import training_config

        cfg = _load(config, {"compare.experiment": experiment}, set_)
        c = cfg.compare
        try:
            result = compare_runs(training_config(cfg).tracking, c.experiment, runs or None, max_runs=c.max_runs, params=c.params, metrics=c.metrics)
        except ValueError as exc:
            _fail(exc)
        if not as_json:
            render(result, c.metrics, c.params)
        typer.echo(json.dumps(result, sort_keys=True, default=str))

    @app.command("monitor")
    def monitor_cmd(
        reference: str = typer.Option(..., "--reference", help="Training run id, an audit window START..END, or a Parquet file of features."),
        current: str = typer.Option(
            ..., "--current", help="Audit-trail window START..END of suggestion as_of times (ISO dates; either side may be empty), or 'all'."
        ),
        audit_url: Optional[str] = typer.Option(None, "--audit-url", help="Audit trail (default: monitor.audit_url, else the serving config's)."),
        retrain: bool = typer.Option(False, "--retrain", help="When drift is flagged, run the training job (nba train)."),
        out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Where reports go (default: monitor.out_dir)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        set_: list[str] = typer.Option([], "--set", help="Any config key, e.g. --set monitor.thresholds.channel_mix=0.2 (repeatable)."),
    ) -> None:
        """Drift of served features and predictions vs a reference (Evidently); exit 3 when drift passes the thresholds."""
        from experiments.monitor import monitor_job, render
        from training.jobs import write_json_line

        cfg = _load(config, {"monitor.out_dir": str(out_dir) if out_dir else None}, set_)
        try:
            summary = monitor_job(cfg, reference, current, audit_url=audit_url, retrain=retrain)
        except (ValueError, FileNotFoundError) as exc:
            _fail(exc)
        render(summary)
        figures = {
            k: summary[k]
            for k in (
                "drift_detected",
                "data_drift",
                "sequence_drift",
                "prediction_drift",
                "catalogue_drift",
                "drifted_feature_share",
                "max_feature_score",
                "max_sequence_score",
                "features_compared",
            )
        }
        cat = summary.get("catalogue") or {}
        if cat:
            figures.update(
                catalogue_unknown_content_share=cat["current"]["unknown_share"],
                catalogue_unknown_share_rise=cat["unknown_share_rise"],
                catalogue_unknown_items=cat["current"]["unknown_items"],
            )
        figures.update({f"prediction_{k}": v for k, v in (summary.get("predictions") or {}).items() if not k.startswith("channel_share")})
        figures.update(
            top_features=[r["column"] for r in summary["top_features"]],
            monitor_wall_s=summary["seconds"],
            mlflow_run_id=summary.get("mlflow_run_id"),
            summary_json=summary["outputs"]["summary_json"],
            retrain_model_version=(summary.get("retrain") or {}).get("model_version"),
        )
        typer.echo(write_json_line(figures))
        if summary["drift_detected"]:
            raise typer.Exit(DRIFT_EXIT)

    @bench_app.command("worlds")
    def bench_worlds_cmd(
        split: str = typer.Option(
            "report", "--split", help="report (quoted figures; seeds never used for selection) or select (what defaults and tuning may look at)."
        ),
        worlds: Optional[str] = typer.Option(None, "--worlds", help="Comma list of presets (default: the split's; configs/worlds/)."),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma list of simulator seeds (default: the split's)."),
        hcps: Optional[int] = typer.Option(None, "--hcps", help="HCPs per world."),
        weeks: Optional[int] = typer.Option(None, "--weeks", help="Served weeks after the logged year."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs per world."),
        workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where each world's data, store and model go."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="Worlds bench YAML (default: configs/worlds_bench.yaml)."),
        set_: list[str] = typer.Option([], "--set", help="Any key of the worlds bench config, e.g. --set training.model.candidates=false (repeatable)."),
    ) -> None:
        """Train, serve and judge on K worlds x seeds; the median and worst share of the oracle's gain and the per-world checks."""
        from experiments.worlds_bench import bench_worlds
        from experiments.worlds_config import load_worlds_bench_config
        from nba.configuration import ConfigError
        from training.jobs import write_json_line

        overrides = _world_overrides({"hcps": hcps, "weeks": weeks, "epochs": epochs, "workdir": str(workdir) if workdir else None}, set_)
        try:
            cfg = load_worlds_bench_config(config, overrides)
            listed_seeds = [int(x) for x in seeds.split(",")] if seeds else None
            listed_worlds = [w.strip() for w in worlds.split(",")] if worlds else None
            if listed_worlds:
                from simulator.worlds import world_names

                unknown = [w for w in listed_worlds if w not in world_names()]
                if unknown:
                    raise ValueError(f"--worlds: unknown world(s) {unknown}; known: {', '.join(world_names())}")
            summary = bench_worlds(cfg, split, worlds=listed_worlds, seeds=listed_seeds)
        except (ConfigError, ValueError) as exc:
            _fail(exc)
        typer.echo(write_json_line(summary))

    @bench_app.command("ope")
    def bench_ope_cmd(
        split: str = typer.Option("report", "--split", help="report (quoted figures) or select (where the estimator and thresholds may be chosen)."),
        worlds: Optional[str] = typer.Option(None, "--worlds", help="Comma list of presets (default: the split's; configs/worlds/)."),
        seeds: Optional[str] = typer.Option(None, "--seeds", help="Comma list of simulator seeds (default: the split's)."),
        hcps: Optional[int] = typer.Option(None, "--hcps", help="HCPs per world."),
        epochs: Optional[int] = typer.Option(None, "--epochs", help="Training epochs per world."),
        workdir: Optional[Path] = typer.Option(None, "--workdir", help="Where each world's data, store and model go."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help="OPE bench YAML (default: configs/ope_bench.yaml)."),
        set_: list[str] = typer.Option([], "--set", help="Any key of the OPE bench config (repeatable)."),
    ) -> None:
        """Coverage of the served policy's true value by each estimator's interval, over worlds x seeds, with and without logged propensities."""
        from experiments.ope_bench import bench_ope
        from experiments.worlds_config import load_ope_bench_config
        from nba.configuration import ConfigError
        from training.jobs import write_json_line

        overrides = _world_overrides({"hcps": hcps, "epochs": epochs, "workdir": str(workdir) if workdir else None}, set_)
        try:
            cfg = load_ope_bench_config(config, overrides)
            listed_seeds = [int(x) for x in seeds.split(",")] if seeds else None
            listed_worlds = [w.strip() for w in worlds.split(",")] if worlds else None
            summary = bench_ope(cfg, split, worlds=listed_worlds, seeds=listed_seeds, chosen=cfg.estimator)
        except (ConfigError, ValueError) as exc:
            _fail(exc)
        typer.echo(write_json_line(summary))

    @bench_app.command("monitor")
    def bench_monitor_cmd(
        rows: int = typer.Option(100_000, "--rows", help="Rows per window (reference and current)."),
        seed: int = typer.Option(0, "--seed", help="Seed of the synthetic windows."),
        repeats: int = typer.Option(1, "--repeats", help="Timed runs (median reported)."),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        set_: list[str] = typer.Option([], "--set", help="Any config key (repeatable)."),
    ) -> None:
        """Time monitoring ROWS x every model feature (audit decode, drift scores, sequences, predictions, HTML)."""
        from experiments.bench import bench_monitor
        from training.jobs import write_json_line

        cfg = _load(config, {}, set_)
        typer.echo(write_json_line(bench_monitor(cfg.monitor, rows=rows, seed=seed, repeats=repeats)))

    @bench_app.command("monitor-detection")
    def bench_detection_cmd(
        data_dir: Optional[Path] = typer.Option(None, "--data", help="Simulated dataset (nba simulate; needs _ground_truth) whose world is served."),
        rescore: Optional[Path] = typer.Option(
            None, "--rescore", help="Score an earlier run again with the configured thresholds: its cases.json, or its --workdir (audit trails re-monitored)."
        ),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store holding the champion (none: rules-only serving)."),
        seeds: int = typer.Option(5, "--seeds", min=1, help="Closed-loop seeds per scenario."),
        burn_in_weeks: int = typer.Option(
            10, "--burn-in-weeks", min=0, help="Served weeks before monitoring starts (the switch to the model moves history features)."
        ),
        reference_weeks: int = typer.Option(3, "--reference-weeks", min=1, help="Served weeks before the drift (the reference window)."),
        current_weeks: int = typer.Option(3, "--current-weeks", min=2, help="Served weeks from the drift on (the current window skips the first)."),
        workdir: Path = typer.Option(Path(".nba/bench-monitor-detection"), "--workdir", help="Where each case's audit trail and data go."),
        scenarios: Optional[str] = typer.Option(None, "--scenarios", help="Comma list of none,channel_collapse,new_topic,population_shift (default: all)."),
        collapse_channel: Optional[str] = typer.Option(
            None, "--collapse-channel", help="Channel to collapse (default: the most-responded one in the no-drift run)."
        ),
        config: Optional[Path] = typer.Option(None, "--config", "-c", help=CONFIG_HELP),
        set_: list[str] = typer.Option([], "--set", help="Any config key, e.g. --set monitor.thresholds.feature_score=0.4 (repeatable)."),
    ) -> None:
        """Detection rate on drift-injected served windows and false-alarm rate on same-distribution ones, over seeds."""
        import os

        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from experiments.config import serving_config
        from experiments.detection import detection_bench
        from training.jobs import write_json_line

        cfg = _load(config, {}, set_)
        if rescore is not None:
            from experiments.detection import rescore_file

            try:
                typer.echo(write_json_line(rescore_file(rescore, cfg.monitor.thresholds, cfg.monitor, (burn_in_weeks, reference_weeks, current_weeks))))
            except ValueError as exc:
                _fail(exc)
            return
        if data_dir is None:
            _fail(ValueError("--data is required (a simulated dataset), unless --rescore names an earlier cases.json"))
        model = None
        if tracking_uri:
            from serving.scoring import load_champion

            scfg = serving_config(cfg)
            model = load_champion(tracking_uri, scfg.model_name, scfg.model_alias)
        typer.echo(
            write_json_line(
                detection_bench(
                    cfg,
                    data_dir,
                    workdir,
                    model=model,
                    seeds=seeds,
                    burn_in_weeks=burn_in_weeks,
                    reference_weeks=reference_weeks,
                    current_weeks=current_weeks,
                    only=tuple(scenarios.split(",")) if scenarios else None,
                    collapse_channel=collapse_channel,
                )
            )
        )
