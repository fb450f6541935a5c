"""A family of worlds: named presets that overlay the simulator config (``nba simulate --world NAME``).

A preset is ``configs/worlds/NAME.yaml``: a partial simulator config deep-merged over the
stock ``configs/simulator.yaml`` (mappings merge key by key, lists and scalars replace), so a
preset names only what makes its world different. Each turns on different structural effects
of the hidden response model (repetition decay, wear-out windows, cross-channel warm-up, a
saturating link, timing heterogeneity) or a different logging policy; see each file's header.

    from simulator.worlds import WORLD_NAMES, world_config
    cfg = world_config("habituating", hcps=2000, seed=3)       # a SimulatorConfig
    cfg = world_config("other_reps", **{"response.timing_sd": 0.2})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# The presets shipped in configs/worlds/ (a user may add more files; ``world_names`` lists them).
WORLD_NAMES: tuple[str, ...] = ("default", "habituating", "warmup_saturating", "timing_strong", "timing_weak", "other_reps", "combined")


def worlds_dir() -> Path:
    """The folder preset files are read from (``configs/worlds`` beside the stock configs)."""
    from nba.configuration import config_dir

    return config_dir() / "worlds"


def world_names(directory: Path | None = None) -> tuple[str, ...]:
    """Names of the presets present in ``directory`` (default ``worlds_dir()``), sorted."""
    d = worlds_dir() if directory is None else Path(directory)
    return tuple(sorted(p.stem for p in d.glob("*.yaml"))) if d.is_dir() else ()


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: nested mappings merge key by key, anything else replaces (inputs untouched)."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def world_overlay(name: str, directory: Path | None = None) -> dict[str, Any]:
    """The preset's YAML mapping; an unknown name fails listing the known ones."""
    from nba.configuration import ConfigError, read_mapping

    d = worlds_dir() if directory is None else Path(directory)
    path = d / f"{name}.yaml"
    if not name or "/" in name or "\\" in name or not path.is_file():
        known = world_names(d)
        raise ConfigError(f"world: unknown world {name!r}; known: {', '.join(known) if known else f'none (no presets in {d})'}")
    return read_mapping(path)


def world_config(name: str, base: str | Path | None = None, directory: Path | None = None, **overrides: Any):
    """The ``SimulatorConfig`` of preset ``name``: the stock config (or ``base``), the preset over it, then dotted ``overrides``.

    Overrides left None are ignored (as CLI flags left unset). Invalid values fail naming the
    preset file and the key.
    """
    from pydantic import ValidationError

    from nba.configuration import ConfigError, _set_dotted, format_validation_error, load_config
    from simulator.config import SimulatorConfig

    stock = load_config(SimulatorConfig, "simulator", base)
    overlay = world_overlay(name, directory)
    # Merge over the full validated stock config, so a preset's partial mapping (e.g. two
    # channels of wearout.window_days or of behaviour.rep_weights) keeps the other keys.
    data = deep_merge(stock.model_dump(mode="json"), overlay)
    for key, value in overrides.items():
        if value is not None:
            _set_dotted(data, key, value)
    source = str((worlds_dir() if directory is None else Path(directory)) / f"{name}.yaml")
    try:
        return SimulatorConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


__all__ = ["WORLD_NAMES", "deep_merge", "world_config", "world_names", "world_overlay", "worlds_dir"]
