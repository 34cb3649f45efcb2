"""Choosing a target without editing the suite.

``TARGET`` is a built-in name (the table below), ``mutant:NAME`` (conformance.mutants),
``sharded-mutant:NAME`` (conformance.distributed.mutants), or any
``package.module:factory``; the python that runs the worker is the built-in's environment,
or ``CAME_TARGET_PYTHON`` for a vendor's module (default: this interpreter).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENVS = REPO / ".venvs"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    factory: str  # module:callable
    python: str
    env: tuple[tuple[str, str], ...] = ()
    deviations: Path | None = None  # targets/<name>/deviations.json


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


def resolve(target: str) -> TargetSpec:
    if target in BUILTIN:
        factory, venv = BUILTIN[target]
        python = _venv_python(venv) if venv else sys.executable
        deviations = REPO / "targets" / target / "deviations.json"
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
