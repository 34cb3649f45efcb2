"""Cases: the one input shape of the runner, whether from a fixture or a Hypothesis draw.

A ``TrajectoryCase`` is a start (parameters, hyperparameters, dtype) and gradients for every
step; an ``ErrorCase`` is one call of a documented constructor (and, for the step phase, one
bad gradient list) with the error the contract requires.  Both serialise to exact JSON
(floats as IEEE-754 hex) so any failure can be replayed with
``python -m came_conformance run --target T --case-file FILE``.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from came_conformance.fixtures.load import float_to_hex, hex_to_float
from came_conformance.reference.hyperparams import Hyperparameters


@dataclass
class TrajectoryCase:
    id: str
    profile: str
    hp: Hyperparameters
    params: list[np.ndarray]
    grads: list[list[np.ndarray]]  # grads[k][i]: step k + 1, parameter i, as the optimizer receives it
    dtype: str = "float64"
    flags: tuple[str, ...] = ()
    clauses: tuple[str, ...] = ()
    source: str = ""
    expected: list[dict] | None = None  # golden {"params": [...], "state": [...]} per step, from a fixture
    # Set for "api" cases: the target is built by its documented constructor from these encoded
    # arguments (conformance.arguments) instead of from ``hp``; ``hp`` is then the canonical
    # equivalent the reference steps with.  Constructor-made parameters are float32 (protocol).
    kwargs: dict | None = None
    # Mixed precision (CAME-DTYPE-4): the gradients' dtype when it is not ``dtype``; the gradients are
    # exact in it.  None: the parameter's dtype.
    grad_dtype: str | None = None
    kind: str = field(default="trajectory", init=False)

    def requires(self) -> frozenset[str]:
        """The protocol options (conformance.protocol.OPTIONS) a target needs to run this case."""
        hp, need = self.hp, set()
        if hp.weight_decay or any(g.weight_decay for g in hp.groups):
            need.add("weight_decay")
        for option in ("scale_parameter", "relative_step", "warmup_init", "compression"):
            if getattr(hp, option):
                need.add(option)
        if hp.loss_scale != 1.0:
            need.add("loss_scale")
        if hp.groups:
            need.add("groups")
        for lr in [hp.learning_rate] + [g.learning_rate for g in hp.groups]:
            if lr is not None and lr.kind == "sequence":
                need.add("lr_sequence")
            if lr is not None and lr.kind == "schedule":
                need.add("lr_schedule")
        if any(p.ndim == 0 for p in self.params):
            need.add("rank0")
        if any(p.size == 0 for p in self.params):
            need.add("zero_size")
        return frozenset(need)


@dataclass
class ErrorCase:
    id: str
    profile: str
    phase: str  # "construction" | "step"
    kwargs: dict  # encoded (conformance.arguments)
    exception: str
    match: str  # regex the message must match: it names the argument
    clause: str
    argument: str
    grads: list | None = None  # encoded, step phase only
    flags: tuple[str, ...] = ()
    source: str = ""
    kind: str = field(default="error", init=False)

    def requires(self) -> frozenset[str]:
        text = json.dumps(self.kwargs)
        need = set()
        if "$schedule" in text:
            need.add("lr_schedule")
        params = self.kwargs.get("params")
        if isinstance(params, list) and any(isinstance(p, dict) and "$param" not in p for p in params):
            need.add("groups")
        return frozenset(need)


def hex_array(a: np.ndarray) -> dict:
    """An array in the fixtures' exact float encoding (fixtures.load.float_to_hex)."""
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "hex": [float_to_hex(x) for x in a.ravel()]}


def array_from_hex(obj: dict) -> np.ndarray:
    return np.array([hex_to_float(h) for h in obj["hex"]], dtype=np.float64).reshape(obj["shape"])


def to_json(case) -> dict:
    if case.kind == "error":
        return {"kind": "error", **{k: getattr(case, k) for k in (
            "id", "profile", "phase", "kwargs", "exception", "match", "clause", "argument", "grads", "source")},
            "flags": list(case.flags)}
    out = {"kind": "trajectory", "id": case.id, "profile": case.profile, "dtype": case.dtype, "kwargs": case.kwargs,
           "flags": list(case.flags), "clauses": list(case.clauses), "source": case.source,
           "hyperparameters": case.hp.to_json(), "params": [hex_array(p) for p in case.params],
           "grads": [[hex_array(g) for g in step] for step in case.grads]}
    if case.grad_dtype:  # only when set, so that the ids of other cases do not change
        out["grad_dtype"] = case.grad_dtype
    return out


def from_json(obj: dict):
    if obj["kind"] == "error":
        fields = {k: v for k, v in obj.items() if k != "kind"}
        fields["flags"] = tuple(fields.get("flags", ()))
        return ErrorCase(**fields)
    return TrajectoryCase(
        id=obj["id"], profile=obj["profile"], hp=Hyperparameters.from_json(obj["hyperparameters"]),
        params=[array_from_hex(p) for p in obj["params"]],
        grads=[[array_from_hex(g) for g in step] for step in obj["grads"]], dtype=obj["dtype"],
        flags=tuple(obj["flags"]), clauses=tuple(obj["clauses"]), source=obj.get("source", ""),
        kwargs=obj.get("kwargs"), grad_dtype=obj.get("grad_dtype"))


def content_id(obj: dict) -> str:
    """A stable id from the case's content (Wycheproof's tcIds renumber; ours do not)."""
    body = {k: v for k, v in obj.items() if k not in ("id", "source", "flags", "clauses")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
