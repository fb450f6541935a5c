"""``nba quickstart``: the main job end to end on the embedded default, ending in a working API call.

Simulate a small world, check it against the data contract, build, register and materialise the
feature store, train, evaluate against the simulator's truth and the baselines, promote, then
start the real service once, ask it for suggestions and stop it. Each step calls the stage's own
public function, so the quickstart exercises exactly what the CLI commands do.

It leaves behind what a newcomer needs for the next step and nothing running: a config directory
(``<workdir>/configs/``) pointing every stage at this run's artefacts, an API key file (0600), and
the exact ``nba serve`` / ``curl`` / ``nba ui`` commands for them. A rerun into the same workdir
rebuilds from scratch (every artefact derives from the world), says why, and refuses a folder it
did not write.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from nba.errors import ExpectedError

# The run's record of which world it built: compared on the next run into the same workdir.
STAMP = "quickstart.json"
KEY_FILE = "api_key"
CONFIGS = "configs"
# Everything a run writes under its workdir (the key file survives reruns: it names no world).
OWNED = (
    "data",
    "features",
    "mlflow",
    "models",
    "monitor",
    "bentoml",
    CONFIGS,
    "features.yaml",
    "audit.db",
    "audit.db-wal",
    "audit.db-shm",
    "audit.db.hcp-locks",
    KEY_FILE,
    STAMP,
)
DEFAULT_PORT, UI_PORT = 3000, 5000
# Policies of the results table, best known first; ``logged`` is the reps as logged (share 0 by definition).
POLICY_ROWS = (
    ("oracle", "oracle: knows each HCP's true response (the ceiling)"),
    ("model", "model: the champion just trained"),
    ("aggregate", "aggregate: a model without per-HCP sequences"),
    ("popularity", "popularity: each segment's most-answered action"),
    ("rules", "rules: the senior reps' hand-written rules"),
    ("logged", "logged: what the reps did"),
)


def _step(console: Console, key: str, title: str, fn: Callable[[], Any], timings: dict[str, float]) -> Any:
    """Run one labelled step; its seconds go to ``timings[key]`` (``<step>_s`` in the JSON summary)."""
    console.rule(f"[bold]{title}")
    t0 = time.perf_counter()
    out = fn()
    timings[key] = round(time.perf_counter() - t0, 2)
    console.print(f"[green]done[/green] in {timings[key]:.1f} s")
    return out


def _to_stderr(fn: Callable[..., Any], *args: Any) -> Any:
    """Call ``fn`` with what it prints on stdout going to stderr."""
    import contextlib

    with contextlib.redirect_stdout(sys.stderr):
        return fn(*args)


def world_of(hcps: int, days: int, seed: int, world: str | None) -> dict[str, Any]:
    """What identifies the simulated world a run builds (recorded in the stamp)."""
    return {"world": world or "default", "hcps": hcps, "days": days, "seed": seed}


def prepare_workdir(workdir: Path, world: dict[str, Any]) -> str:
    """Make ``workdir`` ready for a fresh build of ``world``; return one line saying what was there.

    A previous quickstart's artefacts are removed (all of them derive from the world, so a changed
    seed or world rebuilds everything, and even the same world is rebuilt rather than trusted: a
    half-finished run leaves no stamp). A folder holding anything the quickstart does not write is
    refused, so a mistyped ``--workdir`` never deletes someone's files.
    """
    if not workdir.exists() or not any(workdir.iterdir()):
        workdir.mkdir(parents=True, exist_ok=True)
        return f"new workdir {workdir}"
    leftovers = {f".{name}.tmp" for name in OWNED}  # an interrupted atomic write
    foreign = sorted(p.name for p in workdir.iterdir() if p.name not in OWNED and p.name not in leftovers)
    if foreign:
        raise ExpectedError(f"--workdir {workdir} holds files `nba quickstart` did not write ({', '.join(foreign[:5])}); choose an empty or new --workdir")
    stamp = workdir / STAMP
    before = None
    if stamp.exists():
        try:
            before = json.loads(stamp.read_text()).get("world")
        except (OSError, ValueError):
            before = None
    if before == world:
        note = f"rebuilding the same world ({_describe(world)}) from scratch in {workdir}"
    elif before:
        changed = ", ".join(f"{k} {before.get(k)} -> {v}" for k, v in world.items() if before.get(k) != v)
        note = f"the world changed ({changed}): removing the last run's data, features, models and MLflow store in {workdir} and rebuilding"
    else:
        note = f"an unfinished or older quickstart in {workdir}: removing its artefacts and rebuilding"
    for name in (*OWNED, *sorted(leftovers)):
        if name == KEY_FILE:
            continue
        path = workdir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return note


def _describe(world: dict[str, Any]) -> str:
    return f"world {world['world']}, {world['hcps']} HCPs x {world['days']} days, seed {world['seed']}"


def api_key(workdir: Path) -> tuple[str, Path]:
    """The run's API key, kept in ``<workdir>/api_key`` (mode 0600; reused by reruns so printed commands keep working)."""
    from serving.auth import new_key

    path = workdir / KEY_FILE
    if path.exists():
        key = path.read_text().strip()
        if key:
            os.chmod(path, 0o600)
            return key, path
    key = new_key()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    tmp.replace(path)
    return key, path


def _write_yaml(path: Path, data: dict[str, Any], header: str) -> Path:
    """Write a config YAML atomically."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"# {header}\n" + yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return path


def _port(preferred: int) -> int:
    """A port for a printed command: the stock one when free, else any free loopback port."""
    import socket

    from nba.servers import free_port

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def run_quickstart(workdir: Path, hcps: int, days: int, seed: int, sample: int = 3, world: str | None = None) -> dict[str, Any]:
    """Build a fresh simulated world under ``workdir`` through every stage, ask the real service once; return a summary."""
    from contract.importer import validate_dataset
    from features import apply, build_sources, get_online_features, load_features_config, materialize
    from nba.configuration import load_config
    from simulator.config import SimulatorConfig
    from simulator.generate import simulate

    console = Console(stderr=True)
    workdir = workdir.resolve()
    wanted = world_of(hcps, days, seed, world)
    console.print(prepare_workdir(workdir, wanted))
    data_dir = workdir / "data"
    configs = workdir / CONFIGS
    timings: dict[str, float] = {}

    _copy_stock_configs(configs)
    sim_over = {"hcps": hcps, "days": days, "seed": seed, "out": str(data_dir)}
    if world:
        from simulator.worlds import world_config

        sim_cfg = world_config(world, **sim_over)
    else:
        sim_cfg = load_config(SimulatorConfig, "simulator", overrides=sim_over)
    _write_yaml(configs / "simulator.yaml", sim_cfg.model_dump(mode="json"), f"nba quickstart: the simulated world ({_describe(wanted)})")
    manifest = _step(
        console, "simulate_s", f"simulate {hcps} HCPs x {days} days (world {wanted['world']}, seed {seed})", lambda: simulate(sim_cfg, progress=True), timings
    )

    def _validate() -> None:
        issues, _rows = validate_dataset(data_dir)
        errors = [i for i in issues if getattr(i, "severity", "error") == "error"]
        if errors:
            raise RuntimeError(f"simulated data breaks the contract: {errors[0]}")

    _step(console, "validate_s", "validate against the data contract", _validate, timings)

    feat_cfg = load_features_config(overrides={"data_dir": str(data_dir), "workspace_dir": str(workdir / "features")})
    feat_yaml = _write_yaml(configs / "features.yaml", feat_cfg.model_dump(mode="json"), "nba quickstart: the feature store of this run")
    _step(console, "features_build_s", "build feature sources", lambda: build_sources(feat_cfg), timings)
    # Feast prints its progress on stdout: sent to stderr with ours, so stdout holds the results and the JSON line.
    _step(console, "feast_apply_s", "feast apply", lambda: _to_stderr(apply, feat_cfg), timings)
    _step(console, "materialize_s", "materialise to the online store", lambda: _to_stderr(materialize, feat_cfg), timings)

    ids = _sample_hcps(data_dir, sample) + ["H-UNKNOWN"]
    online = _step(console, "online_read_s", f"online features for {len(ids)} HCPs", lambda: _to_stderr(get_online_features, feat_cfg, ids), timings)
    shown = [c for c in ("hcp_id", "is_missing", "segment", "seq_len") if c in online.columns]
    console.print(online[shown].to_string(index=False))

    champion, figures = _to_stderr(_train_and_promote, console, workdir, data_dir, feat_yaml, seed, days, timings)
    port = _port(DEFAULT_PORT)
    serving_yaml, experiments_yaml = _write_service_configs(workdir, champion, feat_yaml, port, _port(UI_PORT))
    key, key_file = api_key(workdir)
    served = _serve_and_ask(console, serving_yaml, key, ids, timings)

    steps = next_steps(serving_yaml, experiments_yaml, key_file, port, ids[:2])
    table = results_table(figures)
    print(table)
    print()
    print(steps)
    _write_stamp(workdir, wanted)
    return {
        "workdir": str(workdir),
        **champion,
        **served,
        **{k: v for k, v in wanted.items()},
        "touchpoints_rows": manifest["tables"]["touchpoints"]["rows"],
        "online_rows": int(len(online)),
        "online_missing": int(online["is_missing"].sum()) if "is_missing" in online.columns else None,
        **policy_shares(figures),
        "config_dir": str(configs),
        "api_key_file": str(key_file),
        "serve_port": port,
        **timings,
        "total_s": round(sum(timings.values()), 2),
    }


def _copy_stock_configs(configs: Path) -> None:
    """Start ``configs/`` from the stock configs (worlds included), so ``NBA_CONFIG_DIR`` pointed at it serves every command;
    the stages this run built are then overwritten with its own paths."""
    from nba.configuration import config_dir

    stock = config_dir().resolve()
    if stock != configs.resolve() and stock.is_dir():
        shutil.copytree(stock, configs, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*", "__pycache__"))
    configs.mkdir(parents=True, exist_ok=True)


def _write_stamp(workdir: Path, world: dict[str, Any]) -> None:
    tmp = workdir / f".{STAMP}.tmp"
    tmp.write_text(json.dumps({"world": world, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2) + "\n")
    tmp.replace(workdir / STAMP)


def _train_and_promote(
    console: Console, workdir: Path, data_dir: Path, feat_yaml: Path, seed: int, days: int, timings: dict[str, float]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train a small model, evaluate it against ground truth and baselines, promote it to champion."""
    from nba.configuration import load_config
    from nba.wiring import simulator_judge
    from training.config import TrainingConfig, workdir_overrides
    from training.evaluation import evaluate_job
    from training.jobs import train_job
    from training.promotion import promote_job

    # Six validation and six test weeks need a year; a short world keeps most weeks for training.
    held_out = min(6, max(1, (days // 7) // 5))
    cfg = load_config(
        TrainingConfig,
        "training",
        overrides={
            **workdir_overrides(workdir, data_dir, feat_yaml),
            "epochs": 2,
            "seed": seed,
            "val_weeks": held_out,
            "test_weeks": held_out,
        },
    )
    _write_yaml(workdir / CONFIGS / "training.yaml", cfg.model_dump(mode="json"), "nba quickstart: training, its MLflow store and registered model")
    console.print(f"training: {cfg.epochs} epochs, progress per epoch below (reading the feature store first takes a few seconds)")
    trained = _step(console, "train_s", "train the default model (Transformer d32 x 1; MLflow run, registered as challenger)", lambda: train_job(cfg), timings)
    figures = _step(
        console,
        "evaluate_s",
        "evaluate against the simulator's ground truth and the baselines",
        lambda: evaluate_job(cfg, weeks=8, judge=simulator_judge()),
        timings,
    )
    # Promotion copies the champion into BentoML's model store: the sandbox's own, under the workdir,
    # unless the user points BENTOML_HOME elsewhere (the quickstart leaves ~/bentoml alone).
    before = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = before or str(Path(workdir).resolve() / "bentoml")
    try:
        promoted = _step(console, "promote_s", "promote the challenger to champion", lambda: promote_job(cfg), timings)
    finally:
        if before is None:
            os.environ.pop("BENTOML_HOME", None)
    console.print(f"model version {trained['model_version']}: {'promoted to champion' if promoted['promoted'] else 'not promoted'}: {promoted['reason']}")
    if not promoted["promoted"] and promoted["champion_version"] is None:
        raise RuntimeError(f"the quickstart's model was not promoted, so no champion can be served: {promoted['reason']}")
    return (
        {
            "model_version": trained["model_version"],
            "tracking_uri": cfg.tracking.uri,
            "share_of_oracle_gain": figures.get("sim_model_share_of_oracle_gain"),
            "champion_version": promoted["champion_version"],
            "promoted": bool(promoted["promoted"]),
        },
        figures,
    )


def _write_service_configs(workdir: Path, champion: dict[str, Any], feat_yaml: Path, port: int, ui_port: int) -> tuple[Path, Path]:
    """``configs/serving.yaml`` (this run's champion, feature store, audit trail, the API key's hash) and ``configs/experiments.yaml``."""
    from experiments.config import load_experiments_config
    from nba.configuration import load_config
    from serving.auth import hash_key
    from serving.config import ServingConfig

    key, _ = api_key(workdir)
    configs = workdir / CONFIGS
    serving = load_config(
        ServingConfig,
        "serving",
        overrides={
            "tracking_uri": champion["tracking_uri"],
            "features_config": str(feat_yaml),
            "audit_url": f"sqlite:///{workdir / 'audit.db'}",
            "port": port,
            "api_key_hashes": {"quickstart": hash_key(key)},
        },
    )
    serving_yaml = _write_yaml(
        configs / "serving.yaml",
        serving.model_dump(mode="json"),
        f"nba quickstart: serves champion of {champion['tracking_uri']}; the key is in {workdir / KEY_FILE}",
    )
    experiments = load_experiments_config(
        overrides={
            "training_config": str(configs / "training.yaml"),
            "serving_config": str(serving_yaml),
            "ui.port": ui_port,
            "monitor.out_dir": str(workdir / "monitor"),
        }
    )
    experiments_yaml = _write_yaml(
        configs / "experiments.yaml", experiments.model_dump(mode="json"), "nba quickstart: `nba ui`, `nba compare`, `nba monitor` on this run"
    )
    return serving_yaml, experiments_yaml


def _serve_and_ask(console: Console, serving_yaml: Path, key: str, ids: list[str], timings: dict[str, float]) -> dict[str, Any]:
    """Start the real service from the written config on a free loopback port, ask it for suggestions, print them, stop it."""
    from nba.servers import free_port, stop_group
    from serving.bench import post, wait_ready
    from serving.cli import serve_process

    port = free_port()  # not the printed port: a `nba serve` from an earlier run may hold that one
    base = f"http://127.0.0.1:{port}"
    proc = serve_process(serving_yaml, {"port": port}, "127.0.0.1", port, quiet=True)
    try:
        _step(console, "serve_ready_s", f"bentoml serve on {base} (loads the champion)", lambda: wait_ready(base, proc), timings)
        status, body = _step(
            console, "recommend_s", f"POST /recommend for {len(ids)} HCPs", lambda: post(base, "/recommend", {"hcp_ids": ids, "k": 2}, key=key), timings
        )
    finally:
        stop_group(proc, timeout_s=30)
    if status != 200:
        raise RuntimeError(f"/recommend answered {status}: {body}")
    for item in body.get("results", []):
        for sug in item.get("suggestions", []):
            console.print(
                f"[bold]{item['hcp_id']}[/bold] #{sug.get('rank')} {sug.get('channel')} {sug.get('content_id') or ''} "
                f"p={sug.get('expected_response', float('nan')):.2f} policy={sug.get('policy')} - {' '.join(sug.get('reasons', [])[:2])}"
            )
    n = sum(len(item.get("suggestions", [])) for item in body.get("results", []))
    return {"served_model_version": body.get("model_version"), "suggestions": n}


def nba_command() -> str:
    """How to call ``nba`` from a new shell: plain ``nba`` when that is this one on PATH, else its full path."""
    here = Path(sys.executable).with_name("nba")
    on_path = shutil.which("nba")
    if not here.exists() or (on_path and Path(on_path).resolve() == here.resolve()):
        return "nba"
    return shlex.quote(str(here))


def next_steps(serving_yaml: Path, experiments_yaml: Path, key_file: Path, port: int, hcp_ids: list[str]) -> str:
    """The copy-and-paste block that ends a run: start the API, ask it, open the MLflow UI (comments say what each does)."""
    nba = nba_command()
    body = json.dumps({"hcp_ids": hcp_ids, "k": 2})
    curl = (
        f"curl -sS --fail-with-body -X POST http://127.0.0.1:{port}/recommend -H 'Content-Type: application/json' "
        f'-H "X-API-Key: $(cat {shlex.quote(str(key_file))})" -d {shlex.quote(body)}'
    )
    return "\n".join(
        [
            "# Next steps: copy each command as it is (nothing to edit).",
            f"# 1. Start the API with the model just trained (http://127.0.0.1:{port}; ready after ~10 s; Ctrl-C stops it):",
            f"{nba} serve --config {shlex.quote(str(serving_yaml))}",
            "# 2. In a second terminal, ask it for suggestions for two HCPs:",
            curl,
            "# 3. Browse the training runs and the registered model in the MLflow UI (Ctrl-C stops it):",
            f"{nba} ui --config {shlex.quote(str(experiments_yaml))}",
            f"# Every other command takes the same configs: NBA_CONFIG_DIR={shlex.quote(str(serving_yaml.parent))} {nba} --help",
        ]
    )


def policy_shares(figures: dict[str, Any]) -> dict[str, float]:
    """Each policy's share of the oracle's gain over the logged policy, for the JSON summary (``<policy>_share_of_oracle_gain``)."""
    out = {}
    for who, _ in POLICY_ROWS:
        if f"sim_{who}_responses_per_hcp_week" not in figures:
            continue
        share = {"oracle": 1.0, "logged": 0.0}.get(who, figures.get(f"sim_{who}_share_of_oracle_gain"))
        if share is not None:
            out[f"{who}_share_of_oracle_gain"] = float(share)
    if figures.get("served_model_share_of_oracle_gain") is not None:
        out["served_share_of_oracle_gain"] = float(figures["served_model_share_of_oracle_gain"])
    return out


def results_table(figures: dict[str, Any]) -> str:
    """The model against the baselines and the oracle over the simulated weeks after the logs, as plain text."""
    weeks = figures.get("sim_weeks")
    rows = []
    shares = policy_shares(figures)
    for who, label in POLICY_ROWS:
        value = figures.get(f"sim_{who}_responses_per_hcp_week")
        if value is None:
            continue
        rows.append((label, f"{float(value):.3f}", f"{shares.get(f'{who}_share_of_oracle_gain', float('nan')):.3f}"))
        served = figures.get("served_model_share_of_oracle_gain")
        if who == "model" and served is not None:
            # What the service actually does with it: guardrails, window rules and calibration on top.
            rows.append(("model as served: through the serving engine's guardrails and window rules", "-", f"{float(served):.3f}"))
    if not rows:
        return "(no simulated policy values: the evaluation had no ground truth)"
    heads = ("policy", "responses per HCP-week", "share of the oracle's gain")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    title = f"Judged by the simulator over {weeks} weeks after the logged history (share: 0 = the reps as logged, 1 = the oracle):"
    return "\n".join([title, line(heads), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def _sample_hcps(data_dir: Path, n: int) -> list[str]:
    from contract.io import read_table

    ids = read_table(data_dir, "hcps", columns=["hcp_id"]).column("hcp_id").to_pylist()
    return sorted(ids)[:n]


def print_summary(summary: dict[str, Any]) -> None:
    """The last stdout line: the run's figures as one JSON object."""
    print(json.dumps(summary), flush=True)
