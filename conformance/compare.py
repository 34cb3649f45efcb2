"""Lock-step comparison of a target with the reference, step by step (docs/tolerances.md).

Before step t the reference is restarted from the target's own parameters and state after
step t − 1, so what is judged is one step's arithmetic, never the accumulation of honest
rounding; the accumulated error against an uninterrupted reference run is reported next to it.
Tensors are checked in the order the spec computes them, so the first one that fails names
the equation that is wrong.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from came_conformance import tolerance
from came_conformance.reference import step as came_step
from came_conformance.reference.dtypes import FORMATS, round_to, ulp, unit_roundoff

#: Computation order of the compared tensors (CAME-STEP-3 … CAME-STEP-12).
ORDER = ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq", "exp_avg", "exp_avg_insta_row", "exp_avg_insta_col",
         "theta")


def denorm_min(dtype: str) -> float:
    p, tiny, _ = FORMATS[dtype]
    return tiny * 2.0 ** (1 - p)


@dataclass
class TensorCheck:
    step: int
    param: int
    tensor: str
    clause: str
    ok: bool
    max_ulps: float  # in ulps of the tensor's dtype at the reference value
    max_abs: float
    max_rel: float
    worst_bound_ratio: float  # max |error| / tolerance; <= 1 passes
    index: list[int] | None = None  # first failing element (C order), or the worst one
    target_value: float | None = None
    reference_value: float | None = None
    tolerance: float | None = None
    note: str = ""
    element_ulps: float | None = None  # the error at ``index``, in ulps of the tensor's dtype

    def to_json(self) -> dict:
        return asdict(self)


def _same_special(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NaN matches NaN; an infinity matches the same infinity (CAME-NONFINITE-1)."""
    return (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))


def check_tensor(step: int, param: int, name: str, target, reference, bound, dtype: str,
                 compute_dtype: str) -> TensorCheck:
    clause = came_step.DEFINING_CLAUSE[name]
    target = np.asarray(target, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if target.shape != reference.shape:
        return TensorCheck(step, param, name, "CAME-STATE-2" if name != "theta" else clause, False, np.inf, np.inf,
                           np.inf, np.inf, note=f"shape {target.shape}, the spec's shape is {reference.shape}")
    if target.size == 0:
        return TensorCheck(step, param, name, clause, True, 0.0, 0.0, 0.0, 0.0)
    # Underflow is absolute: 16 subnormal spacings of the compute dtype (a handful per operation of
    # the chain) and one of the stored dtype, outside the relative model (docs/tolerances.md §2).
    floor = 16 * denorm_min(compute_dtype) + denorm_min(dtype)
    bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), target.shape)
    undefined = ~np.isfinite(bound) & np.isfinite(reference)  # the model gives no bound: exact match only
    tol = np.where(undefined, 0.0, tolerance.SAFETY * np.where(np.isfinite(bound), bound, 0.0)) + floor
    with np.errstate(all="ignore"):
        err = np.abs(target - reference)
        special = _same_special(target, reference)
        if dtype != "float64":  # CAME-DTYPE-2: beyond the dtype's range the stored value is +-inf
            special |= np.isinf(target) & (target == round_to(dtype, reference))
            # Where the model has no bound only an exact match passes: exact as stored, that is the
            # reference rounded to the tensor's dtype (its one rounding is known, not estimated).
            special |= undefined & (target == round_to(dtype, reference))
        err = np.where(special, 0.0, err)
        err = np.where(np.isnan(err), np.inf, err)  # one side NaN only
        ratio = np.where(err == 0, 0.0, err / tol)
        ulps = np.where(err == 0, 0.0, err / ulp(dtype, np.where(np.isfinite(reference), reference, 0.0)))
        rel = err / np.maximum(np.abs(reference), np.finfo(np.float64).tiny)
    bad = ~(ratio <= 1.0)
    bad |= ~(np.isfinite(target) & np.isfinite(reference)) & ~special  # CAME-NONFINITE-1: exact match
    ok = not bad.any()
    flat = int(np.argmax(bad.ravel())) if not ok else int(np.argmax(ratio.ravel()))
    index = [int(i) for i in np.unravel_index(flat, target.shape)]
    note = "the tolerance model gives no bound here, so only an exact match passes" \
        if not ok and undefined.ravel()[flat] else ""
    return TensorCheck(step, param, name, clause, ok, float(np.max(ulps)), float(np.max(err)), float(np.max(rel)),
                       float(np.max(ratio)), index, float(target.ravel()[flat]), float(reference.ravel()[flat]),
                       float(tol.ravel()[flat]), note, float(ulps.ravel()[flat]))


def check_step(step: int, hp_of, prev_params, prev_state, grads, snapshot, dtype: str, state_dtype: str,
               regimes: set | None = None):
    """All checks of one step: the reference restarted from the target's previous snapshot.

    ``regimes`` collects what the step exercised (``clip_active``), for the compliance matrix.
    """
    checks: list[TensorCheck] = []
    for i, (theta, grad) in enumerate(zip(prev_params, grads)):
        hyper = hp_of(i)
        expected_names = came_step.state_shapes(np.shape(theta))
        got = snapshot.state[i] if i < len(snapshot.state) else {}
        missing = [n for n in expected_names if n not in got]
        if missing:
            checks.append(TensorCheck(step, i, missing[0], "CAME-STATE-2", False, np.inf, np.inf, np.inf, np.inf,
                                      note=f"the target exposes no state tensor {missing}"))
            continue
        result = came_step.step(theta, grad, prev_state[i], hyper)
        if regimes is not None and result.trace.get("clip_divisor", 1.0) > 1.0:
            regimes.add("clip_active")
        bounds_target = tolerance.step_bounds(theta, grad, prev_state[i], result.trace, hyper,
                                              unit_roundoff(state_dtype))
        bounds_ref = tolerance.step_bounds(theta, grad, prev_state[i], result.trace, hyper,
                                           unit_roundoff("float64"))
        for name in ORDER:
            if name == "theta":
                target, reference, out_dtype = snapshot.params[i], result.theta, dtype
            elif name in expected_names:
                target, reference, out_dtype = got[name], result.state[name], state_dtype
            else:
                continue
            with np.errstate(all="ignore"):
                bound = bounds_target.get(name, 0.0) + bounds_ref.get(name, 0.0)
                if out_dtype != state_dtype:  # the final store rounds to the parameter's dtype
                    bound = bound + unit_roundoff(out_dtype) * np.abs(reference) / tolerance.SAFETY
            checks.append(check_tensor(step, i, name, target, reference, bound, out_dtype, state_dtype))
    return checks


def accumulated_ulps(step: int, snapshot, reference_params, reference_state, dtype: str) -> dict[str, float]:
    """Max error, in ulps of the target's dtype, against the uninterrupted reference trajectory."""
    out: dict[str, float] = {}
    with np.errstate(all="ignore"):
        for i, ref_theta in enumerate(reference_params):
            pairs = [("theta", snapshot.params[i], ref_theta)]
            pairs += [(k, snapshot.state[i].get(k), v) for k, v in reference_state[i].items()]
            for name, got, want in pairs:
                if got is None or np.shape(got) != np.shape(want) or np.size(want) == 0:
                    continue
                err = np.abs(np.asarray(got, np.float64) - want)
                err = np.where(_same_special(np.asarray(got, np.float64), want), 0.0, err)
                val = float(np.max(np.where(np.isnan(err), np.inf, err) / ulp(dtype, want)))
                out[name] = max(out.get(name, 0.0), val)
    return out
