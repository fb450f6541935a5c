"""MLflow plumbing: a local store with explicit artifact location, the registry and its aliases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

CHALLENGER, CHAMPION = "challenger", "champion"
POLICY_VALUE_TAG = "policy_value"  # set on a model version by `nba evaluate`
POLICY_SETTING_TAG = "policy_value_setting"  # the data, start and weeks that policy value was measured under


def setup(tracking: Any) -> str:
    """Point MLflow at ``tracking.uri`` (creating a SQLite file's folder) and return the experiment id."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    uri = tracking.uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(tracking.experiment)
    if exp is None:
        # Explicit location: otherwise artifacts land in ./mlruns of whatever folder a command runs from.
        location = Path(tracking.artifact_location).resolve()
        location.mkdir(parents=True, exist_ok=True)
        exp_id = mlflow.create_experiment(tracking.experiment, artifact_location=location.as_uri())
    else:
        exp_id = exp.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


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
