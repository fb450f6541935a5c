"""ASGI middleware in front of the API: API-key auth, body-size limit, 422 for invalid input.

Probes, metrics and the OpenAPI document stay public so orchestrators and scrapers need no key.
BentoML answers pydantic validation errors with 400; the API promises 422 naming the field, so
400 answers on API routes are re-labelled (their body already lists each field's error).
"""

from __future__ import annotations

import json
from typing import Any

PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/metrics", "/docs.json", "/docs", "/schema.json")
API_PATHS = ("/recommend", "/plan", "/feedback")


def _send_json(send: Any, status: int, body: dict) -> Any:
    data = json.dumps(body).encode()

    async def go() -> None:
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    return go()


class ApiGuard:
    """Checks ``X-API-Key`` (or ``Authorization: Bearer``) against hashed keys and caps body size."""

    def __init__(self, app: Any, keyring: Any = None, require_auth: bool = True, max_body_bytes: int = 2_000_000) -> None:
        self.app = app
        self.keyring = keyring
        self.require_auth = require_auth
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith("/static"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.require_auth:
            key = headers.get("x-api-key")
            auth = headers.get("authorization", "")
            if key is None and auth.lower().startswith("bearer "):
                key = auth[7:].strip()
            if self.keyring is None or self.keyring.verify(key) is None:
                await _send_json(send, 401, {"error": "unauthorized: send a valid API key in the X-API-Key header"})
                return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            await _send_json(send, 413, {"error": f"payload too large: {length} bytes > limit {self.max_body_bytes}"})
            return
        received = 0
        limit = self.max_body_bytes
        too_big = False

        async def guarded_receive() -> dict:
            nonlocal received, too_big
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_big = True
                    raise ValueError("payload too large")
            return message

        api = scope["path"] in API_PATHS

        async def relabel_send(message: dict) -> None:
            if api and message["type"] == "http.response.start" and message["status"] == 400:
                message = {**message, "status": 422}
            await send(message)

        try:
            await self.app(scope, guarded_receive, relabel_send)
        except ValueError:
            if not too_big:
                raise
            await _send_json(send, 413, {"error": f"payload too large: more than {limit} bytes"})
