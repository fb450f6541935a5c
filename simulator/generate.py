"""``nba simulate``: run the logging policy in a fresh world and write the contract dataset atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from contract.io import staged_dir, write_tables
from contract.schema import FEEDBACK_DECISIONS, FEEDBACK_REASONS
from simulator.config import SimulatorConfig
from simulator.environment import STREAM_FEEDBACK, Environment, StepResult, _seed_rng
from simulator.policies import BehaviourPolicy
from simulator.tables import (
    content_table,
    feedback_table,
    hcp_profile_history_table,
    hcps_table,
    outcomes_table,
    products_table,
    reps_table,
    suggestion_number,
    touchpoints_table,
)
from simulator.world import CH, PublicWorld

_HOUR_US = 3_600 * 1_000_000
# Reasons reps give when they dismiss a rule's visit suggestion (FEEDBACK_REASONS order).
_DISMISS_REASONS = np.array([0.22, 0.14, 0.2, 0.1, 0.05, 0.1, 0.12, 0.07])
_DECISION = {d: i for i, d in enumerate(FEEDBACK_DECISIONS)}


def rep_feedback(public: PublicWorld, seed: int, step: StepResult, triggered: np.ndarray, sampled_visit: np.ndarray) -> dict[str, np.ndarray]:
    """Rep decisions on the week's rule suggestions: done when the visit happened, else accepted/snoozed/dismissed."""
    week = step.week
    rng = _seed_rng(seed, week, STREAM_FEEDBACK)
    c = step.touches.cols
    done_rows = (c["suggestion"] >= 0) & (c["channel"] == CH["visit"]) & ~c["inbound"]
    done_ts = np.full(public.n_hcps, -1, dtype=np.int64)
    done_ts[c["hcp"][done_rows]] = c["ts_us"][done_rows] + _HOUR_US // 2
    hcp = triggered
    n = len(hcp)
    u = rng.random(n)
    decision = np.where(u < 0.15, _DECISION["accepted"], np.where(u < 0.3, _DECISION["snoozed"], _DECISION["dismissed"]))
    reason = rng.choice(len(FEEDBACK_REASONS), n, p=_DISMISS_REASONS)
    # A sampled visit that did not happen was squeezed out by the rep's capacity.
    squeezed = sampled_visit[hcp] & (done_ts[hcp] < 0)
    decision = np.where(squeezed, _DECISION["dismissed"], decision)
    reason = np.where(squeezed, FEEDBACK_REASONS.index("capacity"), reason)
    done = done_ts[hcp] >= 0
    decision = np.where(done, _DECISION["done"], decision)
    reason = np.where(decision == _DECISION["dismissed"], reason, -1)
    # Suggestions reach the CRM Monday morning, local time; reps answer within the morning.
    morning = public.week_start_us(week) + (8 + rng.random(n) * 3).astype(np.int64) * _HOUR_US - public.tz_offset_h[hcp] * _HOUR_US
    ts = np.where(done, done_ts[hcp], morning)
    return {"suggestion": suggestion_number(week, hcp), "hcp": hcp, "ts_us": ts, "decision": decision, "reason": reason}


def simulate(cfg: SimulatorConfig, out: str | Path | None = None, progress: bool = True, timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Simulate ``cfg`` and write the dataset (tables + ``_ground_truth``) to ``out``; return the manifest.

    ``timings``, if given, receives seconds per phase (world, weeks, tables, write); they stay
    out of the manifest so the same config and seed give the same bytes.
    """
    import time

    clock = time.perf_counter()
    phases = timings if timings is not None else {}

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[f"{name}_s"] = round(now - clock, 3)
        clock = now

    out = Path(cfg.out if out is None else out)
    env = Environment.from_config(cfg)
    lap("world")
    policy = BehaviourPolicy(cfg)
    feedback: list[dict[str, np.ndarray]] = []
    weeks = range(cfg.weeks)
    if progress:
        from tqdm import tqdm

        weeks = tqdm(weeks, desc=f"simulate {cfg.hcps} HCPs", unit="wk")
    for _ in weeks:
        obs = env.observe()
        step = env.step(policy(obs), obs.eligibility)
        feedback.append(rep_feedback(env.public, env.seed, step, policy.last_triggered, policy.last_sampled_visit))
    lap("weeks")
    pub = env.public
    touches = env.history.touches()
    tp = touchpoints_table(pub, touches)
    fb = {k: np.concatenate([f[k] for f in feedback]) for k in feedback[0]}
    tables = {
        "products": products_table(pub),
        "reps": reps_table(pub),
        "hcps": hcps_table(pub),
        "hcp_profile_history": hcp_profile_history_table(pub, env.onboarded_from),
        "content": content_table(pub),
        "touchpoints": tp,
        "outcomes": outcomes_table(pub, env.history.outcome_arrays()),
        "feedback": feedback_table(pub, fb),
    }
    p_response = env.p_response()
    outbound = ~touches.cols["inbound"]
    summary = {
        "touches": int(outbound.sum()),
        "positive_responses": int(touches.cols["opened"][outbound].sum()),
        "expected_positive_responses": float(np.nansum(p_response[outbound])),
    }
    lap("tables")
    with staged_dir(out) as stage:
        from simulator.ground_truth import write_ground_truth

        manifest = write_tables(
            stage,
            tables,
            source="simulator",
            extra={"simulator": {"seed": cfg.seed, "hcps": cfg.hcps, "days": cfg.days, "weeks": cfg.weeks, "start_date": cfg.start_date.isoformat()}},
        )
        write_ground_truth(stage, cfg, pub, env.hidden, env.state, tp["event_id"], p_response, summary)
    lap("write")
    return manifest
