"""The nightly batch: score every HCP and write CRM suggestion records (generic Parquet/CSV, Vault CRM or Salesforce CSV), atomically."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from serving.crm_formats import FORMATS, GENERIC_COLUMNS, SUGGESTION_TABLE, ExpiryPolicy, export_tables
from serving.engine import Recommender, feasibility_summary

# Column names of the generic CRM suggestion record, in import order (serving.crm_formats).
CRM_COLUMNS: tuple[str, ...] = GENERIC_COLUMNS


def suggestion_text(frame: pd.DataFrame, locale: str = "en") -> tuple[pd.Series, pd.Series]:
    """(title, reason) a rep reads for each suggestion row, in ``locale`` (serving.messages); CRM fields are flat text."""
    from serving.reasons import flat_reason, suggestion_titles

    title = pd.Series(suggestion_titles(frame["channel"], frame["content_id"], locale), index=frame.index, dtype=object)
    reason = frame["reasons"].map(lambda rs: flat_reason(rs, locale))
    return title, reason


def suggestion_table(
    frame: pd.DataFrame, model_version: str | None, potential: dict[str, float], main_product: dict[str, Any], content_product: pd.Series, locale: str = "en"
) -> pd.DataFrame:
    """One scored request's suggestions as ``crm_formats.SUGGESTION_TABLE`` rows (expected value as in ``/plan``)."""
    from serving.planning import expected_value

    title, reason = suggestion_text(frame, locale)
    pot = frame["hcp_id"].map(potential).fillna(0.0).to_numpy(dtype=np.float64)
    # The item's product when there is content, else the HCP's main product.
    product = frame["content_id"].map(content_product)
    product = product.where(product.notna(), frame["hcp_id"].map(main_product))
    return pd.DataFrame(
        {
            "suggestion_id": frame["suggestion_id"],
            "hcp_id": frame["hcp_id"],
            "rep_id": frame["rep_id"],
            "rank": frame["rank"],
            "channel": frame["channel"],
            "content_id": frame["content_id"],
            "product_id": product,
            "title": title,
            "reason": reason,
            "expected_response": frame["expected_response"],
            "expected_value": expected_value(frame["expected_response"].to_numpy(), pot),
            "window_start_utc": frame["window_start"],
            "window_end_utc": frame["window_end"],
            "timezone": frame["timezone"],
            "degraded": frame["degraded"],
            "model_version": model_version,
        }
    )[list(SUGGESTION_TABLE)]


def companion_path(out: Path, suffix: str) -> Path:
    """Where a format's companion object file goes: ``nightly.csv`` -> ``nightly.suggestion_tag__v.csv``."""
    return out if not suffix else out.with_name(f"{out.stem}.{suffix}{out.suffix}")


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


def write_tables(tables: dict[str, pd.DataFrame], out: Path) -> list[str]:
    """Write each file atomically; companions first, so a CRM watching for the main file finds them complete."""
    written = []
    for suffix in sorted(tables, key=lambda s: s == ""):
        path = companion_path(out, suffix)
        _write(tables[suffix], path)
        written.append(str(path))
    return written


def check_out(out: Path, fmt: str) -> None:
    """Refuse an output path the format cannot write, before anything is scored."""
    if fmt not in FORMATS:
        raise ValueError(f"--format: must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(f"--out {out}: must end in .parquet or .csv")
    if fmt != "generic" and out.suffix.lower() != ".csv":
        raise ValueError(f"--out {out}: the {fmt} format is CSV (what the CRM's loader reads); use a .csv name")


def recommend_all(
    rec: Recommender,
    out: str | Path,
    *,
    k: int | None = None,
    as_of: datetime | None = None,
    hcp_ids: list[str] | None = None,
    record: bool = True,
    progress: bool = True,
    window: str | None = None,
    decision_date: date | None = None,
    fmt: str | None = None,
) -> dict[str, Any]:
    """Score every HCP in the reference tables (or ``hcp_ids``) in chunks and write ``out`` (.parquet or .csv) in ``fmt``.

    The same feasible-first path as the API (``Recommender.recommend``); the summary's
    ``feasibility`` says how often a rule had to override a first choice after masking (0) and how
    often the policy's unmasked first choice would have been infeasible, by rule. Priorities are
    spread over the whole run and expiry follows the config's policy (``serving.crm_formats``).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = Path(out)
    fmt = fmt or rec.cfg.crm_format
    check_out(out, fmt)
    ids = hcp_ids if hcp_ids is not None else sorted(rec.reference.hcps.index.astype(str))
    if not ids:
        raise ValueError("no HCPs to score: the reference tables are empty (check data_dir)")
    as_of = as_of or datetime.now(UTC)
    chunk = rec.cfg.batch_chunk
    content = rec.reference.content
    content_product = content["product_id"] if "product_id" in content else pd.Series(dtype=object)
    parts, degraded, notes, feasibility = [], 0, set(), []
    cols = (TextColumn("scoring HCPs"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, disable=not progress, transient=True) as bar:
        task = bar.add_task("score", total=len(ids))
        for a in range(0, len(ids), chunk):
            part = ids[a : a + chunk]
            res = rec.recommend(part, k=k, as_of=as_of, record=record, explore=True, window=window, decision_date=decision_date)
            feasibility.append(res.feasibility)
            ref = rec.reference.lookup(part)
            potential = dict(zip(part, np.asarray(res.potential, dtype=np.float64).tolist())) if res.potential is not None else {}
            parts.append(
                suggestion_table(res.frame, res.model_version, potential, dict(zip(part, ref["main_product_id"].tolist())), content_product, rec.cfg.locale)
            )
            degraded += int(res.frame["degraded"].sum())
            notes.update(res.notes)
            bar.advance(task, len(part))
    table = pd.concat(parts, ignore_index=True)
    approved_until = table["content_id"].map(content["approved_until"]) if "approved_until" in content else None
    policy = ExpiryPolicy(ttl_days=rec.cfg.suggestion_ttl_days, grace_days=rec.cfg.expiry_grace_days)
    tables = export_tables(fmt, table, as_of, policy, approved_until)
    files = write_tables(tables, out)
    return {
        "hcps": len(ids),
        "suggestions": len(table),
        "degraded_suggestions": degraded,
        "out": str(out),
        "format": fmt,
        "files": files,
        "notes": sorted(notes),
        "feasibility": feasibility_summary(feasibility),
    }
