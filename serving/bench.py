"""``nba bench serve``: the API over loopback against the same requests scored in-process (the floor)."""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from nba.servers import free_port, wait_ok

BENCH_KEY = "nba_bench_key"


def wait_ready(base: str, proc: Any, timeout: float = 120.0) -> float:
    """Poll ``/readyz`` until 200; raise with the reason when the process dies or time runs out."""
    return wait_ok(f"{base}/readyz", proc, "bentoml serve", timeout)


def post(base: str, path: str, body: dict, key: str = BENCH_KEY) -> tuple[int, dict]:
    """POST JSON with the API key; (status, decoded body) also for error statuses."""
    import urllib.error

    req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json", "X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def breakdown(prefix: str, parts: list[dict[str, float]]) -> dict[str, float]:
    """Median ms per stage of in-process requests: features (online read), model, rules+guardrails+reasons, audit."""
    if not parts:
        return {}
    rest = [p["total"] - p["features"] - p["model"] - p["audit"] for p in parts]
    med = {k: statistics.median(p[k] for p in parts) for k in ("features", "model", "audit")}
    return {f"{prefix}_features_p50_ms": round(med["features"], 2), f"{prefix}_model_p50_ms": round(med["model"], 2),
            f"{prefix}_rules_guardrails_reasons_p50_ms": round(statistics.median(rest), 2), f"{prefix}_audit_p50_ms": round(med["audit"], 2)}


def run_bench(workdir: Path, *, n_hcps: int, requests: int, batches: int, nightly_hcps: int, seed: int, rebuild: bool,
              simulate: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Build (or reuse) a world, serve it, time HTTP and in-process scoring; returns the figures.

    ``simulate`` writes the world's contract data (``serving.sandbox.build_world``); needed only to build one.
    """
    import signal

    from rich.console import Console

    from nba.configuration import load_config
    from serving.cli import serve_process
    from serving.config import ServingConfig
    from serving.engine import Recommender, feasibility_summary, freeze_heap
    from serving.sandbox import AS_OF, build_world

    console = Console(stderr=True)
    load_start = round(os.getloadavg()[0], 2)
    workdir = Path(workdir).resolve()
    marker = workdir / "world.json"
    if rebuild or not marker.exists():
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        with console.status(f"building a world of {n_hcps} HCPs (features, tiny champion)"):
            if simulate is None:
                raise ValueError(f"{workdir}: no benchmark world yet and no simulator to build one (run `nba bench serve`, which wires it)")
            w = build_world(workdir, simulate=simulate, n_hcps=n_hcps, seed=seed)
        marker.write_text(json.dumps({"hcp_ids": w.hcp_ids, "serving_yaml": str(w.serving_yaml)}))
    info = json.loads(marker.read_text())
    ids, serving_yaml = info["hcp_ids"], Path(info["serving_yaml"])
    rng = np.random.default_rng(seed)
    overrides = {"audit_url": f"sqlite:///{workdir / 'audit-bench.db'}"}
    os.environ["NBA_API_KEYS"] = f"bench:{BENCH_KEY}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = serve_process(serving_yaml, overrides, "127.0.0.1", port, quiet=True)
    try:
        with console.status("starting bentoml serve"):
            ready_s = wait_ready(base, proc)
        as_of = AS_OF.isoformat()
        singles = [[ids[i]] for i in rng.integers(0, len(ids), requests)]
        batch_ids = [ids[i] for i in rng.permutation(len(ids))[:1000]] if len(ids) >= 1000 else [ids[i % len(ids)] + "" for i in range(1000)]
        for s in singles[:10]:  # warm-up
            post(base, "/recommend", {"hcp_ids": s, "as_of": as_of})
        single_ms = []
        with console.status(f"{requests} single-HCP requests"):
            for s in singles:
                t = time.perf_counter()
                status, _ = post(base, "/recommend", {"hcp_ids": s, "as_of": as_of})
                single_ms.append((time.perf_counter() - t) * 1000)
                assert status == 200, status
        with console.status("throughput (4 concurrent clients)"):
            t = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda s: post(base, "/recommend", {"hcp_ids": s, "as_of": as_of})[0], singles))
            rps = len(singles) / (time.perf_counter() - t)
        batch_ms = []
        with console.status(f"{batches} batches of 1,000 HCPs"):
            for _ in range(batches):
                t = time.perf_counter()
                status, body = post(base, "/recommend", {"hcp_ids": batch_ids, "as_of": as_of})
                batch_ms.append((time.perf_counter() - t) * 1000)
                assert status == 200, (status, str(body)[:300])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)

    # The floor: the same requests scored in this process, no HTTP.
    cfg = load_config(ServingConfig, "serving", serving_yaml, {"audit_url": f"sqlite:///{workdir / 'audit-inproc.db'}"})
    rec = Recommender.from_config(cfg)
    freeze_heap()  # as the service does after start-up
    for s in singles[:10]:
        rec.recommend(s, as_of=AS_OF)
    inproc_single, single_parts = [], []
    for s in singles:
        t = time.perf_counter()
        single_parts.append(rec.recommend(s, as_of=AS_OF).timings_ms)
        inproc_single.append((time.perf_counter() - t) * 1000)
    inproc_batch, batch_parts, feasibility = [], [], []
    for _ in range(batches):
        t = time.perf_counter()
        res = rec.recommend(batch_ids, as_of=AS_OF)
        inproc_batch.append((time.perf_counter() - t) * 1000)
        batch_parts.append(res.timings_ms)
        feasibility.append(res.feasibility)
    figures: dict[str, Any] = {
        "hcps_in_world": len(ids),
        "ready_seconds": round(ready_s, 2),
        "http_single_p50_ms": round(statistics.median(single_ms), 2),
        "http_single_p99_ms": round(_pct(single_ms, 99), 2),
        "http_requests_per_second_4_clients": round(rps, 1),
        "http_failed_requests": int(sum(c != 200 for c in codes)),
        "http_batch_1000_p50_ms": round(statistics.median(batch_ms), 1),
        "http_batch_1000_max_ms": round(max(batch_ms), 1),
        "inprocess_single_p50_ms": round(statistics.median(inproc_single), 2),
        "inprocess_single_p99_ms": round(_pct(inproc_single, 99), 2),
        "inprocess_batch_1000_p50_ms": round(statistics.median(inproc_batch), 1),
        "http_over_inprocess_single_p50_ratio": round(statistics.median(single_ms) / statistics.median(inproc_single), 2),
        "http_over_inprocess_batch_p50_ratio": round(statistics.median(batch_ms) / statistics.median(inproc_batch), 2),
        "target_single_p99_ms": 30, "target_batch_1000_ms": 500,
        **breakdown("inprocess_single", single_parts), **breakdown("inprocess_batch_1000", batch_parts),
        # Feasible first: a rule overriding a served first choice after masking (target 0) vs the model's unmasked choice.
        **{f"batch_{k}": round(v, 4) for k, v in feasibility_summary(feasibility).items() if k.endswith("_share")},
        # The box is shared: latency figures mean little without the load they were taken under.
        "load_avg_1m_start": load_start, "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }
    if nightly_hcps:
        from serving.batch import recommend_all

        nightly = [ids[i % len(ids)] for i in range(nightly_hcps)]
        t = time.perf_counter()
        summary = recommend_all(rec, workdir / "nightly.parquet", as_of=AS_OF, hcp_ids=nightly)
        secs = time.perf_counter() - t
        figures.update({"nightly_hcps": nightly_hcps, "nightly_seconds": round(secs, 1), "nightly_hcps_per_second": round(nightly_hcps / secs, 1),
                        "nightly_suggestions": summary["suggestions"], "target_nightly_100k_seconds": 120,
                        "nightly_first_choice_overridden_share": round(summary["feasibility"]["first_choice_overridden_share"], 4),
                        "nightly_unmasked_first_infeasible_share": round(summary["feasibility"]["unmasked_first_infeasible_share"], 4)})
    return figures
