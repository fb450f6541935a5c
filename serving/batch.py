"""The nightly batch: score every HCP and write CRM suggestion records (Parquet or CSV), atomically."""

from __future__ import annotations

import os
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.rules import CHANNEL_LABELS
from serving.engine import Recommender, feasibility_summary

# Column names of a CRM suggestion record, in import order.
CRM_COLUMNS: tuple[str, ...] = (
    "suggestion_id", "hcp_id", "rep_id", "title", "reason", "channel", "content_id", "priority",
    "window_start", "window_end", "expiry", "expected_response", "policy", "degraded", "model_version",
)


def crm_records(frame: pd.DataFrame, model_version: str | None, as_of: datetime, ttl_days: float) -> pd.DataFrame:
    """Suggestion rows mapped onto CRM suggestion records (priority 1 = do first ... 5)."""
    label = frame["channel"].map(CHANNEL_LABELS)
    content = frame["content_id"].fillna("")
    title = label.str.capitalize() + np.where(content != "", " with content " + content, "")
    reason = frame["reasons"].map(lambda rs: "; ".join(rs))  # CRM fields are flat text
    # Priority from the HCP's value of this suggestion relative to the whole batch, then rank.
    pct = frame["priority_score"].rank(pct=True, method="average").to_numpy()
    priority = np.clip(5 - np.floor(pct * 5).astype(np.int64) + (frame["rank"].to_numpy() - 1), 1, 5)
    limit = pd.Timestamp(as_of) + timedelta(days=ttl_days)
    expiry = frame["window_end"].where(frame["window_end"] < limit, limit)
    return pd.DataFrame({
        "suggestion_id": frame["suggestion_id"], "hcp_id": frame["hcp_id"], "rep_id": frame["rep_id"], "title": title, "reason": reason,
        "channel": frame["channel"], "content_id": frame["content_id"], "priority": priority, "window_start": frame["window_start"],
        "window_end": frame["window_end"], "expiry": expiry, "expected_response": frame["expected_response"], "policy": frame["policy"],
        "degraded": frame["degraded"], "model_version": model_version,
    })[list(CRM_COLUMNS)]


def _write(df: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        if out.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        os.replace(tmp, out)  # the CRM never picks up a half-written file
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def recommend_all(rec: Recommender, out: str | Path, *, k: int | None = None, as_of: datetime | None = None, hcp_ids: list[str] | None = None,
                  record: bool = True, progress: bool = True, window: str | None = None, decision_date: date | None = None) -> dict[str, Any]:
    """Score every HCP in the reference tables (or ``hcp_ids``) in chunks and write ``out`` (.parquet or .csv).

    The same feasible-first path as the API (``Recommender.recommend``); the summary's
    ``feasibility`` says how often a rule had to override a first choice after masking (0) and how
    often the policy's unmasked first choice would have been infeasible, by rule.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(f"--out {out}: must end in .parquet or .csv")
    ids = hcp_ids if hcp_ids is not None else sorted(rec.reference.hcps.index.astype(str))
    if not ids:
        raise ValueError("no HCPs to score: the reference tables are empty (check data_dir)")
    as_of = as_of or datetime.now(timezone.utc)
    chunk = rec.cfg.batch_chunk
    parts, degraded, notes, feasibility = [], 0, set(), []
    cols = (TextColumn("scoring HCPs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, disable=not progress, transient=True) as bar:
        task = bar.add_task("score", total=len(ids))
        for a in range(0, len(ids), chunk):
            part = ids[a : a + chunk]
            res = rec.recommend(part, k=k, as_of=as_of, record=record, explore=True, window=window, decision_date=decision_date)
            feasibility.append(res.feasibility)
            parts.append(crm_records(res.frame, res.model_version, as_of, rec.cfg.suggestion_ttl_days))
            degraded += int(res.frame["degraded"].sum())
            notes.update(res.notes)
            bar.advance(task, len(part))
    df = pd.concat(parts, ignore_index=True)
    _write(df, out)
    return {"hcps": len(ids), "suggestions": len(df), "degraded_suggestions": degraded, "out": str(out), "notes": sorted(notes),
            "feasibility": feasibility_summary(feasibility)}
