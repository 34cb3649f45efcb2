"""One CAME step for one parameter, as a pure float64 function (spec/came.md §4).

State in, state out, nothing hidden: ``step(theta, grad, state, hp)`` returns the new
parameter, the new state and a trace of every intermediate the spec names, so a
comparator can say which quantity diverged first.  The caller's arrays are never
modified.  Every line cites the spec clause it implements.
"""
from __future__ import annotations

import os
import threading
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


# --------------------------------------------------------------------------------------------
# Evaluation in blocks.  The step below is written clause by clause over blocks of rows of each
# trailing 2-D slice (or of the flat tensor, unfactored).  Elementwise operations give the same
# value in any block; each row mean is taken over one row (a block holds whole rows); each column
# mean runs down its column in row order (NumPy adds the rows of an axis -2 reduction one after the
# other), so it is taken over blocks of columns; RMS is a pairwise sum over the flat tensor, split
# exactly where NumPy's pairwise summation splits it.  So the values are bitwise those of the same
# operations on whole arrays, and large parameters use both cores and stay in cache per block.
# --------------------------------------------------------------------------------------------
#: Elements per block of rows: a block of float64 (512 KiB) and its scratch buffers stay in a core's
#: L2 and the shared L3 cache; smaller blocks spend more in Python than they save (docs/benchmarks.md).
BLOCK = 1 << 16
#: Elements per block of columns: a column mean adds whole rows of its block one after the other, so
#: its rows must be long enough (128 float64 at n = 4096) for that loop to run at memory speed.
COLUMN_BLOCK = 1 << 19
#: Below this many elements a parameter is one block on the calling thread.
PARALLEL_FROM = 1 << 18
_POOL: list = []
_ON_POOL = threading.local()  # set on the pool's two threads


def _forget_pool_in_child() -> None:
    """A forked child has none of the pool's threads (it would wait on them forever): it starts its own."""
    _POOL.clear()
    _ON_POOL.active = False


os.register_at_fork(after_in_child=_forget_pool_in_child)  # e.g. the mutation run's process pool


def on_pool_thread() -> bool:
    """Is this one of the two threads ``map_on_two_threads`` runs on?"""
    return getattr(_ON_POOL, "active", False)


def map_on_two_threads(fn, items) -> None:
    """fn over items, on two threads when there are several (NumPy releases the GIL in its loops).

    The items are cut into two runs of consecutive items, one per thread: two tasks per pass, not
    one per block, and each thread walks its own part of memory in order.  Each runs under the
    caller's NumPy error state (which NumPy keeps per thread).  Called on one of the two threads, it
    runs in place: both are busy then.
    """
    items = list(items)
    if len(items) < 2 or on_pool_thread():
        for item in items:
            fn(item)
        return
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor
        _POOL.append(ThreadPoolExecutor(max_workers=2, thread_name_prefix="came-blocks"))
    errors = np.geterr()
    half = (len(items) + 1) // 2

    def run(part):
        _ON_POOL.active = True
        with np.errstate(**errors):
            for item in part:
                fn(item)

    for _ in _POOL[0].map(run, (items[:half], items[half:])):
        pass  # re-raises a block's exception here


def _pairwise_sum(size: int, leaf_sum) -> float:
    """np.add.reduce(f(x)) bitwise for a flat x of ``size`` elements, leaf_sum(lo, hi) being Σ f(x[lo:hi]).

    NumPy's pairwise summation halves a length n at n2 = n // 2 - (n // 2) % 8 until n <= 128; the
    same split down to leaves of at most max(BLOCK, 128) elements gives the same additions in the
    same order (each leaf is a node of NumPy's own recursion, which np.add.reduce then finishes).
    """
    leaves: list[tuple[int, int]] = []
    most = max(BLOCK, 128)  # NumPy sums 128 elements or fewer without splitting: leaves must not be smaller

    def split(lo: int, n: int) -> None:
        if n <= most:
            leaves.append((lo, lo + n))
            return
        n2 = n // 2
        n2 -= n2 % 8
        split(lo, n2)
        split(lo + n2, n - n2)

    split(0, size)
    sums: dict[int, float] = {}

    def one(bounds):
        sums[bounds[0]] = leaf_sum(*bounds)

    map_on_two_threads(one, leaves) if size >= PARALLEL_FROM else [one(b) for b in leaves]

    def combine(lo: int, n: int) -> float:
        if n <= most:
            return sums[lo]
        n2 = n // 2
        n2 -= n2 % 8
        return combine(lo, n2) + combine(lo + n2, n - n2)

    return F64(combine(0, size))


class _Blocks:
    """The row blocks and column blocks of a parameter of shape S, as index tuples into 3-D views.

    A factored S = (..., n, m) is seen as (B, n, m); a row block is (b, rows), a column block
    (b, columns).  An unfactored S is seen flat, as (1, 1, N), so the same code serves both.
    """

    def __init__(self, shape: tuple[int, ...]):
        factored = is_factored(shape)
        n = shape[-2] if factored else 1
        m = shape[-1] if factored else int(np.prod(shape, dtype=np.int64))
        b = int(np.prod(shape[:-2], dtype=np.int64)) if factored else 1
        self.view, self.size = (b, n, m), b * n * m
        self.parallel = self.size >= PARALLEL_FROM
        if factored:
            rows = max(1, BLOCK // max(m, 1)) if self.parallel else n
            self.rows = [(k, slice(i, min(i + rows, n))) for k in range(b) for i in range(0, n, rows)]
        else:  # one "row" of N elements, cut into pieces: rows of an unfactored tensor are never reduced
            step = BLOCK if self.parallel else max(m, 1)
            self.rows = [(0, slice(0, 1), slice(j, min(j + step, m))) for j in range(0, m, step)]
        # At least two columns: NumPy reduces a single strided column pairwise, several row by row.
        cols = max(2, COLUMN_BLOCK // max(n, 1)) if self.parallel else m
        starts = [j for j in range(0, m, cols) if m - j >= 2 or j == 0]  # no last block of one column
        self.cols = [(k, slice(None), slice(j, starts[i + 1] if i + 1 < len(starts) else m))
                     for k in range(b) for i, j in enumerate(starts)]

        # The most elements a row block or a leaf of a pairwise sum (at most max(BLOCK, 128)) holds.
        row_block = (min(rows, n) * m) if factored else min(step, m)
        self.largest = max(row_block, min(self.size, max(BLOCK, 128)))

    def each_row_block(self, fn) -> None:
        map_on_two_threads(fn, self.rows) if self.parallel else [fn(blk) for blk in self.rows]

    def each_col_block(self, fn) -> None:
        map_on_two_threads(fn, self.cols) if self.parallel else [fn(blk) for blk in self.cols]


class _Scratch:
    """Per-thread work space of one block: ``get(name, like)`` is a buffer shaped like the block ``like``.

    Every elementwise operation writes its result with ``out=`` into a named scratch buffer, the
    same operation as without it (so the same rounding), but a block's temporaries are allocated
    once per thread and stay in cache instead of being mapped afresh for every block.
    """

    def __init__(self, largest: int, enabled: bool):
        self.largest, self.enabled = largest, enabled
        self.buffers: dict[tuple[int, str], np.ndarray] = {}

    def get(self, name: str, like: np.ndarray) -> np.ndarray | None:
        """None for a parameter that is one block: NumPy then allocates each result, the cheaper way there."""
        if not self.enabled:
            return None
        key = (threading.get_ident(), name)
        flat = self.buffers.get(key)
        if flat is None:
            flat = self.buffers[key] = np.empty(self.largest, dtype=F64)
        return flat[:like.size].reshape(like.shape)


def step(theta: np.ndarray, grad: np.ndarray, state: Mapping[str, np.ndarray], hp: StepHyper,
         trace: bool = True) -> StepResult:
    """One CAME step: (θ, G, state; hp) -> (θ', state', trace) (CAME-STEP-1 … CAME-STEP-12).

    ``trace=False`` returns an empty trace and takes θ', the state and a few blocks of scratch (two
    parameter sizes and O(n + m) in all); ``trace=True`` keeps every intermediate in an array of its
    own.  Both evaluate the same operations in the same order, so θ' and the state are bitwise the
    same.
    """
    theta = np.asarray(theta, dtype=F64)  # read only: every result goes to a new array
    grad = np.asarray(grad, dtype=F64)
    state = {name: np.asarray(value, dtype=F64) for name, value in state.items()}
    if theta.size == 0:  # CAME-ZERO-1: nothing to update, state unchanged
        return StepResult(theta.copy(), {name: value.copy() for name, value in state.items()}, {})
    factored = is_factored(theta.shape)
    blocks = _Blocks(theta.shape)
    view = blocks.view
    scratch = _Scratch(blocks.largest, blocks.parallel)

    def full() -> np.ndarray:
        return np.empty(view, dtype=F64)

    G, T = grad.reshape(view), theta.reshape(view)
    out: dict[str, np.ndarray] = {}
    keep = {name: full() for name in ("grad", "grad_sq", "update", "update_clipped", "instability",
                                      "confidence", "direction", "theta_decayed")} if trace else {}
    new_theta = full()
    # Untraced, Q, then U, then D live in the buffer of θ' (each dead before the next, and D before θ'
    # is written), so the step takes θ', m' and O(n + m) besides its inputs and scratch.
    work = new_theta if factored and not trace else None
    with np.errstate(all="ignore"):  # CAME-NONFINITE-1: IEEE 754 propagation, no checks
        unscaled = hp.loss_scale != 1.0  # x / 1 is exact: g is G itself then

        def g_of(blk):  # CAME-STEP-1: g = G / s
            if "grad" in keep:
                return keep["grad"][blk]
            return np.divide(G[blk], hp.loss_scale, out=scratch.get("g", G[blk])) if unscaled else G[blk]

        if "grad" in keep:
            blocks.each_row_block(lambda blk: np.divide(G[blk], hp.loss_scale, out=keep["grad"][blk]))
        if factored:
            row_means = np.empty((view[0], view[1]), dtype=F64)
            q_all = keep.get("grad_sq", work)

            def second_moment_input(blk):  # CAME-STEP-2: Q = g·g + ε1; the row means of CAME-STEP-3
                g = g_of(blk)
                q = np.multiply(g, g, out=q_all[blk])
                q += hp.eps1
                row_means[blk[0], blk[1]] = row_mean(q)

            blocks.each_row_block(second_moment_input)
            col_means = _col_means(q_all, blocks)
            lead = theta.shape[:-1]
            r = hp.beta2 * state["exp_avg_sq_row"] + (1.0 - hp.beta2) * row_means.reshape(lead)  # CAME-STEP-3
            c = hp.beta2 * state["exp_avg_sq_col"] + (1.0 - hp.beta2) * col_means.reshape(theta.shape[:-2] + theta.shape[-1:])
            out["exp_avg_sq_row"], out["exp_avg_sq_col"] = r, c
            row_f, col_f = _factors(r, c, view)
            u_all = keep.get("update", work)

            def update(blk):  # CAME-STEP-4: U = F(r, c) · g
                u = np.multiply(row_f[blk[0], blk[1], None], col_f[blk[0], None, :], out=u_all[blk])
                u *= g_of(blk)

            blocks.each_row_block(update)
        else:
            v3 = full()
            q_all = keep.get("grad_sq")
            u_all = keep.get("update")

            def second_moment(blk):  # CAME-STEP-2, CAME-STEP-3V (and CAME-OPT-5), CAME-STEP-4V
                g = g_of(blk)
                q = np.multiply(g, g, out=q_all[blk] if q_all is not None else scratch.get("q", g))
                q += hp.eps1
                v = np.multiply(hp.beta2, state["exp_avg_sq"].reshape(view)[blk], out=v3[blk])
                v += np.multiply(1.0 - hp.beta2, q, out=scratch.get("a", q))
                if hp.compression:  # stored in float16, used as stored
                    v[...] = v.astype(np.float16)
                if u_all is not None:
                    np.divide(g, np.sqrt(v, out=scratch.get("a", v)), out=u_all[blk])

            blocks.each_row_block(second_moment)
            out["exp_avg_sq"] = v3.reshape(theta.shape)

        def u_of(blk):  # CAME-STEP-4V recomputed where it is not kept: the same operations
            if u_all is not None:
                return u_all[blk]
            u = np.sqrt(v3[blk], out=scratch.get("u", v3[blk]))
            return np.divide(g_of(blk), u, out=u)

        u_flat = u_all.reshape(-1) if u_all is not None else None

        def squares_sum(lo, hi):  # CAME-STEP-5, CAME-DEF-1: Σ U² over a leaf of the pairwise sum
            if u_flat is not None:
                piece = u_flat[lo:hi]
            else:
                piece = u_of((0, slice(0, 1), slice(lo, hi)))
            return np.add.reduce(np.multiply(piece, piece, out=scratch.get("a", piece)), axis=None)

        u_rms = np.sqrt(_pairwise_sum(blocks.size, squares_sum) / blocks.size)
        divisor = np.maximum(1.0, u_rms / hp.clip_threshold)  # CAME-STEP-5: Û = U / max(1, RMS(U)/d)
        m3 = full()
        hat_all = keep.get("update_clipped")
        d_all = keep.get("instability", work)
        row_means_d = np.empty((view[0], view[1]), dtype=F64) if factored else None

        def moments(blk):  # CAME-STEP-5 … CAME-STEP-7, and the row means of CAME-STEP-8
            u = u_of(blk)
            if hat_all is not None:
                u_hat = np.divide(u, divisor, out=hat_all[blk])
            else:  # U / 1 is exact
                u_hat = u if divisor == 1.0 else np.divide(u, divisor, out=scratch.get("u", u))
            m = np.multiply(hp.beta1, state["exp_avg"].reshape(view)[blk], out=m3[blk])  # CAME-STEP-6
            m += np.multiply(1.0 - hp.beta1, u_hat, out=scratch.get("a", u_hat))
            if factored:
                d = np.subtract(u_hat, m, out=d_all[blk])  # CAME-STEP-7: D = (Û − m')² + ε_insta
                d *= d
                d += hp.eps_insta
                row_means_d[blk[0], blk[1]] = row_mean(d)

        blocks.each_row_block(moments)
        out["exp_avg"] = m3.reshape(theta.shape)
        if factored:
            col_means_d = _col_means(d_all, blocks)
            big_r = hp.beta3 * state["exp_avg_insta_row"] + (1.0 - hp.beta3) * row_means_d.reshape(lead)  # CAME-STEP-8
            big_c = hp.beta3 * state["exp_avg_insta_col"] + (1.0 - hp.beta3) * col_means_d.reshape(
                theta.shape[:-2] + theta.shape[-1:])
            out["exp_avg_insta_row"], out["exp_avg_insta_col"] = big_r, big_c
            row_s, col_s = _factors(big_r, big_c, view)
        lr = hp.lr  # CAME-STEP-10
        if hp.eps_scale is not None:
            t_flat = T.reshape(-1)

            def theta_squares(lo, hi):
                piece = t_flat[lo:hi]
                return np.add.reduce(np.multiply(piece, piece, out=scratch.get("a", piece)), axis=None)

            lr = lr * np.maximum(hp.eps_scale, np.sqrt(_pairwise_sum(blocks.size, theta_squares) / blocks.size))

        def parameter(blk):  # CAME-STEP-9 (or 9V), CAME-STEP-11, CAME-STEP-12
            m = m3[blk]
            if factored:
                s = np.multiply(row_s[blk[0], blk[1], None], col_s[blk[0], None, :],
                                out=keep["confidence"][blk] if "confidence" in keep else scratch.get("a", m))
                direction = np.multiply(s, m, out=keep["direction"][blk] if "direction" in keep else s)
            else:
                direction = m  # CAME-STEP-9V: no confidence factor
                if "direction" in keep:
                    keep["direction"][blk] = m
            theta_blk = T[blk]
            if hp.weight_decay != 0.0:  # CAME-STEP-11: θd = θ − (η·λ)·θ, only when λ != 0
                decayed = np.multiply(lr * hp.weight_decay, theta_blk, out=scratch.get("g", m))
                np.subtract(theta_blk, decayed, out=decayed)
            else:
                decayed = theta_blk
            if "theta_decayed" in keep:
                keep["theta_decayed"][blk] = decayed
            # CAME-STEP-12: θ' = θd − η·Δ (η·Δ into scratch "u": the untraced Δ may be scratch "a" itself)
            np.subtract(decayed, np.multiply(lr, direction, out=scratch.get("u", m)), out=new_theta[blk])

        blocks.each_row_block(parameter)
    new_theta = new_theta.reshape(theta.shape)
    new_state = {name: out[name] for name in state_shapes(theta.shape)}
    if not trace:
        return StepResult(new_theta, new_state, {})
    shaped = {name: a.reshape(theta.shape) for name, a in keep.items()}
    if not factored:
        shaped["confidence"] = None
        del shaped["confidence"], shaped["instability"]
    trace_out = {**shaped, **out, "update_rms": u_rms, "clip_divisor": divisor, "lr_effective": F64(lr),
                 "theta": new_theta}
    return StepResult(new_theta, new_state, trace_out)


def _col_means(x3: np.ndarray, blocks: _Blocks) -> np.ndarray:
    """CAME-DEF-2: colmean of every (n, m) slice of the (B, n, m) view, taken over blocks of columns."""
    out = np.empty((x3.shape[0], x3.shape[2]), dtype=F64)

    def one(blk):
        out[blk[0], blk[2]] = col_mean(x3[blk])

    blocks.each_col_block(one)
    return out


def _factors(row: np.ndarray, col: np.ndarray, view) -> tuple[np.ndarray, np.ndarray]:
    """CAME-DEF-3 as its two vectors: F[..., i, j] = row_f[..., i] · col_f[..., j], on the 3-D view."""
    row_f = 1.0 / np.sqrt(row / np.mean(row, axis=-1, keepdims=True))
    col_f = 1.0 / np.sqrt(col)
    return row_f.reshape(view[0], view[1]), col_f.reshape(view[0], view[2])
