"""CAME in an emulated precision and evaluation order: the calibration target of the tolerance model.

``step(θ, G, state, hp, dtype, variant)`` is one step (spec/came.md §4) computed as a port computes
it: every elementwise result rounded to ``variant.compute`` (NumPy float32 and float16 semantics,
bfloat16 with correct rounding, or, with ``opmath``, through float32 first as torch and MindSpore do
for half tensors), the hyperparameters held in ``variant.scalars``, every reduction added in
``variant.accumulate`` in the order ``variant.summation``, the state stored in ``variant.state``,
and the parameter rounded into its dtype.  The evaluation order is a choice too: multiply-add or
lerp EMA, 1/sqrt or a correctly rounded rsqrt, RMS as sqrt(mean) or ‖·‖/√N, decay as a subtraction
or a scaling, clipping by a division or a reciprocal.  Every such variant is a correct port, and
the tolerance model must pass it (tests/test_tolerance_model.py, docs/tolerances.md).

``bugs`` switch on realistic mistakes the model must reject in every dtype: ``rms_after_decay``
(RMS(θ) for scale_parameter taken after weight decay), ``vector_momentum_small`` (the 1-D first
moment 100 times too small, pytorch-optimizer 3.11.0's aliasing bug), and, in ``trajectory``,
``lr_late`` (a learning-rate sequence read one step late) and ``group_wd_ignored`` (a group's
weight_decay ignored).  This module is written from the spec, not from ``reference.step``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from came_conformance.precision import Precision
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Hyperparameters
from came_conformance.reference.step import StepHyper, init_state, is_factored

BUGS = frozenset({"rms_after_decay", "vector_momentum_small", "lr_late", "group_wd_ignored"})


@dataclass(frozen=True)
class Variant:
    """One correct way (with ``bugs`` empty) to compute a CAME step in limited precision."""

    compute: str = "float32"
    state: str | None = None  # None: the parameter's dtype
    scalars: str = "float32"
    accumulate: str = "float32"
    summation: str = "pairwise"  # "recursive", "pairwise" or "blocked:B"
    ema: str = "muladd"  # "muladd" or "lerp" (torch.lerp's two branches)
    rsqrt: str = "recip_sqrt"  # "recip_sqrt" (two roundings) or "rsqrt" (correctly rounded)
    rms: str = "sqrt_mean"  # "sqrt_mean" or "norm" (‖U‖₂ / √N)
    decay: str = "subtract"  # "subtract" (θ − ηλθ) or "scale" (θ·(1 − ηλ))
    clip: str = "divide"  # "divide" or "reciprocal"
    opmath: bool = False  # half arithmetic done in float32, then rounded (double rounding)
    use_stored: bool = True  # later clauses read the stored (possibly coarser) state
    bugs: frozenset = field(default_factory=frozenset)

    def __post_init__(self):
        unknown = set(self.bugs) - BUGS
        if unknown:
            raise ValueError(f"unknown bugs {sorted(unknown)}; known: {sorted(BUGS)}")

    def precision(self, param: str, grad: str | None = None) -> Precision:
        """What a port computing this way declares (conformance.precision)."""
        return Precision(param=param, state=self.state or param, compute=self.compute, scalars=self.scalars,
                         accumulate=self.accumulate, summation=self.summation,
                         grad=grad if grad and grad != param else None)


class _Arith:
    """The rounding of one variant."""

    def __init__(self, v: Variant, param: str):
        self.v, self.param = v, param
        self.state = v.state or param

    def c(self, x):
        """One elementwise result, rounded to the compute precision."""
        if self.v.opmath and self.v.compute in ("float16", "bfloat16"):
            x = round_to("float32", x)
        return round_to(self.v.compute, x)

    def s(self, x: float) -> float:
        return float(round_to(self.v.scalars, x))

    def a(self, x):
        return round_to(self.v.accumulate, x)

    def total(self, x, axis):
        """An n-term sum along ``axis`` in the accumulate precision, in the variant's order."""
        x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
        kind, _, block = self.v.summation.partition(":")
        if kind == "recursive":
            return self._in_turn(x)
        if kind == "blocked":
            b = int(block)
            parts = [self._in_turn(x[..., k:k + b]) for k in range(0, x.shape[-1], b)]
            return self._in_turn(np.stack(parts, axis=-1))
        return self._pairwise(x)

    def _in_turn(self, x):
        acc = x[..., 0].copy() if x.shape[-1] else np.zeros(x.shape[:-1])
        for k in range(1, x.shape[-1]):
            acc = self.a(acc + x[..., k])
        return self.a(acc)

    def _pairwise(self, x):
        n = x.shape[-1]
        if n <= 2:
            return self._in_turn(x)
        half = n // 2
        return self.a(self._pairwise(x[..., :half]) + self._pairwise(x[..., half:]))

    def mean(self, x, axis=None):
        if axis is None:
            x = np.asarray(x).reshape(-1)
            axis = -1
        n = np.shape(x)[axis]
        return self.c(self.a(self.total(x, axis) / float(self.a(float(n)))))

    def recip_sqrt(self, x):
        if self.v.rsqrt == "rsqrt":
            return self.c(1.0 / np.sqrt(x))  # correctly rounded from the float64 value
        return self.c(1.0 / self.c(np.sqrt(x)))

    def rms(self, x):
        sq = self.c(x * x)
        if self.v.rms == "norm":
            return self.c(self.c(np.sqrt(self.a(self.total(sq.reshape(-1), -1)))) / self.s(math.sqrt(sq.size)))
        return self.c(np.sqrt(self.mean(sq)))

    def ema(self, old, new, beta: float):
        b, w = self.s(beta), self.s(1.0 - beta)
        if self.v.ema == "lerp":  # torch.lerp(old, new, w)
            diff = self.c(new - old)
            if w < 0.5:
                return self.c(old + self.c(w * diff))
            return self.c(new - self.c(self.c(1.0 - w) * diff))
        return self.c(self.c(b * old) + self.c(w * new))

    def factor(self, row, col):
        ratio = self.c(row / self.mean(row, axis=-1)[..., None])
        return self.c(self.recip_sqrt(ratio)[..., :, None] * self.recip_sqrt(col)[..., None, :])


def step(theta, grad, state: dict, hp: StepHyper, dtype: str, variant: Variant = Variant()):
    """One step of one parameter in ``variant``'s precision: (θ′ in ``dtype``, state′ as stored)."""
    ar = _Arith(variant, dtype)
    bugs = variant.bugs
    theta = np.asarray(theta, np.float64)
    old = {k: np.asarray(v, np.float64) for k, v in state.items()}
    if theta.size == 0:  # CAME-ZERO-1
        return theta.copy(), {k: v.copy() for k, v in old.items()}
    new: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):
        g = ar.c(np.asarray(grad, np.float64))  # CAME-STEP-1
        if hp.loss_scale != 1.0:
            g = ar.c(g / ar.s(hp.loss_scale))
        q = ar.c(ar.c(g * g) + ar.s(hp.eps1))  # CAME-STEP-2
        if is_factored(theta.shape):  # CAME-STEP-3, CAME-STEP-4
            stats = {}
            for name, axis in (("exp_avg_sq_row", -1), ("exp_avg_sq_col", -2)):
                value = ar.ema(ar.c(old[name]), ar.mean(q, axis=axis), hp.beta2)
                new[name] = round_to(ar.state, value)
                stats[name] = new[name] if variant.use_stored else value
            update = ar.c(ar.factor(stats["exp_avg_sq_row"], stats["exp_avg_sq_col"]) * g)
        else:  # CAME-STEP-3V (CAME-OPT-5), CAME-STEP-4V
            value = ar.ema(ar.c(old["exp_avg_sq"]), q, hp.beta2)
            if hp.compression:
                value = round_to("float16", value)
            new["exp_avg_sq"] = round_to("float16" if hp.compression else ar.state, value)
            used = new["exp_avg_sq"] if (variant.use_stored or hp.compression) else value
            update = ar.c(g * ar.recip_sqrt(used))
        ratio = ar.c(ar.rms(update) / ar.s(hp.clip_threshold))  # CAME-STEP-5
        divisor = max(1.0, float(ratio)) if np.isfinite(ratio) else float(ratio)
        if divisor != 1.0:
            update = ar.c(update / divisor) if variant.clip == "divide" else ar.c(update * ar.c(1.0 / divisor))
        m = ar.ema(ar.c(old["exp_avg"]), update, hp.beta1)  # CAME-STEP-6
        if "vector_momentum_small" in bugs and not is_factored(theta.shape):
            m = ar.c(m * 0.01)
        new["exp_avg"] = round_to(ar.state, m)
        m_used = new["exp_avg"] if variant.use_stored else m
        if is_factored(theta.shape):  # CAME-STEP-7 … CAME-STEP-9
            diff = ar.c(update - m_used)
            instability = ar.c(ar.c(diff * diff) + ar.s(hp.eps_insta))
            stats = {}
            for name, axis in (("exp_avg_insta_row", -1), ("exp_avg_insta_col", -2)):
                value = ar.ema(ar.c(old[name]), ar.mean(instability, axis=axis), hp.beta3)
                new[name] = round_to(ar.state, value)
                stats[name] = new[name] if variant.use_stored else value
            direction = ar.c(ar.factor(stats["exp_avg_insta_row"], stats["exp_avg_insta_col"]) * m_used)
        else:
            direction = m_used  # CAME-STEP-9V
        th = ar.c(theta)
        lr = ar.s(hp.lr)  # CAME-STEP-10
        if hp.eps_scale is not None:
            source = th
            if "rms_after_decay" in bugs and hp.weight_decay != 0.0:
                source = ar.c(th - ar.c(ar.c(lr * ar.s(hp.weight_decay)) * th))
            lr = ar.c(lr * max(ar.s(hp.eps_scale), float(ar.rms(source))))
        if hp.weight_decay != 0.0:  # CAME-STEP-11
            rate = ar.c(lr * ar.s(hp.weight_decay))
            th = ar.c(th - ar.c(rate * th)) if variant.decay == "subtract" else ar.c(th * ar.c(1.0 - rate))
        new_theta = ar.c(th - ar.c(lr * direction))  # CAME-STEP-12
    return round_to(dtype, new_theta), new


def resolved(hp: Hyperparameters, t: int, index: int, bugs=frozenset()) -> StepHyper:
    """StepHyper of step t, with the hyperparameter-level bugs of ``bugs`` applied."""
    h = hp.step_hyper(t, index)
    if "lr_late" in bugs:  # the value of step t + 1 (the last step keeps its own: the sequence ends there)
        try:
            h = replace(h, lr=hp.step_hyper(t + 1, index).lr)
        except ValueError:
            pass
    if "group_wd_ignored" in bugs:
        h = replace(h, weight_decay=hp.weight_decay)
    return h


def trajectory(hp: Hyperparameters, params, grads, dtype: str, variant: Variant = Variant()):
    """Every step of a case: a list of (params, states) after each step, as the emulated port stores them."""
    current = [np.asarray(p, np.float64) for p in params]
    states = [init_state(np.shape(p)) for p in params]
    out = []
    for t, step_grads in enumerate(grads, start=1):
        results = [step(p, g, s, resolved(hp, t, i, variant.bugs), dtype, variant)
                   for i, (p, g, s) in enumerate(zip(current, step_grads, states))]
        current, states = [r[0] for r in results], [r[1] for r in results]
        out.append((current, states))
    return out
