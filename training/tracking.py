"""MLflow plumbing: a local store with explicit artifact location, the registry and its aliases,
the tags `nba evaluate` writes and `nba promote` reads, and the experiment's reviewer view."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CHALLENGER, CHAMPION = "challenger", "champion"

# Model-version tags written by `nba evaluate`, read by `nba promote` (training.promotion).
# The simulator's truth (only on simulated data with ground truth):
POLICY_VALUE_TAG = "policy_value"  # true expected responses per HCP-week of the served policy
POLICY_SETTING_TAG = "policy_value_setting"  # the data, start and weeks that policy value was measured under
SELECTION_WINDOW_TAG = "selection_window"  # the validation weeks that selected a version (early stopping, calibration, tuning)
# Off-policy evidence (any dataset):
OPE_ESTIMATOR_TAG = "ope_estimator"  # e.g. "dr": the estimator the figures below come from
OPE_VALUE_TAG = "ope_value"  # estimated value of the served policy on the test window
OPE_CI_LOW_TAG = "ope_ci_low"
OPE_CI_HIGH_TAG = "ope_ci_high"
OPE_VERDICT_TAG = "ope_verdict"  # VERDICT_TRUSTED | VERDICT_UNTRUSTED (enough overlap or not)
OPE_VERDICT_REASON_TAG = "ope_verdict_reason"  # one line with the overlap figures and thresholds
OPE_SETTING_TAG = "ope_setting"  # data fingerprint + test window + estimator + n_boot: values compare only under equal settings
OPE_VS_LOGGED_TAG = "ope_vs_logged"  # paired difference, target minus the logged policy, on the same rows
OPE_VS_LOGGED_CI_LOW_TAG = "ope_vs_logged_ci_low"
OPE_VS_CHAMPION_TAG = "ope_vs_champion"  # paired difference against the champion evaluated in the same run
OPE_VS_CHAMPION_CI_LOW_TAG = "ope_vs_champion_ci_low"
OPE_CHAMPION_VERSION_TAG = "ope_champion_version"  # the champion version that difference was measured against
VERDICT_TRUSTED, VERDICT_UNTRUSTED = "trusted", "untrusted"
OPE_TAGS: tuple[str, ...] = (
    OPE_ESTIMATOR_TAG,
    OPE_VALUE_TAG,
    OPE_CI_LOW_TAG,
    OPE_CI_HIGH_TAG,
    OPE_VERDICT_TAG,
    OPE_VERDICT_REASON_TAG,
    OPE_SETTING_TAG,
    OPE_VS_LOGGED_TAG,
    OPE_VS_LOGGED_CI_LOW_TAG,
    OPE_VS_CHAMPION_TAG,
    OPE_VS_CHAMPION_CI_LOW_TAG,
    OPE_CHAMPION_VERSION_TAG,
)

# The reviewer's view. MLflow 3.17.2's UI (server/js bundle) knows these experiment tags:
# - the kind: the header's "experiment type" selector reads and writes it. Note that this UI decides
#   the landing tab from its global workflow switch instead (URL ``?workflowType=machine_learning``,
#   else the browser's localStorage ``mlflow.workflowType``, default "genai"): ``review_url`` sets it.
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"
# - the primary metric: the runs' chart view draws it first.
PRIMARY_METRIC_TAG = "mlflow.experiment.primaryMetric.name"
PRIMARY_METRIC_GREATER_TAG = "mlflow.experiment.primaryMetric.greaterIsBetter"
# - shared views: ``mlflow.sharedViewState.<key>`` holds a runs-table state (JSON) that the page loads
#   when its URL carries ``?viewStateShareKey=<key>``. The default view's columns live in each
#   browser's local storage, which a server cannot set: the review view is the way to preset them.
SHARED_VIEW_PREFIX, REVIEW_VIEW_KEY = "mlflow.sharedViewState.", "nba-review"

# Evaluation runs' summary metrics (log_policy_value) and params (log_evaluation_params): the review view's columns.
EVAL_VALUE_METRIC = "evaluation/policy_value"
EVAL_CI_LOW_METRIC = "evaluation/policy_value_ci_low"
EVAL_CI_HIGH_METRIC = "evaluation/policy_value_ci_high"
EVAL_VS_CHAMPION_CI_LOW_METRIC = "evaluation/vs_champion_ci_low"
EVAL_VS_LOGGED_CI_LOW_METRIC = "evaluation/vs_logged_ci_low"
EVALUATION_PARAMS: tuple[str, ...] = ("model_version", "evaluation_setting", "data_fingerprint", "estimator", "n_boot", "test_window")
REVIEW_COLUMNS: tuple[str, ...] = (
    "attributes.`Models`",
    "params.`model_version`",
    "params.`estimator`",
    "params.`test_window`",
    f"metrics.`{EVAL_VALUE_METRIC}`",
    f"metrics.`{EVAL_CI_LOW_METRIC}`",
    f"metrics.`{EVAL_CI_HIGH_METRIC}`",
    f"metrics.`{EVAL_VS_CHAMPION_CI_LOW_METRIC}`",
    f"metrics.`{EVAL_VS_LOGGED_CI_LOW_METRIC}`",
    "metrics.`offline/model_response_auc`",
    "metrics.`val/response_auc`",
)


def review_tags() -> dict[str, str]:
    """The experiment tags that open it as a model-training experiment with the review columns."""
    view = {"selectedColumns": list(REVIEW_COLUMNS), "orderByKey": "attributes.start_time", "orderByAsc": False}
    return {
        EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
        PRIMARY_METRIC_TAG: EVAL_VALUE_METRIC,
        PRIMARY_METRIC_GREATER_TAG: "True",  # as mlflow.tracking.fluent._set_experiment_primary_metric writes it
        f"{SHARED_VIEW_PREFIX}{REVIEW_VIEW_KEY}": json.dumps(view, separators=(",", ":")),
    }


def review_url(base_url: str, experiment_id: str) -> str:
    """The UI address of the experiment in the model-training view with the review columns."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning&viewStateShareKey={REVIEW_VIEW_KEY}"


def setup(tracking: Any) -> str:
    """Point MLflow at ``tracking.uri`` (creating a SQLite file's folder), tag the experiment for review
    (``review_tags``; also an existing one) and return its id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking.uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(tracking.experiment)
    wanted = review_tags()
    if exp is None:
        # Explicit location: otherwise artifacts land in ./mlruns of whatever folder a command runs from.
        location = Path(tracking.artifact_location).resolve()
        location.mkdir(parents=True, exist_ok=True)
        exp_id = mlflow.create_experiment(tracking.experiment, artifact_location=location.as_uri(), tags=wanted)
    else:
        exp_id = exp.experiment_id
        stale = {k: v for k, v in wanted.items() if (exp.tags or {}).get(k) != v}
        if stale:  # experiments made before these tags existed, or by another version
            from mlflow import MlflowClient

            client = MlflowClient()
            for key, value in stale.items():
                client.set_experiment_tag(exp_id, key, value)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def evaluation_run_name(model_version: Any, estimator: str, test_window: Any) -> str:
    """A readable evaluation run name, e.g. ``evaluate v3 (dr, weeks 2025-10-06..2025-12-01)``."""
    return f"evaluate v{model_version} ({estimator}, weeks {_window(test_window)})"


def log_evaluation_params(mlflow: Any, **params: Any) -> dict[str, str]:
    """Log an evaluation run's params (at least ``EVALUATION_PARAMS``; ``test_window`` a "start..end"
    string or a (start, end) pair) and name the run by them; return what was logged."""
    missing = [p for p in EVALUATION_PARAMS if params.get(p) in (None, "")]
    if missing:
        raise ValueError(f"log_evaluation_params: missing {', '.join(missing)} (an evaluation run needs {', '.join(EVALUATION_PARAMS)})")
    logged = {k: (_window(v) if k == "test_window" else str(v)) for k, v in params.items() if v is not None}
    mlflow.log_params(logged)
    mlflow.set_tag("mlflow.runName", evaluation_run_name(params["model_version"], str(params["estimator"]), params["test_window"]))
    return logged


def log_policy_value(
    mlflow: Any, value: float, ci_low: float, ci_high: float, *, vs_champion_ci_low: float | None = None, vs_logged_ci_low: float | None = None
) -> dict[str, float]:
    """Log an evaluation's headline figures under the review columns' names (non-finite ones are left out)."""
    import math

    figures = {
        EVAL_VALUE_METRIC: value,
        EVAL_CI_LOW_METRIC: ci_low,
        EVAL_CI_HIGH_METRIC: ci_high,
        EVAL_VS_CHAMPION_CI_LOW_METRIC: vs_champion_ci_low,
        EVAL_VS_LOGGED_CI_LOW_METRIC: vs_logged_ci_low,
    }
    kept = {k: float(v) for k, v in figures.items() if v is not None and math.isfinite(float(v))}
    mlflow.log_metrics(kept)
    return kept


def set_evaluation_tags(client: Any, name: str, version: str, tags: dict[str, Any]) -> None:
    """Tag a model version with an evaluation's evidence, removing OPE tags the new evaluation did not
    set: a comparison with an earlier champion must not outlive its evaluation."""
    current = client.get_model_version(name, str(version)).tags or {}
    for key in OPE_TAGS:
        if key in current and key not in tags:
            client.delete_model_version_tag(name, str(version), key)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value if isinstance(value, str) else repr(value))


def _window(window: Any) -> str:
    """A test window as "start..end" (a string is kept as it is)."""
    if isinstance(window, str):
        return window
    start, end = window
    return f"{_day(start)}..{_day(end)}"


def _day(value: Any) -> str:
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return text[:10]


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict to dotted keys (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def version_for_alias(name: str, alias: str) -> Any | None:
    """The model version holding ``alias``, or None when no version has it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register(model_uri: str, name: str, alias: str = CHALLENGER, tags: dict[str, str] | None = None) -> str:
    """Register the logged model as a new version of ``name`` with ``alias``; return the version."""
    import mlflow
    from mlflow import MlflowClient

    mv = mlflow.register_model(model_uri, name, tags=tags)
    MlflowClient().set_registered_model_alias(name, alias, mv.version)
    return str(mv.version)


def bundle_path(name: str, version: str) -> Path:
    """Download a registered version and return the folder of its config + state-dict bundle.

    The pyfunc's MLmodel names where the ``bundle`` artifact was copied
    (``artifacts/<folder name>``); reading it there is exact, where globbing is a guess.
    """
    import mlflow
    import yaml

    uri = f"models:/{name}/{version}"
    local = Path(mlflow.artifacts.download_artifacts(uri))
    spec = yaml.safe_load((local / "MLmodel").read_text())
    artifacts = spec.get("flavors", {}).get("python_function", {}).get("artifacts") or {}
    if "bundle" not in artifacts:
        raise FileNotFoundError(f"{uri}: its MLmodel declares no 'bundle' artifact (not an nba model)")
    return local / artifacts["bundle"]["path"]
