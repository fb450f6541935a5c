"""Fuzzing a real ``bentoml serve`` from its own OpenAPI document (``serving.fuzz``): no 5xx, every answer as documented.

The test runs ``NBA_FUZZ_CASES`` cases per operation (default 150, seconds on a busy box); the
target's 1,000 per operation is a longer run of ``serving.fuzz.run_fuzz`` (``nba bench fuzz``).
"""

from __future__ import annotations

import json
import os

import pytest

from serving.sandbox import AS_OF

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "nba_fuzz_key_0d1e"


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    from serving.bench import free_port, wait_ready
    from serving.cli import serve_process

    os.environ["NBA_API_KEYS"] = f"fuzz:{KEY}"
    root = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    proc = serve_process(world.serving_yaml, {"audit_url": f"sqlite:///{root / 'audit.db'}"}, "127.0.0.1", port, quiet=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=150)
        yield base
    finally:
        from nba.servers import stop_group

        stop_group(proc, timeout_s=20)


def test_the_document_declares_statuses_pattern_and_examples(server) -> None:
    from serving.fuzz import fetch_document

    doc = fetch_document(server)
    assert doc["info"]["title"].startswith("nba") and doc["info"]["version"] and doc["info"]["description"]
    codes = {p: set(doc["paths"][p]["post"]["responses"]) for p in ("/recommend", "/plan", "/feedback")}
    assert codes["/recommend"] >= {"200", "401", "413", "415", "422", "503"} and "400" not in codes["/recommend"]
    assert codes["/feedback"] >= {"200", "401", "404", "409", "413", "415", "422", "503"}
    schemas = doc["components"]["schemas"]
    assert schemas["RecommendRequest"]["properties"]["hcp_ids"]["items"]["pattern"] == r"^[A-Za-z0-9_.:\-]{1,64}$"
    assert schemas["ErrorResponse"]["properties"]["error"]["$ref"].endswith("/ErrorDetail")
    assert {"type": "null"} in schemas["RecommendResponse"]["properties"]["model_version"]["anyOf"]  # nullable as served
    assert doc["paths"]["/recommend"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert doc["paths"]["/recommend"]["post"]["responses"]["503"]["headers"]["Retry-After"]


def test_fuzzing_finds_no_5xx_and_only_documented_answers(server, world) -> None:
    from contract.io import read_frame
    from serving.fuzz import run_fuzz

    cases = int(os.environ.get("NBA_FUZZ_CASES", "150"))
    reps = sorted(set(read_frame(world.data_dir, "hcps", columns=["rep_id"])["rep_id"].astype(str)))
    figures = run_fuzz(server, KEY, cases_per_op=cases, seed=0, anchor=AS_OF, hints={"hcp_ids": world.hcp_ids, "rep_id": reps})
    print(json.dumps({k: v for k, v in figures.items() if k != "failures"}))
    assert figures["total_cases"] >= 3 * cases * 0.9, figures
    bad = {k: figures[k] for k in ("total_server_errors", "total_undocumented_status", "total_nonconforming", "total_transport_errors")}
    assert bad == dict.fromkeys(bad, 0), (bad, figures["failures"])
    for op in ("recommend", "plan", "feedback"):  # the deep paths are reached as well as the refusals
        assert "200" in figures[f"{op}_statuses"] and "422" in figures[f"{op}_statuses"], figures[f"{op}_statuses"]
