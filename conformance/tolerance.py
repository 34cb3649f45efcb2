"""The tolerance model: a first-order rounding-error bound for one step (docs/tolerances.md).

Given the exact inputs of a step (the target's own θ, G and state before it) and the
reference's trace of that step, ``step_bounds`` returns, for the new parameter and every new
state tensor, an elementwise bound on how far a correct implementation computing in
precision u (unit roundoff) may land from the exact result.  It follows the spec's equations
one by one (CAME-STEP-1 … CAME-STEP-12) with the standard model fl(a ∘ b) = (a ∘ b)(1 + δ),
|δ| ≤ u, and the summation bound |fl(Σ xᵢ) − Σ xᵢ| ≤ (n − 1) u Σ |xᵢ| for a mean over n, in
any order.  Hyperparameters are taken to be rounded to the compute precision too (a float32
β2 = 0.999 moves 1 − β2 by 216 u), so that term is in the bound as well.  Nothing here is
tuned to make a target pass.
"""
from __future__ import annotations

import numpy as np

from came_conformance.reference.dtypes import unit_roundoff
from came_conformance.reference.step import StepHyper, is_factored

#: Second-order terms and the constant factors rounded up in the derivation are covered by
#: this factor (docs/tolerances.md §3); it is the only free constant of the model.
SAFETY = 2.0


def _ema_bound(beta, old, new_in, b_in, u):
    """|error| of β·old + (1−β)·x: propagated input error, five roundings, the rounding of β.

    The last term covers the other common evaluation, old + (1−β)·(x − old) (``torch.lerp``):
    its rounding of x − old costs (1−β)·u·(|old| + |x|), which matters when β is near 0.
    """
    return (1 - beta) * b_in + 5 * u * (beta * np.abs(old) + (1 - beta) * np.abs(new_in)) \
        + u * beta * (np.abs(old) + np.abs(new_in)) + u * (1 - beta) * (np.abs(old) + np.abs(new_in))


def _factor_rel(row, b_row, col, b_col, u):
    """Relative error of F(r, c) (CAME-DEF-3): halves of the relative errors, plus 5 roundings."""
    n = row.shape[-1]
    rel_row = b_row / np.abs(row)
    rel_mean = (np.mean(b_row, axis=-1, keepdims=True) / np.abs(np.mean(row, axis=-1, keepdims=True))
                + n * u)
    rel_col = b_col / np.abs(col)
    return 0.5 * (rel_row + rel_mean)[..., :, None] + 0.5 * rel_col[..., None, :] + 5 * u


def step_bounds(theta, grad, state, trace, hp: StepHyper, u: float) -> dict[str, np.ndarray]:
    """Elementwise first-order error bounds (absolute) of θ' and each new state tensor."""
    if not trace:
        return {}
    with np.errstate(all="ignore"):
        factored = is_factored(np.shape(theta))
        g, q = trace["grad"], trace["grad_sq"]
        b_g = u * np.abs(g) if hp.loss_scale != 1.0 else np.zeros_like(g)  # CAME-STEP-1
        b_q = 2 * np.abs(g) * b_g + u * (g * g) + u * np.abs(q) + u * hp.eps1  # CAME-STEP-2
        out = {}
        if factored:  # CAME-STEP-3 and CAME-STEP-4
            n_row, n_col = q.shape[-1], q.shape[-2]
            mean_r = np.mean(q, axis=-1)
            mean_c = np.mean(q, axis=-2)
            b_mean_r = np.mean(b_q, axis=-1) + n_row * u * mean_r
            b_mean_c = np.mean(b_q, axis=-2) + n_col * u * mean_c
            r, c = trace["exp_avg_sq_row"], trace["exp_avg_sq_col"]
            out["exp_avg_sq_row"] = _ema_bound(hp.beta2, state["exp_avg_sq_row"], mean_r, b_mean_r, u)
            out["exp_avg_sq_col"] = _ema_bound(hp.beta2, state["exp_avg_sq_col"], mean_c, b_mean_c, u)
            rel_u = _factor_rel(r, out["exp_avg_sq_row"], c, out["exp_avg_sq_col"], u) + b_g / np.abs(g) + u
        else:  # CAME-STEP-3V and CAME-STEP-4V
            v = trace["exp_avg_sq"]
            b_v = _ema_bound(hp.beta2, state["exp_avg_sq"], q, b_q, u)
            if hp.compression:  # CAME-OPT-5: the float16 rounding of the stored value
                b_v = b_v + unit_roundoff("float16") * np.abs(v)
            out["exp_avg_sq"] = b_v
            rel_u = 0.5 * b_v / np.abs(v) + b_g / np.abs(g) + 3 * u
        upd = trace["update"]
        rel_u = np.where(upd == 0, 0.0, rel_u)
        n = upd.size
        rel_rms = np.max(rel_u, initial=0.0) + (n / 2 + 2) * u  # CAME-STEP-5
        # The divisor's error counts whenever a correct run could land on the clipping side,
        # including just below the threshold (and d itself is rounded: one more u).
        ratio = trace["update_rms"] / hp.clip_threshold
        rel_div = rel_rms + 2 * u if ratio * (1 + rel_rms + 2 * u) > 1 else 0.0
        u_hat = trace["update_clipped"]
        b_hat = np.abs(u_hat) * (rel_u + rel_div + u)
        m = trace["exp_avg"]  # CAME-STEP-6
        b_m = _ema_bound(hp.beta1, state["exp_avg"], u_hat, b_hat, u)
        out["exp_avg"] = b_m
        if factored:  # CAME-STEP-7 … CAME-STEP-9
            diff = np.abs(u_hat - m)
            b_diff = b_hat + b_m + u * diff
            d = trace["instability"]
            b_d = 2 * diff * b_diff + u * diff * diff + u * np.abs(d) + u * hp.eps_insta
            b_mr = np.mean(b_d, axis=-1) + d.shape[-1] * u * np.mean(d, axis=-1)
            b_mc = np.mean(b_d, axis=-2) + d.shape[-2] * u * np.mean(d, axis=-2)
            big_r, big_c = trace["exp_avg_insta_row"], trace["exp_avg_insta_col"]
            out["exp_avg_insta_row"] = _ema_bound(hp.beta3, state["exp_avg_insta_row"], np.mean(d, axis=-1), b_mr, u)
            out["exp_avg_insta_col"] = _ema_bound(hp.beta3, state["exp_avg_insta_col"], np.mean(d, axis=-2), b_mc, u)
            s = trace["confidence"]
            rel_s = _factor_rel(big_r, out["exp_avg_insta_row"], big_c, out["exp_avg_insta_col"], u)
            b_dir = np.abs(s) * b_m + np.abs(s * m) * (rel_s + u)
        else:
            b_dir = b_m
        direction = trace["direction"]
        lr = float(trace["lr_effective"])  # CAME-STEP-10
        rel_lr = u + ((np.size(theta) / 2 + 3) * u if hp.eps_scale is not None else 0.0)
        theta = np.asarray(theta, dtype=np.float64)
        b_dec = np.zeros_like(theta)  # CAME-STEP-11
        if hp.weight_decay != 0.0:
            b_dec = np.abs(lr * hp.weight_decay * theta) * (rel_lr + 3 * u) + u * np.abs(trace["theta_decayed"])
        new_theta = trace["theta"]  # CAME-STEP-12
        out["theta"] = (b_dec + abs(lr) * b_dir + np.abs(lr * direction) * (rel_lr + u)
                        + u * np.abs(new_theta))
    return out  # NaN or inf where the model gives no bound; the comparator then demands an exact match
