"""An independent arbitrary-precision oracle for one CAME step (spec/came.md §4).

``reference.step`` is vectorised NumPy in float64; this module is the same step written a
second time, straight from the spec's equations, as plain scalar loops over element indices
with mpmath numbers (``DPS`` decimal digits, about 200 bits).  It shares no numerical code with
``reference.step`` (only the ``StepHyper`` container), so the two cannot hide each other's bugs.

Every value is carried as a ``Val``: the value ``x`` of the spec's formula evaluated in high
precision from the exact float64 inputs, and ``e``, a first-order bound on how far a float64
evaluation of the same expression, *in the spec's operation order*, may be from ``x``, in units
of u = 2^-53 (running error analysis, Higham, "Accuracy and Stability of Numerical Algorithms",
§3.3).  The rules, one correctly rounded IEEE 754 operation each (ε below is u·|result|, dropped
when the inputs are exact and the result is representable):

    a ± b:     e_a + e_b + ε            a · b:   |a| e_b + |b| e_a + ε
    a / b:     e_a/|b| + |a| e_b/b² + ε  sqrt(a): e_a / (2 sqrt a) + ε
    max(a, b): max(e_a, e_b)            (max is 1-Lipschitz, and it does not round)
    mean of n: (Σ e_i + (n−1) Σ |x_i|) / n, then ε of the division: any summation order
               (NumPy's pairwise sum included) has error at most (n−1)·u·Σ|x_i|.

``oracle_step`` gives the values; ``oracle_step_with_bounds`` also gives the bounds, which
tests/test_oracle.py uses as the derived error budget of the float64 reference.

Compression (CAME-OPT-5) rounds the exact second moment to the nearest float16, ties to even,
implemented here exactly on the mpmath value (``round_to_format``), never through a float64
intermediate, so there is no double rounding.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Mapping

import numpy as np
from mpmath import libmp, mp, mpf

from came_conformance.reference.step import StepHyper

#: Working precision of the oracle, in decimal digits (about 3.3 bits each).
DPS = 60

#: (significand bits incl. the hidden bit, smallest normal exponent, largest finite) of the formats used.
FLOAT64 = (53, -1022, float(np.finfo(np.float64).max))
FLOAT16 = (11, -14, 65504.0)

#: State names of a factored parameter (CAME-STATE-2) and of a parameter with ndim <= 1 (CAME-STATE-3).
FACTORED_NAMES = ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_insta_row", "exp_avg_insta_col")
VECTOR_NAMES = ("exp_avg", "exp_avg_sq")


def _is_finite(x: mpf) -> bool:
    return bool(mp.isfinite(x))


def round_to_format(x: mpf, fmt=FLOAT64) -> mpf:
    """Round x to the nearest value of a binary format, ties to even, exactly (IEEE 754 §4.3.1).

    The quantum is 2^(max(floor(log2|x|), emin) − p + 1); x / quantum is exact in mpmath (a power
    of two scaling), is rounded to an integer half-to-even, and scaled back.  A result beyond the
    largest finite value overflows to ±inf (rounding with an unbounded exponent first, as IEEE does).
    """
    p, emin, xmax = fmt
    x = mpf(x)
    if not _is_finite(x) or x == 0:
        return x
    _, man, exp, bc = x._mpf_
    e = max(int(exp) + int(bc) - 1, emin)  # floor(log2|x|), exact from the binary representation
    quantum = mp.ldexp(mpf(1), e - p + 1)
    n = x / quantum
    k = mp.floor(n)
    frac = n - k
    if frac > 0.5 or (frac == 0.5 and int(k) % 2 == 1):
        k += 1
    y = k * quantum
    if abs(y) > xmax:
        return mpf("inf") if y > 0 else mpf("-inf")
    return y


def is_representable(x: mpf, fmt=FLOAT64) -> bool:
    """True iff x is exactly a finite value of the format."""
    return _is_finite(x) and round_to_format(x, fmt) == x


def to_float64(x) -> float:
    """The float64 nearest to an mpmath value (ties to even, subnormals included)."""
    x = mpf(x)
    if mp.isnan(x):
        return float("nan")
    return float(libmp.to_float(round_to_format(x)._mpf_))  # exact: the value is already a float64


U64 = mpf(2) ** -53  # unit roundoff of float64


class Val:
    """A value of the spec's formula and a first-order float64 error bound for it (module docstring).

    ``x`` is the exact value (to ``DPS`` digits); ``e`` bounds |fl − x| / u, where fl is what a
    float64 evaluation of the same expression in the same order gives from the same inputs.
    """

    __slots__ = ("x", "e")

    def __init__(self, x, e=0):
        self.x = mpf(x)
        self.e = mpf(e)

    @property
    def exact(self) -> bool:
        return self.e == 0

    def _rounded(self, z: mpf, *inputs: "Val") -> mpf:
        """ε of one correctly rounded operation with exact result z (0 if that rounding is exact)."""
        if all(v.exact for v in inputs) and is_representable(z):
            return mpf(0)
        return abs(z)

    def __add__(self, other: "Val") -> "Val":
        z = self.x + other.x
        return Val(z, self.e + other.e + self._rounded(z, self, other))

    def __sub__(self, other: "Val") -> "Val":
        z = self.x - other.x
        return Val(z, self.e + other.e + self._rounded(z, self, other))

    def __mul__(self, other: "Val") -> "Val":
        z = self.x * other.x
        return Val(z, abs(self.x) * other.e + abs(other.x) * self.e + self._rounded(z, self, other))

    def __truediv__(self, other: "Val") -> "Val":
        z = _ieee_div(self.x, other.x)
        if other.x == 0 or not _is_finite(z):
            return Val(z, mpf("inf") if not (self.exact and other.exact) else 0)
        return Val(z, self.e / abs(other.x) + abs(self.x) * other.e / other.x ** 2 + self._rounded(z, self, other))

    def sqrt(self) -> "Val":
        z = mp.sqrt(self.x) if not self.x < 0 else mpf("nan")
        if z == 0:
            return Val(z, 0 if self.exact else mpf("inf"))
        return Val(z, self.e / (2 * z) + self._rounded(z, self))


def _ieee_div(a: mpf, b: mpf) -> mpf:
    """a / b with IEEE 754 results for a zero divisor: ±inf, or NaN for 0/0 (CAME-NONFINITE-1)."""
    if b == 0:
        if a == 0 or mp.isnan(a):
            return mpf("nan")
        return mpf("inf") if a > 0 else mpf("-inf")
    return a / b


def maximum(a: Val, b: Val) -> Val:
    """max(a, b), NaN if either is NaN (as numpy.maximum); the error bound is max(e_a, e_b)."""
    if mp.isnan(a.x) or mp.isnan(b.x):
        return Val(mpf("nan"), mpf("nan"))
    return Val(max(a.x, b.x), max(a.e, b.e))


def mean(values: Iterable[Val]) -> Val:
    """CAME-DEF-1/CAME-DEF-2: the arithmetic mean, as a sum of n terms divided by n."""
    values = list(values)
    n = len(values)
    total = mp.fsum(v.x for v in values)
    if n == 1:
        s = values[0]
    else:
        s = Val(total, mp.fsum(v.e for v in values) + (n - 1) * mp.fsum(abs(v.x) for v in values))
    return s / Val(n)


def rms(values: Iterable[Val]) -> Val:
    """CAME-DEF-1: RMS(X) = sqrt(mean(X ⊙ X)) over every element of the tensor."""
    return mean(v * v for v in values).sqrt()


def round_val_to_float16(v: Val) -> Val:
    """CAME-OPT-5: the stored second moment is v rounded to the nearest float16 (ties to even).

    A float64 evaluation lands anywhere in [x − e·u, x + e·u]; rounding is monotone, so its
    float16 value lies between the roundings of the two ends, and so does the exact one.
    """
    y = round_to_format(v.x, FLOAT16)
    if not _is_finite(y) or not _is_finite(v.e):
        return Val(y, mpf("nan") if not _is_finite(v.e) else 0)
    lo = round_to_format(v.x - v.e * U64, FLOAT16)
    hi = round_to_format(v.x + v.e * U64, FLOAT16)
    return Val(y, (hi - lo) / U64)


# --- tensors: dicts from index tuples to Val, with plain loops ------------------------------------------


def _indices(shape: tuple[int, ...]):
    return itertools.product(*(range(n) for n in shape))


def _tensor(array) -> tuple[tuple[int, ...], dict]:
    """An array (nested lists, NumPy float or object array of mpf) as exact Vals by index."""
    a = np.asarray(array)
    if a.dtype != object:
        a = np.asarray(a, dtype=np.float64)
    return a.shape, {idx: Val(mpf(a[idx].item() if a.dtype != object else a[idx])) for idx in _indices(a.shape)}


def _array(shape: tuple[int, ...], values: Mapping, field: str = "x") -> np.ndarray:
    out = np.empty(shape, dtype=object)
    for idx in _indices(shape):
        out[idx] = getattr(values[idx], field)
    return out


def _factor(rows: dict, cols: dict, batch: tuple[int, ...], n: int, m: int) -> dict:
    """CAME-DEF-3: F(r, c)[..., i, j] = (1 / sqrt(r_i / mean(r))) · (1 / sqrt(c_j)), per batch slice."""
    one = Val(1)
    out = {}
    for b in _indices(batch):
        r_mean = mean(rows[b + (i,)] for i in range(n))
        row_factor = [one / (rows[b + (i,)] / r_mean).sqrt() for i in range(n)]
        col_factor = [one / cols[b + (j,)].sqrt() for j in range(m)]
        for i in range(n):
            for j in range(m):
                out[b + (i, j)] = row_factor[i] * col_factor[j]
    return out


def _row_col_means(x: dict, batch: tuple[int, ...], n: int, m: int) -> tuple[dict, dict]:
    """CAME-DEF-2: means over the last axis (shape S[:-1]) and over axis −2 (shape S[:-2] + S[-1:])."""
    rows, cols = {}, {}
    for b in _indices(batch):
        for i in range(n):
            rows[b + (i,)] = mean(x[b + (i, j)] for j in range(m))
        for j in range(m):
            cols[b + (j,)] = mean(x[b + (i, j)] for i in range(n))
    return rows, cols


def _ema(beta: Val, old: dict, new: dict) -> dict:
    """β·old + (1 − β)·new, elementwise, in that order (CAME-STEP-3, -3V, -6, -8)."""
    one_minus = Val(1) - beta
    return {k: beta * old[k] + one_minus * new[k] for k in old}


def oracle_step_with_bounds(theta, grad, state: Mapping, hp: StepHyper):
    """One CAME step in high precision, with float64 error bounds (CAME-STEP-1 … CAME-STEP-12).

    Returns ``(theta', state', trace, bounds)``: object arrays of mpmath values with the shapes
    of the reference's, and for every trace entry the bound ``e`` (units of u = 2^-53) on the
    error of a float64 evaluation from the same float64 inputs.
    """
    with mp.workdps(DPS):
        shape, th = _tensor(theta)
        gshape, gr = _tensor(grad)
        if gshape != shape:
            raise ValueError(f"grad shape {gshape} differs from theta shape {shape}")
        factored = len(shape) >= 2  # CAME-STATE-1
        names = FACTORED_NAMES if factored else VECTOR_NAMES
        st = {name: _tensor(state[name]) for name in names}
        if int(np.prod(shape, dtype=np.int64)) == 0:  # CAME-ZERO-1: θ and state unchanged, no trace
            return (_array(shape, th), {k: _array(s, v) for k, (s, v) in st.items()}, {}, {})
        st = {k: v for k, (_, v) in st.items()}
        keys = list(_indices(shape))
        trace: dict[str, tuple[tuple[int, ...], dict]] = {}

        def keep(name, shp, values):
            trace[name] = (shp, values)
            return values

        beta1, beta2, beta3 = Val(hp.beta1), Val(hp.beta2), Val(hp.beta3)
        eps1, eps_insta = Val(hp.eps1), Val(hp.eps_insta)
        # CAME-STEP-1 (CAME-OPT-4): gradients arrive multiplied by loss_scale; divide first.
        scale = Val(hp.loss_scale)
        g = keep("grad", shape, {k: gr[k] / scale for k in keys})
        # CAME-STEP-2: Q = G ⊙ G + ε1, elementwise, before any reduction.
        q = keep("grad_sq", shape, {k: g[k] * g[k] + eps1 for k in keys})
        if factored:
            batch, n, m = shape[:-2], shape[-2], shape[-1]
            rows_shape, cols_shape = shape[:-1], shape[:-2] + shape[-1:]
            # CAME-STEP-3: r = β2_t r + (1 − β2_t) rowmean(Q);  c = β2_t c + (1 − β2_t) colmean(Q).
            q_rows, q_cols = _row_col_means(q, batch, n, m)
            r = keep("exp_avg_sq_row", rows_shape, _ema(beta2, st["exp_avg_sq_row"], q_rows))
            c = keep("exp_avg_sq_col", cols_shape, _ema(beta2, st["exp_avg_sq_col"], q_cols))
            # CAME-STEP-4: U = F(r, c) ⊙ G.
            f = _factor(r, c, batch, n, m)
            u = keep("update", shape, {k: f[k] * g[k] for k in keys})
        else:
            # CAME-STEP-3V: v = β2_t v + (1 − β2_t) Q.
            v = _ema(beta2, st["exp_avg_sq"], q)
            if hp.compression:  # CAME-OPT-5: stored in float16, and the stored value is used
                v = {k: round_val_to_float16(v[k]) for k in keys}
            keep("exp_avg_sq", shape, v)
            # CAME-STEP-4V: U = G / sqrt(v).
            u = keep("update", shape, {k: g[k] / v[k].sqrt() for k in keys})
        # CAME-STEP-5: Û = U / max(1, RMS(U) / d).
        u_rms = rms(u[k] for k in keys)
        keep("update_rms", (), {(): u_rms})
        divisor = maximum(Val(1), u_rms / Val(hp.clip_threshold))
        keep("clip_divisor", (), {(): divisor})
        u_hat = keep("update_clipped", shape, {k: u[k] / divisor for k in keys})
        # CAME-STEP-6: m = β1 m + (1 − β1) Û.
        exp_avg = keep("exp_avg", shape, _ema(beta1, st["exp_avg"], u_hat))
        if factored:
            # CAME-STEP-7: D = (Û − m_t)² + ε_insta, with the NEW m_t.
            d = {}
            for k in keys:
                w = u_hat[k] - exp_avg[k]
                d[k] = w * w + eps_insta
            keep("instability", shape, d)
            # CAME-STEP-8: R = β3 R + (1 − β3) rowmean(D);  C = β3 C + (1 − β3) colmean(D).
            d_rows, d_cols = _row_col_means(d, batch, n, m)
            big_r = keep("exp_avg_insta_row", rows_shape, _ema(beta3, st["exp_avg_insta_row"], d_rows))
            big_c = keep("exp_avg_insta_col", cols_shape, _ema(beta3, st["exp_avg_insta_col"], d_cols))
            # CAME-STEP-9: direction = F(R, C) ⊙ m.
            s = keep("confidence", shape, _factor(big_r, big_c, batch, n, m))
            direction = keep("direction", shape, {k: s[k] * exp_avg[k] for k in keys})
        else:
            direction = keep("direction", shape, dict(exp_avg))  # CAME-STEP-9V: no confidence factor
        # CAME-STEP-10 (CAME-OPT-1): η_eff = η_t · max(ε_scale, RMS(θ_{t−1})) when scale_parameter.
        lr = Val(hp.lr)
        if hp.eps_scale is not None:
            lr = lr * maximum(Val(hp.eps_scale), rms(th[k] for k in keys))
        keep("lr_effective", (), {(): lr})
        # CAME-STEP-11: decoupled weight decay θ − (η_eff·λ)·θ, only when λ != 0.
        if hp.weight_decay != 0.0:
            lr_wd = lr * Val(hp.weight_decay)
            decayed = {k: th[k] - lr_wd * th[k] for k in keys}
        else:
            decayed = dict(th)
        keep("theta_decayed", shape, decayed)
        # CAME-STEP-12: θ' = θ_decayed − η_eff · direction.
        new_theta = keep("theta", shape, {k: decayed[k] - lr * direction[k] for k in keys})

        values = {name: _array(s, v) for name, (s, v) in trace.items()}
        bounds = {name: _array(s, v, "e") for name, (s, v) in trace.items()}
        new_state = {name: values[name] for name in names}
        return _array(shape, new_theta), new_state, values, bounds


def oracle_step(theta, grad, state: Mapping, hp: StepHyper):
    """One CAME step in high precision: ``(theta', state', trace)`` as object arrays of mpmath values.

    The trace has the keys of ``reference.step``'s trace (CAME-STEP-1 … CAME-STEP-12).
    """
    new_theta, new_state, trace, _ = oracle_step_with_bounds(theta, grad, state, hp)
    return new_theta, new_state, trace


def as_float64(values) -> np.ndarray:
    """Round an object array of mpmath values to float64, each to nearest (ties to even)."""
    a = np.asarray(values, dtype=object)
    out = np.empty(a.shape, dtype=np.float64)
    for idx in _indices(a.shape):
        out[idx] = to_float64(a[idx])
    return out
