"""Serving commands: ``nba serve``, ``nba recommend --all``, ``nba bench serve`` (typer + stdlib only here)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer


def _overrides(sets: list[str] | None) -> dict:
    from nba.configuration import parse_override

    return dict(parse_override(s) for s in (sets or []))


def _load(config: Optional[Path], sets: list[str] | None, extra: dict | None = None):
    from nba.configuration import load_config
    from serving.config import ServingConfig

    return load_config(ServingConfig, "serving", config, {**_overrides(sets), **(extra or {})})


def service_home(host: str, port: int) -> Path:
    """A BentoML home of this service's own, keyed by its address.

    ``bentoml serve`` wipes ``$BENTOML_HOME/prometheus_multiproc_dir`` at start: with one shared
    home, a second service (or a benchmark) on the host erased this one's metrics. No two live
    services share an address, so none shares a directory; the service loads its model from
    MLflow and keeps nothing else there.
    """
    import tempfile

    return Path(tempfile.gettempdir()) / f"nba-bentoml-{os.getuid()}" / f"{host}-{port}"


# Routes BentoML's OpenTelemetry middleware passes straight through: with no exporter it still
# builds three spans per request, ~0.4 ms of the event loop's time each (over 1 ms on a busy box).
UNTRACED_ROUTES = ("/recommend", "/plan", "/feedback", "/feedback/batch", "/metrics", "/readyz", "/livez", "/healthz")


def bentoml_overrides(environ: dict[str, str]) -> str:
    """``BENTOML_CONFIG_OVERRIDES`` for the service: the caller's, plus untraced API routes unless it configures tracing itself."""
    found = json.loads(environ.get("BENTOML_CONFIG_OVERRIDES") or "{}")
    if "tracing" not in found:  # an operator who configures tracing gets spans on every route, as BentoML gives them
        found["tracing"] = {"excluded_urls": list(UNTRACED_ROUTES)}
    return json.dumps(found)


def serve_process(config: Optional[Path], overrides: dict, host: str, port: int, *, quiet: bool = False):
    """Start ``bentoml serve`` for the service in a new process group; returns the Popen."""
    import subprocess

    env = dict(
        os.environ,
        BENTOML_DO_NOT_TRACK="True",
        MLFLOW_DISABLE_TELEMETRY="true",
        NBA_SERVING_SET=json.dumps(overrides),
        BENTOML_HOME=str(service_home(host, port)),
        BENTOML_CONFIG_OVERRIDES=bentoml_overrides(os.environ),
    )
    if config is not None:
        env["NBA_SERVING_CONFIG"] = str(Path(config).resolve())
    bentoml = str(Path(sys.executable).with_name("bentoml"))
    cmd = [bentoml, "serve", "serving.service:NextBestAction", "--host", host, "--port", str(port)]
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=out, stderr=out)


def register(app: typer.Typer, bench_app: typer.Typer, simulate: Optional[Callable[..., Any]] = None) -> None:
    """Add serving commands to the CLI; ``simulate`` (nba.wiring) writes the data of `nba bench serve`'s world."""
    from serving.audit_cli import register_audit

    register_audit(app)
    from serving.crm_cli import register_feedback

    register_feedback(app)

    @app.command("serve")
    def serve(
        config: Optional[Path] = typer.Option(None, "--config", help="serving YAML (default configs/serving.yaml)"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="override a config key, e.g. --set port=3001"),
        port: Optional[int] = typer.Option(None, "--port", help="port (default from config)"),
    ) -> None:
        """Start the next-best-action HTTP API (BentoML) on the configured local address."""
        overrides = _overrides(set_)
        if port is not None:
            overrides["port"] = port
        cfg = _load(config, None, overrides)
        typer.echo(f"serving on http://{cfg.host}:{cfg.port} (model {cfg.model_name}@{cfg.model_alias}, audit {cfg.audit_url})", err=True)
        from nba.servers import ChildGuard

        proc = serve_process(config, overrides, cfg.host, cfg.port)
        with ChildGuard(proc) as guard:  # SIGTERM/SIGINT/SIGHUP stop bentoml's whole process group
            proc.wait()
        raise typer.Exit(guard.exit_code)

    @app.command("recommend")
    def recommend(
        all_: bool = typer.Option(False, "--all", help="score every HCP in the reference tables"),
        out: Path = typer.Option(..., "--out", help="output file for CRM import (.parquet or .csv)"),
        config: Optional[Path] = typer.Option(None, "--config", help="serving YAML"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="override a config key"),
        k: Optional[int] = typer.Option(None, "--k", min=1, max=8, help="suggestions per HCP"),
        as_of: Optional[str] = typer.Option(None, "--as-of", help="decision time, ISO 8601 with offset (default now)"),
        window: Optional[str] = typer.Option(
            None, "--window", help="planning horizon: 'week' (default, best slot in the coming week) or 'today' (each HCP's local today)"
        ),
        decision_date: Optional[str] = typer.Option(
            None, "--decision-date", help="plan this local date (YYYY-MM-DD, today up to 6 days ahead); not with --window"
        ),
        no_audit: bool = typer.Option(False, "--no-audit", help="do not record suggestions in the audit trail (dry runs only)"),
        fmt: Optional[str] = typer.Option(
            None,
            "--format",
            help="generic (default, .parquet or .csv) | veeva (Vault CRM suggestion__v + suggestion_tag__v CSV) | salesforce (Recommendation + TerritoryAcctRcmdAction CSV)",
        ),
    ) -> None:
        """Nightly batch: score HCPs and write CRM suggestion records, with progress (--window today / --decision-date plan one day)."""
        import time
        from datetime import date, datetime

        from serving.batch import check_out, recommend_all
        from serving.engine import WINDOWS, Recommender, RequestError
        from serving.schemas import FIRST_DATE, LAST_DATE

        if not all_:
            raise typer.BadParameter("only --all is supported: the API serves individual HCPs", param_hint="--all")
        when = None
        if as_of:
            when = datetime.fromisoformat(as_of)
            if when.tzinfo is None:
                raise typer.BadParameter(f"{as_of!r} has no UTC offset", param_hint="--as-of")
            if not FIRST_DATE <= when.date() <= LAST_DATE:
                raise typer.BadParameter(f"{as_of!r} is outside {FIRST_DATE} to {LAST_DATE}", param_hint="--as-of")
        if window is not None and window not in WINDOWS:
            raise typer.BadParameter(f"{window!r}: must be one of {', '.join(WINDOWS)}", param_hint="--window")
        day = None
        if decision_date:
            try:
                day = date.fromisoformat(decision_date)
            except ValueError:
                raise typer.BadParameter(f"{decision_date!r} is not a date (YYYY-MM-DD)", param_hint="--decision-date") from None
            if not FIRST_DATE <= day <= LAST_DATE:
                raise typer.BadParameter(f"{decision_date!r} is outside {FIRST_DATE} to {LAST_DATE}", param_hint="--decision-date")
            if window is not None:
                raise typer.BadParameter("give either --window or --decision-date, not both", param_hint="--decision-date")
        cfg = _load(config, set_)
        fmt = fmt or cfg.crm_format
        try:
            check_out(out, fmt)  # before minutes of scoring
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--format" if str(exc).startswith("--format") else "--out") from None
        t0 = time.perf_counter()
        rec = Recommender.from_config(cfg)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        try:
            summary = recommend_all(rec, out, k=k, as_of=when, record=not no_audit, window=window, decision_date=day, fmt=fmt)
        except RequestError as exc:  # a decision date outside the planned week, for example
            raise typer.BadParameter(str(exc), param_hint="--decision-date" if exc.args and str(exc).startswith("decision_date") else "--window") from None
        secs = time.perf_counter() - t1
        for note in summary.pop("notes"):
            typer.echo(f"note: {note}", err=True)
        typer.echo(
            json.dumps(
                {
                    **summary,
                    "model_version": rec.model_version,
                    "load_seconds": round(load_s, 3),
                    "score_seconds": round(secs, 3),
                    "hcps_per_second": round(summary["hcps"] / secs, 1) if secs else None,
                },
                sort_keys=True,
            )
        )

    @app.command("replay")
    def replay(
        config: Optional[Path] = typer.Option(None, "--config", help="serving YAML: the BASELINE (default configs/serving.yaml)"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="the change to test (CHANGED), e.g. --set guardrails.weekly_caps.visit=1 (repeatable)"),
        channels: Optional[str] = typer.Option(None, "--channels", help="comma-separated channels the CHANGED strategy may use (default: all)"),
        weeks: int = typer.Option(13, "--weeks", min=1, help="last weeks of the imported logs to replay (13 = a quarter)"),
        data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="contract dataset (default: the serving, else the features config's)"),
        version: Optional[str] = typer.Option(None, "--version", help="registered model version (default: the config's alias, the champion)"),
        training_set: Optional[Path] = typer.Option(None, "--training-set", help="a ready Parquet training set instead of building point-in-time features"),
        n_boot: int = typer.Option(1000, "--n-boot", min=50, help="HCP-clustered bootstrap resamples of the OPE intervals"),
        propensity: str = typer.Option("auto", "--propensity", help="logs without propensities: auto (estimate the reps' policy) | logged (drop those rows)"),
        seed: int = typer.Option(0, "--seed"),
    ) -> None:
        """What-if before go-live: a changed serving config against the loaded one on the last weeks of the logs (schedule, mix, OPE value, rules)."""
        from nba.configuration import ConfigError

        def fail(message: str, code: int) -> None:
            typer.echo(f"error: {' '.join(str(message).split())}", err=True)
            raise typer.Exit(code)

        if propensity not in ("auto", "logged"):
            fail(f"--propensity: must be auto or logged, got {propensity!r}", 2)
        try:
            base, changed = _load(config, None), _load(config, set_)
        except ConfigError as exc:
            fail(str(exc), 2)
        from serving.replay import ReplayError, format_table, run_replay, stderr_progress
        from serving.scoring import ModelUnavailable
        from training.jobs import write_json_line

        wanted = [c.strip() for c in channels.split(",") if c.strip()] if channels else None
        try:
            figures, _ = run_replay(
                base,
                changed,
                weeks=weeks,
                data_dir=data_dir,
                version=version,
                training_set=training_set,
                channels=wanted,
                n_boot=n_boot,
                propensity=propensity,
                seed=seed,
                progress=stderr_progress,
            )
        except (ReplayError, ModelUnavailable, FileNotFoundError, ValueError) as exc:  # bad data or settings: one line, no traceback
            fail(str(exc), 2 if str(exc).startswith("--channels") else 1)
        typer.echo(format_table(figures))
        typer.echo(write_json_line(figures))

    @bench_app.command("resilience")
    def bench_resilience(
        workdir: Path = typer.Option(Path(".nba/bench/resilience"), "--workdir", help="where the benchmark world is built"),
        hcps: int = typer.Option(200, "--hcps", min=10, help="HCPs in the synthetic world"),
        rate: float = typer.Option(10.0, "--rate", min=0.5, help="single-HCP /recommend requests per second during the outage test"),
        outage_s: float = typer.Option(5.0, "--outage-s", min=0.5, help="seconds Redis stays dead"),
        steady_s: float = typer.Option(3.0, "--steady-s", min=0.5, help="seconds of load before, between and after the outages"),
        feedback_posts: int = typer.Option(10_000, "--feedback-posts", min=10, help="/feedback posts of the crash test (10,000 in the real run)"),
        kill_after: float = typer.Option(0.5, "--kill-after", min=0.01, max=0.99, help="kill the server after this share of the posts was acknowledged"),
        seed: int = typer.Option(0, "--seed"),
        rebuild: bool = typer.Option(False, "--rebuild", help="rebuild the world even if one exists"),
    ) -> None:
        """Online store killed under load and server killed during feedback, against a real bentoml serve and a private redis-server."""
        from serving.resilience import run_resilience

        figures = run_resilience(
            workdir,
            n_hcps=hcps,
            rate_per_s=rate,
            outage_s=outage_s,
            steady_s=steady_s,
            feedback_posts=feedback_posts,
            kill_after_share=kill_after,
            seed=seed,
            rebuild=rebuild,
            simulate=simulate,
            progress=lambda m: typer.echo(m, err=True),
        )
        typer.echo(json.dumps(figures, sort_keys=True))

    @bench_app.command("fuzz")
    def bench_fuzz(
        workdir: Path = typer.Option(Path(".nba/bench/fuzz"), "--workdir", help="where the benchmark world is built"),
        cases: int = typer.Option(1000, "--cases", min=1, help="generated requests per operation"),
        hcps: int = typer.Option(60, "--hcps", min=10, help="HCPs in the synthetic world"),
        seed: int = typer.Option(0, "--seed"),
        rebuild: bool = typer.Option(False, "--rebuild", help="rebuild the world even if one exists"),
    ) -> None:
        """Fuzz /recommend, /plan and /feedback from the service's OpenAPI document: 5xx, undocumented statuses, nonconforming bodies."""
        from serving.fuzz import run_fuzz_bench

        figures = run_fuzz_bench(
            workdir, cases_per_op=cases, n_hcps=hcps, seed=seed, rebuild=rebuild, simulate=simulate, progress=lambda m: typer.echo(m, err=True)
        )
        typer.echo(json.dumps(figures, sort_keys=True))

    @bench_app.command("feedback")
    def bench_feedback(
        workdir: Optional[Path] = typer.Option(None, "--workdir", help="where the world is built and kept (default .nba/bench/feedback-<hcps>x<days>)"),
        hcps: int = typer.Option(20_000, "--hcps", min=10, help="HCPs in the simulated world (the target: 100,000)"),
        days: int = typer.Option(365, "--days", min=8, help="simulated days of history"),
        batch: int = typer.Option(1000, "--batch", min=1, help="items per timed batch"),
        batches: int = typer.Option(5, "--batches", min=1, help="timed batches (median reported)"),
        singles: int = typer.Option(200, "--singles", min=1, help="single-item calls timed (p50/p99)"),
        seed: int = typer.Option(0, "--seed"),
        rebuild: bool = typer.Option(False, "--rebuild", help="rebuild the world even if one exists"),
    ) -> None:
        """Event-sourced feedback in-process: per-HCP index build, a batch of 1,000 items (median) and one item p50/p99 (JSON last line)."""
        from serving.feedback_bench import run_feedback_bench

        if simulate is None:
            raise typer.BadParameter("needs the simulator (run through `nba`)")
        where = workdir or Path(f".nba/bench/feedback-{hcps}x{days}")
        figures = run_feedback_bench(where, hcps=hcps, days=days, seed=seed, simulate=simulate, batch=batch, batches=batches, singles=singles, rebuild=rebuild)
        typer.echo(json.dumps(figures, sort_keys=True))

    @bench_app.command("serve")
    def bench_serve(
        workdir: Path = typer.Option(Path(".nba/bench/serve"), "--workdir", help="where the benchmark world is built"),
        hcps: int = typer.Option(2000, "--hcps", min=10, help="HCPs in the synthetic world"),
        requests: int = typer.Option(300, "--requests", min=10, help="single-HCP requests timed"),
        batches: int = typer.Option(10, "--batches", min=1, help="1,000-HCP batch requests timed"),
        nightly_hcps: int = typer.Option(0, "--nightly-hcps", min=0, help="also time the nightly batch over this many HCPs (ids repeat the world's)"),
        seed: int = typer.Option(0, "--seed"),
        rebuild: bool = typer.Option(False, "--rebuild", help="rebuild the world even if one exists"),
        rate: float = typer.Option(200.0, "--rate", min=1.0, help="sustained single-HCP requests per second (open loop, fixed times)"),
        duration: float = typer.Option(10.0, "--duration", min=1.0, help="seconds of sustained load (the target's run: 600)"),
        overload_factor: float = typer.Option(2.0, "--overload-factor", min=1.0, help="overload phase at this multiple of --rate"),
        overload_duration: float = typer.Option(5.0, "--overload-duration", min=0.0, help="seconds of overload (0: skip)"),
        workers: Optional[int] = typer.Option(None, "--workers", min=1, help="service worker processes (default: the config's)"),
        client_timeout: float = typer.Option(10.0, "--client-timeout", min=0.1, help="seconds a load-test client waits for an answer"),
        set_: Optional[list[str]] = typer.Option(None, "--set", help="override a serving key of the benchmarked service, e.g. --set admission.max_in_flight=8"),
    ) -> None:
        """Serve a world over loopback: serial latency, sustained load and overload (open loop), audit vs delivered, vs in-process scoring."""
        from serving.bench import run_bench

        figures = run_bench(
            workdir,
            n_hcps=hcps,
            requests=requests,
            batches=batches,
            nightly_hcps=nightly_hcps,
            seed=seed,
            rebuild=rebuild,
            simulate=simulate,
            rate=rate,
            duration_s=duration,
            overload_factor=overload_factor,
            overload_s=overload_duration,
            workers=workers,
            client_timeout_s=client_timeout,
            overrides=_overrides(set_),
        )
        typer.echo(json.dumps(figures, sort_keys=True))
