"""`nba bench features`: online read latency, materialisation and training-set build, measured.

Progress goes to stderr; the caller prints the returned figures as one JSON line.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import resource
import shutil
import socket
import sys
import tempfile
import time
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
    l1 = _latencies(lambda i: get_online_features(store, [one[i]]), reads)
    lk = _latencies(lambda i: get_online_features(store, batches[i]), len(batches))
    return {
        f"online_read_1hcp_p50_ms_{tag}": round(float(np.median(l1)), 3),
        f"online_read_1hcp_p99_ms_{tag}": round(float(np.percentile(l1, 99)), 3),
        f"online_read_{batch_n}hcp_p50_ms_{tag}": round(float(np.median(lk)), 2),
        f"online_read_{batch_n}hcp_p99_ms_{tag}": round(float(np.percentile(lk, 99)), 2),
    }


def _training_child(cfg_json: str, hcp_ids: list[str], label_times: list[int], queue) -> None:
    import pandas as pd

    from features.config import FeaturesConfig
    from features.retrieval import build_training_set

    cfg = FeaturesConfig.model_validate_json(cfg_json)
    ids = np.array(hcp_ids, dtype=object)
    entity = pd.DataFrame({
        "hcp_id": np.repeat(ids, len(label_times)),
        "event_timestamp": pd.to_datetime(np.tile(np.array(label_times, dtype=np.int64), len(ids)), unit="s", utc=True),
    })
    import pyarrow.parquet as pq

    path = cfg.workspace_dir / "bench_training_set.parquet"
    t = time.perf_counter()
    rows = build_training_set(cfg, entity, progress=True, out_path=path)
    secs = time.perf_counter() - t
    meta = pq.ParquetFile(path).metadata
    queue.put({"seconds": secs, "rows": rows, "columns": meta.num_columns, "file_mb": path.stat().st_size / 2**20})
    path.unlink()


def run_bench(*, hcps: int, weeks: int, data_dir: Path | None, reads: int, redis_url: str, workdir: Path | None, seed: int) -> dict[str, Any]:
    """Run every feature-store measurement and return the figures (units in the key names)."""
    from features.build import build_sources, read_contract
    from features.config import FeaturesConfig, OnlineStoreConfig
    from features.repo import apply, materialize, open_store
    from features.snapshots import compute_features_asof

    scratch = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="nba-bench-features-"))
    figures: dict[str, Any] = {}
    try:
        if data_dir is None:
            from features.synthetic import synthetic_tables

            days = max(7 * weeks + 91, 120)
            _say(f"generating synthetic data: {hcps:,} HCPs x {days} days (seed {seed})")
            t = time.perf_counter()
            tables = synthetic_tables(hcps, days, seed=seed)
            figures["synthetic_data_s"] = round(time.perf_counter() - t, 2)
            figures["data"] = "synthetic"
        else:
            tables = read_contract(data_dir)
            figures["data"] = str(data_dir)
        cfg = FeaturesConfig(data_dir=data_dir or scratch / "data", workspace_dir=scratch / "ws").resolved()
        n_hcps = len(tables["hcps"])
        n_events = len(tables["touchpoints"])
        figures.update({"hcps": n_hcps, "touchpoints": n_events})

        _say("building feature sources")
        t = time.perf_counter()
        manifest = build_sources(cfg, tables=tables)
        figures["build_sources_s"] = round(time.perf_counter() - t, 2)
        figures["source_rows"] = int(sum(manifest["rows"].values()))
        hcp_ids = np.array(sorted(map(str, (tables["hcps"]["hcp_id"] if hasattr(tables["hcps"], "columns") else tables["hcps"].column("hcp_id").to_pylist()))), dtype=object)

        # Baseline for the Feast path: the same features for every HCP at one time, pure numpy.
        t = time.perf_counter()
        compute_features_asof(tables, manifest["last_snapshot_s"] and __import__("features.snapshots", fromlist=["utc"]).utc(manifest["last_snapshot_s"]), cfg)
        figures["asof_pure_all_hcps_s"] = round(time.perf_counter() - t, 2)
        del tables

        _say("apply + materialize (SQLite)", figures)
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):
            apply(cfg)
        figures["apply_s"] = round(time.perf_counter() - t, 2)
        store = open_store(cfg)
        t = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress to stdout
            materialize(cfg, store=store)
        figures[f"materialize_{n_hcps}hcp_s_sqlite"] = round(time.perf_counter() - t, 2)
        _say("online reads (SQLite)", figures)
        figures.update(_read_figures(store, hcp_ids, reads, seed, "sqlite"))

        if _reachable(redis_url):
            import redis

            u = urlparse(redis_url)
            redis.Redis(host=u.hostname, port=u.port or 6379, db=int((u.path or "/0").lstrip("/") or 0)).flushdb()
            rcfg = cfg.model_copy(update={
                "online_store": OnlineStoreConfig(type="redis", url=redis_url),
                "registry": cfg.registry.model_copy(update={"url": str(scratch / "ws" / "registry_redis.db")}),
            })
            _say("apply + materialize (Redis)", figures)
            with contextlib.redirect_stdout(sys.stderr):
                apply(rcfg)
            rstore = open_store(rcfg)
            t = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):
                materialize(rcfg, store=rstore)
            figures[f"materialize_{n_hcps}hcp_s_redis"] = round(time.perf_counter() - t, 2)
            _say("online reads (Redis)", figures)
            figures.update(_read_figures(rstore, hcp_ids, reads, seed, "redis"))
            k = min(1000, len(hcp_ids))
            figures[f"online_read_{k}hcp_p50_redis_over_sqlite_ratio"] = round(
                figures[f"online_read_{k}hcp_p50_ms_redis"] / figures[f"online_read_{k}hcp_p50_ms_sqlite"], 3)
            redis.Redis(host=u.hostname, port=u.port or 6379, db=int((u.path or "/0").lstrip("/") or 0)).flushdb()
        else:
            figures["redis_skipped"] = f"Redis not reachable at {redis_url}"

        label_times = list(range(manifest["last_snapshot_s"] - (weeks - 1) * 7 * 86_400, manifest["last_snapshot_s"] + 1, 7 * 86_400))
        _say(f"training set: {n_hcps:,} HCPs x {len(label_times)} label weeks (child process, for its own peak RSS)", figures)
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
            return figures
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        figures[f"training_set_{n_hcps}hcp_x_{len(label_times)}w_s"] = round(result["seconds"], 2)
        figures[f"training_set_{n_hcps}hcp_x_{len(label_times)}w_peak_rss_mb"] = round(peak_mb, 1)
        figures["training_set_rows"] = result["rows"]
        figures["training_set_columns"] = result["columns"]
        figures["training_set_rows_per_s"] = round(result["rows"] / max(result["seconds"], 1e-9), 1)
        figures["training_set_parquet_mb"] = round(result["file_mb"], 1)
        figures["targets"] = {"online_read_1hcp_p99_ms_max": 10, "online_read_1000hcp_p99_ms_max": 150, "materialize_100k_s_max": 120}
        return figures
    finally:
        if workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
