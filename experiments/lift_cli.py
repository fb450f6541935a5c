"""Commands of the lift measurement: ``nba lift``, ``nba closed-loop``, ``nba bench lift`` (typer + stdlib only here)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Optional

import typer

_CONFIG = typer.Option(None, "--config", help="experiments YAML (default configs/experiments.yaml)")
_SET = typer.Option(None, "--set", help="override a config key, e.g. --set lift.n_boot=2000")


def _cfg(config: Optional[Path], sets: Optional[list[str]], extra: dict[str, Any]):
    """The experiments config: file, then flags given (None = not given), then --set."""
    from experiments.cli import _load

    return _load(config, {k: v for k, v in extra.items() if v is not None}, sets or [])


def _sources(cfg: Any) -> tuple[str, str | None]:
    """(audit_url, data_dir) of `nba lift`: its own config, else the serving config's."""
    lift = cfg.lift
    if lift.audit_url and lift.data_dir:
        return lift.audit_url, lift.data_dir
    from experiments.config import serving_config

    scfg = serving_config(cfg)
    data_dir = lift.data_dir or scfg.data_dir
    if data_dir is None:
        from features import load_features_config

        data_dir = str(load_features_config(scfg.features_config).data_dir)
    return lift.audit_url or scfg.audit_url, data_dir


def _finite(figures: dict[str, Any]) -> dict[str, Any]:
    """NaN / inf (a tier too small for an interval) as null, so the JSON line parses anywhere."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in figures.items()}


def _load_model(tracking_uri: Optional[str], cfg: Any) -> Any:
    """The champion at ``tracking_uri`` (None: a rules-only run)."""
    if not tracking_uri:
        return None
    from experiments.config import serving_config
    from serving.scoring import load_champion

    scfg = serving_config(cfg)
    return load_champion(tracking_uri, scfg.model_name, scfg.model_alias)


def register_lift(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add `nba lift`, `nba closed-loop` and `nba bench lift` to the CLI."""

    @app.command("lift")
    def lift_cmd(
        audit_url: Optional[str] = typer.Option(None, "--audit-url", help="audit trail (default: lift.audit_url, else the serving config's)"),
        data_dir: Optional[Path] = typer.Option(
            None, "--data", help="contract dataset (the `nba import` target): outcomes, HCP tiers, touchpoints (default: lift.data_dir, else serving's)"
        ),
        since: Optional[str] = typer.Option(None, "--since", help="first suggestion time included (ISO date/time, UTC if naive)"),
        until: Optional[str] = typer.Option(None, "--until", help="suggestions before this time (ISO date/time)"),
        as_json: bool = typer.Option(False, "--json", help="print only the JSON figures"),
        html_out: Optional[Path] = typer.Option(None, "--html", help="HTML report path (default: lift.html, else lift_report.html beside the audit trail)"),
        n_boot: Optional[int] = typer.Option(None, "--n-boot", help="bootstrap replicates (default lift.n_boot)"),
        config: Optional[Path] = _CONFIG,
        set_: Optional[list[str]] = _SET,
    ) -> None:
        """Measured lift of served suggestions over the randomised holdout, HCP-clustered intervals, overall and per tier: engagement, prescriptions raw and baseline-adjusted; reps' acceptance."""
        from experiments.lift import LiftError, default_window, lift_job
        from experiments.lift_report import print_tables, write_html

        cfg = _cfg(config, set_, {"lift.audit_url": audit_url, "lift.data_dir": str(data_dir) if data_dir else None, "lift.n_boot": n_boot})
        url, data = _sources(cfg)
        lc = cfg.lift
        try:
            start, end = default_window(since, until)
            result = lift_job(
                url, data, since=start, until=end, n_boot=lc.n_boot, confidence=lc.confidence, seed=lc.seed, baseline_weeks=lc.baseline_weeks, progress=True
            )
        except (LiftError, FileNotFoundError) as exc:
            typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None
        figures = result["figures"]
        if html_out is None:
            html_out = Path(lc.html) if lc.html else (Path(url[len("sqlite:///") :]).parent if url.startswith("sqlite:///") else Path(".")) / "lift_report.html"
        typer.echo(f"[lift] writing the HTML report {html_out}", err=True)
        figures["html_report"] = str(write_html(result, html_out))
        if not as_json:
            print_tables(result)
            typer.echo(f"HTML report: {figures['html_report']}")
        typer.echo(json.dumps(_finite(figures), sort_keys=True, default=float))

    @app.command("closed-loop")
    def closed_loop_cmd(
        data_dir: Path = typer.Option(..., "--data", help="simulated dataset (nba simulate; needs _ground_truth)"),
        out: Path = typer.Option(..., "--out", help="output folder: audit.db, data/, _ground_truth/, closed_loop.json"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store with the champion (none: rules-only)"),
        weeks: Optional[int] = typer.Option(None, "--weeks", help="served weeks (default lift.closed_loop.weeks)"),
        seed: Optional[int] = typer.Option(None, "--seed", help="seed (default lift.closed_loop.seed)"),
        audit_url: Optional[str] = typer.Option(None, "--audit-url", help="audit trail (default sqlite OUT/audit.db); must be empty"),
        config: Optional[Path] = _CONFIG,
        set_: Optional[list[str]] = _SET,
    ) -> None:
        """Run the served system against the simulator week by week (audit trail, feedback, outcomes, kept-apart truth)."""
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from experiments.closed_loop import run_closed_loop
        from experiments.config import serving_config

        cfg = _cfg(config, set_, {"lift.closed_loop.weeks": weeks, "lift.closed_loop.seed": seed})
        summary = run_closed_loop(
            data_dir, out, cfg.lift.closed_loop, serving_cfg=serving_config(cfg), model=_load_model(tracking_uri, cfg), audit_url=audit_url
        )
        typer.echo(json.dumps(summary, sort_keys=True, default=str))

    @bench_app.command("lift")
    def bench_lift_cmd(
        data_dir: Path = typer.Option(..., "--data", help="simulated dataset (nba simulate; needs _ground_truth)"),
        tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow store with the champion (none: rules-only)"),
        seeds: int = typer.Option(3, "--seeds", min=1, help="closed-loop seeds (each re-randomises holdout, exploration and outcomes)"),
        weeks: Optional[int] = typer.Option(None, "--weeks", help="served weeks per seed"),
        workdir: Path = typer.Option(Path(".nba/bench-lift"), "--workdir", help="where each seed's run is written"),
        config: Optional[Path] = _CONFIG,
        set_: Optional[list[str]] = _SET,
    ) -> None:
        """Closed-loop runs over seeds: does the measured lift's interval cover the true lift? Last line JSON."""
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from experiments.config import serving_config
        from experiments.lift_bench import coverage_bench

        cfg = _cfg(config, set_, {"lift.closed_loop.weeks": weeks})
        figures = coverage_bench(data_dir, workdir, cfg.lift, seeds=seeds, serving_cfg=serving_config(cfg), model=_load_model(tracking_uri, cfg))
        typer.echo(json.dumps(figures, sort_keys=True, default=float))
