"""``nba quickstart``: the main job end to end on the embedded default.

Simulate a small world, check it against the data contract, build, register and materialise the
feature store, then read features back online for a few HCPs. Each step calls the stage's own
public function, so the quickstart exercises exactly what the CLI commands do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console


def _step(console: Console, title: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    console.rule(f"[bold]{title}")
    t0 = time.perf_counter()
    out = fn()
    timings[title] = round(time.perf_counter() - t0, 2)
    console.print(f"[green]done[/green] in {timings[title]:.1f} s")
    return out


def run_quickstart(workdir: Path, hcps: int, days: int, seed: int, sample: int = 3) -> dict[str, Any]:
    """Run every stage that exists on a fresh simulated world under ``workdir``; return a summary."""
    from contract.importer import validate_dataset
    from features import apply, build_sources, get_online_features, load_features_config, materialize
    from nba.configuration import load_config
    from simulator.config import SimulatorConfig
    from simulator.generate import simulate

    console = Console(stderr=True)
    workdir = workdir.resolve()
    data_dir = workdir / "data"
    timings: dict[str, float] = {}

    sim_cfg = load_config(SimulatorConfig, "simulator", overrides={"hcps": hcps, "days": days, "seed": seed, "out": str(data_dir)})
    manifest = _step(console, f"simulate {hcps} HCPs x {days} days (seed {seed})", lambda: simulate(sim_cfg, progress=True), timings)

    def _validate() -> None:
        issues, _rows = validate_dataset(data_dir)
        errors = [i for i in issues if getattr(i, "severity", "error") == "error"]
        if errors:
            raise RuntimeError(f"simulated data breaks the contract: {errors[0]}")

    _step(console, "validate against the data contract", _validate, timings)

    feat_cfg = load_features_config(overrides={"data_dir": str(data_dir), "workspace_dir": str(workdir / "features")})
    _step(console, "build feature sources", lambda: build_sources(feat_cfg), timings)
    _step(console, "feast apply", lambda: apply(feat_cfg), timings)
    _step(console, "materialise to the online store", lambda: materialize(feat_cfg), timings)

    ids = _sample_hcps(data_dir, sample) + ["H-UNKNOWN"]
    online = _step(console, f"online features for {len(ids)} HCPs", lambda: get_online_features(feat_cfg, ids), timings)
    shown = [c for c in ("hcp_id", "is_missing", "segment", "seq_len") if c in online.columns]
    console.print(online[shown].to_string(index=False))

    champion = _train_and_promote(console, workdir, data_dir, feat_cfg, seed, timings)
    served = _serve_and_ask(console, workdir, champion["tracking_uri"], ids, timings)

    return {
        "workdir": str(workdir),
        **champion,
        **served,
        "hcps": hcps,
        "days": days,
        "seed": seed,
        "touchpoints_rows": manifest["tables"]["touchpoints"]["rows"],
        "online_rows": int(len(online)),
        "online_missing": int(online["is_missing"].sum()) if "is_missing" in online.columns else None,
        **{f"step_{i}_s": v for i, v in enumerate(timings.values(), start=1)},
        "total_s": round(sum(timings.values()), 2),
    }


def _train_and_promote(console: Console, workdir: Path, data_dir: Path, feat_cfg: Any, seed: int, timings: dict[str, float]) -> dict[str, Any]:
    """Train a small model, evaluate it against ground truth and baselines, promote it to champion."""
    import yaml

    from nba.configuration import load_config
    from training.config import TrainingConfig
    from nba.wiring import simulator_judge
    from training.evaluation import evaluate_job
    from training.jobs import train_job
    from training.promotion import promote_job

    # Training reads the feature store through a features YAML: write the one this run uses.
    feat_yaml = workdir / "features.yaml"
    feat_yaml.write_text(yaml.safe_dump(feat_cfg.model_dump(mode="json"), sort_keys=False))
    mlflow_dir = workdir / "mlflow"
    cfg = load_config(
        TrainingConfig,
        "training",
        overrides={
            "data_dir": str(data_dir),
            "features_config": str(feat_yaml),
            "output_dir": str(workdir / "models"),
            "tracking.uri": f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            "tracking.artifact_location": str(mlflow_dir / "artifacts"),
            "epochs": 2,
            "seed": seed,
        },
    )
    trained = _step(console, "train the default model (Transformer d32 x 1; MLflow run, registered as challenger)", lambda: train_job(cfg), timings)
    figures = _step(console, "evaluate against the simulator's ground truth and the baselines", lambda: evaluate_job(cfg, weeks=8, judge=simulator_judge()), timings)
    promoted = _step(console, "promote the challenger to champion", lambda: promote_job(cfg), timings)
    console.print(
        f"model version {trained['model_version']}: share of the oracle's gain over the logged policy "
        f"{figures.get('sim_model_share_of_oracle_gain', float('nan')):.3f}; promoted: {promoted['promoted']}"
    )
    return {
        "model_version": trained["model_version"],
        "tracking_uri": cfg.tracking.uri,
        "share_of_oracle_gain": figures.get("sim_model_share_of_oracle_gain"),
        "champion_version": promoted["champion_version"],
    }


def _serve_and_ask(console: Console, workdir: Path, tracking_uri: str, ids: list[str], timings: dict[str, float]) -> dict[str, Any]:
    """Start the real service on a free loopback port, ask it for suggestions, print them, stop it."""
    import os
    import signal

    from serving.auth import new_key
    from serving.bench import free_port, post, wait_ready
    from serving.cli import serve_process

    key = new_key()
    os.environ["NBA_API_KEYS"] = f"quickstart:{key}"  # hashed by the service at start-up
    port = free_port()
    overrides = {
        "tracking_uri": tracking_uri,
        "features_config": str(workdir / "features.yaml"),
        "audit_url": f"sqlite:///{workdir / 'audit.db'}",
        "port": port,
    }
    base = f"http://127.0.0.1:{port}"
    proc = serve_process(None, overrides, "127.0.0.1", port, quiet=True)
    try:
        ready_s = _step(console, f"bentoml serve on {base} (loads the champion)", lambda: wait_ready(base, proc), timings)
        status, body = _step(console, f"POST /recommend for {len(ids)} HCPs", lambda: post(base, "/recommend", {"hcp_ids": ids, "k": 2}, key=key), timings)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    if status != 200:
        raise RuntimeError(f"/recommend answered {status}: {body}")
    for item in body.get("results", []):
        for sug in item.get("suggestions", []):
            console.print(
                f"[bold]{item['hcp_id']}[/bold] #{sug.get('rank')} {sug.get('channel')} {sug.get('content_id') or ''} "
                f"p={sug.get('expected_response', float('nan')):.2f} policy={sug.get('policy')} - {'; '.join(sug.get('reasons', [])[:2])}"
            )
    n = sum(len(item.get("suggestions", [])) for item in body.get("results", []))
    return {"served_model_version": body.get("model_version"), "suggestions": n, "serve_ready_s": round(ready_s, 2)}


def _sample_hcps(data_dir: Path, n: int) -> list[str]:
    from contract.io import read_table

    ids = read_table(data_dir, "hcps", columns=["hcp_id"]).column("hcp_id").to_pylist()
    return sorted(ids)[:n]


def print_summary(summary: dict[str, Any]) -> None:
    """The last stdout line: the run's figures as one JSON object."""
    print(json.dumps(summary))
