"""The one error object every 4xx and 5xx of the API carries, and the conversions into it.

``{"error": {"status": 422, "code": "invalid_request", "message": "...", "fields": [{"field": "hcp_ids[0]", "message": "..."}]}}``

BentoML answers in three shapes of its own (pydantic's ``{"error", "detail": [...]}``, a handler
exception's ``[{"error": "..."}]``, starlette's plain-text 404/405); ``serving.middleware`` turns
each into this one with ``normalise``. Stdlib only: the middleware and admission control import it
on every request path.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Status -> machine-readable code; the message says what to fix.
CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
    504: "timeout",
}
_REASONS = {
    401: "unauthorized: send a valid API key in the X-API-Key header",
    404: "not found: the API's routes are POST /recommend, /plan, /feedback and /feedback/batch",
    405: "method not allowed: the API's routes take POST",
    500: "internal error: see the server log",
}
# "hcp_ids: ..." / "hcp_ids[3] ...": the engine and the handlers start a message with the field.
_FIELD_PREFIX = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\[\d+\])?)(?::| is | \S+ is )")
_MAX_MESSAGE = 500
_MAX_FIELDS = 20


def code_for(status: int) -> str:
    """The error code of an HTTP status (``error`` for one without its own)."""
    return CODES.get(status, "client_error" if status < 500 else "server_error")


def error_dict(status: int, code: str | None = None, message: str | None = None, fields: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The error object as a dict (see module docstring); messages are capped so a body cannot be echoed back whole."""
    msg = (message or _REASONS.get(status) or code_for(status).replace("_", " "))[:_MAX_MESSAGE]
    err: dict[str, Any] = {"status": int(status), "code": code or code_for(status), "message": msg}
    if fields:
        err["fields"] = [{"field": str(f["field"])[:200], "message": str(f["message"])[:_MAX_MESSAGE]} for f in fields[:_MAX_FIELDS]]
    return {"error": err}


def error_body(status: int, code: str | None = None, message: str | None = None, fields: list[dict[str, str]] | None = None) -> bytes:
    """The error object as the JSON bytes of a response body."""
    return json.dumps(error_dict(status, code, message, fields), ensure_ascii=False).encode("utf-8")


def field_path(loc: Any) -> str:
    """A pydantic location as a field path: ``("hcp_ids", 0)`` -> ``hcp_ids[0]``; the body itself is ``body``."""
    out = ""
    for part in loc if isinstance(loc, (list, tuple)) else [loc]:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("body", "json"):
            out += f".{part}" if out else str(part)
    return out or "body"


def _pydantic_fields(detail: list) -> list[dict[str, str]]:
    out = []
    for d in detail:
        if isinstance(d, dict):
            msg = str(d.get("msg", "invalid"))
            # pydantic prefixes a validator's ValueError with "Value error, ": the rest is ours and says it all.
            out.append({"field": field_path(d.get("loc", ())), "message": msg.removeprefix("Value error, ")})
    return out


def _field_of(message: str) -> list[dict[str, str]] | None:
    m = _FIELD_PREFIX.match(message)
    return [{"field": m.group(1), "message": message}] if m else None


def is_error_object(doc: Any) -> bool:
    """True when ``doc`` already has the one error shape."""
    return isinstance(doc, dict) and isinstance(doc.get("error"), dict) and {"status", "code", "message"} <= set(doc["error"])


def normalise(status: int, body: bytes) -> dict[str, Any]:
    """Any error body the stack produces (JSON in BentoML's shapes, starlette's text, empty) as the one error object."""
    try:
        doc: Any = json.loads(body) if body else None
    except ValueError:
        doc = None
    if is_error_object(doc):
        err = doc["error"]
        return error_dict(status, err.get("code"), err.get("message"), err.get("fields"))
    if isinstance(doc, list) and len(doc) == 1:  # a handler's BentoMLException: [{"error": "..."}]
        doc = doc[0]
    if isinstance(doc, dict) and isinstance(doc.get("detail"), list):  # pydantic validation
        fields = _pydantic_fields(doc["detail"])
        if fields:
            lead = fields[0]
            more = f" (and {len(fields) - 1} more)" if len(fields) > 1 else ""
            return error_dict(status, None, f"{lead['field']}: {lead['message']}{more}", fields)
    message = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        message = doc["error"]
    elif isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        message = doc["detail"]
    if status >= 500 and status != 503:
        # BentoML's own 5xx text tells the caller nothing it can act on; ours (503) does.
        message = None if message is None or "unexpected error" in message else message
    if message and ("validation error" in message or message.startswith("Invalid JSON")):
        message = f"body: {message}"
    return error_dict(status, None, message, _field_of(message) if message else None)
