"""A tiny simulated world and a champion trained on it (no Feast: features from the pure as-of transforms)."""

from __future__ import annotations

from pathlib import Path


def simulate_world(out: Path, *, hcps: int = 150, days: int = 140, seed: int = 5) -> Path:
    """A simulated contract dataset with its _ground_truth."""
    from simulator.config import SimulatorConfig
    from simulator.generate import simulate

    cfg = SimulatorConfig.model_validate({"seed": seed, "hcps": hcps, "days": days, "start_date": "2025-01-06", "out": str(out)})
    simulate(cfg, out, progress=False)
    return out


def training_set(data_dir: Path, out: Path) -> Path:
    """Decision labels joined with features as of each label's Monday (what Feast's builder returns)."""
    import pandas as pd

    from contract.io import read_table
    from features import compute_features_asof, decision_labels
    from features.config import FeaturesConfig

    cfg = FeaturesConfig()
    labels = decision_labels(data_dir)
    tables = {n: read_table(data_dir, n) for n in ("products", "reps", "hcps", "content", "touchpoints", "outcomes", "feedback")}
    parts = []
    for ts, rows in labels.groupby("event_timestamp"):
        feats = compute_features_asof(tables, ts.to_pydatetime(), cfg).drop(columns=["event_timestamp"])
        parts.append(rows.merge(feats, on="hcp_id", how="left"))
    frame = pd.concat(parts, ignore_index=True)
    frame.to_parquet(out)
    return out


def train_champion(data_dir: Path, root: Path, seed: int = 0):
    """Train a small GRU on the world's logs, register it, crown it champion; returns the loaded model."""
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    from serving.scoring import load_champion
    from training import tracking
    from training.config import TrainingConfig
    from training.jobs import train_job

    ts = training_set(data_dir, root / "training_set.parquet")
    uri = f"sqlite:///{root / 'mlflow' / 'mlflow.db'}"
    cfg = TrainingConfig.model_validate(
        {
            "training_set": str(ts),
            "data_dir": str(data_dir),
            "model": {"encoder": "gru", "d_model": 16, "n_layers": 1, "n_heads": 2, "max_seq_len": 20},
            "tracking": {"uri": uri, "artifact_location": str(root / "mlflow" / "artifacts"), "experiment": "lift-test"},
            "epochs": 2,
            "batch_size": 256,
            "val_weeks": 2,
            "test_weeks": 2,
            "seed": seed,
            "device": "cpu",
            "num_threads": 1,
            "output_dir": str(root / "models"),
        }
    )
    out = train_job(cfg, progress=False)
    tracking.setup(cfg.tracking)
    MlflowClient().set_registered_model_alias(cfg.tracking.registered_model, tracking.CHAMPION, out["model_version"])
    return load_champion(uri, cfg.tracking.registered_model, tracking.CHAMPION), uri


# Planted prescription lift per tier (boxes per HCP-week) of the imported-like dataset below.
RX_LIFT_BY_TIER = {"A": 2.0, "B": 1.0, "C": 0.5, "D": 0.0}
# P(a suggestion is opened) per arm: a planted lift of 0.3 responses per HCP-week (one suggestion a week).
OPEN_P = {"served": 0.5, "holdout": 0.2}


def imported_dataset(
    root: Path, audit_url: str | None = None, *, hcps: int = 200, pre_weeks: int = 8, weeks: int = 6, holdout_share: float = 0.5, seed: int = 13
) -> dict:
    """A CRM export that goes through the real `nba import` (no _ground_truth) plus an audit trail written through serving.audit.

    HCPs differ widely in market size (lognormal), so the pre-period prescriptions predict the
    window's; served HCPs get ``RX_LIFT_BY_TIER`` more boxes a week and open suggestions with
    ``OPEN_P``. The features each suggestion records carry a wrong segment on purpose, and a fifth of
    the HCPs are re-tiered three weeks in (``hcp_profile_history``; ``hcps`` holds the new tier): the
    tiers must be the contract's as of the first suggestion. Returns paths, the arms (``tier``: the
    tier each HCP was served in, ``export_tier``: hcps.segment) and the planted lifts.
    """
    import datetime as dt
    import json
    import uuid

    import numpy as np
    import pandas as pd

    from contract.importer import import_export
    from contract.io import write_tables
    from contract.schema import CHANNELS, SEGMENTS
    from serving.audit import AuditTrail

    rng = np.random.default_rng(seed)
    first = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # a Monday: the first served week
    ids = [f"H{i:05d}" for i in range(hcps)]
    tier = np.asarray(SEGMENTS, dtype=object)[np.arange(hcps) % 4]
    holdout = rng.random(hcps) < holdout_share
    market = rng.lognormal(1.5, 0.7, hcps)
    effect = np.array([RX_LIFT_BY_TIER[t] for t in tier])
    hcp_frame = pd.DataFrame(
        {
            "hcp_id": ids,
            "hospital_id": "HOSP1",
            "hospital_tier": "tertiary_a",
            "department": "cardiology",
            "title": "attending_physician",
            "is_kol": False,
            "rep_id": np.where(np.arange(hcps) % 2 == 0, "R1", "R2"),
            "region": "east",
            "timezone": "Asia/Shanghai",
            "main_product_id": "P1",
            "beds": 40,
            "potential_boxes_month": 4 * market,
            "support_share": 0.3,
            "segment": tier,
            "profile_completeness": 0.8,
            **{f"consent_{ch}": True for ch in CHANNELS},
        }
    )
    # The CRM re-tiers some HCPs mid-experiment: the export-day hcps.segment is then not the tier they were randomised in.
    retiered = rng.random(hcps) < 0.2
    hcp_frame["segment"] = np.where(retiered, np.roll(tier, 1), tier)
    dated = ["potential_boxes_month", "support_share", "segment", "profile_completeness", *(f"consent_{ch}" for ch in CHANNELS)]
    history = pd.concat(
        [
            hcp_frame[["hcp_id", *dated]].assign(segment=tier, valid_from=first - dt.timedelta(weeks=52)),
            hcp_frame.loc[retiered, ["hcp_id", *dated]].assign(valid_from=first + dt.timedelta(weeks=3)),
        ],
        ignore_index=True,
    )
    out_rows, tp_rows, suggestions, feedback = [], [], [], []
    for w in range(-pre_weeks, weeks):
        monday = first + dt.timedelta(weeks=w)
        rx = rng.poisson(market + (effect * ~holdout if w >= 0 else 0.0))
        out_rows.append(
            pd.DataFrame(
                {"hcp_id": ids, "week_start": monday.date(), "product_id": "P1", "prescriptions": rx, "market_boxes": rx + rng.poisson(20, hcps), "share": None}
            )
        )
        if w < 0:
            continue
        for i, h in enumerate(ids):
            sid = uuid.uuid4().hex
            arm = "holdout" if holdout[i] else "served"
            suggestions.append(
                {
                    "suggestion_id": sid,
                    "request_id": f"req-{w}",
                    "hcp_id": h,
                    "rep_id": hcp_frame["rep_id"][i],
                    "as_of": monday,
                    "rank": 1,
                    "channel": "email",
                    "content_id": "C1",
                    "propensity": 1.0,
                    "policy": "holdout" if holdout[i] else ("model" if i % 7 else "explore"),
                    "degraded": False,
                    "features": {"segment": 3, "seq_len": 4},
                    "rules": [],
                    "reasons": [],
                }
            )
            opened = bool(rng.random() < OPEN_P[arm])
            ts = monday + dt.timedelta(days=1, hours=2)
            tp_rows.append(
                {
                    "event_id": f"E{sid}",
                    "hcp_id": h,
                    "rep_id": None,
                    "ts": ts,
                    "channel": "email",
                    "content_id": "C1",
                    "direction": "outbound",
                    "delivered": True,
                    "opened": opened,
                    "read_seconds": 30.0 if opened else 0.0,
                    "forwarded": False,
                    "favourited": False,
                    "replied": False,
                    "attended": None,
                    "propensity": None,
                    "suggestion_id": sid,
                }
            )
            if opened:
                feedback.append({"feedback_id": f"F{sid}", "suggestion_id": sid, "outcome": "opened", "ts": ts})
    tables = {
        "products": pd.DataFrame({"product_id": ["P1"], "therapeutic_area": ["cardiology"], "lifecycle": ["growth"]}),
        "reps": pd.DataFrame({"rep_id": ["R1", "R2"], "region": "east", "rep_type": "chronic", "visit_capacity_per_day": 8, "message_capacity_per_day": 50}),
        "hcps": hcp_frame,
        "hcp_profile_history": history,
        "content": pd.DataFrame(
            {
                "content_id": ["C1"],
                "product_id": ["P1"],
                "topic": ["clinical_data"],
                "content_type": ["article"],
                "form": ["short_read"],
                "approval_code": ["MLR-1"],
                "approved_from": [first - dt.timedelta(weeks=52)],
                "approved_until": [first + dt.timedelta(weeks=52)],
            }
        ),
        "touchpoints": pd.DataFrame(tp_rows),
        "outcomes": pd.concat(out_rows, ignore_index=True),
    }
    write_tables(root / "export", tables, source="crm-export")
    for extra in (root / "export").iterdir():  # an export holds the tables only
        if not extra.name.endswith(".parquet"):
            extra.unlink()
    data_dir = root / "data"
    import_export(root / "export", data_dir, now=first + dt.timedelta(weeks=weeks + 1))
    audit_url = audit_url or f"sqlite:///{root / 'audit.db'}"
    audit = AuditTrail(audit_url)
    try:
        audit.record_suggestions(suggestions)
        for f in feedback:
            audit.record_feedback(f)
    finally:
        audit.close()
    return {
        "data_dir": data_dir,
        "audit_url": audit_url,
        "hcp_ids": ids,
        "holdout": holdout,
        "tier": tier,
        "export_tier": hcp_frame["segment"].to_numpy(),
        "first_week": first.date(),
        "rx_lift": float(effect.mean()),
        "rx_lift_by_tier": dict(RX_LIFT_BY_TIER),
        "responses_lift": OPEN_P["served"] - OPEN_P["holdout"],
        "features": json.dumps({"segment": 3}),
    }
