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
import re
from dataclasses import dataclass, field

import numpy as np

from came_conformance.fixtures.load import float_to_hex, hex_to_float
from came_conformance.reference import contract
from came_conformance.reference.dtypes import DTYPES, round_to
from came_conformance.reference.hyperparams import PROFILES, Hyperparameters, check_ranges
from came_conformance.reference.step import state_shapes


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
    # A sharded case (spec §9): each parameter's layout (conformance.distributed.layout); the world
    # size is the variant's.  None: the variant's default layouts.
    layouts: tuple[str, ...] | None = None
    # Mixed precision (CAME-DTYPE-4): the gradients' dtype when it is not ``dtype``; the gradients are
    # exact in it.  None: the parameter's dtype.
    grad_dtype: str | None = None
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
    if case.layouts:  # only when set, so that the ids of other cases do not change
        out["layouts"] = list(case.layouts)
    if case.grad_dtype:
        out["grad_dtype"] = case.grad_dtype
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
                  start_state=None if start is None else [{k: array_from_hex(v) for k, v in s.items()} for s in start],
                  layouts=tuple(obj["layouts"]) if obj.get("layouts") else None, grad_dtype=obj.get("grad_dtype"))
    if "recipe" in obj:
        from came_conformance.fixtures import recipe

        inputs = recipe.Recipe.from_json(obj["recipe"])
        return TrajectoryCase(params=inputs.params(), grads=inputs.gradients(), recipe=obj["recipe"], **common)
    return TrajectoryCase(params=[array_from_hex(p) for p in obj["params"]],
                          grads=[[array_from_hex(g) for g in step] for step in obj["grads"]], **common)


class InvalidCase(ValueError):
    """A case that cannot be judged (no steps, no parameters, bad hyperparameters, ...): a usage error."""


def validate(case) -> None:
    """Refuse a case that would prove nothing or cannot be run (issue: crafted case files must not pass).

    Trajectories: a known profile and dtype, at least one parameter and one step, one gradient per
    parameter of its shape at every step, every input exact in the dtype, hyperparameters in range
    (reference.hyperparams.check_ranges).  Error cases: a contract row of the profile and phase, its
    argument, the row's exception (or None for a value the contract accepts), and a ``match`` pattern
    that compiles and names the argument.  InvalidCase names the field and the rule.
    """
    def bad(field: str, rule: str) -> None:
        raise InvalidCase(f"case {case.id!r}: {field}: {rule}")

    if case.profile not in PROFILES:
        bad("profile", f"must be one of {PROFILES}, got {case.profile!r}")
    if case.kind == "error":
        row = contract.BY_ID.get(case.clause)
        if row is None or case.profile not in row.profiles:
            bad("clause", f"must be an error-contract row of the {case.profile} API, got {case.clause!r}")
        if case.phase != row.phase:
            bad("phase", f"{case.clause} is a {row.phase}-phase row, got {case.phase!r}")
        if case.argument not in row.arguments:
            bad("argument", f"must be one of {row.arguments}, got {case.argument!r}")
        if case.exception not in (row.exception, None):
            bad("exception", f"{case.clause} requires {row.exception} (or null for an accepted value)")
        if case.exception is not None:
            try:
                names = re.search(case.match, case.argument, re.IGNORECASE) if case.match else None
            except re.error as exc:
                bad("match", f"must be a regular expression ({exc})")
            if not names:
                bad("match", f"must be a non-empty pattern that matches the argument's name {case.argument!r}")
        if row.phase == "step" and not isinstance(case.grads, list):
            bad("grads", "a step-phase case needs the encoded gradients of its step")
        return
    if case.dtype not in DTYPES:
        bad("dtype", f"must be one of {DTYPES}, got {case.dtype!r}")
    if not case.params:
        bad("params", "needs at least one parameter")
    if not case.grads:
        bad("grads", "needs at least one step")
    for k, step in enumerate(case.grads, start=1):
        if len(step) != len(case.params):
            bad(f"grads[{k - 1}]", f"step {k} has {len(step)} gradients for {len(case.params)} parameters")
        for i, (g, p) in enumerate(zip(step, case.params)):
            if np.shape(g) != np.shape(p):
                bad(f"grads[{k - 1}][{i}]", f"shape {np.shape(g)} differs from its parameter's {np.shape(p)}")
    if not isinstance(case.start_step, int) or case.start_step < 0:
        bad("start_step", f"must be an integer >= 0, got {case.start_step!r}")
    if case.start_state is not None:  # CAME-STATE-6: one state per parameter, the spec's tensors and shapes
        if len(case.start_state) != len(case.params):
            bad("start_state", f"has {len(case.start_state)} states for {len(case.params)} parameters")
        for i, (state, p) in enumerate(zip(case.start_state, case.params)):
            want = state_shapes(np.shape(p))
            got = {k: np.shape(v) for k, v in state.items()}
            if got != want:
                bad(f"start_state[{i}]", f"must hold {want} for a parameter of shape {np.shape(p)}, got {got}")
    if case.grad_dtype is not None and case.grad_dtype not in DTYPES:
        bad("grad_dtype", f"must be one of {DTYPES} or absent, got {case.grad_dtype!r}")
    grad_dtype = case.grad_dtype or case.dtype  # CAME-DTYPE-4: mixed precision
    for label, x, dtype in [(f"params[{i}]", p, case.dtype) for i, p in enumerate(case.params)] + \
            [(f"grads[{k}][{i}]", g, grad_dtype) for k, step in enumerate(case.grads) for i, g in enumerate(step)]:
        if not np.array_equal(round_to(dtype, x), x, equal_nan=True):
            bad(label, f"values must be exact in {dtype}")
    try:
        check_ranges(case.hp, len(case.params))
    except ValueError as exc:
        bad("hyperparameters", str(exc))


MAX_CASE_FILE_BYTES = 64 << 20


#: What a saved case's ``check`` field may name: the check of its own record kind that made it
#: (conformance.atomic, conformance.returns); absent for ordinary trajectory and error records.
CASE_FILE_CHECKS = ("atomic", "return")


def load_case_file(path) -> "tuple[TrajectoryCase | ErrorCase, str | None]":
    """A saved case (``--case-file``), parsed and validated, and the check that made it (``CASE_FILE_CHECKS``
    or None); InvalidCase names the file and the problem.

    The file is the runner's ``cases/<id>.json`` (``{"run_id", "target", "variant", "case"}``) or a
    bare case; its id must be a content hash (``names.CASE_ID``) before it may name any file.
    """
    from pathlib import Path

    from came_conformance.names import is_case_id

    try:
        if Path(path).stat().st_size > MAX_CASE_FILE_BYTES:
            raise InvalidCase(f"--case-file {path}: larger than {MAX_CASE_FILE_BYTES:,} bytes")
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
        if isinstance(obj, dict) and isinstance(obj.get("case"), dict):
            obj = obj["case"]
        case_id = obj.get("id") if isinstance(obj, dict) else None
        if not is_case_id(case_id):
            raise InvalidCase(f"--case-file {path}: id {str(case_id)[:80]!r} is not a case id (a content hash "
                              f"such as h-0123456789abcdef)")
        if obj.get("kind") not in ("trajectory", "error"):
            raise InvalidCase(f"--case-file {path}: kind must be 'trajectory' or 'error', got "
                              f"{str(obj.get('kind'))[:40]!r}")
        check = obj.get("check")
        if check is not None and check not in CASE_FILE_CHECKS:
            raise InvalidCase(f"--case-file {path}: check must be one of {CASE_FILE_CHECKS} or absent, got "
                              f"{str(check)[:40]!r}")
        case = from_json({k: v for k, v in obj.items() if k != "check"})
    except InvalidCase:
        raise
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidCase(f"--case-file {path}: not a readable case ({type(exc).__name__}: {exc})") from None
    try:
        validate(case)
    except InvalidCase as exc:
        raise InvalidCase(f"--case-file {path}: {exc}") from None
    return case, check


def content_id(obj: dict) -> str:
    """A stable id from the case's content (Wycheproof's tcIds renumber; ours do not)."""
    body = {k: v for k, v in obj.items() if k not in ("id", "source", "flags", "clauses")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
