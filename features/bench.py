"""`nba bench features`: online read latency, materialisation and training-set build, measured.

Progress goes to stderr; the caller prints the returned figures as one JSON line.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np


def _say(msg: str, figures: dict | None = None) -> None:
    # Partial figures go to stderr as they are measured, so a crash late in a long run keeps them.
    if figures:
        print(f"figures so far: {figures}", file=sys.stderr, flush=True)
    print(msg, file=sys.stderr, flush=True)


def _reachable(url: str) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or 6379), timeout=0.5):
            return True
    except OSError:
        return False


def _latencies(fn, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out[i] = (time.perf_counter() - t) * 1000
    return out


def _read_figures(store, ids: np.ndarray, reads: int, seed: int, tag: str) -> dict[str, float]:
    from features.retrieval import get_online_features

    rng = np.random.default_rng(seed)
    one = ids[rng.integers(0, len(ids), reads)]
    batch_n = min(1000, len(ids))
    batches = [ids[rng.choice(len(ids), batch_n, replace=False)] for _ in range(max(5, reads // 10))]
    get_online_features(store, one[:3])  # warm the registry cache and connections
    get_online_features(store, one[:3], via="feast")
    for b in batches[:3]:  # a serving process reads continuously: time a warm page cache, not the first touch of the file
        get_online_features(store, b)
    import gc

    gc.freeze()  # as serving does after start-up (serving.engine.freeze_heap): no full scans of the long-lived heap
    l1 = _latencies(lambda i: get_online_features(store, [one[i]]), reads)
    cpu = time.process_time()
    lk = _latencies(lambda i: get_online_features(store, batches[i]), len(batches))
    cpu_ms = (time.process_time() - cpu) * 1000 / len(batches)
    # Baseline in the same run: the same batches through Feast's get_online_features.
    lf = _latencies(lambda i: get_online_features(store, batches[i], via="feast"), min(5, len(batches)))
    return {
        f"online_read_1hcp_p50_ms_{tag}": round(float(np.median(l1)), 3),
        f"online_read_1hcp_p99_ms_{tag}": round(float(np.percentile(l1, 99)), 3),
        f"online_read_{batch_n}hcp_p50_ms_{tag}": round(float(np.median(lk)), 2),
        f"online_read_{batch_n}hcp_p99_ms_{tag}": round(float(np.percentile(lk, 99)), 2),
        f"online_read_{batch_n}hcp_mean_cpu_ms_{tag}": round(cpu_ms, 2),
        f"online_read_{batch_n}hcp_p50_ms_{tag}_feast_path": round(float(np.median(lf)), 2),
        f"online_read_{batch_n}hcp_feast_path_over_direct_ratio_{tag}": round(float(np.median(lf) / np.median(lk)), 2),
    }


def _training_child(cfg_json: str, hcp_ids: list[str], label_times: list[int], queue) -> None:
    import pandas as pd

    from features.config import FeaturesConfig
    from features.retrieval import build_training_set

    cfg = FeaturesConfig.model_validate_json(cfg_json)
    ids = np.array(hcp_ids, dtype=object)
    entity = pd.DataFrame(
        {
            "hcp_id": np.repeat(ids, len(label_times)),
            "event_timestamp": pd.to_datetime(np.tile(np.array(label_times, dtype=np.int64), len(ids)), unit="s", utc=True),
        }
    )
    import pyarrow.parquet as pq

    path = cfg.workspace_dir / "bench_training_set.parquet"
    t, cpu = time.perf_counter(), time.process_time()
    rows = build_training_set(cfg, entity, progress=True, out_path=path)
    secs, cpu = time.perf_counter() - t, time.process_time() - cpu
    meta = pq.ParquetFile(path).metadata
    queue.put({"seconds": secs, "cpu_seconds": cpu, "rows": rows, "columns": meta.num_columns, "file_mb": path.stat().st_size / 2**20})
    path.unlink()


PARTS = ("build", "reads", "training")


def _redis_client(url: str):
    import redis

    u = urlparse(url)
    return redis.Redis(host=u.hostname, port=u.port or 6379, db=int((u.path or "/0").lstrip("/") or 0))


def _redis_cfg(cfg, redis_url: str, scratch: Path):
    from features.config import OnlineStoreConfig

    return cfg.model_copy(
        update={
            "online_store": OnlineStoreConfig(type="redis", url=redis_url),
            "registry": cfg.registry.model_copy(update={"url": str(scratch / "ws" / "registry_redis.db")}),
        }
    )


def _build_part(cfg, data_dir: Path, redis_url: str, scratch: Path, figures: dict) -> None:
    from features.build import build_sources, read_contract
    from features.repo import apply, materialize, open_store
    from features.snapshots import compute_features_asof, utc

    tables = read_contract(data_dir)
    n_hcps = len(tables["hcps"])
    figures.update({"hcps": n_hcps, "touchpoints": len(tables["touchpoints"])})
    _say("building feature sources")
    figures["load_avg_1m_at_build"] = round(os.getloadavg()[0], 2)
    t = time.perf_counter()
    manifest = build_sources(cfg, tables=tables)
    figures["build_sources_s"] = round(time.perf_counter() - t, 2)
    figures["source_rows"] = int(sum(manifest["rows"].values()))
    # Baseline for the Feast path: the same features for every HCP at one time, pure numpy.
    t = time.perf_counter()
    compute_features_asof(tables, utc(manifest["last_snapshot_s"]), cfg)
    figures["asof_pure_all_hcps_s"] = round(time.perf_counter() - t, 2)
    del tables
    _say("apply + materialize (SQLite)", figures)
    t = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress to stdout
        apply(cfg)
    figures["apply_s"] = round(time.perf_counter() - t, 2)
    t, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(sys.stderr):
        materialize(cfg, store=open_store(cfg))
    figures[f"materialize_{n_hcps}hcp_s_sqlite"] = round(time.perf_counter() - t, 2)
    figures[f"materialize_{n_hcps}hcp_cpu_s_sqlite"] = round(time.process_time() - cpu, 2)
    if not _reachable(redis_url):
        figures["redis_skipped"] = f"Redis not reachable at {redis_url}"
        return
    _redis_client(redis_url).flushdb()
    rcfg = _redis_cfg(cfg, redis_url, scratch)
    _say("apply + materialize (Redis)", figures)
    with contextlib.redirect_stdout(sys.stderr):
        apply(rcfg)
    t, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(sys.stderr):
        materialize(rcfg, store=open_store(rcfg))
    figures[f"materialize_{n_hcps}hcp_s_redis"] = round(time.perf_counter() - t, 2)
    figures[f"materialize_{n_hcps}hcp_cpu_s_redis"] = round(time.process_time() - cpu, 2)


def _reads_part(cfg, hcp_ids: np.ndarray, reads: int, seed: int, redis_url: str, scratch: Path, figures: dict) -> None:
    from features.repo import open_store

    _say("online reads (SQLite)", figures)
    figures["load_avg_1m_at_reads"] = round(os.getloadavg()[0], 2)
    figures.update(_read_figures(open_store(cfg), hcp_ids, reads, seed, "sqlite"))
    k = min(1000, len(hcp_ids))
    rcfg = _redis_cfg(cfg, redis_url, scratch)
    if not _reachable(redis_url) or not Path(rcfg.registry.url).exists() or not _redis_client(redis_url).dbsize():
        figures["redis_reads_skipped"] = f"no materialised Redis store at {redis_url} (run the build part with Redis up)"
        return
    _say("online reads (Redis)", figures)
    figures.update(_read_figures(open_store(rcfg), hcp_ids, reads, seed, "redis"))
    figures[f"online_read_{k}hcp_p50_redis_over_sqlite_ratio"] = round(
        figures[f"online_read_{k}hcp_p50_ms_redis"] / figures[f"online_read_{k}hcp_p50_ms_sqlite"], 3
    )


def _training_part(cfg, hcp_ids: np.ndarray, weeks: int, figures: dict) -> None:
    from features.build import read_build_manifest

    last = read_build_manifest(cfg)["last_snapshot_s"]
    label_times = list(range(last - (weeks - 1) * 7 * 86_400, last + 1, 7 * 86_400))
    n_hcps = len(hcp_ids)
    _say(f"training set: {n_hcps:,} HCPs x {len(label_times)} label weeks (child process, for its own peak RSS)", figures)
    figures["load_avg_1m_at_training"] = round(os.getloadavg()[0], 2)
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_training_child, args=(cfg.model_dump_json(), hcp_ids.tolist(), label_times, queue))
    child.start()
    result = None
    while result is None:
        try:
            result = queue.get(timeout=5)
        except Exception:  # queue.Empty: check the child is still alive (an OOM kill never answers)
            if not child.is_alive():
                break
    child.join()
    if result is None:
        figures["training_set_error"] = f"child process died (exit code {child.exitcode}; -9 is an out-of-memory kill)"
        return
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    tag = f"{n_hcps}hcp_x_{len(label_times)}w"
    figures[f"training_set_{tag}_s"] = round(result["seconds"], 2)
    # CPU seconds (all threads) next to wall time: on a shared machine wall time mostly measures the queue.
    figures[f"training_set_{tag}_cpu_s"] = round(result["cpu_seconds"], 2)
    figures[f"training_set_{tag}_peak_rss_mb"] = round(peak_mb, 1)
    figures["training_set_rows"] = result["rows"]
    figures["training_set_columns"] = result["columns"]
    figures["training_set_rows_per_s"] = round(result["rows"] / max(result["seconds"], 1e-9), 1)
    figures["training_set_parquet_mb"] = round(result["file_mb"], 1)


def run_bench(
    *,
    hcps: int,
    weeks: int,
    data_dir: Path | None,
    reads: int,
    redis_url: str,
    workdir: Path | None,
    seed: int,
    days: int = 365,
    parts: tuple[str, ...] = PARTS,
    simulate: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Run the feature-store measurements in ``parts`` and return the figures (units in the key names).

    Parts share ``workdir``: run "build" once (simulate if no ``data_dir``, build, apply,
    materialise SQLite and Redis), then "reads" (latency: run it on a quiet machine) and
    "training" separately against the same workdir. ``simulate(out, hcps=, days=, seed=, progress=)``
    writes a contract dataset when no ``data_dir`` is given (the CLI passes ``nba.wiring.simulate_dataset``).
    """
    from features.build import read_build_manifest
    from features.config import FeaturesConfig

    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    if workdir is None and set(parts) != set(PARTS):
        raise ValueError("running only some parts needs --workdir (the parts share its data and stores)")
    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nba-bench-features-"))
    figures: dict[str, Any] = {"parts": list(parts)}
    try:
        if data_dir is None:
            data_dir = scratch / "data"
            if "build" in parts:
                if simulate is None:
                    raise ValueError("data_dir: none given and no simulator to make one; pass a contract dataset (e.g. from `nba simulate`)")
                _say(f"simulating {hcps:,} HCPs x {days} days (seed {seed})")
                t = time.perf_counter()
                with contextlib.redirect_stdout(sys.stderr):
                    simulate(data_dir, hcps=hcps, days=days, seed=seed, progress=True)
                figures["simulate_s"] = round(time.perf_counter() - t, 2)
                figures["data"] = f"simulator (seed {seed}, {days} days)"
            else:
                figures["data"] = f"simulator data from the build part in {data_dir}"
        else:
            figures["data"] = str(data_dir)
        cfg = FeaturesConfig(data_dir=data_dir, workspace_dir=scratch / "ws").resolved()
        if "build" in parts:
            _build_part(cfg, Path(data_dir), redis_url, scratch, figures)
        manifest = read_build_manifest(cfg)
        import pyarrow.parquet as pq

        hcp_ids = np.array(sorted(pq.read_table(cfg.sources_dir / "hcp_profile.parquet", columns=["hcp_id"]).column(0).to_pylist()), dtype=object)
        figures["hcps"] = manifest["hcps"]
        if "reads" in parts:
            _reads_part(cfg, hcp_ids, reads, seed, redis_url, scratch, figures)
        if "training" in parts:
            _training_part(cfg, hcp_ids, weeks, figures)
        figures["targets"] = {"online_read_1hcp_p99_ms_max": 10, "online_read_1000hcp_p99_ms_max": 150, "materialize_100k_s_max": 120}
        return figures
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
            if _reachable(redis_url):
                _redis_client(redis_url).flushdb()
