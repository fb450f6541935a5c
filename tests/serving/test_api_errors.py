"""The API's edges without a server: the middleware in front of a tiny ASGI app, the one error object, the OpenAPI document."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from serving.auth import KeyRing
from serving.errors import error_body, field_path, normalise
from serving.middleware import ApiGuard, is_json_type, quiet_client_errors

KEY = "unit-key"
SECRET_ID = "SECRET-BODY-VALUE-42"  # appears only in request bodies: must never reach a log line


def _error_valid(doc: dict) -> None:
    from serving.schemas import ErrorResponse

    ErrorResponse.model_validate(doc)
    assert set(doc) == {"error"}


class TinyApp:
    """Stands in for BentoML: answers in each of its own error shapes, by path and body."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        if scope["method"] == "POST":
            while True:
                m = await receive()
                body += m.get("body", b"")
                if not m.get("more_body"):
                    break
        self.bodies.append(body)
        path = scope["path"]

        async def answer(status: int, data: bytes, ctype: bytes = b"application/json", extra=()) -> None:
            await send(
                {"type": "http.response.start", "status": status, "headers": [(b"content-type", ctype), (b"content-length", str(len(data)).encode()), *extra]}
            )
            await send({"type": "http.response.body", "body": data})

        if path == "/docs.json":
            await answer(
                200,
                json.dumps(
                    {
                        "openapi": "3.0.2",
                        "info": {"title": "x"},
                        "paths": {"/livez": {"get": {"responses": {"200": {"description": "ok"}}}}},
                        "components": {"schemas": {"InvalidArgument": {"type": "object"}}},
                    }
                ).encode(),
            )
        elif path not in ("/recommend", "/plan", "/feedback"):
            await answer(404, b"Not Found", b"text/plain; charset=utf-8")
        elif scope["method"] != "POST":
            await answer(405, b"Method Not Allowed", b"text/plain; charset=utf-8")
        elif b"pydantic" in body:  # BentoML's ValidationError answer
            await answer(
                400,
                json.dumps(
                    {
                        "error": "2 validation errors for RecommendRequest",
                        "detail": [
                            {"type": "value_error", "loc": ["hcp_ids", 0], "msg": "Value error, hcp_ids[0] 'x y' is not a valid id"},
                            {"type": "missing", "loc": ["k"], "msg": "Field required"},
                        ],
                    }
                ).encode(),
            )
        elif b"handler" in body:  # a handler's BentoMLException
            await answer(422, json.dumps([{"error": "hcp_ids: 1001 ids exceed the batch limit of 1000"}]).encode())
        elif b"conflict" in body:
            await answer(409, json.dumps([{"error": "feedback_id: feedback 'f1' already stored with different outcome"}]).encode())
        elif b"busy" in body:  # admission control, already in the one shape
            await answer(503, error_body(503, "overloaded", "overloaded: retry after 1 s"), extra=[(b"retry-after", b"1")])
        elif b"boom" in body:
            raise RuntimeError("a bug")
        elif b"crash500" in body:  # BentoML's own 500 text
            await answer(500, json.dumps({"error": "An unexpected error has occurred, please check the server log."}).encode())
        else:
            await answer(200, b'{"ok": true}')


def call(app, method: str, path: str, body: bytes | list[bytes] = b"", headers: dict | None = None, key: str | None = KEY):
    """Drive an ASGI app once: (status, headers, body bytes). A list body arrives in chunks without a length (chunked)."""
    hdrs = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        hdrs["x-api-key"] = key
    chunks = body if isinstance(body, list) else [body]
    if not isinstance(body, list):
        hdrs.setdefault("content-length", str(len(body)))
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    scope = {"type": "http", "method": method, "path": path, "headers": [(k.encode(), v.encode()) for k, v in hdrs.items()]}
    queue = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict] = []

    async def receive():
        return queue.pop(0) if queue else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    asyncio.run(app(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    data = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, data


@pytest.fixture()
def tiny():
    inner = TinyApp()
    guard = ApiGuard(inner, keyring=KeyRing.load({}, environ={"NBA_API_KEYS": f"unit:{KEY}"}), require_auth=True, max_body_bytes=1024)
    return guard, inner


def test_success_passes_through_untouched(tiny) -> None:
    guard, inner = tiny
    status, headers, body = call(guard, "POST", "/recommend", b'{"hcp_ids": ["a"]}')
    assert (status, body) == (200, b'{"ok": true}')
    assert inner.bodies == [b'{"hcp_ids": ["a"]}']  # the app still reads the body the guard buffered


@pytest.mark.parametrize("key", [None, "wrong"])
def test_missing_or_wrong_key_is_401_in_the_one_shape(tiny, key) -> None:
    guard, inner = tiny
    status, _, body = call(guard, "POST", "/recommend", b"{}", key=key)
    doc = json.loads(body)
    assert status == 401 and doc["error"]["code"] == "unauthorized" and "X-API-Key" in doc["error"]["message"]
    _error_valid(doc)
    assert inner.bodies == []


@pytest.mark.parametrize(
    "ctype",
    [
        "multipart/form-data",
        "multipart/form-data; boundary=xyz",
        "application/x-www-form-urlencoded",
        "text/plain",
        "application/vnd.bentoml+pickle",
        "application/octet-stream",
        "application/xml",
    ],
)
def test_non_json_bodies_are_415_before_the_app_parses_them(tiny, ctype) -> None:
    guard, inner = tiny
    status, _, body = call(guard, "POST", "/feedback", b"--xyz\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--xyz--", headers={"content-type": ctype})
    doc = json.loads(body)
    assert status == 415 and doc["error"]["fields"][0]["field"] == "Content-Type"
    _error_valid(doc)
    assert inner.bodies == []


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/merge-patch+json", None])
def test_json_types_and_no_type_are_accepted(ctype) -> None:
    assert is_json_type(ctype)


def test_declared_oversize_is_413_without_reading(tiny) -> None:
    guard, inner = tiny
    status, _, body = call(guard, "POST", "/recommend", b"{}", headers={"content-length": "5000"})
    assert status == 413 and json.loads(body)["error"]["code"] == "payload_too_large"
    assert inner.bodies == []


def test_chunked_oversize_is_413_not_500(tiny) -> None:
    guard, inner = tiny
    status, _, body = call(guard, "POST", "/recommend", [b'{"hcp_ids": ["', b"x" * 600, b"x" * 600, b'"]}'])
    doc = json.loads(body)
    assert status == 413 and "limit of 1024" in doc["error"]["message"]
    assert inner.bodies == []
    status, _, _ = call(guard, "POST", "/recommend", [b'{"hcp_ids": ', b'["a"]}'])  # chunked within the limit: served
    assert status == 200 and inner.bodies[-1] == b'{"hcp_ids": ["a"]}'


def test_validation_400_becomes_422_naming_each_field(tiny) -> None:
    guard, _ = tiny
    status, _, body = call(guard, "POST", "/recommend", b'{"pydantic": 1}')
    doc = json.loads(body)
    _error_valid(doc)
    assert status == 422 and doc["error"]["code"] == "invalid_request"
    assert [f["field"] for f in doc["error"]["fields"]] == ["hcp_ids[0]", "k"]
    assert doc["error"]["fields"][0]["message"].startswith("hcp_ids[0] 'x y'")  # pydantic's "Value error, " prefix dropped
    assert doc["error"]["message"].startswith("hcp_ids[0]") and "1 more" in doc["error"]["message"]


@pytest.mark.parametrize("marker, status, field", [(b"handler", 422, "hcp_ids"), (b"conflict", 409, "feedback_id")])
def test_handler_errors_lose_their_array(tiny, marker, status, field) -> None:
    guard, _ = tiny
    got, _, body = call(guard, "POST", "/feedback", b'{"' + marker + b'": 1}')
    doc = json.loads(body)
    _error_valid(doc)
    assert got == status and doc["error"]["fields"][0]["field"] == field


def test_admission_503_keeps_retry_after_and_its_code(tiny) -> None:
    guard, _ = tiny
    status, headers, body = call(guard, "POST", "/recommend", b'{"busy": 1}')
    doc = json.loads(body)
    assert status == 503 and headers["retry-after"] == "1" and doc["error"]["code"] == "overloaded"
    assert int(headers["content-length"]) == len(body)


def test_unknown_path_wrong_method_and_bugs_answer_in_the_one_shape(tiny) -> None:
    guard, _ = tiny
    for method, path, body, status in [
        ("GET", "/nope", b"", 404),
        ("GET", "/recommend", b"", 405),
        ("POST", "/plan", b'{"boom": 1}', 500),
        ("POST", "/plan", b'{"crash500": 1}', 500),
    ]:
        got, headers, data = call(guard, method, path, body)
        doc = json.loads(data)
        _error_valid(doc)
        assert got == status and doc["error"]["status"] == status and headers["content-type"] == "application/json"
    assert "unexpected" not in json.loads(call(guard, "POST", "/plan", b'{"crash500": 1}')[2])["error"]["message"]


def test_public_paths_need_no_key(tiny) -> None:
    guard, _ = tiny
    status, _, body = call(guard, "GET", "/docs.json", key=None)
    doc = json.loads(body)
    assert status == 200 and doc["openapi"] == "3.1.0" and doc["info"]["title"].startswith("nba")
    assert "ErrorResponse" in doc["components"]["schemas"] and "InvalidArgument" not in doc["components"]["schemas"]


def test_rejections_log_one_info_line_without_the_body(tiny, caplog) -> None:
    guard, _ = tiny
    caplog.set_level(logging.DEBUG)
    payload = json.dumps({"pydantic": 1, "hcp_ids": [SECRET_ID]}).encode()
    call(guard, "POST", "/recommend", payload)
    call(guard, "POST", f"/{SECRET_ID}", payload)
    call(guard, "POST", "/recommend", payload, headers={"content-type": "text/plain"})
    lines = [r for r in caplog.records if r.name == "nba.serving.requests"]
    assert [r.levelno for r in lines] == [logging.INFO] * 3
    assert all(SECRET_ID not in r.getMessage() and not r.exc_info for r in caplog.records)
    assert "422 invalid_request fields=hcp_ids[0],k" in lines[0].getMessage() and " other: 404" in lines[1].getMessage()


def test_bentoml_traceback_for_a_caller_mistake_is_dropped(caplog) -> None:
    from bentoml.exceptions import BentoMLException
    from pydantic import BaseModel, ValidationError

    quiet_client_errors()
    logger = logging.getLogger("bentoml._internal.server.http_app")
    caplog.set_level(logging.INFO)

    class M(BaseModel):
        k: int

    for exc in (BentoMLException("hcp_ids: bad", error_code=422), BentoMLException("down", error_code=503)):
        try:
            raise exc
        except BentoMLException:
            logger.error("Exception on %s [%s]", "/recommend", "POST", exc_info=True)
    try:
        M.model_validate({"k": SECRET_ID})
    except ValidationError:
        logger.error("Exception on %s [%s]", "/recommend", "POST", exc_info=True)
    kept = [r for r in caplog.records if r.name == logger.name]
    assert len(kept) == 1 and "down" in str(kept[0].exc_info[1])  # only the 5xx keeps its traceback


def test_normalise_shapes() -> None:
    assert field_path(("body", "hcp_ids", 3)) == "hcp_ids[3]" and field_path(()) == "body"
    doc = normalise(422, json.dumps({"error": "1 validation error", "detail": [{"loc": [], "msg": "Invalid JSON: expected value"}]}).encode())
    assert doc["error"]["fields"] == [{"field": "body", "message": "Invalid JSON: expected value"}]
    assert normalise(404, b"Not Found")["error"]["code"] == "not_found"
    assert normalise(422, json.dumps([{"error": "as_of: 1999 is before the server's clock"}]).encode())["error"]["fields"][0]["field"] == "as_of"
    long = normalise(422, json.dumps([{"error": "x" * 5000}]).encode())
    assert len(long["error"]["message"]) <= 500
