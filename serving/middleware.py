"""ASGI middleware in front of the API: API-key auth, JSON only, body-size limit, one error shape.

Probes, metrics and the OpenAPI document stay public so orchestrators and scrapers need no key.
Everything else is checked here before BentoML parses it: a missing key is 401, a body that is not
JSON 415 (multipart and form bodies made BentoML's parser raise 500s), a body over the limit 413,
whether it declares its length or arrives chunked. Every error answer on those routes is rewritten
into the one error object of ``serving.errors`` (BentoML's validation 400 becomes 422, as the API
promises), logged at INFO on one line without the body; ``/docs.json`` is completed by
``serving.openapi``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from serving.errors import code_for, error_body, normalise

PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/docs", "/schema.json", "/")
# Where ApiGuard leaves the authenticated caller's name in the ASGI scope's state (request.state.nba_caller).
CALLER_KEY = "nba_caller"
API_PATHS = ("/recommend", "/plan", "/feedback", "/feedback/batch")
# application/json (any parameters) or a +json type; no Content-Type at all is read as JSON too.
JSON_TYPES = ("application/json",)

log = logging.getLogger("nba.serving.requests")


def _headers(scope: dict) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


def is_json_type(content_type: str | None) -> bool:
    """True for a JSON media type (``application/json; charset=utf-8``, ``application/problem+json``) or none given."""
    if content_type is None or not content_type.strip():
        return True
    media = content_type.split(";", 1)[0].strip().lower()
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


async def send_error(
    send: Any,
    status: int,
    message: str | None = None,
    code: str | None = None,
    fields: list[dict[str, str]] | None = None,
    headers: list[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with the one error object (``serving.errors``)."""
    data = error_body(status, code, message, fields)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers],
        }
    )
    await send({"type": "http.response.body", "body": data})


def log_rejection(scope: dict, status: int, code: str, fields: list[dict[str, str]] | None = None) -> None:
    """One INFO line per rejected request: method, route, status, code and the fields named (never the body)."""
    names = ",".join(f["field"] for f in fields or [])[:200]
    path = scope.get("path", "")
    route = path if path in API_PATHS else "other"  # an unknown path is caller-chosen text: not logged
    level = logging.INFO if status < 500 else logging.WARNING
    log.log(level, "rejected %s %s: %d %s%s", scope.get("method", "?"), route, status, code, f" fields={names}" if names else "")


class _QuietClientErrors(logging.Filter):
    """Drops BentoML's ERROR-with-traceback record for a caller's mistake (the middleware logs it at INFO).

    BentoML logs every handler exception, validation errors included, with a traceback whose
    text carries the request's values; a client could flood the log with 4xx. Server errors
    (5xx) keep their traceback.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not str(record.msg).startswith("Exception on"):
            return True
        exc = record.exc_info[1]
        if type(exc).__name__ == "ValidationError":
            return False
        try:  # an HTTPStatus or a plain int
            code = int(getattr(exc, "error_code", 500))
        except (TypeError, ValueError):
            return True
        return code >= 500


_FILTER = _QuietClientErrors()


def quiet_client_errors() -> None:
    """Install the filter on BentoML's HTTP app logger (idempotent)."""
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


class _ErrorRewriter:
    """A ``send`` that passes successes through and turns any error answer into the one error object."""

    def __init__(self, send: Any, scope: dict, relabel_400: bool) -> None:
        self.send = send
        self.scope = scope
        self.relabel_400 = relabel_400
        self.start: dict | None = None
        self.chunks: list[bytes] = []
        self.started = False

    async def __call__(self, message: dict) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.started = True
            status = message["status"]
            if status == 400 and self.relabel_400:
                status = 422
            if status >= 400:
                self.start = {**message, "status": status}
                return
        elif kind == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            status = self.start["status"]
            doc = normalise(status, b"".join(self.chunks))
            data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
            keep = [(k, v) for k, v in self.start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")]
            await self.send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *keep],
                }
            )
            await self.send({"type": "http.response.body", "body": data})
            log_rejection(self.scope, status, doc["error"]["code"], doc["error"].get("fields"))
            self.start = None
            return
        await self.send(message)


class ApiGuard:
    """Checks ``X-API-Key`` (or ``Authorization: Bearer``) against hashed keys, JSON bodies and their size; one error shape."""

    def __init__(self, app: Any, keyring: Any = None, require_auth: bool = True, max_body_bytes: int = 2_000_000) -> None:
        self.app = app
        self.keyring = keyring
        self.require_auth = require_auth
        self.max_body_bytes = max_body_bytes
        self._docs: tuple[bytes, bytes] | None = None  # (BentoML's document, ours)
        quiet_client_errors()
        # BentoML's server logging sets the root logger to WARNING: the rejection lines are INFO.
        if log.level == logging.NOTSET:
            log.setLevel(logging.INFO)
        log.disabled = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/docs.json":
            await self._openapi(scope, receive, send)
            return
        if path in PUBLIC_PATHS or path.startswith(("/static", "/assets")):
            await self.app(scope, receive, send)
            return
        await self._guarded(scope, receive, send)

    async def _reject(self, scope: dict, send: Any, status: int, message: str | None = None, fields: list[dict[str, str]] | None = None) -> None:
        await send_error(send, status, message, fields=fields)
        log_rejection(scope, status, code_for(status), fields)

    async def _guarded(self, scope: dict, receive: Any, send: Any) -> None:
        headers = _headers(scope)
        if self.require_auth:
            key = headers.get("x-api-key")
            auth = headers.get("authorization", "")
            if key is None and auth.lower().startswith("bearer "):
                key = auth[7:].strip()
            caller = None if self.keyring is None else self.keyring.verify(key)
            if caller is None:
                await self._reject(scope, send, 401)
                return
            # The key's name: handlers record it with each suggestion and feedback row (serving.audit).
            scope.setdefault("state", {})[CALLER_KEY] = caller
        api = scope["path"] in API_PATHS
        if api and scope.get("method") == "POST":
            ctype = headers.get("content-type")
            if not is_json_type(ctype):
                media = (ctype or "").split(";", 1)[0].strip()[:80]
                await self._reject(
                    scope, send, 415, f"Content-Type: send application/json, not {media!r}", [{"field": "Content-Type", "message": "must be application/json"}]
                )
                return
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await self._reject(scope, send, 413, f"body: {length} bytes exceed the limit of {self.max_body_bytes}")
                return
            body = await self._read_body(receive)
            if body is None:  # the caller left before sending its body: nobody to answer
                return
            if len(body) > self.max_body_bytes:
                await self._reject(scope, send, 413, f"body: more than the limit of {self.max_body_bytes} bytes")
                return
            receive = _replay(body, receive)
        rewriter = _ErrorRewriter(send, scope, relabel_400=api)
        try:
            await self.app(scope, receive, rewriter)
        except Exception:
            if rewriter.started:
                raise
            logging.getLogger("nba.serving").exception("unhandled error on %s", scope["path"] if api else "other")
            await self._reject(scope, send, 500)

    async def _read_body(self, receive: Any) -> bytes | None:
        """The whole request body, reading at most one chunk past the limit (a chunked upload has no length to check)."""
        parts: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            parts.append(chunk)
            size += len(chunk)
            if size > self.max_body_bytes or not message.get("more_body"):
                return b"".join(parts)

    async def _openapi(self, scope: dict, receive: Any, send: Any) -> None:
        """BentoML's document completed by ``serving.openapi`` (cached per source document)."""
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, capture)
        source = b"".join(chunks)
        if start.get("status") != 200:
            await send_error(send, 500, "the OpenAPI document could not be built")
            return
        if self._docs is None or self._docs[0] != source:
            from serving.openapi import openapi_document

            self._docs = (source, json.dumps(openapi_document(json.loads(source))).encode("utf-8"))
        data = self._docs[1]
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]}
        )
        await send({"type": "http.response.body", "body": data})


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the already-read body over once, then waits on the real one (disconnects)."""
    sent = False

    async def replay() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
