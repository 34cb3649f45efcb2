"""Every Hypothesis strategy of the suite, in one place.

Shapes run from 0-D to 4-D with size-1 and (optionally) zero-size axes under a size cap;
hyperparameters cover each profile's valid ranges; gradients span widely different scales
so that clipping, ε-dominated statistics and ordinary steps are all reached; invalid values
are drawn per error-contract clause.  Every draw is labelled so a shrunk example reads well.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import pkgutil

import numpy as np
from hypothesis import strategies as st

from came_conformance.arguments import encode_float
from came_conformance.cases import TrajectoryCase, content_id, to_json
from came_conformance.fixtures.generate import derive_flags, numeric_clauses, run as reference_run
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Group, Hyperparameters, LearningRate

MAX_SIZE = int(os.environ.get("CAME_MAX_ARRAY_SIZE", "64"))

#: The project's modules, all of them: see ``load_project_modules``.  The adapters package is
#: left out: its modules run in the target's worker, never in the runner.  Names of the one
#: namespace, so an installed wheel (which has no top-level ``reference``) loads the same modules.
PROJECT_PACKAGES = ("came_conformance.reference", "came_conformance.fixtures", "came_conformance",
                    "came_conformance.mutants", "came_conformance.distributed")


def load_project_modules() -> None:
    """Make a seed give the same cases whatever the entry point (run, matrix, mutation).

    Hypothesis also draws constants it finds in the project's loaded modules, and keeps the pool
    it first sees: which modules happen to be imported would otherwise change the cases.  Every
    module here guards its command line with ``if __name__ == "__main__"``, so importing is safe.
    """
    for package in PROJECT_PACKAGES:
        for module in pkgutil.iter_modules(importlib.import_module(package).__path__, package + "."):
            if not module.ispkg:
                importlib.import_module(module.name)


def shapes(allow_zero: bool = False, max_dims: int = 4):
    side = st.integers(0 if allow_zero else 1, 5)
    return st.lists(side, min_size=0, max_size=max_dims).map(tuple).filter(
        lambda s: math.prod(s) <= MAX_SIZE)


unit = st.floats(0.0, 1.0, exclude_max=True)


@st.composite
def hyperparameters(draw, profile: str, options: frozenset[str]):
    """Valid canonical hyperparameters of ``profile``, using only ``options`` the target has."""
    lr_kinds = ["constant"] + [k for k, o in (("sequence", "lr_sequence"), ("schedule", "lr_schedule"))
                               if o in options]
    lr_kind = draw(st.sampled_from(lr_kinds), label="lr kind")
    base = draw(st.floats(1e-4, 1.0), label="lr")
    lr = {"constant": LearningRate.constant(base),
          "sequence": LearningRate.sequence([base * (1 + k / 10) for k in range(32)]),
          "schedule": LearningRate.exponential(base, 0.9)}[lr_kind]
    changes = dict(
        learning_rate=lr,
        beta1=draw(unit, label="beta1"),
        beta3=draw(st.floats(0.0, 0.9999), label="beta3"),
        clip_threshold=draw(st.sampled_from([1.0, 0.1, 1e-3, 10.0]), label="clip_threshold"),
        eps1=draw(st.sampled_from([1e-30, 1e-20, 1e-8]), label="eps1"),
        eps_insta=draw(st.sampled_from([1e-16, 1e-10]), label="eps_insta"),
    )
    if "weight_decay" in options:
        changes["weight_decay"] = draw(st.sampled_from([0.0, 0.0, 0.01, 0.5]), label="weight_decay")
    if profile == "paper":
        changes["beta2"] = draw(st.floats(0.0, 0.9999), label="beta2")
    else:
        changes["decay_rate"] = draw(st.floats(0.0, 1.0), label="decay_rate")
        for option in ("scale_parameter",):
            if option in options:
                changes[option] = draw(st.booleans(), label=option)
        if "relative_step" in options and draw(st.booleans(), label="relative_step"):
            changes.update(relative_step=True, learning_rate=None)
            if "warmup_init" in options:
                changes["warmup_init"] = draw(st.booleans(), label="warmup_init")
        if "loss_scale" in options:
            changes["loss_scale"] = draw(st.sampled_from([1.0, 1.0, 1024.0]), label="loss_scale")
        if "compression" in options:
            changes["compression"] = draw(st.booleans(), label="compression")
    return Hyperparameters.defaults(profile, **changes)


def arrays(shape, scale: float, rng_seed: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(rng_seed)
    return round_to(dtype, rng.standard_normal(shape) * scale)


@st.composite
def trajectory_cases(draw, profile: str, dtypes: tuple[str, ...], options: frozenset[str], steps: int = 7,
                     grad_dtypes: dict | None = None):
    """A whole start-and-gradients case for a target that supports ``dtypes`` and ``options``.

    ``grad_dtypes`` (``TargetInfo.grad_dtypes``, CAME-DTYPE-4): the other gradient dtypes the target
    accepts per parameter dtype; drawn only where the target declares some, so the draws of every
    other target stay as they were.
    """
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    grad_dtype = None
    accepted = tuple((grad_dtypes or {}).get(dtype, ()))
    if accepted:
        grad_dtype = draw(st.sampled_from((None,) + accepted), label="gradient dtype")
    count = draw(st.integers(1, 3), label="parameter count")
    param_shapes = [draw(shapes(allow_zero="zero_size" in options), label=f"shape {i}") for i in range(count)]
    if "rank0" not in options:
        param_shapes = [s if s else (1,) for s in param_shapes]
    hp = draw(hyperparameters(profile, options), label="hyperparameters")
    if "groups" in options and count > 1 and draw(st.booleans(), label="groups"):
        hp = dataclasses.replace(hp, groups=(
            Group((0,), learning_rate=None if hp.relative_step else LearningRate.constant(0.05),
                  weight_decay=0.01 if "weight_decay" in options else None),))
    seed = draw(st.integers(0, 2 ** 32 - 1), label="seed")
    scales = [10.0 ** draw(st.integers(-12, 4), label=f"grad scale {k + 1}") for k in range(steps)]
    params = [arrays(s, 1.0, seed + i, dtype) for i, s in enumerate(param_shapes)]
    # Gradients as the optimizer receives them (already times loss_scale), exact in the dtype.
    grads = [[round_to(grad_dtype or dtype, arrays(s, scales[k], seed + 1000 * (k + 1) + i, "float64") * hp.loss_scale)
              for i, s in enumerate(param_shapes)] for k in range(steps)]
    flags = derive_flags(hp, params, reference_run(hp, params, grads, dtype), dtype, grad_dtype)  # fixtures' words
    case = TrajectoryCase("", profile, hp, params, grads, dtype=dtype, flags=tuple(sorted(flags)),
                          clauses=tuple(sorted(numeric_clauses(hp, flags, params))), source="hypothesis",
                          grad_dtype=grad_dtype)
    case.id = "h-" + content_id(to_json(case))
    return case


# Invalid values, per kind of rule (CAME-ERR-*).
non_float = st.one_of(st.integers(-3, 3), st.booleans(), st.text(max_size=3), st.none())
outside_unit = st.one_of(st.floats(max_value=-1e-12, allow_infinity=False, allow_nan=False),
                         st.floats(min_value=1.0 + 1e-12, allow_nan=False, allow_infinity=False),
                         st.just(math.nan))
not_positive = st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(math.nan), st.just(math.inf))
negative = st.one_of(st.floats(max_value=-1e-12, allow_nan=False), st.just(math.nan), st.just(math.inf))


def invalid_argument(clause_id: str, argument: str):
    """Strategy of encoded bad values of ``argument`` under clause ``clause_id``; None if not drawn."""
    f = st.builds(encode_float, outside_unit)
    table = {
        ("CAME-ERR-3", None): non_float,
        ("CAME-ERR-10", None): f,
        ("CAME-ERR-7", "loss_scale"): st.builds(encode_float, not_positive),
        ("CAME-ERR-12", "clip_threshold"): st.builds(encode_float, not_positive),
        ("CAME-ERR-11", "clip_threshold"): non_float,
        ("CAME-ERR-19", "lr"): st.builds(encode_float, negative),
        ("CAME-ERR-23", "weight_decay"): st.builds(encode_float, negative),
        ("CAME-ERR-13", None): st.one_of(st.integers(0, 1), st.none(), st.text(max_size=2)),
    }
    found = table.get((clause_id, argument))
    return found if found is not None else table.get((clause_id, None))


#: Values on the closed side of each documented range (CAME-ERR-*): a target must accept them.
#: (clause, argument, encoded value) per API (conformance.arguments).
VALID_BOUNDARIES = {
    "mindformers": [("CAME-ERR-10", a, v) for a in ("decay_rate", "beta1", "beta3", "weight_decay")
                    for v in (0.0, 1.0)]
    + [("CAME-ERR-7", "loss_scale", 1), ("CAME-ERR-7", "loss_scale", 0.5),
       ("CAME-ERR-12", "clip_threshold", 5e-324), ("CAME-ERR-8", "eps", [5e-324, 5e-324, 5e-324]),
       ("CAME-ERR-14", "learning_rate", 0.0), ("CAME-ERR-14", "learning_rate", [0.0, 0.01])],
    "paper": [("CAME-ERR-21", "betas", {"$tuple": [v, v, v]}) for v in (0.0, 1.0)]
    + [("CAME-ERR-19", "lr", 0.0), ("CAME-ERR-19", "lr", 1), ("CAME-ERR-23", "weight_decay", 0.0),
       ("CAME-ERR-23", "weight_decay", 2.0), ("CAME-ERR-12", "clip_threshold", 5e-324),
       ("CAME-ERR-8", "eps", [5e-324, 5e-324])],
}


def valid_boundary_cases(api: str, base_kwargs: dict) -> list:
    """Construction cases that must NOT raise (``exception`` None): the other side of the contract."""
    from came_conformance.cases import ErrorCase

    out = []
    for clause, argument, value in VALID_BOUNDARIES[api]:
        kwargs = {**base_kwargs, argument: value}
        body = {"kwargs": kwargs, "clause": clause, "argument": argument, "valid": True}
        out.append(ErrorCase("v-" + content_id(body), api, "construction", kwargs, None, "", clause, argument,
                             source=f"boundary:{clause}:{argument}"))
    return out


# --------------------------------------------------------------------------------------------
# Issue 11's families: scale, mid-run starts, non-finite parameters, step errors, return values
# --------------------------------------------------------------------------------------------
#: CAME-DEF-4: lengths of a reduced axis around vector and tile widths (and small ones beside them).
TILE_SIDES = (1, 2, 7, 31, 33, 127, 129, 1023, 1025)
SCALE_MAX_SIZE = 2 ** 17  # per parameter: a Hypothesis scale case costs about a second on the reference


@st.composite
def scale_cases(draw, profile: str, dtypes: tuple[str, ...], options: frozenset[str], steps: int = 3):
    """CAME-DEF-4: 2-D and 3-D parameters whose reduced axes are tile-width lengths, inputs by recipe."""
    from came_conformance.fixtures.recipe import Recipe
    from came_conformance.reference.dtypes import FORMATS

    dtype = "float32" if "float32" in dtypes else dtypes[0]
    side = st.sampled_from(TILE_SIDES)
    shape = st.one_of(st.tuples(side, side), st.tuples(st.integers(2, 3), side, side),
                      st.tuples(st.sampled_from((1023, 1025, 4095, 4097)))).filter(
        lambda s: 1024 <= math.prod(s) <= SCALE_MAX_SIZE)
    shapes_ = tuple(draw(shape, label=f"shape {i}") for i in range(draw(st.integers(1, 2), label="parameter count")))
    # compression is not what this tier is about, and its float16 store underflows for such gradients
    hp = dataclasses.replace(draw(hyperparameters(profile, options), label="hyperparameters"), loss_scale=1.0,
                             compression=False)
    exponents = tuple(draw(st.integers(-12, 4), label=f"grad exponent {k + 1}") for k in range(steps))
    key = f"hypothesis/{draw(st.integers(0, 2 ** 32 - 1), label='seed')}"
    rc = Recipe(key, FORMATS[dtype][0], shapes_, steps, 0, exponents)
    params, grads = list(rc.params()), list(rc.gradients())
    flags = derive_flags(hp, params, reference_run(hp, params, grads, dtype), dtype) | {"Recipe", "TileLengths"}
    case = TrajectoryCase("", profile, hp, rc.params(), rc.gradients(), dtype=dtype, flags=tuple(sorted(flags)),
                          clauses=tuple(sorted(numeric_clauses(hp, flags, params) | {"CAME-DEF-4"})),
                          source="hypothesis:scale", recipe=rc.to_json())
    case.id = "h-" + content_id(to_json(case))
    return case


#: CAME-STATE-6, CAME-LR-5: step counters just before the limits of narrow counters and the crossovers.
START_STEPS = (2045, 2047, 9997, 9999, 10 ** 4, 2 ** 24 - 3, 2 ** 24 - 1, 10 ** 6, 2 ** 31 - 5)


@st.composite
def midrun_cases(draw, profile: str, dtypes: tuple[str, ...], options: frozenset[str], steps: int = 4):
    """Sessions opened at a large step counter (option open_at) with the state of two ordinary steps."""
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    param_shapes = [draw(shapes(), label=f"shape {i}") or (1,) for i in range(draw(st.integers(1, 2), label="count"))]
    hp = dataclasses.replace(draw(hyperparameters(profile, options), label="hyperparameters"), loss_scale=1.0)
    if hp.learning_rate is not None and hp.learning_rate.kind == "sequence":  # 32 values cannot reach t0
        hp = dataclasses.replace(hp, learning_rate=LearningRate.constant(hp.learning_rate.values[0]))
    seed = draw(st.integers(0, 2 ** 32 - 1), label="seed")
    t0 = draw(st.sampled_from(START_STEPS), label="start step")
    params = [arrays(s, 1.0, seed + i, dtype) for i, s in enumerate(param_shapes)]
    warm = [[arrays(s, 1.0, seed + 100 * (k + 1) + i, dtype) for i, s in enumerate(param_shapes)] for k in range(2)]
    last = reference_run(hp, params, warm, dtype)[-1]
    state = [{k: round_to(dtype, v) for k, v in s.items()} for s in last["state"]]
    grads = [[arrays(s, 10.0 ** draw(st.integers(-6, 2), label=f"grad scale {k + 1}"), seed + 1000 * (k + 1) + i,
                     dtype) for i, s in enumerate(param_shapes)] for k in range(steps)]
    start = list(last["params"])
    flags = derive_flags(hp, start, reference_run(hp, start, grads, dtype, (t0, state)), dtype) | {"MidRun"}
    if any(t0 < limit <= t0 + steps for limit in (2048, 2 ** 24)) or t0 + steps == 2 ** 31 - 1:
        flags.add("CounterLimit")  # as the mid-run vectors (fixtures.generate.midrun_vector)
    case = TrajectoryCase("", profile, hp, start, grads, dtype=dtype, flags=tuple(sorted(flags)),
                          clauses=tuple(sorted(numeric_clauses(hp, flags, start))), source="hypothesis:midrun",
                          start_step=t0, start_state=state)
    case.id = "h-" + content_id(to_json(case))
    return case


@st.composite
def nonfinite_param_cases(draw, profile: str, dtypes: tuple[str, ...], options: frozenset[str]):
    """CAME-NONFINITE-2: a trajectory case with ±inf or NaN written into some parameter elements."""
    case = draw(trajectory_cases(profile, dtypes, options, steps=3), label="case")
    sized = [i for i, p in enumerate(case.params) if p.size]
    if not sized:
        return case
    params = [p.copy() for p in case.params]
    for _ in range(draw(st.integers(1, 3), label="non-finite elements")):
        i = draw(st.sampled_from(sized), label="param")
        params[i].reshape(-1)[draw(st.integers(0, params[i].size - 1), label="element")] = draw(
            st.sampled_from([math.inf, -math.inf, math.nan]), label="value")
    flags = derive_flags(case.hp, params, reference_run(case.hp, params, case.grads, case.dtype), case.dtype)
    flags.add("NonFiniteParam")
    out = dataclasses.replace(case, params=params, flags=tuple(sorted(flags)), source="hypothesis:nonfinite",
                              clauses=tuple(sorted(numeric_clauses(case.hp, flags, params))))
    out.id = "h-" + content_id(to_json(out))
    return out


def _grad(shape, dtype="float64", fill="ramp"):
    return {"$array": {"shape": list(shape), "dtype": dtype, **({"fill": fill} if fill else {})}}


@st.composite
def step_error_cases(draw, api: str, base_kwargs: dict):
    """CAME-ERR-S1 … CAME-ERR-S5 after 0 to 3 valid steps: the error, and (atomic.run) that nothing changed."""
    from came_conformance.arguments import params_of
    from came_conformance.cases import ErrorCase
    from came_conformance.reference.contract import BY_ID

    shapes_ = params_of(base_kwargs)
    kinds = ["count", "shape", "dtype", "container"] + (["exhausted"] if api == "mindformers" else [])
    kind = draw(st.sampled_from(kinds), label="error")
    before = draw(st.integers(0, 3), label="valid steps before")
    kwargs, argument = dict(base_kwargs), "gradients"
    valid = [_grad(s) for s in shapes_]
    if kind == "count":
        clause, grads = "CAME-ERR-S1", draw(st.sampled_from([[], valid[:1], valid + valid[:1]]), label="gradients")
    elif kind == "shape":
        i = draw(st.integers(0, len(shapes_) - 1), label="which")
        bad = draw(st.sampled_from([(1,) + tuple(shapes_[i]), tuple(shapes_[i])[::-1] + (1,)]), label="bad shape")
        clause, grads = "CAME-ERR-S2", [_grad(bad) if k == i else g for k, g in enumerate(valid)]
    elif kind == "dtype":
        dt = draw(st.sampled_from(["int32", "int64", "bool", "complex64"]), label="dtype")
        clause, grads = "CAME-ERR-S3", [_grad(s, dt, None) for s in shapes_]
    elif kind == "container":
        clause, grads = "CAME-ERR-S4", draw(st.sampled_from([None, valid[0]]), label="gradients")
    else:  # an exhausted sequence: L values, L valid steps, then one more (CAME-LR-3)
        length = draw(st.integers(1, 3), label="sequence length")
        kwargs["learning_rate"] = [0.01 * (k + 1) for k in range(length)]
        clause, grads, before, argument = "CAME-ERR-S5", valid, length, "learning_rate"
    body = {"kwargs": kwargs, "grads": grads, "before": before, "clause": clause}
    return ErrorCase("h-" + content_id(body), api, "step", kwargs, BY_ID[clause].exception, rf"\b{argument}\b",
                     clause, argument, grads, ("StepPhase",) + (("AfterValidSteps",) if before else ()),
                     f"hypothesis:{clause}", [valid] * before if before else None)


@st.composite
def return_cases(draw, api: str):
    """CAME-RETURN-1: a valid documented constructor call and two steps; what each step returns."""
    import copy

    from came_conformance.adapters.reference import ReferenceAdapter
    from came_conformance.arguments import decode, params_of

    shape = st.sampled_from([[2, 3], [3], [], [1, 4], [2, 2, 3]])
    params = [{"$param": draw(shape, label=f"shape {i}")} for i in range(draw(st.integers(1, 3), label="count"))]
    if api == "mindformers":
        lr = draw(st.sampled_from([0.01, 1, [0.01, 0.02], {"$tensor": 0.01}, {"$tensor": [0.01, 0.02]}]), label="lr")
        kwargs = {"params": params, "learning_rate": lr}
    else:
        kwargs = {"params": params, "lr": draw(st.sampled_from([0.01, 1, 0.0]), label="lr")}
    adapter = ReferenceAdapter(api)
    hp = adapter.construct(decode(copy.deepcopy(kwargs), adapter.native()), "default").optim.hp
    grads = [[np.full(s, 0.25 * (k + 1)) for s in params_of(kwargs)] for k in range(2)]
    case = TrajectoryCase("", api, hp, [np.zeros(s) for s in params_of(kwargs)], grads, dtype="float32",
                          clauses=("CAME-RETURN-1",), source="hypothesis:return", kwargs=kwargs)
    case.id = "h-" + content_id(to_json(case))
    return case


#: Valid boundaries of the params argument (CAME-ERR-28): any iterable, a generator included.
ITERABLE_PARAMS = {"$iter": [{"$param": [2, 3]}, {"$param": [3]}]}
VALID_BOUNDARIES["mindformers"].append(("CAME-ERR-28", "params", ITERABLE_PARAMS))
VALID_BOUNDARIES["paper"] += [("CAME-ERR-28", "params", ITERABLE_PARAMS),
                              ("CAME-ERR-28", "params", [{"params": {"$iter": [{"$param": [2, 3]}]}},
                                                         {"params": [{"$param": [3]}]}])]
