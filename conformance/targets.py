"""Choosing a target without editing the suite.

``TARGET`` is a built-in name (the table below), ``mutant:NAME`` (conformance.mutants),
``sharded-mutant:NAME`` (conformance.distributed.mutants), or any
``package.module:factory``; the python that runs the worker is the built-in's environment,
or ``CAME_TARGET_PYTHON`` for a vendor's module (default: this interpreter).

Deviations (conformance/deviations.py): a file named with ``--deviations`` or, failing that, in
``CAME_DEVIATIONS`` applies to any target; otherwise a built-in target has its own
``targets/<name>/deviations.json`` and other targets have none.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENVS = REPO / ".venvs"
#: The built-in targets' deviations and notes: <repository>/targets in a checkout; installed from a
#: wheel they are package data, came_conformance/builtin_targets (pyproject.toml).
TARGETS_DIR = next((d for d in (Path(__file__).resolve().with_name("builtin_targets"), REPO / "targets")
                    if d.is_dir()), REPO / "targets")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    factory: str  # module:callable
    python: str
    env: tuple[tuple[str, str], ...] = ()
    deviations: Path | None = None  # the deviations file in force (module docstring)
    deviations_named: bool = False  # named by --deviations or CAME_DEVIATIONS: it must exist


def _venv_python(name: str) -> str:
    candidate = VENVS / name / "bin" / "python"
    return str(candidate) if candidate.exists() else sys.executable


BUILTIN = {
    "reference": ("came_conformance.adapters.reference:factory", None),
    "reference-paper": ("came_conformance.adapters.reference:paper_factory", None),
    "mindspore": ("came_conformance.adapters.mindspore:factory", "mindspore"),
    "came-pytorch": ("came_conformance.adapters.came_pytorch:factory", "core"),
    "pytorch-optimizer": ("came_conformance.adapters.pytorch_optimizer:factory", "core"),
    # sharded targets (spec §9): their ranks run under conformance.distributed.harness
    "reference-dist": ("came_conformance.adapters.reference_sharded:factory", "core"),
    "colossalai": ("came_conformance.adapters.colossalai:factory", "colossalai"),
    "colossalai-dist": ("came_conformance.adapters.colossalai_dist:factory", "colossalai"),
}


def resolve(target: str, deviations: str | None = None) -> TargetSpec:
    """The target's factory, worker python and deviations file (``deviations`` is --deviations)."""
    spec = _resolve(target)
    named = deviations or os.environ.get("CAME_DEVIATIONS") or None
    if named:
        return replace(spec, deviations=Path(named), deviations_named=True)
    return spec


def _resolve(target: str) -> TargetSpec:
    if target in BUILTIN:
        factory, venv = BUILTIN[target]
        python = _venv_python(venv) if venv else sys.executable
        deviations = TARGETS_DIR / target / "deviations.json"
        return TargetSpec(target, factory, python, deviations=deviations if deviations.exists() else None)
    if target.startswith("sharded-mutant:"):  # conformance.distributed.mutants
        bugs = target.split(":", 1)[1]
        return TargetSpec(target, "came_conformance.adapters.reference_sharded:factory", _venv_python("core"),
                          env=(("CAME_SHARDED_BUGS", bugs),))
    if target.startswith("mutant:"):
        return TargetSpec(target, f"came_conformance.mutants:factory_{target.split(':', 1)[1].replace('-', '_')}",
                          sys.executable)
    if ":" in target:
        return TargetSpec(target.replace(":", "."), target, os.environ.get("CAME_TARGET_PYTHON", sys.executable))
    raise SystemExit(f"TARGET must be one of {sorted(BUILTIN)}, mutant:NAME, or module:factory; got {target!r}")
