"""One CAME step for one parameter, as a pure float64 function (spec/came.md §4).

State in, state out, nothing hidden: ``step(theta, grad, state, hp)`` returns the new
parameter, the new state and a trace of every intermediate the spec names, so a
comparator can say which quantity diverged first.  The caller's arrays are never
modified.  Every line cites the spec clause it implements.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

F64 = np.float64


#: The spec clause that defines each state tensor and each traced intermediate.
DEFINING_CLAUSE = {
    "grad": "CAME-STEP-1",
    "grad_sq": "CAME-STEP-2",
    "exp_avg_sq_row": "CAME-STEP-3",
    "exp_avg_sq_col": "CAME-STEP-3",
    "exp_avg_sq": "CAME-STEP-3V",
    "update": "CAME-STEP-4",
    "update_rms": "CAME-STEP-5",
    "clip_divisor": "CAME-STEP-5",
    "update_clipped": "CAME-STEP-5",
    "exp_avg": "CAME-STEP-6",
    "instability": "CAME-STEP-7",
    "exp_avg_insta_row": "CAME-STEP-8",
    "exp_avg_insta_col": "CAME-STEP-8",
    "confidence": "CAME-STEP-9",
    "direction": "CAME-STEP-9",
    "lr_effective": "CAME-STEP-10",
    "theta_decayed": "CAME-STEP-11",
    "theta": "CAME-STEP-12",
}


@dataclass(frozen=True)
class StepHyper:
    """Hyperparameters of one step of one parameter, already resolved for step t.

    ``lr`` is η_t after the learning-rate rule (CAME-LR-*), ``beta2`` is β2_t after the
    profile's β2 rule (CAME-BETA2-*).  ``eps_scale`` is set exactly when
    scale_parameter is on (CAME-STEP-10).
    """

    lr: float
    beta1: float
    beta2: float
    beta3: float
    eps1: float
    eps_insta: float
    clip_threshold: float
    weight_decay: float = 0.0
    eps_scale: float | None = None
    loss_scale: float = 1.0
    compression: bool = False
    # How the values above come about, for the tolerance model (CAME-DTYPE-3): a target computes
    # β2_t = 1 − t^(−c) (CAME-BETA2-2) and a scheduled or relative η_t (CAME-LR-4, CAME-LR-5), while a
    # constant β2 or a constant or sequence η_t is only held in its precision.
    beta2_computed: bool = False
    lr_computed: bool = False


@dataclass(frozen=True)
class StepResult:
    theta: np.ndarray
    state: dict[str, np.ndarray]
    trace: dict[str, np.ndarray]


def is_factored(shape: tuple[int, ...]) -> bool:
    """CAME-STATE-1: a parameter with two or more axes keeps factored statistics."""
    return len(shape) >= 2


def state_shapes(shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """CAME-STATE-2 / CAME-STATE-3: names and shapes of the state of a parameter."""
    shape = tuple(shape)
    if is_factored(shape):
        rows, cols = shape[:-1], shape[:-2] + shape[-1:]
        return {"exp_avg": shape, "exp_avg_sq_row": rows, "exp_avg_sq_col": cols,
                "exp_avg_insta_row": rows, "exp_avg_insta_col": cols}
    return {"exp_avg": shape, "exp_avg_sq": shape}


def init_state(shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """CAME-STATE-4: every state tensor starts at zero, in float64."""
    return {name: np.zeros(s, dtype=F64) for name, s in state_shapes(shape).items()}


def row_mean(x: np.ndarray) -> np.ndarray:
    """CAME-DEF-2: mean over the last axis."""
    return np.mean(x, axis=-1)


def col_mean(x: np.ndarray) -> np.ndarray:
    """CAME-DEF-2: mean over the second-to-last axis."""
    return np.mean(x, axis=-2)


def factor(row: np.ndarray, col: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """CAME-DEF-3: F(r, c)[..., i, j] = (r_i / mean(r))^(-1/2) * c_j^(-1/2) (into ``out`` if given)."""
    row_factor = 1.0 / np.sqrt(row / np.mean(row, axis=-1, keepdims=True))
    col_factor = 1.0 / np.sqrt(col)
    return np.multiply(row_factor[..., :, None], col_factor[..., None, :], out=out)


#: Without a trace, the full-size intermediates share two work buffers (0 and 1): each is dead
#: before the next one that uses its buffer is written.  With a trace, each gets its own array.
#: Either way the operations and their order are the same, so the values are bitwise the same.
_SHARED_BUFFER = {"grad": 0, "grad_sq": 1, "update": 1, "update_sq": 0, "update_clipped": 1, "exp_avg_term": 0,
                  "instability": 0, "confidence": 1, "direction": 1, "theta_sq": 0, "theta_decayed": 0,
                  "step_size": 1, "theta": 0}


class _Workspace:
    """Output arrays for the full-size intermediates of one step (see ``_SHARED_BUFFER``)."""

    def __init__(self, like: np.ndarray, keep: bool):
        self.like, self.keep, self.shared = like, keep, {}

    def __getitem__(self, name: str) -> np.ndarray:
        if self.keep or name not in _SHARED_BUFFER:
            return np.empty_like(self.like)
        slot = _SHARED_BUFFER[name]
        if slot not in self.shared:
            self.shared[slot] = np.empty_like(self.like)
        return self.shared[slot]


def step(theta: np.ndarray, grad: np.ndarray, state: Mapping[str, np.ndarray], hp: StepHyper,
         trace: bool = True) -> StepResult:
    """One CAME step: (θ, G, state; hp) -> (θ', state', trace) (CAME-STEP-1 … CAME-STEP-12).

    ``trace=False`` returns an empty trace and evaluates the same operations, in the same order,
    in two reused work buffers: bitwise the same θ' and state, in about a third of the memory.
    """
    theta = np.asarray(theta, dtype=F64)  # read only: every result goes to a new array
    grad = np.asarray(grad, dtype=F64)
    state = {name: np.asarray(value, dtype=F64) for name, value in state.items()}
    if theta.size == 0:  # CAME-ZERO-1: nothing to update, state unchanged
        return StepResult(theta.copy(), {name: value.copy() for name, value in state.items()}, {})
    factored = is_factored(theta.shape)
    work = _Workspace(theta, keep=trace)
    out: dict[str, np.ndarray] = {}
    with np.errstate(all="ignore"):  # CAME-NONFINITE-1: IEEE 754 propagation, no checks
        g = out["grad"] = np.divide(grad, hp.loss_scale, out=work["grad"])  # CAME-STEP-1
        q = out["grad_sq"] = np.multiply(g, g, out=work["grad_sq"])  # CAME-STEP-2: Q = g·g + ε1
        q += hp.eps1
        if factored:
            r = hp.beta2 * state["exp_avg_sq_row"] + (1.0 - hp.beta2) * row_mean(q)  # CAME-STEP-3
            c = hp.beta2 * state["exp_avg_sq_col"] + (1.0 - hp.beta2) * col_mean(q)
            out["exp_avg_sq_row"], out["exp_avg_sq_col"] = r, c
            u = factor(r, c, out=work["update"])  # CAME-STEP-4: U = F(r, c) · g
            u *= g
        else:
            v = np.asarray(hp.beta2 * state["exp_avg_sq"] + (1.0 - hp.beta2) * q)  # CAME-STEP-3V (0-D stays an array)
            if hp.compression:  # CAME-OPT-5: stored in float16, used as stored
                v = v.astype(np.float16).astype(F64)
            out["exp_avg_sq"] = v
            u = np.sqrt(v, out=work["update"])  # CAME-STEP-4V: U = g / sqrt(v)
            np.divide(g, u, out=u)
        out["update"] = u
        u_rms = out["update_rms"] = np.sqrt(np.mean(np.multiply(u, u, out=work["update_sq"])))  # CAME-STEP-5
        divisor = out["clip_divisor"] = np.maximum(1.0, u_rms / hp.clip_threshold)
        u_hat = out["update_clipped"] = np.divide(u, divisor, out=work["update_clipped"])
        m = out["exp_avg"] = np.multiply(hp.beta1, state["exp_avg"], out=np.empty_like(theta))  # CAME-STEP-6
        m += np.multiply(1.0 - hp.beta1, u_hat, out=work["exp_avg_term"])  # β1·m + (1 − β1)·Û
        if factored:
            d = out["instability"] = np.subtract(u_hat, m, out=work["instability"])  # CAME-STEP-7
            d *= d  # (Û − m)²
            d += hp.eps_insta
            big_r = hp.beta3 * state["exp_avg_insta_row"] + (1.0 - hp.beta3) * row_mean(d)  # CAME-STEP-8
            big_c = hp.beta3 * state["exp_avg_insta_col"] + (1.0 - hp.beta3) * col_mean(d)
            out["exp_avg_insta_row"], out["exp_avg_insta_col"] = big_r, big_c
            s = out["confidence"] = factor(big_r, big_c, out=work["confidence"])  # CAME-STEP-9
            direction = np.multiply(s, m, out=work["direction"])
        else:
            direction = m  # CAME-STEP-9V: no confidence factor
        out["direction"] = direction
        lr = hp.lr  # CAME-STEP-10
        if hp.eps_scale is not None:
            lr = lr * np.maximum(hp.eps_scale, np.sqrt(np.mean(np.multiply(theta, theta, out=work["theta_sq"]))))
        out["lr_effective"] = F64(lr)
        decayed = work["theta_decayed"]  # CAME-STEP-11: decoupled decay, only when λ != 0
        if hp.weight_decay != 0.0:
            np.multiply(lr * hp.weight_decay, theta, out=decayed)  # θ − (η·λ)·θ
            np.subtract(theta, decayed, out=decayed)
        else:
            np.copyto(decayed, theta)
        out["theta_decayed"] = decayed
        step_size = np.multiply(lr, direction, out=work["step_size"])  # CAME-STEP-12: θ' = θd − η·Δ
        new_theta = out["theta"] = np.subtract(decayed, step_size, out=work["theta"])
    new_state = {name: out[name] for name in state_shapes(theta.shape)}
    return StepResult(new_theta, new_state, out if trace else {})
