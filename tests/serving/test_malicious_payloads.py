"""Bad and hostile input against a real ``bentoml serve``: never a 5xx, always the one error object, time rules at the edge.

One server for the module (a small body limit so oversize cases stay quick); its log goes to a
file, which must hold no traceback and none of the bodies' values for the callers' mistakes.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import subprocess
import sys
import urllib.request
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import pytest

from serving.sandbox import AS_OF

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "nba_malicious_key_51c2"
LIMIT = 262_144
SECRET = "SECRETVALUE9931"  # put into rejected bodies; must never reach the server log


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    """The sandbox world's service with a 256 KiB body limit, logging to a file: (base URL, log path)."""
    from serving.bench import free_port, wait_ready
    from serving.cli import service_home

    root = tmp_path_factory.mktemp("malicious")
    port = free_port()
    overrides = {"audit_url": f"sqlite:///{root / 'audit.db'}", "max_body_bytes": LIMIT}
    env = dict(
        os.environ,
        BENTOML_DO_NOT_TRACK="True",
        MLFLOW_DISABLE_TELEMETRY="true",
        NBA_SERVING_SET=json.dumps(overrides),
        BENTOML_HOME=str(service_home("127.0.0.1", port)),
        NBA_SERVING_CONFIG=str(Path(world.serving_yaml).resolve()),
        NBA_API_KEYS=f"mal:{KEY}",
    )
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("bentoml")), "serve", "serving.service:NextBestAction", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=150)
        yield base, log_path
    finally:
        from nba.servers import stop_group

        stop_group(proc, timeout_s=20)


def send(base: str, path: str, body: bytes = b"", ctype: str | None = "application/json", key: str | None = KEY, method: str = "POST"):
    """(status, headers, decoded JSON body or the raw bytes)."""
    headers = {"X-API-Key": key} if key else {}
    if ctype is not None:
        headers["Content-Type"] = ctype
    req = urllib.request.Request(f"{base}{path}", data=body if method == "POST" else None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, hdrs, data = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, data = exc.code, dict(exc.headers), exc.read()
    try:
        return status, hdrs, json.loads(data)
    except ValueError:
        return status, hdrs, data


def raw_http(base: str, head: str, chunks: list[bytes]) -> int:
    """Send a hand-made request (headers, then body pieces) on a socket; the answer's status (reading stops at the status line)."""
    u = urlparse(base)
    with socket.create_connection((u.hostname, u.port), timeout=60) as sock:
        sock.sendall(head.encode())
        try:
            for c in chunks:
                sock.sendall(c)
        except OSError:  # the server answered and closed early: read what it said
            pass
        line = sock.makefile("rb").readline().decode()
    return int(line.split()[1])


def _ok_error(status: int, body) -> None:
    from serving.schemas import ErrorResponse

    assert status < 500, (status, body)
    if status >= 400:
        assert isinstance(body, dict), body
        ErrorResponse.model_validate(body)
        assert body["error"]["status"] == status


def _deep(n: int) -> str:
    return "[" * n + "]" * n


MULTIPART = b'--XyZ\r\nContent-Disposition: form-data; name="hcp_ids"\r\n\r\nH1\r\n--XyZ--\r\n'
RAW_CASES = [
    # (name, path, body, content type, expected status)
    ("not json", "/recommend", b"{not json", "application/json", 422),
    ("empty body", "/recommend", b"", "application/json", 422),
    ("null", "/feedback", b"null", "application/json", 422),
    ("a list", "/plan", b"[]", "application/json", 422),
    ("a string", "/recommend", b'"hcp_ids"', "application/json", 422),
    ("invalid utf-8", "/recommend", b'{"hcp_ids": ["\xff\xfe"]}', "application/json", 422),
    ("lone surrogate", "/recommend", b'{"hcp_ids": ["\\ud800"]}', "application/json", 422),
    ("byte order mark", "/recommend", b'\xef\xbb\xbf{"hcp_ids": ["H1"]}', "application/json", 422),
    ("utf-16", "/recommend", '{"hcp_ids": ["H1"]}'.encode("utf-16"), "application/json; charset=utf-16", 422),
    ("pickle as json", "/recommend", pickle.dumps({"hcp_ids": ["H1"]}), "application/json", 422),
    ("pickle", "/recommend", pickle.dumps({"hcp_ids": ["H1"]}), "application/vnd.bentoml+pickle", 415),
    ("octet-stream", "/feedback", b"\x00\x01\x02", "application/octet-stream", 415),
    ("form", "/recommend", b"hcp_ids=H1&k=2", "application/x-www-form-urlencoded", 415),
    ("text", "/plan", b'{"rep_id": "R1"}', "text/plain", 415),
    ("xml", "/feedback", b"<feedback/>", "application/xml", 415),
    ("deep nesting in a field", "/recommend", b'{"hcp_ids": ' + _deep(20_000).encode() + b"}", "application/json", 422),
    ("deep nesting at the top", "/feedback", _deep(50_000).encode(), "application/json", 422),
    ("deep objects", "/plan", b'{"a":' * 5000 + b"1" + b"}" * 5000, "application/json", 422),
    ("huge number", "/recommend", b'{"hcp_ids": ["H1"], "k": 1e999}', "application/json", 422),
    ("huge integer", "/recommend", b'{"hcp_ids": ["H1"], "k": ' + b"9" * 4000 + b"}", "application/json", 422),
    ("duplicate keys", "/recommend", b'{"hcp_ids": ["H1"], "hcp_ids": 5}', "application/json", 422),
]
for _path in ("/recommend", "/plan", "/feedback"):
    RAW_CASES += [
        (f"multipart with boundary {_path}", _path, MULTIPART, "multipart/form-data; boundary=XyZ", 415),
        (f"multipart without boundary {_path}", _path, MULTIPART, "multipart/form-data", 415),
    ]


@pytest.mark.parametrize("name, path, body, ctype, expected", RAW_CASES, ids=[c[0] for c in RAW_CASES])
def test_raw_bodies(server, name, path, body, ctype, expected) -> None:
    status, _, doc = send(server[0], path, body, ctype)
    _ok_error(status, doc)
    assert status == expected, (name, doc)


def _json_cases(world) -> list[tuple[str, str, dict, int]]:
    h = world.hcp_ids[0]
    fb = {"feedback_id": "mal-1", "suggestion_id": "never-served", "outcome": "accepted", "ts": AS_OF.isoformat()}
    cases = [
        ("NUL id", "/recommend", {"hcp_ids": ["\x00"]}, 422),
        ("id with NUL inside", "/recommend", {"hcp_ids": [f"{h}\x00{SECRET}"]}, 422),
        ("unicode id", "/recommend", {"hcp_ids": ["医生-001"]}, 422),
        ("right-to-left override", "/recommend", {"hcp_ids": ["\u202eH001"]}, 422),
        ("trailing newline", "/recommend", {"hcp_ids": [f"{h}\n"]}, 422),
        ("65 characters", "/recommend", {"hcp_ids": ["x" * 65]}, 422),
        ("empty id", "/recommend", {"hcp_ids": [""]}, 422),
        ("no ids", "/recommend", {"hcp_ids": []}, 422),
        ("ids as a string", "/recommend", {"hcp_ids": h}, 422),
        ("nested ids", "/recommend", {"hcp_ids": [[h]]}, 422),
        ("huge list", "/recommend", {"hcp_ids": [f"H{i}" for i in range(20_000)]}, 422),
        ("k as text (pydantic coerces it)", "/recommend", {"hcp_ids": [h], "k": "3"}, 200),
        ("k huge", "/recommend", {"hcp_ids": [h], "k": 10**40}, 422),
        ("unknown field", "/recommend", {"hcp_ids": [h], "admin": True}, 422),
        ("big string", "/recommend", {"hcp_ids": ["x" * 200_000]}, 422),
        ("as_of year 1500", "/recommend", {"hcp_ids": [h], "as_of": "1500-01-01T00:00:00+00:00"}, 422),
        ("as_of year 9999", "/recommend", {"hcp_ids": [h], "as_of": "9999-12-31T23:59:59+00:00"}, 422),
        ("as_of at pandas' edge", "/recommend", {"hcp_ids": [h], "as_of": "2262-04-10T23:00:00-10:00", "backtest": True}, 422),
        ("as_of year 1 backtest", "/recommend", {"hcp_ids": [h], "as_of": "0001-01-01T00:00:00+14:00", "backtest": True}, 422),
        ("as_of not a time", "/recommend", {"hcp_ids": [h], "as_of": "yesterday"}, 422),
        ("as_of far ahead", "/recommend", {"hcp_ids": [h], "as_of": (AS_OF + timedelta(days=30)).isoformat()}, 422),
        ("as_of at 2199 backtest", "/recommend", {"hcp_ids": [h], "as_of": "2199-12-31T23:00:00+00:00", "backtest": True}, 422),
        ("decision_date year 1", "/recommend", {"hcp_ids": [h], "decision_date": "0001-01-01"}, 422),
        ("decision_date year 3000", "/recommend", {"hcp_ids": [h], "decision_date": "3000-01-01"}, 422),
        ("plan date year 9999", "/plan", {"rep_id": "R1", "date": "9999-12-31"}, 422),
        ("plan date year 1", "/plan", {"rep_id": "R1", "date": "0001-01-01"}, 422),
        ("plan NUL rep", "/plan", {"rep_id": "\x00", "date": AS_OF.date().isoformat()}, 422),
        ("feedback ts year 1", "/feedback", {**fb, "ts": "0001-01-01T00:00:00+14:00"}, 422),
        ("feedback ts year 9999", "/feedback", {**fb, "ts": "9999-12-31T23:59:59-12:00"}, 422),
        ("feedback naive ts", "/feedback", {**fb, "ts": "2025-05-06T00:00:00"}, 422),
        ("feedback unicode id", "/feedback", {**fb, "feedback_id": "é"}, 422),
        ("feedback free-text reason", "/feedback", {**fb, "outcome": "dismissed", "reason": SECRET}, 422),
        ("feedback never served", "/feedback", fb, 404),
    ]
    return cases


def test_json_bodies(server, world) -> None:
    failures = []
    for name, path, body, expected in _json_cases(world):
        status, _, doc = send(server[0], path, json.dumps(body).encode())
        _ok_error(status, doc)
        if status != expected:
            failures.append((name, status, doc))
    assert not failures, failures


def test_methods_paths_and_keys(server) -> None:
    base = server[0]
    for method, path, key, expected in [
        ("GET", "/recommend", KEY, 405),
        ("PUT", "/feedback", KEY, 405),
        ("GET", "/admin", KEY, 404),
        ("POST", "/no-such-route", KEY, 404),
        ("POST", "/recommend", None, 401),
        ("POST", "/recommend", "x" * 5000, 401),
    ]:
        status, _, doc = send(base, path, b"{}", key=key, method=method)
        _ok_error(status, doc)
        assert status == expected, (method, path, doc)


def test_oversize_declared_and_chunked_is_413(server) -> None:
    base = server[0]
    status, _, doc = send(base, "/recommend", b'{"hcp_ids": ["' + b"x" * (LIMIT + 10) + b'"]}')
    _ok_error(status, doc)
    assert status == 413 and doc["error"]["code"] == "payload_too_large"
    u = urlparse(base)
    head = (
        f"POST /recommend HTTP/1.1\r\nHost: {u.hostname}\r\nContent-Type: application/json\r\nX-API-Key: {KEY}\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    piece = b"x" * 65_536
    chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n" for _ in range(LIMIT // len(piece) + 2)] + [b"0\r\n\r\n"]
    assert raw_http(base, head, chunks) == 413
    status, _, _ = send(base, "/recommend", json.dumps({"hcp_ids": ["H1"] * 5}).encode())  # still serving afterwards
    assert status < 500


def test_time_rules_at_the_edge(server, world, busy_rep) -> None:
    """Offsets stored as UTC (exact replay is a replay), future ts refused, as_of bounded, backtests unrecorded, plans on their day."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    base = server[0]
    status, _, body = send(base, "/recommend", json.dumps({"hcp_ids": [world.hcp_ids[2]], "k": 1, "as_of": AS_OF.isoformat()}).encode())
    assert status == 200, body
    sid = body["results"][0]["suggestions"][0]["suggestion_id"]
    local = (AS_OF - timedelta(hours=3)).astimezone(ZoneInfo("Asia/Shanghai"))
    item = {"feedback_id": "tz-1", "suggestion_id": sid, "outcome": "accepted", "ts": local.isoformat()}
    first = send(base, "/feedback", json.dumps(item).encode())
    again = send(base, "/feedback", json.dumps(item).encode())
    assert (first[0], first[2]["created"]) == (200, True) and (again[0], again[2]["created"]) == (200, False), (first, again)
    utc_same = {**item, "ts": (AS_OF - timedelta(hours=3)).isoformat()}  # the same instant written in UTC is the same feedback
    assert send(base, "/feedback", json.dumps(utc_same).encode())[0] == 200
    future = {**item, "feedback_id": "tz-2", "ts": (AS_OF + timedelta(days=400)).isoformat()}
    status, _, doc = send(base, "/feedback", json.dumps(future).encode())
    assert status == 422 and doc["error"]["fields"][0]["field"] == "ts" and "future" in doc["error"]["message"]
    within_skew = {**item, "feedback_id": "tz-3", "ts": (AS_OF + timedelta(seconds=60)).isoformat()}
    assert send(base, "/feedback", json.dumps(within_skew).encode())[0] == 200

    past = {"hcp_ids": [world.hcp_ids[2]], "k": 1, "as_of": (AS_OF - timedelta(days=30)).isoformat()}
    status, _, doc = send(base, "/recommend", json.dumps(past).encode())
    assert status == 422 and doc["error"]["fields"][0]["field"] == "as_of" and "backtest" in doc["error"]["message"]
    status, _, body = send(base, "/recommend", json.dumps({**past, "backtest": True}).encode())
    assert status == 200 and any("backtest" in n for n in body["notes"]), body
    bt_sid = body["results"][0]["suggestions"][0]["suggestion_id"]
    status, _, doc = send(base, "/feedback", json.dumps({**item, "feedback_id": "tz-4", "suggestion_id": bt_sid}).encode())
    assert status == 404  # a backtest's suggestion was never recorded as served

    for offset in (0, 3):
        day = (AS_OF + timedelta(days=offset)).date()
        status, _, plan = send(base, "/plan", json.dumps({"rep_id": busy_rep, "date": day.isoformat()}).encode())
        assert status == 200, plan
        assert plan["contacts"], plan
        for c in plan["contacts"]:
            start = datetime.fromisoformat(c["suggestion"]["window_start"])
            assert start.date() == day, (day, c["suggestion"])  # local date of the HCP's window
    status, _, doc = send(base, "/plan", json.dumps({"rep_id": busy_rep, "date": (AS_OF + timedelta(days=30)).date().isoformat()}).encode())
    assert status == 422 and doc["error"]["fields"][0]["field"] == "date", doc


def test_the_log_holds_no_traceback_or_body_for_rejections(server) -> None:
    """Runs last in the module: everything above was rejected at INFO, on one line each, without the bodies."""
    text = Path(server[1]).read_text(errors="replace")
    assert "rejected POST /recommend: 422 invalid_request" in text, text[-3000:]
    assert "rejected POST /recommend: 415 unsupported_media_type" in text and "rejected POST other: 404 not_found" in text
    assert SECRET not in text, [line for line in text.splitlines() if SECRET in line][:3]
    assert "Traceback" not in text, text[-3000:]
