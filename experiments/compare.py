"""`nba compare`: runs side by side, champion vs challenger, and which would win promotion and why.

Reads only what training recorded in MLflow: training runs (params, ``val/*`` per epoch; the
latest value is the last epoch's), evaluation runs (tag ``stage=evaluation``, ``model_version``;
``sim/*``, ``ope/*`` with ``ope/<est>_ci_low|high``, ``offline/*``) and the registry's aliases
with the ``policy_value`` tag ``nba evaluate`` sets. The promotion verdict is the training
stage's own rule (``training.promotion.promotion_decision``), never a copy of it.
"""

from __future__ import annotations

from typing import Any

CHAMPION, CHALLENGER = "champion", "challenger"
# Metric names that carry an interval: ope/<est>_value with ope/<est>_ci_low|high.
_OPE_SUFFIX = "_value"


def interval_of(metrics: dict[str, float], name: str) -> tuple[float, float] | None:
    """(low, high) logged beside an OPE estimate ``ope/<est>_value``, if both are there."""
    if not (name.startswith("ope/") and name.endswith(_OPE_SUFFIX)):
        return None
    stem = name[: -len(_OPE_SUFFIX)]
    low, high = metrics.get(f"{stem}_ci_low"), metrics.get(f"{stem}_ci_high")
    return (low, high) if low is not None and high is not None else None


def format_metric(metrics: dict[str, float], name: str) -> str:
    """A metric for the table: value with its interval where one was logged, '—' if absent."""
    value = metrics.get(name)
    if value is None:
        return "—"
    ci = interval_of(metrics, name)
    return f"{value:.4g} [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else f"{value:.4g}"


def _run_record(run: Any, params: list[str], metrics: list[str]) -> dict[str, Any]:
    m = dict(run.data.metrics)
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "stage": run.data.tags.get("stage", ""),
        "model_version": run.data.tags.get("model_version"),
        "start_time": run.info.start_time,
        "params": {p: run.data.params.get(p) for p in params},
        "metrics": {k: m[k] for k in metrics if k in m},
        "intervals": {k: list(ci) for k in metrics if (ci := interval_of(m, k))},
    }


def promotion_verdict(
    challenger_tags: dict[str, Any], champion_version: str | None, champion_tags: dict[str, Any] | None, same_version: bool
) -> dict[str, Any]:
    """What ``nba promote`` would do, from the training stage's rule (``training.promotion.promotion_decision``)."""
    try:
        from training.promotion import evidence_of, promotion_decision
    except ImportError:
        return {"would_promote": None, "why": "training.promotion.promotion_decision is not available: cannot apply the promotion rule"}
    if evidence_of(challenger_tags) is None and not same_version:
        return {"would_promote": False, "why": "the challenger has no evaluated policy value: run `nba evaluate` first"}
    promoted, why = promotion_decision(challenger_tags, champion_version, champion_tags, same_version)
    return {"would_promote": bool(promoted), "why": why}


def compare_runs(
    tracking: Any,
    experiment: str | None = None,
    run_ids: list[str] | None = None,
    *,
    max_runs: int = 10,
    params: list[str] | None = None,
    metrics: list[str] | None = None,
) -> dict[str, Any]:
    """Runs of ``experiment`` (default: the training one), champion vs challenger, and the promotion verdict."""
    import mlflow
    from mlflow import MlflowClient

    from training import tracking as trk

    params = params or []
    metrics = metrics or []
    trk.setup(tracking)
    client = MlflowClient()
    name = experiment or tracking.experiment
    exp = mlflow.get_experiment_by_name(name)
    if exp is None:
        raise ValueError(f"experiment {name!r} does not exist in {tracking.uri}: train a model first, or pass --experiment")
    if run_ids:
        runs = []
        for rid in run_ids:
            try:
                runs.append(client.get_run(rid))
            except Exception as exc:  # MlflowException: unknown id
                raise ValueError(f"--runs: no run {rid!r} in {tracking.uri} ({type(exc).__name__})") from None
    else:
        runs = client.search_runs([exp.experiment_id], order_by=["attribute.start_time DESC"], max_results=max_runs)
    rows = [_run_record(r, params, metrics) for r in runs]

    side: dict[str, Any] = {}
    version_tags: dict[str, dict[str, Any]] = {}
    model = tracking.registered_model
    for alias in (CHAMPION, CHALLENGER):
        mv = trk.version_for_alias(model, alias)
        if mv is None:
            side[alias] = None
            continue
        version_tags[alias] = dict(mv.tags or {})
        record: dict[str, Any] = {
            "version": int(mv.version),
            "policy_value": _float((mv.tags or {}).get(trk.POLICY_VALUE_TAG)),
            "share_of_oracle_gain": _float((mv.tags or {}).get("share_of_oracle_gain")),
            "policy_value_setting": (mv.tags or {}).get(trk.POLICY_SETTING_TAG),
            "metrics": {},
            "intervals": {},
        }
        run_id = (mv.tags or {}).get("run_id") or mv.run_id
        merged: dict[str, float] = {}
        if run_id:
            train = client.get_run(run_id)
            merged.update(train.data.metrics)
            record["training_run_id"] = run_id
            record["params"] = {p: train.data.params.get(p) for p in params}
        evals = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.stage = 'evaluation' and tags.model_version = '{mv.version}'",
            order_by=["attribute.start_time DESC"],
            max_results=1,
        )
        if evals:
            merged.update(evals[0].data.metrics)
            record["evaluation_run_id"] = evals[0].info.run_id
        record["metrics"] = {k: merged[k] for k in metrics if k in merged}
        record["intervals"] = {k: list(ci) for k in metrics if (ci := interval_of(merged, k))}
        side[alias] = record
    champ, chall = side.get(CHAMPION), side.get(CHALLENGER)
    if chall is None:
        verdict = {"would_promote": False, "why": f"registered model {model!r} has no '{CHALLENGER}' version: run `nba train` first"}
    else:
        verdict = promotion_verdict(
            version_tags[CHALLENGER], str(champ["version"]) if champ else None, version_tags.get(CHAMPION), bool(champ and champ["version"] == chall["version"])
        )
    return {
        "experiment": name,
        "tracking_uri": tracking.uri,
        "registered_model": model,
        "runs": rows,
        "champion": champ,
        "challenger": chall,
        "promotion": verdict,
    }


def _float(raw: Any) -> float | None:
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def render(result: dict[str, Any], metrics: list[str], params: list[str], console: Any = None) -> None:
    """Rich tables: the runs, then champion vs challenger and the verdict."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    # One column per run, one row per figure: a dozen metric names do not fit side by side.
    runs = Table(title=f"runs of {result['experiment']} ({result['tracking_uri']})")
    runs.add_column("")
    cells: list[list[str]] = []
    for r in result["runs"]:
        runs.add_column(f"{r['run_name'] or ''}\n{r['run_id'][:8]}", overflow="fold")
        m = dict(r["metrics"])
        for k, (lo, hi) in r["intervals"].items():
            stem = k[: -len(_OPE_SUFFIX)]
            m[f"{stem}_ci_low"], m[f"{stem}_ci_high"] = lo, hi
        cells.append(
            [
                r["stage"] + (f" v{r['model_version']}" if r["model_version"] else ""),
                *[str(r["params"].get(p) or "—") for p in params],
                *[format_metric(m, k) for k in metrics],
            ]
        )
    for i, label in enumerate(("stage", *params, *metrics)):
        runs.add_row(label, *[c[i] for c in cells])
    console.print(runs)

    pair = Table(title=f"{result['registered_model']}: champion vs challenger")
    pair.add_column("")
    for alias in (CHAMPION, CHALLENGER):
        rec = result[alias]
        pair.add_column(f"{alias} v{rec['version']}" if rec else f"{alias} (none)")

    def cell(alias: str, key: str) -> str:
        rec = result[alias]
        if rec is None:
            return "—"
        if key in ("policy_value", "share_of_oracle_gain"):
            v = rec.get(key)
            return "—" if v is None else f"{v:.4g}"
        m = dict(rec["metrics"])
        for k, (lo, hi) in rec["intervals"].items():
            stem = k[: -len(_OPE_SUFFIX)]
            m[f"{stem}_ci_low"], m[f"{stem}_ci_high"] = lo, hi
        return format_metric(m, key)

    for key in ("policy_value", "share_of_oracle_gain", *metrics):
        pair.add_row(key, cell(CHAMPION, key), cell(CHALLENGER, key))
    console.print(pair)
    v = result["promotion"]
    word = {True: "the challenger would be promoted", False: "the champion stays", None: "undecided"}[v["would_promote"]]
    console.print(f"[bold]promotion:[/bold] {word}: {v['why']}")
