"""The OpenAPI document the service publishes at ``/docs.json``: BentoML's, completed.

BentoML lists 400/404/500 for every route, drops nullable types (``str | None`` shows as a plain
string) and leaves out the id pattern, the real status codes and any examples. The API
operations are therefore rebuilt here from the pydantic models (JSON Schema 2020-12, so OpenAPI
3.1), with every status the service answers and the one error object of ``serving.errors``;
BentoML's probe routes are kept as they are.
"""

from __future__ import annotations

import copy
import json
from typing import Any

TITLE = "nba: next-best-action API"
DESCRIPTION = (
    "Next-best-action suggestions for healthcare professionals (pseudonymous ids), rep day plans and the feedback loop.\n\n"
    "Send `X-API-Key: <key>` (or `Authorization: Bearer <key>`) and a JSON body (`Content-Type: application/json`). "
    'Every 4xx and 5xx answer carries one error object, `{"error": {"status", "code", "message", "fields": '
    '[{"field", "message"}]}}`, naming the fields at fault. Times are ISO 8601 with an offset; the server\'s clock judges '
    "content approval, and `as_of` in the past needs `backtest: true` (not recorded)."
)
ERROR_STATUSES = {
    401: "no valid API key (X-API-Key or Authorization: Bearer)",
    404: "the suggestion_id was never served",
    409: "the feedback_id is already stored with different content",
    413: "the body exceeds the configured limit (max_body_bytes), declared or chunked",
    415: "the body is not JSON (send Content-Type: application/json)",
    422: "a field is invalid (the error names it), or the body is not valid JSON",
    500: "a server bug (never a caller's mistake); see the server log",
    503: "overloaded (see Retry-After) or the audit trail is unavailable: retry later",
}
# Which error statuses each operation answers (404/409 only where a stored id can clash).
OPERATIONS = {
    "/recommend": ("recommend", "RecommendRequest", "RecommendResponse", (401, 413, 415, 422, 500, 503)),
    "/plan": ("plan", "PlanRequest", "PlanResponse", (401, 413, 415, 422, 500, 503)),
    "/feedback": ("feedback", "FeedbackItem", "FeedbackResponse", (401, 404, 409, 413, 415, 422, 500, 503)),
    "/feedback/batch": ("feedback_batch", "FeedbackBatch", "FeedbackBatchResponse", (401, 404, 409, 413, 415, 422, 500, 503)),
}
EXAMPLES = {
    "/recommend": {
        "one HCP": {"value": {"hcp_ids": ["H000123"], "k": 2}},
        "a day's plan for several HCPs": {"value": {"hcp_ids": ["H000123", "H000456"], "decision_date": "2026-05-01", "channels": ["visit", "wecom_1to1"]}},
        "a backtest": {"value": {"hcp_ids": ["H000123"], "as_of": "2026-03-02T09:00:00+08:00", "backtest": True}},
    },
    "/plan": {"a rep's day": {"value": {"rep_id": "R0042", "date": "2026-05-01", "visit_capacity": 6, "message_capacity": 20}}},
    "/feedback": {
        "a rep's decision": {
            "value": {
                "feedback_id": "crm-7781",
                "suggestion_id": "5f0c2d9e4b1a4c3e8a7d6b5c4f3e2d1a",
                "outcome": "dismissed",
                "reason": "wrong_time",
                "ts": "2026-05-01T10:30:00+08:00",
            }
        },
        "a channel outcome": {
            "value": {"feedback_id": "wx-99812", "suggestion_id": "5f0c2d9e4b1a4c3e8a7d6b5c4f3e2d1a", "outcome": "opened", "ts": "2026-05-01T12:02:00+08:00"}
        },
    },
    "/feedback/batch": {
        "a push delivered and not opened, and a rep's snooze": {
            "value": {
                "items": [
                    {"feedback_id": "wx-99813", "suggestion_id": "5f0c2d9e4b1a4c3e8a7d6b5c4f3e2d1a", "outcome": "delivered", "ts": "2026-05-01T12:00:00+08:00"},
                    {"feedback_id": "crm-7782", "suggestion_id": "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "outcome": "snoozed", "ts": "2026-05-01T12:05:00+08:00"},
                ]
            }
        }
    },
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nba")
    except PackageNotFoundError:
        return "0.0.0"


def component_schemas() -> dict[str, Any]:
    """JSON Schemas of the API's models (requests as validated, responses as serialised), refs into ``#/components/schemas``."""
    from pydantic.json_schema import models_json_schema

    from serving.schemas import (
        ErrorResponse,
        FeedbackBatch,
        FeedbackBatchResponse,
        FeedbackItem,
        FeedbackResponse,
        PlanRequest,
        PlanResponse,
        RecommendRequest,
        RecommendResponse,
    )

    models = [
        (RecommendRequest, "validation"),
        (PlanRequest, "validation"),
        (FeedbackItem, "validation"),
        (FeedbackBatch, "validation"),
        (RecommendResponse, "serialization"),
        (PlanResponse, "serialization"),
        (FeedbackResponse, "serialization"),
        (FeedbackBatchResponse, "serialization"),
        (ErrorResponse, "serialization"),
    ]
    _, top = models_json_schema(models, ref_template="#/components/schemas/{model}")
    return top.get("$defs", {})


def _operation(base_op: dict, op_id: str, request: str, response: str, errors: tuple[int, ...], examples: dict) -> dict[str, Any]:
    import inspect

    description = inspect.cleandoc(base_op.get("description") or "")
    responses: dict[str, Any] = {"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{response}"}}}}}
    for status in errors:
        entry: dict[str, Any] = {
            "description": ERROR_STATUSES[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
        }
        if status == 503:
            entry["headers"] = {"Retry-After": {"description": "seconds to wait before retrying (when overloaded)", "schema": {"type": "integer"}}}
        responses[str(status)] = entry
    return {
        "operationId": op_id,
        "summary": description.split("\n", 1)[0],
        "description": description,
        "tags": ["API"],
        "security": [{"apiKey": []}, {"bearer": []}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}, "examples": examples}}},
        "responses": responses,
    }


def _referenced(doc: Any) -> set[str]:
    text = json.dumps(doc)
    prefix = '"#/components/schemas/'
    out, i = set(), text.find(prefix)
    while i >= 0:
        j = text.find('"', i + len(prefix))
        out.add(text[i + len(prefix) : j])
        i = text.find(prefix, j)
    return out


def openapi_document(base: dict[str, Any]) -> dict[str, Any]:
    """BentoML's OpenAPI dict with our info, security schemes, the API operations rebuilt and unused schemas dropped."""
    doc = copy.deepcopy(base)
    doc["openapi"] = "3.1.0"
    doc["info"] = {"title": TITLE, "version": _version(), "description": DESCRIPTION}
    paths = doc.setdefault("paths", {})
    for path, (op_id, request, response, errors) in OPERATIONS.items():
        base_op = paths.get(path, {}).get("post", {})
        paths[path] = {"post": _operation(base_op, op_id, request, response, errors, EXAMPLES[path])}
    components = doc.setdefault("components", {})
    schemas = {**components.get("schemas", {}), **component_schemas()}
    # Keep what some path still points at (BentoML's IO descriptors and generic errors no longer are).
    needed = _referenced(paths)
    while True:
        more = _referenced({k: schemas[k] for k in needed if k in schemas}) - needed
        if not more:
            break
        needed |= more
    components["schemas"] = {k: v for k, v in schemas.items() if k in needed}
    components["securitySchemes"] = {
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "bearer": {"type": "http", "scheme": "bearer"},
    }
    return doc
