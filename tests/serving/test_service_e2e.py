"""End to end: a real ``bentoml serve`` process on a random loopback port, over HTTP."""

from __future__ import annotations

import json
import os
import signal
import urllib.request
from datetime import timedelta

import pytest

from serving.sandbox import AS_OF

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "nba_e2e_key_7f3a"


def _start(world, tmp_path, overrides: dict):
    from serving.bench import free_port, wait_ready
    from serving.cli import serve_process

    os.environ["NBA_API_KEYS"] = f"e2e:{KEY}"
    port = free_port()
    proc = serve_process(world.serving_yaml, {"audit_url": f"sqlite:///{tmp_path / 'audit.db'}", **overrides}, "127.0.0.1", port, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=150)
    except Exception:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return base, proc


def _stop(proc) -> None:
    from nba.servers import stop_group

    stop_group(proc, timeout_s=20)


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    """The service with the champion; conferences blocked by lifecycle config (a guardrail to observe)."""
    from contract.schema import LIFECYCLES

    base, proc = _start(world, tmp_path_factory.mktemp("e2e"), {"guardrails.lifecycle_weights": {lc: {"conference": 0.0} for lc in LIFECYCLES}})
    yield base
    _stop(proc)


@pytest.fixture(scope="module")
def degraded_server(world, tmp_path_factory):
    """The service whose feature store cannot be opened (an empty workspace)."""
    import yaml

    root = tmp_path_factory.mktemp("e2e-degraded")
    broken = yaml.safe_load(world.features_yaml.read_text())
    broken["workspace_dir"] = str(root / "no-such-workspace")
    (root / "features.yaml").write_text(yaml.safe_dump(broken))
    base, proc = _start(world, root, {"features_config": str(root / "features.yaml")})
    yield base
    _stop(proc)


def call(base: str, path: str, body, key: str | None = KEY, raw: bytes | None = None):
    from serving.bench import post

    if raw is None:
        return post(base, path, body, key=key or "")
    req = urllib.request.Request(f"{base}{path}", data=raw, headers={"Content-Type": "application/json", "X-API-Key": key})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _declared_oversize_status(base: str) -> int:
    """Announce a 2.1 MB body but send only its start: the server must refuse from the header.

    Uploading the whole body races the server's early 413 (it closes the connection, the client
    gets a broken pipe), so a raw socket reads the answer after a partial send.
    """
    import socket
    from urllib.parse import urlparse

    u = urlparse(base)
    head = (
        f"POST /recommend HTTP/1.1\r\nHost: {u.hostname}\r\nContent-Type: application/json\r\n"
        f"X-API-Key: {KEY}\r\nContent-Length: 2100000\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((u.hostname, u.port), timeout=30) as sock:
        sock.sendall(head + b'{"hcp_ids": ["' + b"x" * 1000)
        status_line = sock.makefile("rb").readline().decode()
    return int(status_line.split()[1])


def test_probes_metrics_and_openapi_are_public(server) -> None:
    for path in ("/readyz", "/livez", "/metrics", "/docs.json"):
        with urllib.request.urlopen(server + path, timeout=10) as r:
            assert r.status == 200, path
    with urllib.request.urlopen(server + "/docs.json", timeout=10) as r:
        spec = json.loads(r.read())
    assert {"/recommend", "/plan", "/feedback"} <= set(spec["paths"])
    with urllib.request.urlopen(server + "/metrics", timeout=10) as r:
        assert b"bentoml_service_request" in r.read()


def test_recommend_with_the_champion(server, world) -> None:
    status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:5], "k": 2, "as_of": AS_OF.isoformat()})
    assert status == 200, body
    assert body["model_version"] == f"nba-next-best-action/{world.model_version}" and not body["degraded"]
    assert [r["hcp_id"] for r in body["results"]] == world.hcp_ids[:5]
    sugg = [s for r in body["results"] for s in r["suggestions"]]
    assert all(1 <= len(r["suggestions"]) <= 2 for r in body["results"])
    assert all(s["reasons"] and s["suggestion_id"] and 0 < s["propensity"] <= 1 for s in sugg)
    assert all(s["window_start"][-6] in "+-" for s in sugg)  # local time with its offset
    assert all(s["channel"] != "conference" for s in sugg)  # lifecycle guardrail from config
    # A request may ask for the reasons in Chinese; the suggestions' policy field keeps what the reasons leave out.
    status, zh = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:5], "k": 2, "as_of": AS_OF.isoformat(), "locale": "zh-CN"})
    assert status == 200, zh
    assert all(s["reasons"][0].endswith("。") and "likelihood" not in s["reasons"][0] for r in zh["results"] for s in r["suggestions"])
    assert call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1], "locale": "fr"})[0] == 422


def test_recommend_for_today_and_a_decision_date(server, world) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from contract.schema import REP_TIME_CHANNELS

    status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:10], "k": 3, "as_of": AS_OF.isoformat(), "window": "today"})
    assert status == 200, body
    sugg = [s for r in body["results"] for s in r["suggestions"]]
    assert sugg
    for s in sugg:
        start = datetime.fromisoformat(s["window_start"])
        assert start.date() == AS_OF.astimezone(ZoneInfo(s["timezone"])).date(), s  # the HCP's local today
        if s["channel"] in REP_TIME_CHANNELS:
            assert start.hour in (7, 11, 14), s  # working dayparts only
    day = (AS_OF + timedelta(days=2)).date()
    status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:5], "as_of": AS_OF.isoformat(), "decision_date": day.isoformat()})
    assert status == 200, body
    assert all(s["window_start"][:10] == day.isoformat() for r in body["results"] for s in r["suggestions"])
    with urllib.request.urlopen(server + "/metrics", timeout=10) as r:
        metrics = r.read().decode()
    assert "nba_hcp_decisions_total" in metrics and "nba_first_choice_overridden_total 0.0" in metrics


def test_openapi_documents_the_planning_horizon(server) -> None:
    with urllib.request.urlopen(server + "/docs.json", timeout=10) as r:
        text = r.read().decode()
    assert "decision_date" in text and "local time zone" in text and "today" in text


def test_feedback_twice_is_idempotent(server, world) -> None:
    _, body = call(server, "/recommend", {"hcp_ids": [world.hcp_ids[3]], "k": 1, "as_of": AS_OF.isoformat()})
    sid = body["results"][0]["suggestions"][0]["suggestion_id"]
    item = {
        "feedback_id": "e2e-fb-1",
        "suggestion_id": sid,
        "outcome": "dismissed",
        "reason": "wrong_time",
        "ts": (AS_OF + timedelta(minutes=1)).isoformat(),
    }  # within the clock skew of the sandbox clock
    s1, b1 = call(server, "/feedback", item)
    s2, b2 = call(server, "/feedback", item)
    assert (s1, b1["created"], b1["pushed_online"]) == (200, True, True), b1
    assert (s2, b2["created"]) == (200, False)
    s3, b3 = call(server, "/feedback", {**item, "outcome": "done", "reason": None})
    assert s3 == 409 and "e2e-fb-1" in json.dumps(b3)
    s4, _ = call(server, "/feedback", {**item, "feedback_id": "e2e-fb-2", "suggestion_id": "never-served"})
    assert s4 == 404


def test_plan_for_a_rep(server, world, busy_rep) -> None:
    from contract.io import read_frame
    from contract.schema import REP_TIME_CHANNELS

    status, body = call(server, "/plan", {"rep_id": busy_rep, "date": AS_OF.date().isoformat(), "visit_capacity": 2, "message_capacity": 3})
    assert status == 200, body
    assert 1 <= len(body["contacts"]) <= 5 and [c["order"] for c in body["contacts"]] == list(range(1, len(body["contacts"]) + 1))
    contacts = body["contacts"]
    rep_time = [c["suggestion"]["channel"] in REP_TIME_CHANNELS for c in contacts]
    assert sum(rep_time) <= 2 and len(rep_time) - sum(rep_time) <= 3  # each budget holds on its own
    values = [c["expected_value"] for c in contacts]
    assert values == sorted(values, reverse=True)  # order 1 is the most valuable contact
    owners = read_frame(world.data_dir, "hcps", columns=["hcp_id", "rep_id"]).set_index("hcp_id")["rep_id"]
    assert {owners[c["hcp_id"]] for c in contacts} == {busy_rep}  # only the rep's own HCPs
    # What expected_value counts, for the rep, per contact and for the plan.
    assert all(c["explanation"].startswith(f"Expected value {c['expected_value']:.2f}: ") for c in contacts)
    assert body["explanation"].startswith("Contacts are ordered by expected value")
    status, zh = call(server, "/plan", {"rep_id": busy_rep, "date": AS_OF.date().isoformat(), "visit_capacity": 2, "message_capacity": 3, "locale": "zh-CN"})
    assert status == 200 and zh["explanation"].startswith("联系按期望价值排序") and zh["contacts"][0]["explanation"].startswith("期望价值")


def test_auth_is_required(server, world) -> None:
    assert call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1]}, key=None)[0] == 401
    assert call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1]}, key="wrong")[0] == 401
    assert call(server, "/feedback", {}, key="wrong")[0] == 401


def test_bad_payloads_get_422_naming_the_field(server, world) -> None:
    status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1], "k": 0})
    assert status == 422 and body["error"]["fields"][0]["field"] == "k"
    status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1], "channels": ["fax"]})
    assert status == 422 and body["error"]["fields"][0]["field"].startswith("channels")
    status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1], "as_of": "2025-05-06T00:00:00"})
    assert status == 422 and "timezone-aware" in json.dumps(body)
    status, body = call(server, "/feedback", {"feedback_id": "x", "suggestion_id": "y", "outcome": "maybe", "ts": AS_OF.isoformat()})
    assert status == 422 and body["error"]["fields"][0]["field"] == "outcome"
    assert call(server, "/recommend", None, raw=b"{not json")[0] == 422
    for bad in ("3000-01-01", "2025-02-30", "soon"):  # outside pandas' range, not a day, not a date: 422, never a 5xx
        status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1], "decision_date": bad})
        assert status == 422 and body["error"]["fields"][0]["field"] == "decision_date", (bad, body)
    status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1], "as_of": "1500-01-01T00:00:00+00:00"})
    assert status == 422 and body["error"]["fields"][0]["field"] == "as_of"
    status, body = call(server, "/recommend", {"hcp_ids": world.hcp_ids[:1], "as_of": AS_OF.isoformat(), "decision_date": "2024-01-01"})
    assert status == 422 and "decision_date" in json.dumps(body) and "before today" in json.dumps(body)
    status, body = call(server, "/recommend", {"hcp_ids": [f"h{i}" for i in range(1001)]})
    assert status == 422 and "batch limit of 1000" in json.dumps(body)
    assert _declared_oversize_status(server) == 413


def test_degraded_mode_when_features_are_unavailable(degraded_server, world) -> None:
    status, body = call(degraded_server, "/recommend", {"hcp_ids": world.hcp_ids[:3], "as_of": AS_OF.isoformat()})
    assert status == 200 and body["degraded"]
    sugg = [s for r in body["results"] for s in r["suggestions"]]
    assert sugg and all(s["degraded"] and s["channel"] == "visit" for s in sugg)
    assert any("features unavailable" in n for n in body["notes"])
