"""``nba bench import``: a synthetic, contract-valid export and timings of validating and importing it.

The synthetic export is not the simulator (no behaviour, just valid shapes drawn vectorised)
so the benchmark does not depend on another stage.
"""

from __future__ import annotations

import datetime as dt
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from contract.io import to_arrow
from contract.schema import CHANNELS, CONTENT_FORMS, CONTENT_TYPES, DEPARTMENTS, DIRECTIONS, HOSPITAL_TIERS, TABLES, TITLES, TOPICS

EPOCH = pd.Timestamp("2025-01-06", tz="UTC")  # a Monday


def _ids(prefix: str, n: int) -> np.ndarray:
    return np.char.add(prefix, np.char.zfill(np.arange(n).astype(str), 7)).astype(object)


def synthetic_export(*, hcps: int, touchpoints: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """A valid export of every contract table with the given sizes (vectorised, seeded)."""
    rng = np.random.default_rng(seed)
    n_reps = max(1, hcps // 100)
    products = pd.DataFrame(
        {"product_id": ["P001", "P002", "P003"], "therapeutic_area": ["cardiology", "nephrology", "oncology"], "lifecycle": ["launch", "maturity", "post_vbp"]}
    )
    reps = pd.DataFrame(
        {
            "rep_id": _ids("R", n_reps),
            "region": rng.choice(["east", "north", "south", "west"], n_reps).astype(object),
            "rep_type": rng.choice(["chronic", "specialty"], n_reps).astype(object),
            "visit_capacity_per_day": rng.integers(4, 10, n_reps),
            "message_capacity_per_day": rng.integers(20, 80, n_reps),
        }
    )
    hcp = pd.DataFrame(
        {
            "hcp_id": _ids("H", hcps),
            "hospital_id": _ids("X", hcps // 20 + 1)[rng.integers(0, hcps // 20 + 1, hcps)],
            "hospital_tier": rng.choice(HOSPITAL_TIERS, hcps).astype(object),
            "department": rng.choice(DEPARTMENTS, hcps).astype(object),
            "title": rng.choice(TITLES, hcps).astype(object),
            "is_kol": rng.random(hcps) < 0.05,
            "rep_id": reps["rep_id"].to_numpy()[rng.integers(0, n_reps, hcps)],
            "region": "east",
            "timezone": "Asia/Shanghai",
            "main_product_id": products["product_id"].to_numpy()[rng.integers(0, 3, hcps)],
            "beds": pd.array(rng.integers(10, 120, hcps), dtype="Int64"),
            "potential_boxes_month": rng.gamma(2.0, 300.0, hcps),
            "support_share": rng.random(hcps),
            "segment": rng.choice(["A", "B", "C", "D"], hcps).astype(object),
            "profile_completeness": rng.random(hcps),
            **{f"consent_{ch}": rng.random(hcps) < 0.8 for ch in CHANNELS},
        }
    )
    n_content = 60
    content = pd.DataFrame(
        {
            "content_id": _ids("C", n_content),
            "product_id": products["product_id"].to_numpy()[rng.integers(0, 3, n_content)],
            "topic": rng.choice(TOPICS, n_content).astype(object),
            "content_type": rng.choice(CONTENT_TYPES, n_content).astype(object),
            "form": rng.choice(CONTENT_FORMS, n_content).astype(object),
            "approval_code": _ids("MLR", n_content),
            "approved_from": EPOCH - pd.Timedelta(days=30),
            "approved_until": EPOCH + pd.Timedelta(days=400),
        }
    )
    n = touchpoints
    delivered = rng.random(n) < 0.95
    opened = delivered & (rng.random(n) < 0.3)
    tp = pd.DataFrame(
        {
            "event_id": _ids("E", n),
            "hcp_id": hcp["hcp_id"].to_numpy()[rng.integers(0, hcps, n)],
            "rep_id": reps["rep_id"].to_numpy()[rng.integers(0, n_reps, n)],
            "ts": EPOCH + pd.to_timedelta(rng.integers(0, 300 * 86400, n), unit="s"),
            "channel": rng.choice(CHANNELS, n).astype(object),
            "content_id": content["content_id"].to_numpy()[rng.integers(0, n_content, n)],
            "direction": rng.choice(DIRECTIONS, n, p=[0.9, 0.1]).astype(object),
            "delivered": delivered,
            "opened": opened,
            "read_seconds": np.where(opened, rng.exponential(60.0, n), 0.0),
            "forwarded": opened & (rng.random(n) < 0.05),
            "favourited": opened & (rng.random(n) < 0.05),
            "replied": opened & (rng.random(n) < 0.05),
            "attended": pd.Series(opened, dtype="boolean").where(rng.random(n) < 0.1, pd.NA),
            "propensity": np.where(rng.random(n) < 0.5, rng.uniform(0.01, 1.0, n), np.nan),
            "suggestion_id": None,
        }
    )
    weeks = 4
    market = rng.integers(0, 200, hcps * weeks)
    outcomes = pd.DataFrame(
        {
            "hcp_id": np.repeat(hcp["hcp_id"].to_numpy(), weeks),
            "week_start": np.tile((EPOCH.tz_localize(None) + pd.to_timedelta(7 * np.arange(weeks), unit="D")).to_numpy(), hcps),
            "product_id": np.repeat(hcp["main_product_id"].to_numpy(), weeks),
            "prescriptions": (market * rng.random(hcps * weeks)).astype(np.int64),
            "market_boxes": market,
            "share": np.nan,
        }
    )
    return {"products": products, "reps": reps, "hcps": hcp, "content": content, "touchpoints": tp, "outcomes": outcomes}


def write_export(frames: dict[str, pd.DataFrame], directory: str | Path, fmt: str = "csv") -> Path:
    """Write export frames as one ``<table>.csv`` or ``<table>.parquet`` each into ``directory``."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, df in frames.items():
        arrow = to_arrow(TABLES[name], df)
        if fmt == "csv":
            pacsv.write_csv(arrow, directory / f"{name}.csv")
        else:
            pq.write_table(arrow, directory / f"{name}.parquet")
    return directory


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_import_bench(*, rows: int, hcps: int, repeats: int, fmt: str, seed: int, workdir: Path | None) -> dict:
    """Median seconds of a plain Arrow read, of read+coerce+validate, and of full and repeat imports."""
    from tqdm import tqdm

    from contract.coercion import canonical_frame, coerce_arrow
    from contract.importer import import_export
    from contract.issues import errors
    from contract.readers import read_source
    from contract.validate import validate_tables

    base = Path(tempfile.mkdtemp(prefix="nba-bench-import-", dir=workdir))
    try:
        steps = tqdm(total=2 + 3 * repeats, desc="bench import", unit="step")
        frames = synthetic_export(hcps=hcps, touchpoints=rows, seed=seed)
        src = write_export(frames, base / "export", fmt)
        del frames
        steps.update()
        tp_path = src / f"touchpoints.{fmt}"
        now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

        def plain_read() -> None:
            if fmt == "csv":
                import pyarrow.csv as pacsv

                pacsv.read_csv(tp_path)
            else:
                import pyarrow.parquet as pq

                pq.read_table(tp_path)
            steps.update()

        def validate_only() -> None:
            typed, sources, issues = {}, {}, []
            for name in TABLES:
                path = src / f"{name}.{fmt}"
                if not path.exists():
                    continue
                raw, source, found = read_source(path, name)
                arrow, found2 = coerce_arrow(TABLES[name], raw, source)
                typed[name], sources[name] = canonical_frame(arrow), source
                issues += found + found2
            issues += validate_tables(typed, now=now, sources=sources)
            if errors(issues):
                raise RuntimeError(f"synthetic export unexpectedly invalid: {errors(issues)[:3]}")
            steps.update()

        def full_import() -> None:
            shutil.rmtree(base / "data", ignore_errors=True)
            import_export(src, base / "data", now=now)
            steps.update()

        read_s = _median_time(plain_read, repeats)
        validate_s = _median_time(validate_only, repeats)
        import_s = _median_time(full_import, repeats)
        t0 = time.perf_counter()
        import_export(src, base / "data", now=now)  # idempotent re-import: every row compared, none added
        reimport_s = time.perf_counter() - t0
        steps.update()
        steps.close()
        size_mb = sum(p.stat().st_size for p in src.iterdir()) / 1e6
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {
        "format": fmt,
        "touchpoint_rows": rows,
        "hcp_rows": hcps,
        "repeats": repeats,
        "export_size_mb": round(size_mb, 1),
        "baseline_arrow_read_touchpoints_s_median": round(read_s, 3),
        "validate_s_median": round(validate_s, 3),
        "import_s_median": round(import_s, 3),
        "reimport_unchanged_s": round(reimport_s, 3),
        "validate_touchpoint_rows_per_s": round(rows / validate_s),
        "validate_to_baseline_read_ratio": round(validate_s / read_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
