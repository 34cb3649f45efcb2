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
    # Set for cases that start mid-run (CAME-STATE-6): the target is opened at step counter
    # ``start_step`` with state ``start_state`` (Adapter.open_at); step k of ``grads`` is t = start_step + k.
    start_step: int = 0
    start_state: list[dict] | None = None
    # Set for cases whose inputs are generated (fixtures.recipe): ``params`` and ``grads`` come from it,
    # and the case's JSON carries the recipe instead of the tensors (CAME-DEF-4 scale, long horizons).
    recipe: dict | None = None
    kind: str = field(default="trajectory", init=False)

    def starts_mid_run(self) -> bool:
        return bool(self.start_step) or self.start_state is not None

    def requires(self) -> frozenset[str]:
        """The protocol options (conformance.protocol.OPTIONS) a target needs to run this case."""
        hp, need = self.hp, set()
        if self.starts_mid_run():
            need.add("open_at")
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
    # Step phase: encoded gradient lists of the valid steps taken before the failing one (CAME-ERR-A1,
    # CAME-ERR-S5: an exhausted sequence fails at step L + 1).
    grads_before: list | None = None
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
    """The case as exact JSON; the fields added since (mid-run start, recipe, grads_before) only when set,
    so the ids of cases without them do not change."""
    if case.kind == "error":
        out = {"kind": "error", **{k: getattr(case, k) for k in (
            "id", "profile", "phase", "kwargs", "exception", "match", "clause", "argument", "grads", "source")},
            "flags": list(case.flags)}
        if case.grads_before is not None:
            out["grads_before"] = case.grads_before
        return out
    out = {"kind": "trajectory", "id": case.id, "profile": case.profile, "dtype": case.dtype, "kwargs": case.kwargs,
           "flags": list(case.flags), "clauses": list(case.clauses), "source": case.source,
           "hyperparameters": case.hp.to_json()}
    if case.recipe is not None:
        out["recipe"] = case.recipe
    else:
        out.update(params=[hex_array(p) for p in case.params], grads=[[hex_array(g) for g in step] for step in case.grads])
    if case.starts_mid_run():
        out["start_step"] = case.start_step
        out["start_state"] = [{k: hex_array(v) for k, v in s.items()} for s in case.start_state]
    return out


def from_json(obj: dict):
    if obj["kind"] == "error":
        fields = {k: v for k, v in obj.items() if k != "kind"}
        fields["flags"] = tuple(fields.get("flags", ()))
        return ErrorCase(**fields)
    start = obj.get("start_state")
    common = dict(id=obj["id"], profile=obj["profile"], hp=Hyperparameters.from_json(obj["hyperparameters"]),
                  dtype=obj["dtype"], flags=tuple(obj["flags"]), clauses=tuple(obj["clauses"]),
                  source=obj.get("source", ""), kwargs=obj.get("kwargs"), start_step=int(obj.get("start_step", 0)),
                  start_state=None if start is None else [{k: array_from_hex(v) for k, v in s.items()} for s in start])
    if "recipe" in obj:
        from came_conformance.fixtures import recipe

        inputs = recipe.Recipe.from_json(obj["recipe"])
        return TrajectoryCase(params=inputs.params(), grads=inputs.gradients(), recipe=obj["recipe"], **common)
    return TrajectoryCase(params=[array_from_hex(p) for p in obj["params"]],
                          grads=[[array_from_hex(g) for g in step] for step in obj["grads"]], **common)


def content_id(obj: dict) -> str:
    """A stable id from the case's content (Wycheproof's tcIds renumber; ours do not)."""
    body = {k: v for k, v in obj.items() if k not in ("id", "source", "flags", "clauses")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
