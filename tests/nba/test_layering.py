"""Data flows one way: contract -> features -> training -> serving; the simulator and experiments only judge.

Every import in every module of a production package is read with ``ast`` (also the ones inside
functions, where the heavy and the tempting imports live), so a new ``from simulator...`` anywhere
fails here rather than in a customer's deployment without the simulator.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("contract", "features", "training", "serving")
# Never imported by any production package: the judge, what judges with it, and the composition
# root's modules that hand them in (importing those would reach the simulator second-hand).
JUDGES = ("simulator", "experiments", "nba.wiring", "nba.cli", "nba.quickstart")
# Downstream stages a stage must not import (contract -> features -> training -> serving).
DOWNSTREAM = {
    "contract": ("features", "training", "serving"),
    "features": ("training", "serving"),
    "training": ("serving",),
    "serving": (),
}


def imported_modules(source: str, module: str = "") -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, at any depth; relative imports resolved against ``module``."""
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: -node.level]
                base = ".".join([*parent, base] if base else parent)
            # ``from pkg import sub`` may name a submodule: keep both spellings.
            out.append((node.lineno, base))
            out.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*")
    return out


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _violations(package: str) -> list[str]:
    bad: list[str] = []
    forbidden = (*JUDGES, *DOWNSTREAM[package])
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for line, name in imported_modules(path.read_text(), module):
            hit = next((f for f in forbidden if _within(name, f)), None)
            if hit:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {name} ({package} must not import {hit})")
    return bad


@pytest.mark.parametrize("package", PRODUCTION)
def test_production_packages_import_no_simulator_and_nothing_downstream(package: str) -> None:
    assert (ROOT / package / "__init__.py").exists(), f"{package}: not a package any more; update PRODUCTION"
    assert _violations(package) == []


def test_the_import_reader_catches_every_spelling() -> None:
    source = (
        "import simulator\n"
        "import numpy as np, simulator.world as w\n"
        "from simulator.world import CONTENTLESS_MASK\n"
        "def f():\n"
        "    from experiments import sim_judge\n"
        "    class K:\n"
        "        def g(self):\n"
        "            import serving.engine\n"
        "from . import helper\n"
        "from ..simulator import x\n"
    )
    names = {name for _, name in imported_modules(source, "training.sub.mod")}
    assert {"simulator", "simulator.world", "experiments.sim_judge", "serving.engine", "training.sub.helper", "training.simulator"} <= names
    lines = {line for line, name in imported_modules(source, "training.sub.mod") if _within(name, "simulator")}
    assert lines == {1, 2, 3}
