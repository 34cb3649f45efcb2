"""Rigorous forward error bounds, operation by operation (docs/tolerances.md §2; spec CAME-DTYPE-3).

A ``Q`` is one quantity of a CAME step, elementwise: ``x``, its value as the suite computes it in
float64; ``b``, a bound on |target − exact| for a correct target computing in its declared
``Precision``; ``r``, a bound on |x − exact|, the suite's own float64 evaluation error.  Every
operation propagates both bounds exactly (no first-order truncation, so no safety factor):

    product    |ãb̃ − ab| ≤ |a| e_b + |b| e_a + e_a e_b
    quotient   |ã/b̃ − a/b| ≤ (e_a + |a/b| e_b) / (|b| − e_b)         (inf if e_b ≥ |b|)
    sqrt       |√ã − √a| ≤ e_a / (√a + √max(a − e_a, 0))
    max        |max(ã, c̃) − max(a, c)| ≤ max(e_a, e_c)               (1-Lipschitz, no rounding)
    n-term sum Σ e_i + γ_k Σ(|x_i| + e_i), k from the declared summation rule (Higham §4.2)

and then adds the operation's own rounding: u·|result| + η, where u is the unit roundoff of the
precision the operation rounds to and η half that format's smallest subnormal spacing (the
standard model with gradual underflow, Higham §2.2).  Operations on half tensors done in float32
and then rounded (torch's and MindSpore's "opmath") round twice: their u is u_half + u_float32.
A rounding that is a store into a coarser dtype is left to the comparator, which checks the
stored value on that dtype's grid (``conformance.compare``).
"""
from __future__ import annotations

import numpy as np

from came_conformance.blockwise import elementwise
from came_conformance.precision import Precision, contains, gamma, half_spacing
from came_conformance.reference.dtypes import round_to, unit_roundoff

U64, ETA64 = unit_roundoff("float64"), half_spacing("float64")


class Q:
    """A quantity: float64 value ``x``, target error bound ``b``, reference error bound ``r``."""

    __slots__ = ("x", "b", "r")

    def __init__(self, x, b=0.0, r=0.0):
        self.x = np.asarray(x, dtype=np.float64)
        self.b, self.r = b, r  # arrays of x's shape, or scalars that broadcast (``full``)

    def full(self, e) -> np.ndarray:
        e = np.asarray(e, dtype=np.float64)
        return e if e.shape == self.x.shape else np.broadcast_to(e, self.x.shape)

    def __getitem__(self, index) -> "Q":
        return Q(self.x[index], self.full(self.b)[index], self.full(self.r)[index])


def _zero(e) -> bool:
    return np.ndim(e) == 0 and e == 0


def _product_error(ax, ea, cx, ec):
    """|a|e_c + |c|e_a + e_a e_c, skipping the terms of exact factors (most reads are exact)."""
    if _zero(ea) and _zero(ec):
        return 0.0
    if _zero(ea):
        return np.abs(ax) * ec
    if _zero(ec):
        return np.abs(cx) * ea
    return np.abs(ax) * ec + np.abs(cx) * ea + ea * ec


def _max(*bounds):
    out = bounds[0]
    for b in bounds[1:]:
        out = np.maximum(out, b)
    return out


class Algebra:
    """The operations of the step for one ``Precision``: what rounds where, and how bounds propagate.

    The step's elementwise chains run in blocks (``conformance.blockwise``, tolerance.py's chains), so
    the operations themselves see blocks; only ``read`` and ``mul`` are also called on whole
    parameters outside a chain (the unfactored v, θ and the RMS's square) and run in blocks there.
    """

    def __init__(self, prec: Precision):
        self.prec = prec
        self.uc = prec.u("compute") + prec.opmath  # one elementwise operation
        self.eta_c = half_spacing(prec.compute)
        self.ua = prec.u("accumulate")
        self.eta_a = half_spacing(prec.accumulate)
        self.us = prec.u("scalars")
        self.u_store = {"state": prec.u("state"), "param": prec.u("param")}

    # ---- rounding -------------------------------------------------------------------------------
    def _round(self, x, b, r, u=None, eta=None):
        """Add one rounding of the target (unit u, default compute) and one of the float64 reference."""
        u = self.uc if u is None else u
        eta = self.eta_c if eta is None else eta
        ax = np.abs(x)
        t = ax + r  # in place from here: these run over every element of large parameters
        new_r = t * U64
        new_r += r
        new_r += ETA64
        t += b
        t *= u
        t += b
        t += eta
        if not np.all(np.isfinite(ax)):  # an exact ±inf stays exact (e.g. sqrt of a stored inf)
            exact_inf = np.isinf(x) & (b == 0) & (r == 0)
            t, new_r = np.where(exact_inf, 0.0, t), np.where(exact_inf, 0.0, new_r)
        return Q(x, t, new_r)

    def rounded(self, q: Q, rnd: bool = True) -> Q:
        return self._round(q.x, q.b, q.r) if rnd else q

    # ---- inputs ---------------------------------------------------------------------------------
    @elementwise
    def read(self, x, dtype: str, fresh: bool = False, must_use_stored: bool = False) -> Q:
        """A tensor the target keeps in ``dtype``, as its compute precision sees it.

        Read from storage, it is exact when the compute precision holds every value of ``dtype``,
        else one rounding into compute precision.  A tensor ``fresh`` from this step (stored, then
        used by a later clause) may also have been used before its store rounded it, unless
        ``must_use_stored`` (compression, CAME-OPT-5: the stored value is the one used): one more
        rounding of ``dtype``.  The same dtype as the compute precision is always exact.
        """
        x = np.asarray(x, dtype=np.float64)
        if dtype == self.prec.compute:
            return Q(x)
        u = eta = 0.0
        if not contains(self.prec.compute, dtype):
            u, eta = self.prec.u("compute"), self.eta_c
        if fresh and not must_use_stored:
            u, eta = u + unit_roundoff(dtype), eta + half_spacing(dtype)
        with np.errstate(all="ignore"):  # an infinity is read exactly in every format
            return Q(x, np.where(np.isinf(x), 0.0, u * np.abs(x) * (1 + 2 * u) + eta) if u else 0.0)

    def gradient(self, x) -> Q:
        """The gradient read into compute precision (CAME-DTYPE-4): exact, or one rounding."""
        if contains(self.prec.compute, self.prec.grad_dtype):
            return Q(x)
        with np.errstate(all="ignore"):
            return Q(x, np.where(np.isinf(x), 0.0, self.prec.u("compute") * np.abs(x) + self.eta_c))

    def scalar(self, value: float, computed: int = 0, ref_ops: int = 0) -> Q:
        """A hyperparameter held in the scalars precision.

        Its error is the exact distance to its rounding in that precision, plus ``computed``
        roundings of the scalars precision when the target computes it (β2_t, scheduled η_t); the
        reference's own float64 evaluation of it has ``ref_ops`` roundings.
        """
        v = float(value)
        held = float(round_to(self.prec.scalars, v))
        a = abs(v)
        return Q(v, abs(held - v) + computed * self.us * a, ref_ops * U64 * a)

    # ---- arithmetic -----------------------------------------------------------------------------
    @elementwise
    def mul(self, a: Q, c: Q, rnd: bool = True) -> Q:
        x = a.x * c.x
        b, r = _product_error(a.x, a.b, c.x, c.b), _product_error(a.x, a.r, c.x, c.r)
        return self._round(x, b, r) if rnd else Q(x, b, r)

    def add(self, a: Q, c: Q, rnd: bool = True, sign: float = 1.0) -> Q:
        x = a.x + sign * c.x
        b, r = a.b + c.b, a.r + c.r
        return self._round(x, b, r) if rnd else Q(x, b, r)

    def sub(self, a: Q, c: Q, rnd: bool = True) -> Q:
        return self.add(a, c, rnd, sign=-1.0)

    def div(self, a: Q, c: Q, rnd: bool = True) -> Q:
        x = a.x / c.x
        ac = np.abs(c.x)
        b = np.where(c.b < ac, (a.b + np.abs(x) * c.b) / np.maximum(ac - c.b, np.finfo(np.float64).tiny), np.inf)
        r = np.where(c.r < ac, (a.r + np.abs(x) * c.r) / np.maximum(ac - c.r, np.finfo(np.float64).tiny), np.inf)
        return self._round(x, b, r) if rnd else Q(x, b, r)

    def sqrt(self, a: Q, rnd: bool = True) -> Q:
        x = np.sqrt(a.x)

        def bound(e):  # the larger of √(a + e) − √a and √a − √max(a − e, 0), without cancellation
            up = e / (np.sqrt(a.x + e) + x)
            down = np.where(a.x >= e, e / (x + np.sqrt(np.maximum(a.x - e, 0.0))), x)
            return np.where(e == 0, 0.0, np.maximum(up, down))

        b, r = bound(a.b), bound(a.r)
        return self._round(x, b, r) if rnd else Q(x, b, r)

    def maximum(self, a: Q, c: Q) -> Q:
        return Q(np.maximum(a.x, c.x), np.maximum(a.b, c.b), np.maximum(a.r, c.r))

    def recip_sqrt(self, a: Q) -> Q:
        """1/√a, as 1/sqrt(a) or rsqrt(a) (counted as the same two roundings)."""
        return self.div(Q(np.ones_like(a.x)), self.sqrt(a))

    # ---- reductions (CAME-DEF-1, CAME-DEF-2) ----------------------------------------------------
    def mean(self, a: Q, axis=None, keepdims: bool = False) -> Q:
        """A mean: an n-term sum in the accumulate precision under the declared summation rule, a
        division by n there (n itself rounded if it is not exact there), and one rounding into the
        compute precision when that is coarser than the accumulator."""
        n = a.x.size if axis is None else a.x.shape[axis]
        absx = np.abs(a.x)
        total = np.sum(a.x, axis=axis, keepdims=keepdims)
        g_t, g_r = self.prec.reduction_gamma(n), gamma(max(n - 1, 0), U64)
        ab, ar = a.full(a.b), a.full(a.r)
        sum_b, sum_r = np.sum(ab, axis=axis, keepdims=keepdims), np.sum(ar, axis=axis, keepdims=keepdims)
        sum_abs = np.sum(absx, axis=axis, keepdims=keepdims)
        b = sum_b + g_t * (sum_abs + sum_r + sum_b)
        r = sum_r + g_r * (sum_abs + sum_r)
        x, b, r = total / n, b / n, r / n
        if float(round_to(self.prec.accumulate, float(n))) != float(n):  # n rounded in the accumulator
            b = b + self.ua * (np.abs(x) + r + b)
        q = self._round(x, b, r, self.ua, self.eta_a)  # the division
        if not contains(self.prec.compute, self.prec.accumulate):  # into a coarser compute precision
            q = self._round(q.x, q.b, q.r)
        return q

    def rms(self, a: Q) -> Q:
        """RMS (CAME-DEF-1) as sqrt(mean(a ⊙ a)), or as ‖a‖₂ / sqrt(N) (one rounding of sqrt(N) and one
        division in place of the mean's): the bound of the second form, which contains the first's."""
        q = self.rounded(self.sqrt(self.mean(self.mul(a, a))))
        return self._round(q.x, q.b, q.r, self.ua, 0.0)

    def factor(self, row: Q, col: Q) -> Q:
        """F(r, c) of CAME-DEF-3 as (1/√(r/r̄)) ⊗ (1/√c), with 1/√x as 1/sqrt(x) or rsqrt(x) (two roundings).

        This is the form of every implementation read (S2, S4, S5 and Hugging Face's Adafactor).
        Adafactor's V̂ form 1/√(r ⊗ c / r̄) is not covered: r ⊗ c underflows in float16 once the
        statistics are below about 2⁻¹², so no bound covering it would say anything there.
        """
        return self.mul(*self.factor_vectors(row, col))

    def factor_vectors(self, row: Q, col: Q) -> tuple[Q, Q]:
        """The two factors of ``factor`` (see there), shaped (..., n, 1) and (..., 1, m) to broadcast."""
        mean = self.mean(row, axis=-1, keepdims=True)
        row_factor = self.recip_sqrt(self.div(row, mean))
        col_factor = self.recip_sqrt(col)
        return row_factor[..., :, None], col_factor[..., None, :]

    # ---- the EMA of CAME-STEP-3, -3V, -6, -8 ----------------------------------------------------
    def ema(self, old: Q, new: Q, beta: Q, one_minus: Q, rnd: bool = True) -> Q:
        """β·old + (1 − β)·new as a multiply-add, as old + (1 − β)(new − old) (``torch.lerp``'s formula
        for weights below 0.5, and the compiled one for every weight), or, for a weight 1 − β ≥ 0.5,
        as new − β(new − old) (``torch.lerp``'s other branch).

        ``beta`` and ``one_minus`` carry the target's errors of its β and 1 − β.  The error a form
        carries in from its inputs is exact to first order in each form (the error of ``new`` enters
        with the weight 1 − β in every form, not once per occurrence), and each form adds the
        roundings of its own two intermediate results; the bound is the larger of the forms'.  The
        final rounding is left out when ``rnd`` is False.
        """
        bx, wx, db, dw = beta.x, one_minus.x, beta.b, one_minus.b
        x = bx * old.x + wx * new.x
        a_old, a_new, a_diff = np.abs(old.x), np.abs(new.x), np.abs(new.x - old.x)
        carried_muladd = (np.abs(bx) + db) * old.b + (np.abs(wx) + db) * new.b + db * a_old + dw * a_new
        carried_low = (np.abs(bx) + dw) * old.b + (np.abs(wx) + dw) * new.b + dw * a_diff
        carried_high = (np.abs(bx) + dw) * old.b + (np.abs(wx) + dw) * new.b + dw * a_diff  # lerp's weight is 1 − β
        high_branch = np.abs(wx) >= 0.5
        carried = _max(carried_muladd, carried_low, np.where(high_branch, carried_high, 0.0))

        def rounding(*magnitudes):
            return sum(self.uc * (m + carried) + self.eta_c for m in magnitudes)

        # an intermediate's rounding reaches the result scaled by what multiplies it afterwards
        high = np.where(high_branch, rounding(np.abs(bx) * a_diff, np.abs(bx) * a_diff), 0.0)
        rounded = _max(rounding(np.abs(bx) * a_old, np.abs(wx) * a_new),
                       rounding(np.abs(wx) * a_diff, np.abs(wx) * a_diff), high)
        r = np.abs(bx) * old.r + np.abs(wx) * new.r + beta.r * a_old + one_minus.r * a_new \
            + 2 * (U64 * (np.abs(bx) * a_old + np.abs(wx) * a_new) + ETA64)
        b = carried + rounded
        return self._round(x, b, r) if rnd else Q(x, b, r)
