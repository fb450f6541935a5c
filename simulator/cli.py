"""``nba simulate`` and ``nba bench simulate`` (typer and stdlib only at import)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def _load(config: Optional[Path], overrides: dict, world: Optional[str] = None):
    from nba.configuration import load_config
    from simulator.config import SimulatorConfig

    if world is not None:
        from simulator.worlds import world_config

        return world_config(world, base=config, **overrides)
    return load_config(SimulatorConfig, "simulator", config, overrides=overrides)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add ``simulate`` to the root app and to the bench app."""

    @app.command("simulate")
    def simulate_cmd(
        hcps: Optional[int] = typer.Option(None, "--hcps", help="Number of HCPs (config: hcps)."),
        days: Optional[int] = typer.Option(None, "--days", help="Simulated days, >= 28 (config: days)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (config: seed)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Dataset directory to write (config: out)."),
        config: Optional[Path] = typer.Option(None, "--config", help="Config file (default configs/simulator.yaml)."),
        world: Optional[str] = typer.Option(
            None,
            "--world",
            help="World preset: configs/worlds/NAME.yaml over the config (default, habituating, warmup_saturating, timing_strong, timing_weak, other_reps, combined).",
        ),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    ) -> None:
        """Simulate HCPs under today's logging policy and write the CRM contract tables plus hidden ground truth."""
        import time

        from simulator.generate import simulate

        cfg = _load(config, {"hcps": hcps, "days": days, "seed": seed, "out": str(out) if out is not None else None}, world)
        t0 = time.perf_counter()
        manifest = simulate(cfg, progress=not quiet)
        rows = {f"{name}_rows": meta["rows"] for name, meta in manifest["tables"].items()}
        typer.echo(f"wrote {Path(cfg.out).resolve()}", err=True)
        figures = {"hcps": cfg.hcps, "days": cfg.days, "seed": cfg.seed, **({"world": world} if world is not None else {})}
        typer.echo(json.dumps({**figures, "simulate_wall_s": round(time.perf_counter() - t0, 2), **rows}))

    @bench_app.command("simulate")
    def bench_simulate_cmd(
        hcps: int = typer.Option(100_000, "--hcps", help="Number of HCPs."),
        days: int = typer.Option(365, "--days", help="Simulated days."),
        seed: int = typer.Option(0, "--seed", help="Random seed."),
        repeats: int = typer.Option(1, "--repeats", min=1, help="Runs to take the median of."),
        config: Optional[Path] = typer.Option(None, "--config", help="Config file (default configs/simulator.yaml)."),
        world: Optional[str] = typer.Option(None, "--world", help="World preset (configs/worlds/NAME.yaml) over the config."),
    ) -> None:
        """Time a full simulation into a temp dir: wall seconds, peak RSS, rows and rows/s per table (JSON last line)."""
        from simulator.benchmark import bench_simulate

        cfg = _load(config, {"hcps": hcps, "days": days, "seed": seed}, world)
        typer.echo(json.dumps(bench_simulate(cfg, repeats=repeats)))

    @bench_app.command("oracle-gap")
    def bench_oracle_gap_cmd(
        data: Path = typer.Option(..., "--data", help="A simulated dataset directory (with _ground_truth)."),
        weeks: Optional[int] = typer.Option(None, "--weeks", help="Weeks to run (default: the logged period)."),
    ) -> None:
        """Run the logged, rule-based, random and oracle policies on a simulated dataset; values and shares of the oracle's gain (JSON last line)."""
        import time

        from simulator.evaluation import evaluate

        t0 = time.perf_counter()
        result = evaluate(data, weeks=weeks)
        figures: dict = {"weeks": result["values"]["logged"]["weeks"], "hcps": result["values"]["logged"]["hcps"]}
        logged = result["values"]["logged"]
        for name, v in result["values"].items():
            figures[f"{name}_responses_per_hcp_week"] = round(v["expected_responses_per_hcp_week"], 4)
            figures[f"{name}_prescriptions_per_hcp_week"] = round(v["expected_prescriptions_per_hcp_week"], 4)
            figures[f"{name}_touches_per_hcp_week"] = round(v["touches"] / max(1, v["hcps"] * v["weeks"]), 4)
            figures[f"{name}_responses_ratio_to_logged"] = round(v["expected_positive_responses"] / logged["expected_positive_responses"], 4)
            figures[f"{name}_share_of_oracle_gain_responses"] = round(result["share_of_oracle_gain"][name]["expected_positive_responses"], 4)
            figures[f"{name}_share_of_oracle_gain_prescriptions"] = round(result["share_of_oracle_gain"][name]["expected_prescriptions"], 4)
        figures["wall_s"] = round(time.perf_counter() - t0, 2)
        typer.echo(json.dumps(figures))
