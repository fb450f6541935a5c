"""Request metrics labelled by route template, and the /metrics endpoint that serves them.

BentoML's own HTTP metrics label each request by its raw path before any auth answers, so random
paths grew /metrics without bound (5,000 requests: 100,000 series, 18 MB); the service turns them
off (``metrics={"enabled": False}``) and this middleware counts instead, outermost, so 401, 413
and 503 answers count too. Known routes keep their path; everything else is ``other``.

Counters live in the Prometheus multiprocess directory that ``bentoml serve`` sets up
(``PROMETHEUS_MULTIPROC_DIR``), so several workers add up; ``nba serve`` gives each service its
own directory (``serving.cli.service_home``), so a second service on the host cannot wipe it.
Counter names keep BentoML's (``bentoml_service_request_total{endpoint, http_response_code}``),
so existing dashboards still read them.
"""

from __future__ import annotations

import os
import time
from typing import Any

ROUTES = ("/recommend", "/plan", "/feedback", "/feedback/batch", "/readyz", "/livez", "/healthz", "/metrics", "/docs.json", "/schema.json", "/docs", "/")
OTHER = "other"
# Latency buckets (seconds) around the targets: 30 ms p99 sustained, 50 ms for a 503, 100 ms overloaded.
BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def route_label(path: str, routes: tuple[str, ...] = ROUTES) -> str:
    """The metrics label of a request path: the route itself when known, else ``other`` (bounded series)."""
    return path if path in routes else OTHER


class _Metrics:
    """The service's Prometheus objects, created on first use (after the worker set its multiprocess directory)."""

    def __init__(self) -> None:
        import prometheus_client as pc

        self.pc = pc
        self.requests = pc.Counter("bentoml_service_request", "HTTP requests by route template and status", ["endpoint", "http_response_code"])
        self.duration = pc.Histogram(
            "bentoml_service_request_duration_seconds",
            "HTTP request duration by route template and status",
            ["endpoint", "http_response_code"],
            buckets=BUCKETS,
        )
        self.in_progress = pc.Gauge(
            "bentoml_service_request_in_progress", "HTTP requests in progress by route template", ["endpoint"], multiprocess_mode="livesum"
        )
        self.shed = pc.Counter("nba_admission_rejected", "requests refused by admission control (503)", ["endpoint", "reason"])
        self.batch_callers = pc.Histogram("nba_batch_callers", "callers scored together in one engine call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_hcps = pc.Histogram("nba_batch_hcps", "HCPs scored in one engine call", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1000))
        self.undelivered = pc.Counter("nba_responses_undelivered", "responses whose caller had gone (suggestions marked undelivered)")

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every metric (all workers' in multiprocess mode)."""
        pc = self.pc
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            registry = pc.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = pc.REGISTRY
        return pc.generate_latest(registry), pc.CONTENT_TYPE_LATEST


_METRICS: _Metrics | None = None


def metrics() -> _Metrics:
    """The process's metric objects (created once)."""
    global _METRICS
    if _METRICS is None:
        _METRICS = _Metrics()
    return _METRICS


class RouteMetrics:
    """ASGI middleware: counts every HTTP request by route template and status, and answers ``GET /metrics``."""

    def __init__(self, app: Any, routes: tuple[str, ...] = ROUTES, metrics_path: str = "/metrics") -> None:
        self.app = app
        self.routes = routes
        self.metrics_path = metrics_path

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        m = metrics()
        if scope["path"] == self.metrics_path and scope.get("method") in ("GET", "HEAD"):
            await self._expose(m, send)
            return
        route = route_label(scope["path"], self.routes)
        start = time.perf_counter()
        # Without a response: 500 when the app raised (the server answers that), 499 when the caller
        # left first and nobody answered (nginx's "client closed request").
        status = 500
        responded = False
        gauge = m.in_progress.labels(endpoint=route)
        gauge.inc()

        async def counting_send(message: dict) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = int(message["status"]), True
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
            if status == 500 and not responded:
                status = 499
        finally:
            gauge.dec()
            code = str(status)
            m.requests.labels(endpoint=route, http_response_code=code).inc()
            m.duration.labels(endpoint=route, http_response_code=code).observe(time.perf_counter() - start)

    async def _expose(self, m: _Metrics, send: Any) -> None:
        import anyio.to_thread

        body, content_type = await anyio.to_thread.run_sync(m.exposition)  # reads every worker's files: off the event loop
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]}
        )
        await send({"type": "http.response.body", "body": body})
