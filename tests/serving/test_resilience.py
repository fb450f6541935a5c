"""``nba bench resilience``: its figures from recorded shots, and a short real run (bentoml serve, a private redis-server, kill -9)."""

from __future__ import annotations

import json
import shutil
from datetime import UTC

import pytest

from serving.resilience import Shot, outage_figures


def _shot(sent, lat=0.05, status=200, degraded=False, model=True, n=3):
    return Shot(sent=sent, done=sent + lat, status=status, degraded=degraded, model=model and not degraded, suggestions=n)


def test_outage_figures_from_shots():
    kill, back, empty, empty_end = 10.0, 15.0, 22.0, 25.0
    shots = [
        _shot(9.0),
        _shot(9.5),
        _shot(10.1, lat=0.3),
        _shot(10.2, degraded=True),
        _shot(11.5, degraded=True),  # one answer before the flag: allowed in the first second
        _shot(12.0, status=503),
        _shot(16.0, lat=1.4, degraded=True),
        _shot(16.5),  # model back 1.55 s after the return
        _shot(22.5, degraded=True, n=1),
        _shot(23.0, degraded=False, model=False, n=0),  # empty store read as "no suggestions"
        Shot(sent=24.0),
    ]  # never answered
    f = outage_figures(shots, kill, back, empty, empty_end)
    assert f["http_5xx_count"] == 1 and f["client_timeouts_or_refused"] == 1
    assert f["max_latency_ms"] == pytest.approx(1400.0)
    assert f["first_flagged_after_kill_s"] == pytest.approx(0.25)
    assert f["unflagged_after_1s_count"] == 0
    assert f["model_back_after_return_s"] == pytest.approx(1.55)
    assert f["empty_store_unflagged_count"] == 1 and f["empty_store_empty_unflagged_count"] == 1
    assert f["empty_store_flagged"] is False
    late = outage_figures([*shots, _shot(12.5, degraded=False)], kill, back, empty, empty_end)
    assert late["unflagged_after_1s_count"] == 1


def test_feedback_items_are_decisions_on_served_suggestions():
    from datetime import datetime

    from serving.resilience import DECISIONS, feedback_items

    items = feedback_items([("s1", "h1"), ("s2", "h2")], 50, seed=3, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert len({i["feedback_id"] for i in items}) == 50
    assert {i["suggestion_id"] for i in items} <= {"s1", "s2"}
    assert {i["outcome"] for i in items} <= set(DECISIONS)
    assert all((i["reason"] is not None) == (i["outcome"] == "dismissed") for i in items)


@pytest.mark.e2e
@pytest.mark.slow
def test_bench_resilience_short_run(world, tmp_path):
    """A short real run: no 5xx, flagged within 1 s, model back, empty store flagged, no acknowledged feedback lost."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not on PATH: the benchmark kills a private Redis")
    from serving.resilience import run_resilience

    workdir = tmp_path / "bench"
    workdir.mkdir()
    # Reuse the session's world instead of building one.
    (workdir / "world.json").write_text(
        json.dumps({"hcp_ids": world.hcp_ids, "serving_yaml": str(world.serving_yaml), "features_yaml": str(world.features_yaml)})
    )
    f = run_resilience(
        workdir,
        n_hcps=len(world.hcp_ids),
        rate_per_s=4.0,
        outage_s=2.0,
        steady_s=1.5,
        feedback_posts=60,
        kill_after_share=0.4,
        seed=0,
        rebuild=False,
        progress=lambda m: None,
    )
    assert f["http_5xx_count"] == 0
    assert f["max_latency_ms"] < 1000
    assert f["first_flagged_after_kill_s"] is not None and f["first_flagged_after_kill_s"] <= 1.0
    assert f["unflagged_after_1s_count"] == 0
    assert f["model_back_after_return_s"] is not None and f["model_back_after_return_s"] <= 5.0
    assert f["empty_store_flagged"] is True
    assert f["feedback_acknowledged_lost"] == 0 and f["feedback_duplicated"] == 0 and f["feedback_missing_after_replay"] == 0
    assert f["online_equals_audit"] is True
