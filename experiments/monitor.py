"""`nba monitor`: drift of what serving saw (the audit trail) against a reference, with Evidently.

The current window is read from the audit trail, never recomputed: per served suggestion the
feature values serving used (``features_json``), the channel, content and expected response.
The reference is another audit window (``--reference 2026-01-05..2026-02-02``), a training run
(``--reference RUN_ID``: features of every HCP as of the last weeks of the run's dataset,
computed with the feature stage's as-of transforms; no served predictions to compare), or a
Parquet frame of features. Figures: per-feature drift (Evidently's distance tests, every row),
touchpoint-sequence summaries, prediction drift (channel mix, content mix, new content, score
distribution). Output: an HTML report (Evidently) and a JSON summary, both logged to MLflow.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments import drift_stats as ds

_RUN_ID = re.compile(r"^(run:)?([0-9a-f]{32})$")


@dataclass(frozen=True)
class Window:
    """A half-open range [start, end) of suggestion ``as_of`` times; None is unbounded."""

    start: dt.datetime | None
    end: dt.datetime | None
    text: str


def _when(text: str, what: str) -> dt.datetime:
    try:
        t = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an ISO date or time (e.g. 2026-01-05)") from None
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def parse_window(text: str, what: str = "--current") -> Window:
    """``START..END`` (either side may be empty), or ``all``: a window of the audit trail."""
    text = text.strip()
    if text == "all":
        return Window(None, None, text)
    if ".." not in text:
        raise ValueError(f"{what}: {text!r} is not a window; write START..END with ISO dates (either side may be empty), or 'all'")
    a, b = text.split("..", 1)
    start = _when(a, what) if a else None
    end = _when(b, what) if b else None
    if start and end and end <= start:
        raise ValueError(f"{what}: window {text!r} ends before it starts")
    return Window(start, end, text)


def read_audit_window(url: str, window: Window):
    """Served suggestions with ``as_of`` in the window, from the audit trail at ``url``."""
    import sqlalchemy as sa

    from serving.audit import AuditTrail, suggestions

    trail = AuditTrail(url)
    try:
        stmt = sa.select(suggestions)
        if window.start is not None:
            stmt = stmt.where(suggestions.c.as_of >= window.start)
        if window.end is not None:
            stmt = stmt.where(suggestions.c.as_of < window.end)
        with trail.engine.connect() as conn:
            return pd.read_sql(stmt.order_by(suggestions.c.as_of, suggestions.c.request_id, suggestions.c.rank), conn)
    finally:
        trail.close()


def read_responses(url: str, window: Window):
    """Per served suggestion in the window: its channel and whether feedback reported a positive response (opened / attended)."""
    import sqlalchemy as sa

    from serving.audit import AuditTrail, feedback, suggestions

    trail = AuditTrail(url)
    try:
        positive = sa.select(feedback.c.suggestion_id).where(feedback.c.outcome.in_(["opened", "attended"])).distinct().subquery()
        stmt = sa.select(suggestions.c.channel, positive.c.suggestion_id.is_not(None).label("responded")).outerjoin(
            positive, positive.c.suggestion_id == suggestions.c.suggestion_id
        )
        if window.start is not None:
            stmt = stmt.where(suggestions.c.as_of >= window.start)
        if window.end is not None:
            stmt = stmt.where(suggestions.c.as_of < window.end)
        with trail.engine.connect() as conn:
            return pd.read_sql(stmt, conn)
    finally:
        trail.close()


def reference_from_run(tracking: Any, run_id: str, weeks: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Features of every HCP as of each of the last ``weeks`` Mondays of a training run's dataset."""
    from mlflow import MlflowClient

    from features import compute_features_asof, load_features_config
    from features.build import read_contract
    from features.events import prepare
    from training import tracking as trk

    trk.setup(tracking)
    try:
        run = MlflowClient().get_run(run_id)
    except Exception as exc:  # MlflowException
        raise ValueError(f"--reference: no MLflow run {run_id!r} in {tracking.uri} ({type(exc).__name__})") from None
    data_dir = run.data.params.get("data_dir")
    if not data_dir or data_dir == "None" or not Path(data_dir).exists():
        raise ValueError(f"--reference: run {run_id} names no readable data_dir (param data_dir={data_dir!r}); pass an audit window or a Parquet file")
    fcfg_path = run.data.params.get("features_config")
    fcfg = load_features_config(None if fcfg_path in (None, "None") else fcfg_path, overrides={"data_dir": data_dir})
    tables = read_contract(data_dir)
    ts = tables["touchpoints"].column("ts").to_numpy()
    last = pd.Timestamp(ts.max()).tz_localize("UTC") if pd.Timestamp(ts.max()).tzinfo is None else pd.Timestamp(ts.max())
    monday = (last.normalize() - pd.Timedelta(days=last.weekday())) + pd.Timedelta(days=7)
    prep = prepare(tables, fcfg.days_since_cap)
    frames = [compute_features_asof(tables, (monday - pd.Timedelta(weeks=k)).to_pydatetime(), fcfg, prepared=prep) for k in range(weeks)]
    frame = pd.concat(frames, ignore_index=True).rename(columns={"event_timestamp": "as_of"})
    return frame, {"kind": "run", "run_id": run_id, "data_dir": data_dir, "weeks": weeks, "last_as_of": monday.isoformat()}


def served_model(suggestions: pd.DataFrame) -> str | None:
    """The model (``name/version``) behind most of the window's model-served suggestions, or None."""
    if "model_version" not in suggestions.columns:
        return None
    v = suggestions.loc[suggestions["policy"].isin(["model", "explore"]), "model_version"].dropna()
    return str(v.value_counts().index[0]) if len(v) else None


def model_content_ids(tracking: Any, label: str) -> list[str]:
    """The content vocabulary of registered model ``name/version`` (its bundle's model.json; the weights are not loaded)."""
    from training import tracking as trk
    from training.artifacts import read_meta

    name, _, version = label.rpartition("/")
    if not name or not version:
        raise ValueError(f"audit trail: model_version {label!r} is not NAME/VERSION")
    trk.setup(tracking)
    return [str(c) for c in read_meta(trk.bundle_path(name, version))["content_ids"]]


def read_catalogue(data_dir: str | Path) -> pd.DataFrame:
    """The contract ``content`` table's approval windows and topics, as serving loads them."""
    from contract.io import read_frame

    return read_frame(data_dir, "content", columns=["content_id", "topic", "approved_from", "approved_until"])


def catalogue_check(catalogue: pd.DataFrame, known: list[str], current: pd.DataFrame, reference: pd.DataFrame | None) -> dict[str, Any]:
    """``ds.catalogue_shift`` of the approved catalogue at the current window's suggestion times vs the reference window's."""
    cur = ds.catalogue_coverage(catalogue, known, current["as_of"])
    ref = ds.catalogue_coverage(catalogue, known, reference["as_of"]) if reference is not None else None
    return ds.catalogue_shift(cur, ref)


def _sample(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame if len(frame) <= n else frame.sample(n=n, random_state=seed).reset_index(drop=True)


def compare(
    ref_features: pd.DataFrame,
    cur_features: pd.DataFrame,
    ref_predictions: pd.DataFrame | None,
    cur_predictions: pd.DataFrame | None,
    cfg: Any,
    ref_responses: pd.DataFrame | None = None,
    cur_responses: pd.DataFrame | None = None,
    catalogue: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every drift figure of current vs reference frames, and the verdict (``cfg``: ``MonitorConfig``; ``catalogue``: ``ds.catalogue_shift``)."""
    t = cfg.thresholds
    ref_f, cur_f = _sample(ref_features, cfg.max_rows, cfg.seed), _sample(cur_features, cfg.max_rows, cfg.seed + 1)
    numeric, categorical = ds.feature_columns(ref_f, cur_f)
    kw = {"num_method": cfg.num_method, "cat_method": cfg.cat_method, "threshold": t.column}
    features = ds.column_scores(ref_f, cur_f, numeric, categorical, **kw)
    ref_s, cur_s = ds.sequence_summary(ref_f), ds.sequence_summary(cur_f)
    seq_cols = [c for c in ref_s.columns if c in cur_s.columns]
    sequences = ds.column_scores(ref_s, cur_s, seq_cols, [], **kw)
    if t.noise_multiple:
        # How far each figure moves between the reference's own earlier and later weeks: a bar
        # scaled by it keeps noisy features (rare channels' rates) from raising false alarms.
        floor = ds.noise_floor(ref_f, [*numeric, *categorical], lambda a, b: ds.column_scores(a, b, numeric, categorical, **kw))
        ref_s_t = ref_s.assign(as_of=ref_f["as_of"].to_numpy()) if "as_of" in ref_f.columns else ref_s
        floor.update(ds.noise_floor(ref_s_t, seq_cols, lambda a, b: ds.column_scores(a, b, seq_cols, [], **kw)))
        features = ds.with_floor(features, floor, t.noise_multiple, t.column)
        sequences = ds.with_floor(sequences, floor, t.noise_multiple, t.column)
    seq_ref_content = ds.sequence_content(ref_f)
    seq_new = ds.unseen_share(set(seq_ref_content), ds.sequence_content(cur_f)) if len(seq_ref_content) else None
    predictions = score = None
    if ref_predictions is not None and cur_predictions is not None and len(ref_predictions) and len(cur_predictions):
        predictions = ds.prediction_drift(ref_predictions, cur_predictions, set(seq_ref_content))
        s = ds.column_scores(ref_predictions, cur_predictions, ["expected_response"], [], **kw)
        score = float(s["score"].iloc[0])
        predictions["score_wasserstein_normed"] = score
    responses = None
    if ref_responses is not None and cur_responses is not None and len(ref_responses) and len(cur_responses):
        responses = ds.response_rates(ref_responses, cur_responses)
    verdict = ds.verdict(features, sequences, predictions, score, seq_new, t, responses, catalogue)
    top = features.dropna(subset=["score"]).head(cfg.top_features)
    return {
        **verdict,
        "next_steps": ds.next_steps(verdict, top),
        "top_features": top[["column", "score", "method"]].to_dict(orient="records"),
        "features": features.to_dict(orient="records"),
        "sequences": sequences.to_dict(orient="records"),
        "sequence_means": {"reference": ref_s.mean().to_dict(), "current": cur_s.mean().to_dict()},
        "sequence_new_content_share": seq_new,
        "predictions": predictions,
        "responses": responses,
        "catalogue": catalogue,
        "rows": {
            "reference_features": len(ref_features),
            "current_features": len(cur_features),
            "reference_predictions": 0 if ref_predictions is None else len(ref_predictions),
            "current_predictions": 0 if cur_predictions is None else len(cur_predictions),
        },
    }


def write_html(
    path: Path,
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    cfg: Any,
    bars: dict[str, float] | None = None,
    verdict: str | None = None,
) -> None:
    """An Evidently report (one ValueDrift per column given) over a seeded sample, written atomically.

    ``bars``: each column's threshold (default ``cfg.thresholds.column``), so Evidently tests a column
    by the bar `nba monitor` uses; ``verdict``: an HTML block put at the top of the page.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    from experiments.drift_report import with_verdict

    numeric = [c for c in numeric if c in ref.columns and c in cur.columns]
    categorical = [c for c in categorical if c in ref.columns and c in cur.columns]
    if not numeric and not categorical:
        return
    bars = bars or {}
    cols = [*numeric, *categorical]
    ref, cur = _sample(ref[cols], cfg.report_rows, cfg.seed), _sample(cur[cols], cfg.report_rows, cfg.seed + 1)
    for c in categorical:
        ref[c], cur[c] = ref[c].astype(str), cur[c].astype(str)
    definition = DataDefinition(numerical_columns=numeric or None, categorical_columns=categorical or None)
    metrics = [ValueDrift(column=c, method=cfg.num_method, threshold=bars.get(c, cfg.thresholds.column)) for c in numeric]
    metrics += [ValueDrift(column=c, method=cfg.cat_method, threshold=bars.get(c, cfg.thresholds.column)) for c in categorical]
    snap = Report(metrics).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition), reference_data=Dataset.from_pandas(ref, data_definition=definition)
    )
    tmp = path.with_name(f".{path.name}.tmp")
    snap.save_html(str(tmp))
    if verdict:
        tmp.write_text(with_verdict(tmp.read_text(encoding="utf-8"), verdict), encoding="utf-8")
    tmp.replace(path)


def write_outputs(out_dir: Path, summary: dict[str, Any], frames: dict[str, Any], cfg: Any) -> dict[str, str]:
    """The JSON summary and (``cfg.html``) the Evidently reports of the most-moved columns, each opening with the CLI's verdict; returns paths."""
    from experiments.drift_report import column_bars, prediction_bars, verdict_block

    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, str] = {}
    if cfg.html:
        t = cfg.thresholds
        top = [r["column"] for r in summary["top_features"]]
        cat = {r["column"] for r in summary["features"] if r["kind"] == "categorical"}
        ref_f, cur_f = frames["reference_features"], frames["current_features"]
        ref_s, cur_s = ds.sequence_summary(_sample(ref_f, cfg.report_rows, cfg.seed)), ds.sequence_summary(_sample(cur_f, cfg.report_rows, cfg.seed + 1))
        feat_ref = pd.concat([_sample(ref_f, cfg.report_rows, cfg.seed).reset_index(drop=True), ref_s.reset_index(drop=True)], axis=1)
        feat_cur = pd.concat([_sample(cur_f, cfg.report_rows, cfg.seed + 1).reset_index(drop=True), cur_s.reset_index(drop=True)], axis=1)
        feat_cur = feat_cur.loc[:, ~feat_cur.columns.duplicated()]
        feat_ref = feat_ref.loc[:, ~feat_ref.columns.duplicated()]
        seq_cols = [r["column"] for r in summary["sequences"]]
        p = out_dir / "features_report.html"
        write_html(
            p,
            feat_ref,
            feat_cur,
            [c for c in top if c not in cat] + seq_cols,
            [c for c in top if c in cat],
            cfg,
            bars=column_bars(summary, t),
            verdict=verdict_block(summary, t, "per-column drift tests of the most-moved features and the sequence statistics"),
        )
        if p.exists():
            paths["features_html"] = str(p)
        if frames.get("reference_predictions") is not None and summary["predictions"]:
            p = out_dir / "predictions_report.html"
            write_html(
                p,
                frames["reference_predictions"],
                frames["current_predictions"],
                ["expected_response"],
                ["channel", "content_id"],
                cfg,
                bars=prediction_bars(t),
                verdict=verdict_block(summary, t, "drift tests of the served predictions (score, channel, content)"),
            )
            paths["predictions_html"] = str(p)
    p = out_dir / "summary.json"
    tmp = p.with_name(".summary.json.tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=_json_default) + "\n")
    tmp.replace(p)
    paths["summary_json"] = str(p)
    return paths


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (dt.datetime, pd.Timestamp)):
        return o.isoformat()
    return str(o)


def log_run(tracking: Any, experiment: str, summary: dict[str, Any], paths: dict[str, str]) -> str:
    """Log the summary's figures and the report files to MLflow (experiment ``experiment``); the run id."""
    import mlflow

    from training import tracking as trk

    trk.setup(tracking.model_copy(update={"experiment": experiment}))
    figures = {
        "drift_detected": float(summary["drift_detected"]),
        "drifted_feature_share": summary["drifted_feature_share"],
        "max_feature_score": summary["max_feature_score"],
        "max_sequence_score": summary["max_sequence_score"],
    }
    for key in ("channel_mix_tvd", "content_mix_js", "new_content_share", "score_wasserstein_normed"):
        v = (summary.get("predictions") or {}).get(key)
        if v is not None and np.isfinite(v):
            figures[f"prediction/{key}"] = float(v)
    cat = summary.get("catalogue") or {}
    if cat:
        figures["catalogue/unknown_content_share"] = float(cat["current"]["unknown_share"])
        figures["catalogue/unknown_share_rise"] = float(cat["unknown_share_rise"])
    with mlflow.start_run(run_name=f"monitor {summary['current']['window']}") as run:
        mlflow.set_tags(
            {
                "stage": "monitoring",
                "reference": json.dumps(summary["reference"], default=str)[:500],
                "current": summary["current"]["window"],
                "drift_detected": str(summary["drift_detected"]),
            }
        )
        mlflow.log_metrics({k: float(v) for k, v in figures.items() if v is not None and np.isfinite(v)})
        for p in paths.values():
            mlflow.log_artifact(p, artifact_path="monitor")
        return run.info.run_id


def load_reference(reference: str, audit_url: str, tracking: Any, cfg: Any) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any]]:
    """(features, predictions or None, description) of ``--reference``: a run id, a Parquet file or an audit window."""
    m = _RUN_ID.match(reference.strip())
    if m:
        frame, info = reference_from_run(tracking, m.group(2), cfg.reference_weeks)
        return frame, None, info
    path = Path(reference)
    if reference.endswith(".parquet") or path.is_file():
        if not path.is_file():
            raise ValueError(f"--reference: file {reference} does not exist")
        frame = pd.read_parquet(path)
        preds = frame[list(ds.PREDICTION_COLUMNS)] if set(ds.PREDICTION_COLUMNS) <= set(frame.columns) else None
        return frame, preds, {"kind": "file", "path": str(path)}
    window = parse_window(reference, "--reference")
    sugg = read_audit_window(audit_url, window)
    if sugg.empty:
        raise ValueError(f"--reference: the audit trail holds no suggestions in {window.text}")
    return ds.served_features(sugg), ds.served_predictions(sugg), {"kind": "audit", "window": window.text, "suggestions": len(sugg)}


def monitor_job(cfg: Any, reference: str, current: str, *, audit_url: str | None = None, retrain: bool = False, progress: bool = True) -> dict[str, Any]:
    """Compare the audit trail's ``current`` window with ``reference``; write, log, and optionally retrain."""
    import time

    from experiments.config import serving_config, training_config

    clock = time.perf_counter()
    mcfg = cfg.monitor
    tcfg = training_config(cfg)
    url = audit_url or mcfg.audit_url or serving_config(cfg).audit_url

    def say(msg: str) -> None:
        if progress:
            print(f"[monitor] {msg}", flush=True)

    window = parse_window(current, "--current")
    say(f"reading the audit trail's current window {window.text}")
    sugg = read_audit_window(url, window)
    if sugg.empty:
        raise ValueError(f"--current: the audit trail {url} holds no suggestions in {window.text}")
    cur_f, cur_p = ds.served_features(sugg), ds.served_predictions(sugg)
    say(f"reading the reference {reference}")
    ref_f, ref_p, ref_info = load_reference(reference, url, tcfg.tracking, mcfg)
    ref_r = read_responses(url, parse_window(reference, "--reference")) if ref_info["kind"] == "audit" else None
    notes = []
    catalogue = None
    label = served_model(sugg)
    if label is None:
        notes.append("catalogue check skipped: no model version recorded on the current window's model-served suggestions")
    else:
        say(f"checking the approved catalogue against {label}'s content vocabulary")
        from features import load_features_config

        scfg = serving_config(cfg)
        data_dir = scfg.data_dir or str(load_features_config(scfg.features_config).data_dir)
        try:
            content = read_catalogue(data_dir)
            known = model_content_ids(tcfg.tracking, label)
        except Exception as exc:  # one check that cannot run must not hide the others: say so instead
            notes.append(f"catalogue check skipped: {type(exc).__name__}: {exc}"[:300])
        else:
            ref_rows = read_audit_window(url, parse_window(reference, "--reference")) if ref_info["kind"] == "audit" else None
            catalogue = catalogue_check(content, known, sugg, ref_rows)
            catalogue["model"] = label
    say(f"comparing {len(cur_f):,} current vs {len(ref_f):,} reference feature rows")
    summary = compare(ref_f, cur_f, ref_p, cur_p, mcfg, ref_r, read_responses(url, window), catalogue)
    if ref_p is None:
        notes.append("prediction drift skipped: the reference holds no served predictions (use an audit window as reference)")
    if notes:
        summary["notes"] = notes
    summary["reference"] = ref_info
    summary["current"] = {"kind": "audit", "window": window.text, "suggestions": len(sugg), "audit_url": _redact(url)}
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = Path(mcfg.out_dir) / stamp
    say("writing the report")
    paths = write_outputs(
        out_dir, summary, {"reference_features": ref_f, "current_features": cur_f, "reference_predictions": ref_p, "current_predictions": cur_p}, mcfg
    )
    summary["outputs"] = paths
    if mcfg.log_to_mlflow:
        summary["mlflow_run_id"] = log_run(tcfg.tracking, mcfg.experiment, summary, paths)
    if retrain and summary["drift_detected"]:
        say("drift detected: starting the training job (--retrain)")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        from training.jobs import train_job

        res = train_job(tcfg)
        summary["retrain"] = {"run_id": res["run_id"], "model_version": res["model_version"]}
    summary["seconds"] = round(time.perf_counter() - clock, 2)
    return summary


def _redact(url: str) -> str:
    """A database URL without its password."""
    return re.sub(r"://([^:/@]+):[^@]+@", r"://\1:***@", url)


def render(summary: dict[str, Any], console: Any = None) -> None:
    """The verdict, the most-moved features and the next steps, as rich text."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from experiments.drift_report import verdict_lines

    console = console or Console(stderr=False)
    # The same headline the HTML reports open with (experiments.drift_report.verdict_block).
    headline, _ = verdict_lines(summary)
    word, rest = headline.split(":", 1)
    colour = "red" if summary["drift_detected"] else "green"
    console.print(f"[bold {colour}]{word}[/bold {colour}]:{escape(rest)}")
    table = Table(title="features that moved most")
    for col in ("feature", "score", "method"):
        table.add_column(col)
    for r in summary["top_features"]:
        table.add_row(r["column"], f"{r['score']:.3f}", r["method"])
    console.print(table)
    for reason in summary["reasons"]:
        console.print(f"  - {reason}")
    for step in summary["next_steps"]:
        console.print(f"[bold]next:[/bold] {step}")
    for k, v in summary.get("outputs", {}).items():
        console.print(f"{k}: {v}")
