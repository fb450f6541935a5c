"""Loading typed stage configs from ``configs/*.yaml`` with CLI overrides.

Each stage owns one pydantic model (``simulator.config.SimulatorConfig`` ...). This module
only reads YAML, applies ``key.sub=value`` overrides, and turns validation failures into one
error that names the file, the key and why, before any work starts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

T = TypeVar("T", bound=BaseModel)

# Where the stock configs live: $NBA_CONFIG_DIR, else ./configs, else the repo's configs/.
_REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and why."""


class StageConfig(BaseModel):
    """Base for stage configs: unknown keys are errors, so typos fail at load."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def config_dir() -> Path:
    """The directory stock configs are read from."""
    env = os.environ.get("NBA_CONFIG_DIR")
    if env:
        return Path(env)
    local = Path.cwd() / "configs"
    return local if local.is_dir() else _REPO_CONFIGS


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {p!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key.sub=value`` (value read as YAML, so ``3``, ``true``, ``[a, b]`` work)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    return key, yaml.safe_load(raw) if raw.strip() else None


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem: ``source: key.path: why``."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {key}: {msg}")
    return "invalid config\n  " + "\n  ".join(lines)


def read_mapping(file: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (an empty file is {}); anything else fails naming the file."""
    try:
        loaded = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{file}: not valid YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{file}: top level must be a mapping of keys, got {type(loaded).__name__}")
    return loaded


def load_config(model: type[T], name: str, path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Load ``configs/<name>.yaml`` (or ``path``) into ``model``, applying dotted overrides.

    Overrides whose value is None are ignored, so CLI options left unset keep the file's value.
    """
    file = Path(path) if path is not None else config_dir() / f"{name}.yaml"
    data: dict[str, Any] = {}
    if file.exists():
        data = read_mapping(file)
    elif path is not None:
        raise ConfigError(f"config file not found: {file}")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(file))) from None
