"""POST /feedback/batch over HTTP against a real ``bentoml serve``: per-item results, errors naming ``items[i]``, 413, idempotent replay."""

from __future__ import annotations

import json
import os
from datetime import timedelta

import pytest

from serving.sandbox import AS_OF

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "nba_fb_http_key_5c2e"
MAX_ITEMS = 5
MAX_BODY = 16_384


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    """The service with a small batch limit and body limit, so both refusals are cheap to reach."""
    from nba.servers import stop_group
    from serving.bench import free_port, wait_ready
    from serving.cli import serve_process

    os.environ["NBA_API_KEYS"] = f"fbhttp:{KEY}"
    root = tmp_path_factory.mktemp("feedback-http")
    port = free_port()
    overrides = {"audit_url": f"sqlite:///{root / 'audit.db'}", "feedback_max_items": MAX_ITEMS, "max_body_bytes": MAX_BODY}
    proc = serve_process(world.serving_yaml, overrides, "127.0.0.1", port, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=150)
        yield base
    finally:
        stop_group(proc, timeout_s=20)


def call(base: str, path: str, body) -> tuple[int, dict]:
    from serving.bench import post

    return post(base, path, body, key=KEY)


def _suggestions(base: str, hcps: list[str]) -> list[str]:
    status, body = call(base, "/recommend", {"hcp_ids": hcps, "k": 1, "as_of": AS_OF.isoformat()})
    assert status == 200, body
    return [r["suggestions"][0]["suggestion_id"] for r in body["results"]]


def _item(fid: str, sid: str, outcome: str, minutes: int = 1, reason: str | None = None) -> dict:
    # Within the clock skew of the sandbox clock (AS_OF).
    return {"feedback_id": fid, "suggestion_id": sid, "outcome": outcome, "reason": reason, "ts": (AS_OF + timedelta(minutes=minutes)).isoformat()}


def test_a_batch_answers_per_item_and_a_replay_stores_nothing(server, world) -> None:
    s1, s2, s3 = _suggestions(server, world.hcp_ids[20:23])
    items = [_item("h-1", s1, "delivered"), _item("h-2", s1, "opened", 2), _item("h-3", s2, "dismissed", reason="wrong_time"), _item("h-4", s3, "snoozed")]
    status, body = call(server, "/feedback/batch", {"items": items})
    assert status == 200, body
    assert [r["feedback_id"] for r in body["results"]] == ["h-1", "h-2", "h-3", "h-4"]  # the items' order
    assert all(r["created"] and r["pushed_online"] and r["push_error"] is None for r in body["results"]), body
    assert (body["created"], body["pushed_hcps"]) == (4, 3)
    status, again = call(server, "/feedback/batch", {"items": items})
    assert status == 200 and again["created"] == 0 and [r["created"] for r in again["results"]] == [False] * 4, again
    assert all(r["pushed_online"] for r in again["results"])
    # One item and the batch share the store: the single route sees the batch's item as a replay.
    status, one = call(server, "/feedback", items[2])
    assert status == 200 and one["created"] is False, one


def test_refusals_name_the_item_and_store_nothing(server, world) -> None:
    (sid,) = _suggestions(server, world.hcp_ids[24:25])
    good = _item("r-1", sid, "delivered")
    status, body = call(server, "/feedback/batch", {"items": [good, {**_item("r-2", sid, "opened"), "outcome": "maybe"}]})
    assert status == 422 and body["error"]["fields"][0]["field"] == "items[1].outcome", body
    status, body = call(server, "/feedback/batch", {"items": [good, _item("r-3", "never-served", "opened")]})
    assert status == 404 and body["error"]["fields"][0]["field"] == "items[1]" and "never-served" in body["error"]["message"], body
    far = {**_item("r-4", sid, "opened"), "ts": (AS_OF + timedelta(days=2)).isoformat()}
    status, body = call(server, "/feedback/batch", {"items": [good, far]})
    assert status == 422 and body["error"]["fields"][0]["field"] == "items[1]", body
    status, body = call(server, "/feedback/batch", {"items": [good] + [_item(f"r-x{i}", sid, "opened") for i in range(MAX_ITEMS)]})
    assert status == 422 and f"batch limit of {MAX_ITEMS}" in json.dumps(body) and body["error"]["fields"][0]["field"] == "items", body
    status, body = call(server, "/feedback/batch", {"items": []})
    assert status == 422 and body["error"]["fields"][0]["field"] == "items", body
    # Every refusal above stored nothing: the good item is new on its first accepted call.
    status, body = call(server, "/feedback/batch", {"items": [good]})
    assert status == 200 and body["results"][0]["created"] is True, body
    # Same id, other content, inside a batch: 409 naming the item.
    status, body = call(server, "/feedback/batch", {"items": [_item("r-5", sid, "opened"), {**good, "outcome": "opened"}]})
    assert status == 409 and body["error"]["fields"][0]["field"] == "items[1]" and "r-1" in body["error"]["message"], body


def test_a_body_past_the_limit_is_413(server, world) -> None:
    items = [_item(f"big-{i:04d}-" + "x" * 40, "s" * 32, "opened") for i in range(MAX_BODY // 100)]
    assert len(json.dumps({"items": items})) > MAX_BODY
    status, body = call(server, "/feedback/batch", {"items": items})
    assert status == 413 and body["error"]["code"] and "limit" in body["error"]["message"], body
