"""Lock-step comparison of a target with the reference, step by step (docs/tolerances.md).

Before step t the reference is restarted from the target's own parameters and state after
step t − 1, and within the step each stored tensor is judged from the target's own values of
the tensors its clause reads (``conformance.tolerance``), so what is judged is one clause's
arithmetic, never the accumulation of honest rounding; the accumulated error against an
uninterrupted reference run is reported next to it.  Tensors are checked in the order the spec
computes them, so the first one that fails names the equation that is wrong.

A stored value is judged on the grid of the dtype it is stored in (CAME-DTYPE-2, CAME-DTYPE-3):
it must be a value of that dtype, and lie between the roundings of the two ends of the interval
a correct target's unrounded value can be in.  When that interval holds no rounding boundary
this is one value: the correctly rounded one (compression's float16 store, CAME-OPT-5, is the
case the spec names).
"""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

from came_conformance import blockwise
from came_conformance import precision as precision_mod
from came_conformance import tolerance
from came_conformance.reference import step as came_step
from came_conformance.reference.dtypes import FORMATS, round_to, ulp

#: Computation order of the compared tensors (CAME-STEP-3 … CAME-STEP-12).
ORDER = tolerance.ORDER
#: Conditioning below which a tensor's elements count as well conditioned in ``rel_bound``.
WELL_CONDITIONED = 2.0


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
    rel_bound: float | None = None  # max tolerance / |reference| over well-conditioned elements (tightness)
    store: str | None = None  # the dtype whose grid the value was judged on

    def to_json(self) -> dict:
        return asdict(self)


def _same_special(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """NaN matches NaN; an infinity matches the same infinity (CAME-NONFINITE-1)."""
    return (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))


def _elements(target, reference, normative, bound, condition, store: str) -> dict[str, np.ndarray]:
    """The comparator's verdict per element (the module docstring's rule); elementwise, so it runs in blocks."""
    with np.errstate(all="ignore"):
        undefined = ~np.isfinite(bound) & np.isfinite(reference)  # no bound: only the exact rounding passes
        b = np.where(np.isfinite(bound), bound, 0.0)
        lo, hi = round_to(store, reference - b), round_to(store, reference + b)
        nearest = round_to(store, reference)
        lo, hi = np.where(undefined, nearest, lo), np.where(undefined, nearest, hi)
        on_grid = (round_to(store, target) == target) | ~np.isfinite(target)
        inside = (target >= lo) & (target <= hi)
        err = np.abs(target - reference)
        special = _same_special(target, normative)
        special |= np.isinf(target) & (target == nearest) & np.isfinite(normative)  # CAME-DTYPE-2: overflow
        err = np.where(special, 0.0, err)
        err = np.where(np.isnan(err), np.inf, err)  # one side NaN only
        tol = np.where(target >= reference, hi - reference, reference - lo)
        tol = np.where(np.isfinite(tol), tol, 0.0)
        ratio = np.where(err == 0, 0.0, err / np.where(tol > 0, tol, np.finfo(np.float64).tiny))
        ratio = np.where(on_grid | special, ratio, np.inf)
        ulps = np.where(err == 0, 0.0, err / ulp(store, np.where(np.isfinite(reference), reference, 0.0)))
        rel = err / np.maximum(np.abs(reference), np.finfo(np.float64).tiny)
        width = np.maximum(hi - reference, reference - lo)
        normal = np.abs(reference) >= FORMATS[store][1]  # below the normal range the grid is absolute
        wc = (condition <= WELL_CONDITIONED) & np.isfinite(reference) & normal & np.isfinite(width)
        well_conditioned_width = np.where(wc, width / np.abs(reference), -np.inf)
    bad = ~((inside & on_grid) | special)
    bad |= ~(np.isfinite(target) & np.isfinite(normative)) & ~special  # CAME-NONFINITE-1: exact match
    return {"bad": bad, "ratio": ratio, "ulps": ulps, "err": err, "rel": rel, "wc_width": well_conditioned_width,
            "undefined": undefined, "on_grid": on_grid, "width": width}


def _summary(target, reference, normative, bound, condition, store: str, start: int) -> dict:
    """The maxima of one block of flat elements, and where its first failure and its worst ratio are."""
    el = _elements(target, reference, normative, bound, condition, store)
    bad = el["bad"]
    first_bad = int(np.argmax(bad)) if bad.any() else None
    worst = int(np.argmax(el["ratio"]))
    return {"first_bad": None if first_bad is None else start + first_bad, "worst": start + worst,
            "worst_ratio": float(el["ratio"][worst]), "max_ulps": float(np.max(el["ulps"])),
            "max_abs": float(np.max(el["err"])), "max_rel": float(np.max(el["rel"])),
            "rel_bound": float(np.max(el["wc_width"]))}


def _flat(a, shape) -> np.ndarray:
    """``a`` as a flat array of ``shape``'s elements, or a 0-d scalar that broadcasts over them."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        return a
    return (a if a.shape == shape else np.broadcast_to(a, shape)).reshape(-1)


def _summaries(arrays: list, store: str, size: int) -> list[dict]:
    """``_summary`` over blocks of the flat elements, on two threads when the tensor is large."""
    if size < blockwise.PARALLEL_FROM:
        return [_summary(*arrays, store, 0)]
    step = blockwise.BLOCK
    out: dict[int, dict] = {}

    def one(lo):
        hi = min(lo + step, size)
        out[lo] = _summary(*[a if a.ndim == 0 else a[lo:hi] for a in arrays], store, lo)

    blockwise.run_on_two_threads(functools.partial(one, lo) for lo in range(0, size, step))
    return [out[lo] for lo in sorted(out)]


def check_tensor(step: int, param: int, judged: tolerance.Judged, target, unconditional=None) -> TensorCheck:
    """Is the target's stored tensor what a correct target stores?  (the module docstring's rule)

    ``unconditional`` is the reference's value restarted from the step's inputs alone: where it is
    non-finite the target must match it in kind, and where it is finite the target must be finite
    (CAME-NONFINITE-1), whatever the target's own earlier tensors would imply.  Large tensors are
    judged in blocks on two threads (``conformance.blockwise``), with the same result.
    """
    name, store = judged.name, judged.store
    clause = came_step.DEFINING_CLAUSE[name]
    target = np.asarray(target, dtype=np.float64)
    reference = np.asarray(judged.reference, dtype=np.float64)
    normative = reference
    if unconditional is not None and np.shape(unconditional) == reference.shape:
        normative = np.asarray(unconditional, dtype=np.float64)
        with np.errstate(all="ignore"):
            reference = np.where(np.isfinite(normative), reference, normative)  # NaN and ±inf as they are
    if target.shape != reference.shape:
        return TensorCheck(step, param, name, "CAME-STATE-2" if name != "theta" else clause, False, np.inf, np.inf,
                           np.inf, np.inf, note=f"shape {target.shape}, the spec's shape is {reference.shape}",
                           store=store)
    if target.size == 0:
        return TensorCheck(step, param, name, clause, True, 0.0, 0.0, 0.0, 0.0, store=store)
    shape = target.shape
    arrays = [a.reshape(-1) for a in (target, reference, normative)]
    arrays += [_flat(judged.bound, shape), _flat(judged.condition, shape)]
    parts = _summaries(arrays, store, target.size)
    failing = [p["first_bad"] for p in parts if p["first_bad"] is not None]
    ok = not failing
    def top(key: str) -> float:  # np.max, not max(): a NaN (rel at a NaN reference) propagates as before
        return float(np.max([p[key] for p in parts]))

    worst_ratio = top("worst_ratio")
    # the first failing element (C order), or the first element of the worst ratio
    flat = failing[0] if not ok else next(p["worst"] for p in parts if p["worst_ratio"] == worst_ratio)
    rel_bound = top("rel_bound")
    at = _elements(*[a if a.ndim == 0 else a[flat:flat + 1] for a in arrays], store)
    index = [int(i) for i in np.unravel_index(flat, shape)]
    note = ""
    if not ok and at["undefined"][0]:
        note = "the tolerance model gives no bound here, so only the correctly rounded value passes"
    elif not ok and not at["on_grid"][0]:
        note = f"the value is not a {store} value, the dtype the target declares for it"
    elif judged.exact_rounding:
        note = "compression: the stored value must be the float16 rounding of v' [CAME-OPT-5]" if not ok else ""
    shown = reference.reshape(-1)[flat]
    if not np.isfinite(shown):  # the value the target had to match: the spec's, when the clause's is not finite
        shown = normative.reshape(-1)[flat]
    return TensorCheck(step, param, name, clause, ok, top("max_ulps"), top("max_abs"), top("max_rel"), worst_ratio, index,
                       float(target.reshape(-1)[flat]), float(shown), float(at["width"][0]), note,
                       float(at["ulps"][0]), rel_bound if rel_bound > -np.inf else None, store)


def resolve_precision(dtype: str, precision) -> precision_mod.Precision:
    """A ``Precision``, or (older callers) a state dtype name: compute in the state's dtype."""
    if isinstance(precision, precision_mod.Precision):
        return precision
    return precision_mod.resolve(dtype, state_dtype={dtype: precision})


def check_step(step: int, hp_of, prev_params, prev_state, grads, snapshot, dtype: str, precision,
               regimes: set | None = None):
    """All checks of one step: each parameter's tensors judged from the target's own values.

    ``precision`` is the target's ``Precision`` for this dtype (``conformance.precision``).
    ``regimes`` collects what the step exercised (``clip_active``), for the compliance matrix.
    """
    prec = resolve_precision(dtype, precision)
    checks: list[TensorCheck] = []
    for i, (theta, grad) in enumerate(zip(prev_params, grads)):
        expected = came_step.state_shapes(np.shape(theta))
        got = snapshot.state[i] if i < len(snapshot.state) else {}
        missing = [n for n in expected if n not in got]
        if missing:
            checks.append(TensorCheck(step, i, missing[0], "CAME-STATE-2", False, np.inf, np.inf, np.inf, np.inf,
                                      note=f"the target exposes no state tensor {missing}"))
            continue
        shaped = [n for n in expected if np.shape(got[n]) != expected[n]]
        if shaped:  # the clauses cannot be evaluated from state of other shapes
            n = shaped[0]
            checks.append(TensorCheck(step, i, n, "CAME-STATE-2", False, np.inf, np.inf, np.inf, np.inf,
                                      note=f"shape {np.shape(got[n])}, the spec's shape is {expected[n]}"))
            continue
        hyper = hp_of(i)
        judged, exercised = tolerance.step_model(theta, grad, prev_state[i], got, hyper, prec)
        unconditional = came_step.step(theta, grad, prev_state[i], hyper, trace=False)
        if regimes is not None and exercised.get("clip_active"):
            regimes.add("clip_active")
        for name in ORDER:
            if name in judged:
                target = snapshot.params[i] if name == "theta" else got[name]
                plain = unconditional.theta if name == "theta" else unconditional.state.get(name)
                checks.append(check_tensor(step, i, judged[name], target, plain))
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
