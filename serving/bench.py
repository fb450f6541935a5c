"""``nba bench serve``: the API over loopback against the same requests scored in-process (the floor)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _status_and_count(answer: tuple[int, dict]) -> tuple[int, int]:
    status, body = answer
    return status, sum(len(r["suggestions"]) for r in body.get("results", [])) if status == 200 else 0


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def breakdown(prefix: str, parts: list[dict[str, float]]) -> dict[str, float]:
    """Median ms per stage of in-process requests: features (online read), model, rules+guardrails+reasons, audit."""
    if not parts:
        return {}
    rest = [p["total"] - p["features"] - p["model"] - p["audit"] for p in parts]
    med = {k: statistics.median(p[k] for p in parts) for k in ("features", "model", "audit")}
    return {
        f"{prefix}_features_p50_ms": round(med["features"], 2),
        f"{prefix}_model_p50_ms": round(med["model"], 2),
        f"{prefix}_rules_guardrails_reasons_p50_ms": round(statistics.median(rest), 2),
        f"{prefix}_audit_p50_ms": round(med["audit"], 2),
    }


@dataclass
class Shot:
    """One open-loop request: HTTP status (-1 client timeout, -2 connection error), latency from its scheduled time, suggestions received."""

    status: int
    latency_ms: float
    suggestions: int


async def _open_loop(url: str, bodies: list[bytes], rate: float, duration_s: float, key: str, timeout_s: float) -> tuple[list[Shot], float]:
    import asyncio

    import aiohttp

    n = max(1, int(rate * duration_s))
    shots: list[Shot] = []
    lag = 0.0
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s), headers=headers) as session:
        loop = asyncio.get_running_loop()

        async def one(body: bytes, at: float) -> None:
            status, count = -2, 0
            try:
                async with session.post(url, data=body) as r:
                    data = await r.read()
                    status = r.status
                    if status == 200:
                        count = data.count(b'"suggestion_id"')
            except TimeoutError:
                status = -1
            except aiohttp.ClientError:
                status = -2
            shots.append(Shot(status, (loop.time() - at) * 1000, count))

        tasks = []
        t0 = loop.time() + 0.05
        for i in range(n):
            at = t0 + i / rate  # fixed times, whatever the answers: an open loop
            delay = at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag = max(lag, -delay)
            tasks.append(loop.create_task(one(bodies[i % len(bodies)], at)))
        await asyncio.gather(*tasks)
    return shots, lag * 1000


def open_loop(url: str, bodies: list[bytes], *, rate: float, duration_s: float, key: str = BENCH_KEY, timeout_s: float = 10.0) -> tuple[list[Shot], float]:
    """POST ``bodies`` (cycled) at ``rate`` per second for ``duration_s`` on fixed times (latency counted from each one's time).

    Returns the shots and the generator's worst lag behind its schedule in ms (large: the client, not the server, was the limit).
    """
    import asyncio

    return asyncio.run(_open_loop(url, bodies, rate, duration_s, key, timeout_s))


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (``bentoml serve`` and its workers)."""
    import psutil

    from nba.servers import process_tree

    total = 0
    for p in process_tree(pid):
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


# BentoML's timeout middleware keeps a timer per request for its traffic timeout (60 s): resident
# memory grows by ~5 KB per request for the first 60 s of a load, then stays flat (measured on a
# trivial BentoML service too). RSS growth is taken after this settling time when the run allows.
RSS_SETTLE_S = 70.0


class RssSampler:
    """Samples the server tree's resident memory once a second while in its ``with`` block."""

    def __init__(self, pid: int, every_s: float = 1.0) -> None:
        self.pid = pid
        self.every_s = every_s
        self.samples: list[tuple[float, int]] = []
        self._stop = None

    def __enter__(self) -> RssSampler:
        import threading

        self._stop = threading.Event()
        start = time.perf_counter()

        def run() -> None:
            while True:
                self.samples.append((time.perf_counter() - start, tree_rss_bytes(self.pid)))
                if self._stop.wait(self.every_s):
                    self.samples.append((time.perf_counter() - start, tree_rss_bytes(self.pid)))
                    return

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def growth(self, settle_s: float = 0.0) -> tuple[float, int]:
        """(seconds into the run it is measured from, bytes grown from then to the end)."""
        if len(self.samples) < 2:
            return 0.0, 0
        first = next(((t, r) for t, r in self.samples if t >= settle_s), self.samples[0])
        return first[0], self.samples[-1][1] - first[1]


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and all its descendants."""
    import psutil

    from nba.servers import process_tree

    total = 0.0
    for p in process_tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            continue
    return total


def audit_counts(db: Path) -> dict[str, int]:
    """Suggestion rows in a SQLite audit trail: all, and those of requests marked undelivered."""
    import sqlite3

    with sqlite3.connect(db) as conn:
        total = conn.execute("SELECT COUNT(*) FROM suggestions").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        undelivered = (
            conn.execute("SELECT COUNT(*) FROM suggestions WHERE request_id IN (SELECT request_id FROM undelivered)").fetchone()[0]
            if "undelivered" in tables
            else 0
        )
    return {"rows": int(total), "undelivered": int(undelivered)}


def load_figures(prefix: str, shots: list[Shot], wall_s: float) -> dict[str, Any]:
    """Success share, latency percentiles and failures of one open-loop phase."""
    ok = [s.latency_ms for s in shots if s.status == 200]
    shed = [s.latency_ms for s in shots if s.status == 503]
    n = len(shots)
    return {
        f"{prefix}_requests": n,
        f"{prefix}_success_share": round(len(ok) / n, 4) if n else None,
        f"{prefix}_shed_503_share": round(len(shed) / n, 4) if n else None,
        f"{prefix}_other_failures": sum(s.status not in (200, 503) for s in shots),
        f"{prefix}_client_timeouts": sum(s.status == -1 for s in shots),
        f"{prefix}_answered_per_second": round(len(ok) / wall_s, 1) if wall_s else None,
        f"{prefix}_accepted_p50_ms": round(_pct(ok, 50), 2),
        f"{prefix}_accepted_p95_ms": round(_pct(ok, 95), 2),
        f"{prefix}_accepted_p99_ms": round(_pct(ok, 99), 2),
        f"{prefix}_accepted_max_ms": round(max(ok), 2) if ok else None,
        f"{prefix}_503_p99_ms": round(_pct(shed, 99), 2) if shed else None,
    }


def run_bench(
    workdir: Path,
    *,
    n_hcps: int,
    requests: int,
    batches: int,
    nightly_hcps: int,
    seed: int,
    rebuild: bool,
    simulate: Callable[..., Any] | None = None,
    rate: float = 200.0,
    duration_s: float = 10.0,
    overload_factor: float = 2.0,
    overload_s: float = 5.0,
    workers: int | None = None,
    client_timeout_s: float = 10.0,
    overrides: dict | None = None,
) -> dict[str, Any]:
    """Build (or reuse) a world, serve it, time HTTP and in-process scoring; returns the figures.

    Phases on one real ``bentoml serve``: serial single-HCP requests (the framework's cost per
    request), sustained single-HCP load at ``rate`` for ``duration_s`` (open loop; success share,
    p50/p95/p99, RSS growth), overload at ``overload_factor`` x ``rate`` (share shed with 503, p99
    of 503s and of accepted answers), 1,000-HCP batches; then audit rows vs delivered suggestions,
    and the same single requests scored in-process. ``simulate`` writes the world's contract data
    (``serving.sandbox.build_world``); needed only to build one.
    """

    from rich.console import Console

    from nba.configuration import load_config
    from serving.cli import serve_process
    from serving.config import ServingConfig
    from serving.engine import Recommender, feasibility_summary, freeze_heap
    from serving.sandbox import AS_OF, build_world

    console = Console(stderr=True)
    load_start = round(os.getloadavg()[0], 2)
    loadavg_start = Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else None
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
    audit_db = workdir / "audit-bench.db"
    for suffix in ("", "-wal", "-shm"):  # audit rows vs delivered suggestions: this run's only
        Path(f"{audit_db}{suffix}").unlink(missing_ok=True)
    extra = dict(overrides or {})
    overrides = {**extra, "audit_url": f"sqlite:///{audit_db}"}
    if workers is not None:
        overrides["workers"] = workers
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
        delivered = 0  # suggestions that reached this client in 200 answers: the audit trail must hold exactly these
        for s in singles[:10]:  # warm-up
            delivered += len(post(base, "/recommend", {"hcp_ids": s, "as_of": as_of})[1]["results"][0]["suggestions"])
        single_ms = []
        with console.status(f"{requests} single-HCP requests"):
            for s in singles:
                t = time.perf_counter()
                status, body = post(base, "/recommend", {"hcp_ids": s, "as_of": as_of})
                single_ms.append((time.perf_counter() - t) * 1000)
                assert status == 200, status
                delivered += sum(len(r["suggestions"]) for r in body["results"])
        bodies = [json.dumps({"hcp_ids": [ids[i]], "as_of": as_of}).encode() for i in rng.integers(0, len(ids), 5000)]
        url = f"{base}/recommend"
        with console.status(f"sustained load: {rate:g} req/s for {duration_s:g} s (open loop, after {min(5.0, duration_s / 5):g} s of warm-up)"):
            # Warm-up at the same rate, not counted: first batches of each size allocate buffers and caches once.
            warm, _ = open_loop(url, bodies, rate=rate, duration_s=min(5.0, duration_s / 5), timeout_s=client_timeout_s)
            delivered += sum(s.suggestions for s in warm)
            cpu0 = tree_cpu_seconds(proc.pid)
            sampler = RssSampler(proc.pid)
            t = time.perf_counter()
            with sampler:
                sustained, sustained_lag = open_loop(url, bodies, rate=rate, duration_s=duration_s, timeout_s=client_timeout_s)
            sustained_wall = time.perf_counter() - t
            cpu1 = tree_cpu_seconds(proc.pid)
            rss_from_s, rss_growth = sampler.growth(settle_s=RSS_SETTLE_S if duration_s >= 2 * RSS_SETTLE_S else 0.0)
            rss0 = sampler.samples[0][1] if sampler.samples else 0
        over_rate = overload_factor * rate
        overload, overload_lag, overload_wall = [], 0.0, 0.0
        if overload_s > 0:
            with console.status(f"overload: {over_rate:g} req/s for {overload_s:g} s (open loop)"):
                t = time.perf_counter()
                overload, overload_lag = open_loop(url, bodies, rate=over_rate, duration_s=overload_s, timeout_s=client_timeout_s)
                overload_wall = time.perf_counter() - t
        delivered += sum(s.suggestions for s in sustained + overload)
        with console.status("throughput (4 concurrent clients)"):
            t = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda s: _status_and_count(post(base, "/recommend", {"hcp_ids": s, "as_of": as_of})), singles))
            rps = len(singles) / (time.perf_counter() - t)
        delivered += sum(int(c[1]) for c in codes)
        batch_ms = []
        with console.status(f"{batches} batches of 1,000 HCPs"):
            for _ in range(batches):
                t = time.perf_counter()
                status, body = post(base, "/recommend", {"hcp_ids": batch_ids, "as_of": as_of})
                batch_ms.append((time.perf_counter() - t) * 1000)
                assert status == 200, (status, str(body)[:300])
                delivered += sum(len(r["suggestions"]) for r in body["results"])
        time.sleep(1.0)  # marks of undelivered answers are written off the request path
        audit = audit_counts(audit_db)
    finally:
        from nba.servers import stop_group

        stop_group(proc, timeout_s=30)

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
        "http_failed_requests": int(sum(c[0] != 200 for c in codes)),
        "http_batch_1000_p50_ms": round(statistics.median(batch_ms), 1),
        "http_batch_1000_max_ms": round(max(batch_ms), 1),
        "inprocess_single_p50_ms": round(statistics.median(inproc_single), 2),
        "inprocess_single_p99_ms": round(_pct(inproc_single, 99), 2),
        "inprocess_batch_1000_p50_ms": round(statistics.median(inproc_batch), 1),
        "http_over_inprocess_single_p50_ratio": round(statistics.median(single_ms) / statistics.median(inproc_single), 2),
        "http_over_inprocess_batch_p50_ratio": round(statistics.median(batch_ms) / statistics.median(inproc_batch), 2),
        "target_single_p99_ms": 30,
        "target_batch_1000_ms": 500,
        # Sustained single-HCP load (open loop at a fixed rate) and overload at a multiple of it.
        "workers": workers,
        "service_overrides": extra or None,
        "sustained_rate_per_second": rate,
        "sustained_duration_s": duration_s,
        **load_figures("sustained", sustained, sustained_wall),
        "sustained_client_max_lag_ms": round(sustained_lag, 1),
        "sustained_rss_start_mb": round(rss0 / 2**20, 1),
        "sustained_server_cpu_ms_per_request": round((cpu1 - cpu0) * 1000 / max(len(sustained), 1), 2),
        # Over the part of the run after BentoML's per-request timers (traffic timeout) reached their steady count.
        "sustained_rss_growth_kb_per_10k_requests": round(rss_growth / 1024 / max(rate * (duration_s - rss_from_s), 1) * 10_000, 1),
        "sustained_rss_measured_from_s": round(rss_from_s, 1),
        "http_sustained_p50_over_inprocess_single_p50_ratio": round(
            _pct([x.latency_ms for x in sustained if x.status == 200], 50) / statistics.median(inproc_single), 2
        ),
        "overload_rate_per_second": over_rate,
        "overload_duration_s": overload_s,
        **load_figures("overload", overload, overload_wall),
        "overload_client_max_lag_ms": round(overload_lag, 1),
        # Every suggestion in the trail either reached this client or is marked undelivered.
        "audit_rows": audit["rows"],
        "audit_rows_marked_undelivered": audit["undelivered"],
        "audit_rows_delivered": audit["rows"] - audit["undelivered"],
        "delivered_suggestions": delivered,
        "audit_delivered_equals_delivered": audit["rows"] - audit["undelivered"] == delivered,
        "target_sustained_rate_per_second": 200,
        "target_sustained_p99_ms": 30,
        "target_503_p99_ms": 50,
        "target_overload_accepted_p99_ms": 100,
        "target_http_over_inprocess_p50_ratio": 1.5,
        **breakdown("inprocess_single", single_parts),
        **breakdown("inprocess_batch_1000", batch_parts),
        # Feasible first: a rule overriding a served first choice after masking (target 0) vs the model's unmasked choice.
        **{f"batch_{k}": round(v, 4) for k, v in feasibility_summary(feasibility).items() if k.endswith("_share")},
        # The box is shared: latency figures mean little without the load they were taken under.
        "load_avg_1m_start": load_start,
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
        "proc_loadavg_start": loadavg_start,
        "proc_loadavg_end": Path("/proc/loadavg").read_text().strip() if loadavg_start else None,
    }
    if nightly_hcps:
        from serving.batch import recommend_all

        nightly = [ids[i % len(ids)] for i in range(nightly_hcps)]
        t = time.perf_counter()
        summary = recommend_all(rec, workdir / "nightly.parquet", as_of=AS_OF, hcp_ids=nightly)
        secs = time.perf_counter() - t
        figures.update(
            {
                "nightly_hcps": nightly_hcps,
                "nightly_seconds": round(secs, 1),
                "nightly_hcps_per_second": round(nightly_hcps / secs, 1),
                "nightly_suggestions": summary["suggestions"],
                "target_nightly_100k_seconds": 120,
                "nightly_first_choice_overridden_share": round(summary["feasibility"]["first_choice_overridden_share"], 4),
                "nightly_unmasked_first_infeasible_share": round(summary["feasibility"]["unmasked_first_infeasible_share"], 4),
            }
        )
    return figures
