"""Request metrics by route template (``serving.metrics``), driven as plain ASGI; the real server's counts are in test_service_load_e2e."""

from __future__ import annotations

import asyncio
import random
import string

from serving.metrics import OTHER, RouteMetrics, metrics, route_label


def test_known_routes_keep_their_path_and_everything_else_is_other() -> None:
    assert route_label("/recommend") == "/recommend" and route_label("/readyz") == "/readyz"
    assert route_label("/recommend/") == OTHER and route_label("/recommend/x") == OTHER and route_label("/admin") == OTHER


class StatusApp:
    """Answers the status named in the query string (``?s=404``); ``?s=raise`` raises; ``?s=none`` never answers."""

    async def __call__(self, scope, receive, send):
        s = scope.get("query_string", b"").decode().removeprefix("s=")
        if s == "raise":
            raise RuntimeError("boom")
        if s == "none":
            return
        await send({"type": "http.response.start", "status": int(s), "headers": []})
        await send({"type": "http.response.body", "body": b""})


def _call(app, path: str, status: str, method: str = "POST") -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(m):
        sent.append(m)

    async def go():
        try:
            await app({"type": "http", "method": method, "path": path, "query_string": f"s={status}".encode(), "headers": []}, receive, send)
        except RuntimeError:
            pass

    asyncio.run(go())
    return sent


def _count(route: str, status: str) -> float:
    import prometheus_client

    return prometheus_client.REGISTRY.get_sample_value("bentoml_service_request_total", {"endpoint": route, "http_response_code": status}) or 0.0


def test_each_request_counts_once_under_its_route_and_status() -> None:
    app = RouteMetrics(StatusApp())
    calls = (
        [("/recommend", "200")] * 3
        + [("/recommend", "422")] * 2
        + [("/plan", "200")] * 2
        + [("/feedback", "409")]
        + [("/feedback", "200")]
        + [("/nope", "401")] * 4
        + [("/recommend", "raise")]
        + [("/recommend", "none")]
    )
    expected: dict[tuple[str, str], int] = {}
    for path, status in calls:
        code = {"raise": "500", "none": "499"}.get(status, status)
        expected[(route_label(path), code)] = expected.get((route_label(path), code), 0) + 1
    before = {k: _count(*k) for k in expected}
    for path, status in calls:
        _call(app, path, status)
    assert {k: _count(*k) - before[k] for k in expected} == {k: float(v) for k, v in expected.items()}


def _series(app) -> list[str]:
    sent = _call(app, "/metrics", "200", method="GET")
    assert sent[0]["status"] == 200 and dict(sent[0]["headers"])[b"content-type"].startswith(b"text/plain")
    text = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body").decode()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_a_thousand_random_paths_add_no_series() -> None:
    app = RouteMetrics(StatusApp())
    for status in ("401", "404", "405"):  # the statuses below, each once under "other"
        _call(app, "/first-unknown", status)
    before = _series(app)
    rng = random.Random(0)
    for _ in range(1000):
        path = "/" + "/".join("".join(rng.choices(string.ascii_letters + string.digits + "%.-_", k=rng.randint(1, 30))) for _ in range(rng.randint(1, 4)))
        _call(app, path, rng.choice(["401", "404", "405"]))
    after = _series(app)
    names = lambda lines: {line.rsplit(" ", 1)[0] for line in lines}  # noqa: E731
    assert names(after) == names(before)
    assert not any("first-unknown" in s or "%" in s for s in after)


def test_metrics_endpoint_is_answered_without_counting_itself() -> None:
    app = RouteMetrics(StatusApp())
    before = _count("/metrics", "200")
    lines = _series(app)
    assert any(line.startswith("bentoml_service_request_total") for line in lines)
    assert _count("/metrics", "200") == before
    assert metrics() is metrics()  # one set of metric objects per process
