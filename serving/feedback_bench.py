"""``nba bench feedback``: the event-sourced feedback path in-process, at scale (issue 16's /feedback targets).

A simulated world (``--hcps`` x ``--days``), its features built and materialised into the real
SQLite online store, suggestions served and recorded by the engine (rules-only: no model is
trained, as the feedback path never scores), then through ``Recommender.feedback_batch``: the
per-HCP index build of the dataset, batches of 1,000 outcomes on 1,000 distinct HCPs (the worst
case: one push recomputes 1,000 HCPs; median of 5) and single items (p50/p99), each item a new
feedback id on a suggestion served to an HCP no earlier timed call touched. Targets: a batch of
1,000 <= 1 s; one item p99 <= 30 ms at 100k HCPs x 1 year.

Progress on stderr; the figures are one JSON object, the last stdout line (printed by the CLI).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

START = date(2025, 1, 6)
OUTCOMES = ("delivered", "opened", "dismissed", "snoozed", "accepted", "done")


def _say(text: str) -> None:
    print(f"bench feedback: {text}", file=sys.stderr, flush=True)


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def build_world(
    work: Path, *, hcps: int, days: int, seed: int, simulate: Callable[..., Any], rebuild: bool, say: Callable[[str], None] = _say
) -> dict[str, Any]:
    """Simulate, build, apply and materialise once into ``work`` (kept for the next run unless ``rebuild``); the set-up seconds (empty when reused)."""
    from features import apply, build_sources, materialize
    from features.config import FeaturesConfig

    marker = work / "world.json"
    want = {"hcps": hcps, "days": days, "seed": seed}
    if not rebuild and marker.exists() and json.loads(marker.read_text()) == want:
        say(f"reusing the world in {work}")
        return {}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    figures: dict[str, Any] = {}
    t0 = time.perf_counter()
    say(f"simulate {hcps:,} HCPs x {days} days")
    simulate(work / "data", hcps=hcps, days=days, seed=seed, start_date=START, progress=True)
    figures["setup_simulate_s"] = round(time.perf_counter() - t0, 2)
    fcfg = FeaturesConfig(data_dir=work / "data", workspace_dir=work / "features").resolved()
    say("features: build, apply, materialise")
    t1 = time.perf_counter()
    build_sources(fcfg)
    apply(fcfg)
    materialize(fcfg)
    figures["setup_features_s"] = round(time.perf_counter() - t1, 2)
    import yaml

    (work / "features.yaml").write_text(yaml.safe_dump(json.loads(fcfg.model_dump_json())))
    marker.write_text(json.dumps(want))
    return figures


def _items(sids: list[str], prefix: str, as_of: datetime) -> list[dict[str, Any]]:
    out = []
    for i, sid in enumerate(sids):
        outcome = OUTCOMES[i % len(OUTCOMES)]
        out.append(
            {
                "feedback_id": f"{prefix}-{i}",
                "suggestion_id": sid,
                "outcome": outcome,
                "reason": "wrong_time" if outcome == "dismissed" else None,
                "ts": as_of + timedelta(minutes=5 + i % 60),
                "caller": "bench",
            }
        )
    return out


def run_feedback_bench(
    workdir: Path,
    *,
    hcps: int,
    days: int,
    seed: int,
    simulate: Callable[..., Any],
    batch: int = 1000,
    batches: int = 5,
    singles: int = 200,
    rebuild: bool = False,
    say: Callable[[str], None] = _say,
) -> dict[str, Any]:
    """Set up (or reuse) the world, then time the index build, ``batches`` batches of ``batch`` items and ``singles`` single items; the figures."""
    import numpy as np

    from contract.by_hcp import INDEX_DIR, ensure_index
    from contract.io import read_frame
    from nba.configuration import load_config
    from serving.config import ServingConfig
    from serving.engine import Recommender, freeze_heap

    work = Path(workdir)
    figures: dict[str, Any] = {"hcps": hcps, "days": days, "batch_items": batch, "batches": batches, "single_items": singles}
    figures.update(build_world(work, hcps=hcps, days=days, seed=seed, simulate=simulate, rebuild=rebuild, say=say))
    data_dir = work / "data"
    as_of = datetime.combine(START, datetime.min.time(), tzinfo=UTC) + timedelta(days=days)

    say("per-HCP index: a cold build of every indexed table")
    shutil.rmtree(data_dir / INDEX_DIR, ignore_errors=True)
    t = time.perf_counter()
    ensure_index(data_dir)
    figures["index_build_s"] = round(time.perf_counter() - t, 2)
    figures["index_mb"] = round(sum(p.stat().st_size for p in (data_dir / INDEX_DIR).glob("*.arrow*")) / 1e6, 1)

    audit_db = work / "audit.db"
    for p in work.glob("audit.db*"):
        p.unlink()
    cfg = load_config(
        ServingConfig,
        "serving",
        None,
        {
            "audit_url": f"sqlite:///{audit_db}",
            "features_config": str(work / "features.yaml"),
            "tracking_uri": f"sqlite:///{work / 'no-model' / 'mlflow.db'}",
            "require_model": False,
            "fixed_clock": as_of.isoformat(),
            "reference_refresh_s": 0,
        },
    )
    engine = Recommender.from_config(cfg)
    try:
        ids = sorted(read_frame(data_dir, "hcps", columns=["hcp_id"])["hcp_id"].astype(str).tolist())
        need = batch * batches + singles + 1
        rng = np.random.default_rng(seed)
        order = [ids[i] for i in rng.permutation(len(ids))]
        # One suggestion each to distinct HCPs, in a seeded order; an HCP every rule blocks gets none and is passed over.
        sid_of: dict[str, str] = {}
        for a in range(0, len(order), 1000):
            if len(sid_of) >= need:
                break
            res = engine.recommend(order[a : a + 1000], k=1, as_of=as_of, explore=False)
            for h, s in zip(res.columns["hcp_id"], res.columns["suggestion_id"]):
                if s is not None and s == s:  # a row without a suggestion (None or NaN) takes no feedback
                    sid_of.setdefault(str(h), str(s))
        say(f"served one suggestion to each of {len(sid_of):,} HCPs (rules only, recorded in the audit trail)")
        sids = list(sid_of.values())[:need]
        if len(sids) < need:
            say(f"only {len(sids):,} HCPs were served: later calls reuse HCPs of earlier ones")
            sids = (sids * (need // max(len(sids), 1) + 1))[:need]
        figures["hcps_served"] = len(sid_of)

        say("warm-up: one item (opens the index and the stores)")
        t = time.perf_counter()
        warm = engine.feedback(_items(sids[-1:], "warm", as_of)[0])
        figures["first_item_ms"] = round((time.perf_counter() - t) * 1e3, 1)
        if not warm["pushed_online"]:
            raise RuntimeError(f"the warm-up feedback was not pushed online: {warm['push_error']}")
        freeze_heap()  # as the service does after start-up: no full collection walks the long-lived heap mid-call
        figures["loadavg_start"] = _load()

        times = []
        for b in range(batches):
            items = _items(sids[b * batch : (b + 1) * batch], f"batch{b}", as_of)
            t = time.perf_counter()
            out = engine.feedback_batch(items)
            times.append(time.perf_counter() - t)
            errors = [r["push_error"] for r in out["results"] if r["push_error"]]
            if errors:
                raise RuntimeError(f"batch {b}: {len(errors)} item(s) not pushed online, e.g. {errors[0]}")
            say(f"batch {b + 1}/{batches}: {len(items):,} items, {out['pushed_hcps']:,} HCPs pushed in {times[-1]:.2f} s")
        figures["batch_s_median"] = round(float(np.median(times)), 3)
        figures["batch_s_max"] = round(max(times), 3)
        t = time.perf_counter()
        again = engine.feedback_batch(_items(sids[:batch], "batch0", as_of))
        figures["batch_replay_s"] = round(time.perf_counter() - t, 3)
        assert again["created"] == 0

        base = batch * batches
        single = _items(sids[base : base + singles], "single", as_of)
        lat = []
        say(f"{singles} single items")
        for item in single:
            t = time.perf_counter()
            r = engine.feedback(item)
            lat.append((time.perf_counter() - t) * 1e3)
            if not r["pushed_online"]:
                raise RuntimeError(f"single item not pushed online: {r['push_error']}")
        figures["single_ms_p50"] = round(float(np.percentile(lat, 50)), 1)
        figures["single_ms_p99"] = round(float(np.percentile(lat, 99)), 1)
        figures["single_ms_max"] = round(max(lat), 1)
        figures["target_batch_s"] = 1.0
        figures["target_single_ms_p99"] = 30.0
        figures["meets_batch_target"] = figures["batch_s_median"] <= 1.0
        figures["meets_single_target"] = figures["single_ms_p99"] <= 30.0
    finally:
        engine.audit.close()
    figures["loadavg"] = _load()
    figures["cpus"] = os.cpu_count()
    return figures
