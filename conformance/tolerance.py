"""The tolerance model: what a correct target may store after one step, clause by clause (docs/tolerances.md).

``step_model(θ, G, state, new_state, hp, precision)`` judges one parameter's step.  Every stored
tensor is judged **from the target's own values of the tensors its clause reads**: r′ and c′
(CAME-STEP-3) or v′ (CAME-STEP-3V) from the old state and G; m′ (CAME-STEP-6) from the target's
r′, c′ or v′ through U, RMS(U) and the clip (CAME-STEP-4 … CAME-STEP-5); R′ and C′ (CAME-STEP-8)
from its m′ and the same Û (CAME-STEP-7); θ′ (CAME-STEP-12) from its R′, C′ and m′ (CAME-STEP-9 …
CAME-STEP-11).  So each bound covers the roundings of one clause's chain, never an error carried
in from an earlier tensor (which is judged on its own, first), and stays meaningful at u = 2⁻⁸.

Each chain is evaluated by ``conformance.bounds.Algebra``: the float64 value, a rigorous bound on
a correct target's error in its declared ``Precision`` (CAME-DTYPE-3), and a bound on the suite's
own float64 error.  What the model returns per tensor (``Judged``) is the float64 value, the sum
of the two bounds before the final store, the dtype the target stores the tensor in (the
comparator checks the stored value on that dtype's grid), and the condition number of the
clause's last sum (1 for the sign-definite statistics), for the tightness table.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from came_conformance.blockwise import elementwise
from came_conformance.bounds import U64, Algebra, Q
from came_conformance.precision import Precision
from came_conformance.reference.step import StepHyper, is_factored

#: Computation order of the judged tensors (CAME-STEP-3 … CAME-STEP-12): the first failure names the clause.
ORDER = ("exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq", "exp_avg", "exp_avg_insta_row", "exp_avg_insta_col",
         "theta")


@dataclass
class Judged:
    """One stored tensor: the value a correct target approximates, and how closely."""

    name: str
    reference: np.ndarray  # float64, from the target's own inputs of this clause
    target_bound: np.ndarray  # |value before the final store − exact| for a correct target
    reference_bound: np.ndarray  # |reference − exact|: the suite's own float64 error
    store: str  # dtype the target stores it in: its value must lie on this dtype's grid
    condition: np.ndarray  # Σ|terms| / |value| of the clause's last sum (1: no cancellation)
    exact_rounding: bool = False  # compression: the float16 rounding of v′, checked exactly (CAME-OPT-5)

    @property
    def bound(self) -> np.ndarray:
        """How far from ``reference`` a correct target's unrounded value can be."""
        return self.target_bound + self.reference_bound


def _finish(alg: Algebra, q: Q, store: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value, target's bound, reference's bound) of a clause's last operation, before the store.

    The last operation's rounding into the compute precision is the store itself when the two
    dtypes are the same (only the float32 step of a half "opmath" operation is added); otherwise
    the value is rounded in compute precision first and the comparator rounds it into ``store``.
    """
    prec = alg.prec
    ax = np.abs(q.x)
    r = q.full(q.r + U64 * (ax + q.r) + 2 ** -1075)  # the reference rounds its last operation too
    if store == prec.compute:
        b = q.b + prec.opmath * (ax + q.r + q.b)
    else:
        b = alg.rounded(q).b
    return q.x, q.full(b), r


def _condition(value, *terms) -> np.ndarray:
    with np.errstate(all="ignore"):
        total = sum(np.abs(t) for t in terms)
        return np.where(value != 0, total / np.abs(value), np.where(total == 0, 1.0, np.inf))


def _beta(alg: Algebra, beta: float, computed: bool) -> tuple[Q, Q]:
    """β and 1 − β as the target holds them (scalars precision), with their exact or bounded errors.

    A given β is held as its rounding; 1 − β is either held as the rounding of 1 − β, or formed
    from the held β and rounded in the scalars or compute precision: the larger error of the two.
    A computed β2_t = 1 − t^(−c) (CAME-BETA2-2) has one pow (at most 1 ulp, 2u) and one subtraction.
    """
    if beta == 0.0:  # β2_1 = 1 − 1^(−c) = 0 exactly (pow(1, y) = 1); 0 is exact in every format
        return Q(0.0), Q(1.0)
    w = 1.0 - beta
    u = max(alg.us, alg.uc)
    if computed:
        held = Q(beta, abs(beta) * alg.us + 2 * alg.us * w, 2 * U64 * w + U64 * abs(beta))
        return held, Q(w, float(held.b) + u * w * (1 + u), 2 * U64 * w)
    held = alg.scalar(beta)
    held_w = alg.scalar(w)
    formed = float(held.b) + u * (abs(w) + float(held.b))
    return held, Q(w, max(float(held_w.b), formed), U64 * abs(w))


def _ema_judged(alg, name, old, new, beta: float, computed: bool, store, exact_rounding=False,
                new_condition=1.0) -> Judged:
    """One EMA clause; ``new_condition``: how much the new term itself amplifies relative errors."""
    b, w = _beta(alg, beta, computed)
    x, target, reference, cond = _ema_arrays(alg, old, new, b, w, store, new_condition)
    return Judged(name, x, target, reference, store, cond, exact_rounding)


@elementwise
def _ema_arrays(alg, old: Q, new: Q, b: Q, w: Q, store: str, new_condition):
    """``_ema_judged``'s arrays: the EMA's value, the two bounds before the store, and its condition."""
    q = alg.ema(old, new, b, w, rnd=False)
    x, target, reference = _finish(alg, q, store)
    # the multiply-add's terms, or lerp's old + (1 − β)(new − old), which cancels when new ≪ old
    cond = np.maximum(_condition(x, b.x * old.x, w.x * new.x * new_condition),
                      _condition(x, old.x, w.x * (new.x - old.x)))
    return x, target, reference, cond


def _divisor(ratio: Q) -> Q:
    """max(1, RMS(U)/d) of CAME-STEP-5: 1-Lipschitz; exactly 1 while a correct ratio cannot exceed 1."""
    x = np.maximum(1.0, ratio.x)

    def bound(e):
        return np.where(ratio.x > 1.0, e, np.maximum(0.0, ratio.x + e - 1.0))

    return Q(x, bound(ratio.b), bound(ratio.r))


# The chains between the step's reductions, each evaluated element by element (``conformance.blockwise``):
# on a large parameter a chain's intermediates stay in cache, and only what a later clause or the
# comparator reads is written out in full.

@elementwise
def _second_moment_input(alg: Algebra, grad, loss_scale: float, eps1: float) -> tuple[Q, Q]:
    """CAME-STEP-1, CAME-STEP-2: g = G / s and Q = g·g + ε1."""
    g = alg.gradient(grad)
    if loss_scale != 1.0:
        g = alg.div(g, alg.scalar(loss_scale))
    return g, alg.add(alg.mul(g, g), alg.scalar(eps1))


@elementwise
def _scaled(alg: Algebra, row_factor: Q, col_factor: Q, x: Q) -> Q:
    """F(r, c) · x from F's two vectors (CAME-STEP-4 with x = g, CAME-STEP-9 with x = m′)."""
    return alg.mul(alg.mul(row_factor, col_factor), x)


@elementwise
def _unfactored_update(alg: Algebra, g: Q, new_v, store: str, must_use_stored: bool) -> Q:
    """CAME-STEP-4V from the target's v′: U = g / √v′."""
    return alg.mul(g, alg.recip_sqrt(alg.read(new_v, store, fresh=True, must_use_stored=must_use_stored)))


@elementwise
def _moments(alg: Algebra, update: Q, divisor: Q, exact_one: bool, old_m, new_m, b1: Q, w1: Q, state_dtype: str,
             eps_insta: float, factored: bool):
    """CAME-STEP-5 … CAME-STEP-7 per element: Û; the judged m′ from Û and the stored m; then, from the
    target's m′, the instability D = (Û − m′)² + ε_insta and how much it amplifies relative errors."""
    u_hat = update if exact_one else alg.rounded(alg.div(update, divisor))  # U/div or U·(1/div)
    old = alg.read(old_m, state_dtype)
    judged = _ema_arrays(alg, old, u_hat, b1, w1, state_dtype, 1.0)  # CAME-STEP-6
    if not factored:
        return judged
    m = alg.read(new_m, state_dtype, fresh=True)
    diff = alg.sub(u_hat, m)
    instability = alg.add(alg.mul(diff, diff), alg.scalar(eps_insta))
    # (Û − m′)² amplifies relative errors of Û and m′ by (|Û| + |m′|)/|Û − m′|: Û ≈ m′ cancels
    amplified = (np.abs(u_hat.x) + np.abs(m.x)) * np.abs(diff.x)
    return judged + (instability, amplified)


def step_model(theta, grad, old: dict, new: dict, hp: StepHyper, prec: Precision) -> tuple[dict[str, Judged], dict]:
    """The judged tensors of one parameter's step, and what the step exercised (``clip_active``)."""
    theta = np.asarray(theta, dtype=np.float64)
    grad = np.asarray(grad, dtype=np.float64)
    state_dtype, param_dtype = prec.state, prec.param
    if theta.size == 0:  # CAME-ZERO-1: nothing changes, exactly
        out = {k: Judged(k, np.asarray(v, np.float64), np.zeros(np.shape(v)), np.zeros(np.shape(v)), state_dtype,
                         np.ones(np.shape(v))) for k, v in old.items()}
        out["theta"] = Judged("theta", theta, np.zeros(theta.shape), np.zeros(theta.shape), param_dtype,
                              np.ones(theta.shape))
        return out, {}
    alg = Algebra(prec)
    out: dict[str, Judged] = {}
    factored = is_factored(theta.shape)
    with np.errstate(all="ignore"):  # CAME-NONFINITE-1: values propagate; so do unbounded errors
        g, q = _second_moment_input(alg, grad, hp.loss_scale, hp.eps1)  # CAME-STEP-1, CAME-STEP-2
        if factored:  # CAME-STEP-3, then U from the target's own r′ and c′ (CAME-STEP-4)
            for name, axis in (("exp_avg_sq_row", -1), ("exp_avg_sq_col", -2)):
                out[name] = _ema_judged(alg, name, alg.read(old[name], state_dtype), alg.mean(q, axis=axis),
                                        hp.beta2, computed=hp.beta2_computed, store=state_dtype)
            del q  # full-size intermediates are dropped once their clause is judged (large parameters)
            row = alg.read(new["exp_avg_sq_row"], state_dtype, fresh=True)
            col = alg.read(new["exp_avg_sq_col"], state_dtype, fresh=True)
            update = _scaled(alg, *alg.factor_vectors(row, col), g)
        else:  # CAME-STEP-3V (CAME-OPT-5: stored in float16 and used as stored), CAME-STEP-4V
            store = "float16" if hp.compression else state_dtype
            old_v = alg.read(old["exp_avg_sq"], store)
            out["exp_avg_sq"] = _ema_judged(alg, "exp_avg_sq", old_v, q, hp.beta2, computed=hp.beta2_computed,
                                            store=store, exact_rounding=hp.compression)
            del q, old_v
            update = _unfactored_update(alg, g, new["exp_avg_sq"], store, hp.compression)
        del g
        ratio = alg.div(alg.rms(update), alg.scalar(hp.clip_threshold))  # CAME-STEP-5
        divisor = _divisor(ratio)
        exact_one = bool(divisor.x == 1.0 and divisor.b == 0.0)
        b1, w1 = _beta(alg, hp.beta1, False)
        moments = _moments(alg, update, divisor, exact_one, old["exp_avg"], new["exp_avg"], b1, w1, state_dtype,
                           hp.eps_insta, factored)
        del update
        out["exp_avg"] = Judged("exp_avg", *moments[:3], state_dtype, moments[3])  # CAME-STEP-6
        row_s = col_s = None
        if factored:  # CAME-STEP-8 from the target's m′ (CAME-STEP-7); CAME-STEP-9's factor
            instability, amplified = moments[4:]
            del moments
            for name, axis in (("exp_avg_insta_row", -1), ("exp_avg_insta_col", -2)):
                mean_d = alg.mean(instability, axis=axis)
                with np.errstate(all="ignore"):
                    cancels = np.maximum(1.0, np.mean(amplified, axis=axis) / mean_d.x)
                out[name] = _ema_judged(alg, name, alg.read(old[name], state_dtype), mean_d, hp.beta3,
                                        computed=False, store=state_dtype, new_condition=cancels)
            del instability, amplified
            big_r = alg.read(new["exp_avg_insta_row"], state_dtype, fresh=True)
            big_c = alg.read(new["exp_avg_insta_col"], state_dtype, fresh=True)
            row_s, col_s = alg.factor_vectors(big_r, big_c)
        out["theta"] = _theta(alg, theta, row_s, col_s, new["exp_avg"], hp, prec)
    return out, {"clip_active": bool(np.any(divisor.x > 1.0))}


def _theta(alg: Algebra, theta, row_s: Q | None, col_s: Q | None, new_m, hp: StepHyper, prec: Precision) -> Judged:
    """CAME-STEP-9 … CAME-STEP-12 from the stored θ, the target's m′ and (factored) its R′ and C′."""
    # a schedule or the relative step computes η_t (a pow or a sqrt and a product or two): 3 roundings
    lr = alg.scalar(hp.lr, computed=3, ref_ops=3) if hp.lr_computed else alg.scalar(hp.lr)
    if hp.eps_scale is not None:  # CAME-STEP-10: η = η_t · max(ε_scale, RMS(θ))
        lr = alg.mul(lr, alg.maximum(alg.scalar(hp.eps_scale), alg.rms(alg.read(theta, prec.param))))
    x, target, reference, cond = _theta_arrays(alg, theta, row_s, col_s, new_m, lr, hp.weight_decay, prec.state,
                                               prec.param)
    return Judged("theta", x, target, reference, prec.param, cond)


@elementwise
def _theta_arrays(alg: Algebra, theta, row_s, col_s, new_m, lr: Q, weight_decay: float, state_dtype: str,
                  param_dtype: str):
    """``_theta``'s arrays, element by element: Δ (CAME-STEP-9 or 9V), θd (CAME-STEP-11), θ′ (CAME-STEP-12)."""
    m = alg.read(new_m, state_dtype, fresh=True)
    direction = m if row_s is None else alg.mul(alg.mul(row_s, col_s), m)  # CAME-STEP-9V: no factor
    th = alg.read(theta, param_dtype)
    step = alg.mul(lr, direction)
    if weight_decay != 0.0:  # CAME-STEP-11: θ − (η·λ)·θ, or θ·(1 − η·λ)
        rate = alg.mul(lr, alg.scalar(weight_decay))
        subtract = alg.sub(th, alg.mul(rate, th))
        scale = alg.mul(th, alg.sub(Q(1.0), rate))
        decayed = Q(subtract.x, np.maximum(subtract.b, scale.b), subtract.r)
    else:
        decayed = th
    new = alg.sub(decayed, step, rnd=False)  # CAME-STEP-12
    x, target, reference = _finish(alg, new, param_dtype)
    return x, target, reference, _condition(x, decayed.x, step.x)
