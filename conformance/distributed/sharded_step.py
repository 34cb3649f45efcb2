"""One CAME step of one rank's shard, with the collectives a sharded port needs (spec §9).

``sharded_step(layout, θ_local, G_local, state_local, hp, place)`` is ``reference.step.step``
(CAME-STEP-1 … CAME-STEP-12) evaluated on the rank's piece of a parameter: every quantity that
a shard only sees part of is completed by an all-reduce of partial sums (CAME-SHARD-1):

- ``rows`` (axis -2 split): the column statistics c, C (sums over the rows), the row normaliser
  mean(r), mean(R) (CAME-DEF-3) and every RMS;
- ``cols`` (axis -1 split): the row statistics r, R (sums over the columns) and every RMS;
- ``zero`` (flat padded piece): row and column sums of the real elements, scattered to their
  (batch, row, column) and all-reduced, so every rank keeps the whole statistics; every RMS; the
  padding never enters a sum or a count and stays zero (CAME-SHARD-3).

``Bugs`` switches on the sharding mutants (conformance.distributed.mutants); with none, this is
the sharded reference the harness must pass in every layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from came_conformance.distributed import layout as lay
from came_conformance.reference import step as came_step
from came_conformance.reference.step import StepHyper, is_factored

SWITCHES = ("clip-rms-per-shard", "row-mean-per-rank", "padding-in-rms", "padding-in-means",
            "allreduce-twice", "allreduce-missing", "shard-offset-off-by-one")


@dataclass(frozen=True)
class Place:
    """Where a rank's piece sits: the full shape, the layout, the rank and the world size."""

    shape: tuple[int, ...]
    layout: str
    rank: int
    world: int


class Collectives:
    """Sums over the ranks (torch.distributed all-reduce of float64 arrays)."""

    def sum(self, x) -> np.ndarray:
        import torch
        import torch.distributed as dist

        t = torch.from_numpy(np.array(x, dtype=np.float64, copy=True).reshape(-1))
        dist.all_reduce(t)
        return t.numpy().reshape(np.shape(x))


def _ema(beta, old, new):
    return beta * old + (1.0 - beta) * new


def _factor(row, row_bar, col):
    """CAME-DEF-3 at given statistics; ``row_bar`` is mean(r) over the whole row axis (keepdims)."""
    return (1.0 / np.sqrt(row / row_bar))[..., :, None] * (1.0 / np.sqrt(col))[..., None, :]


class _Reductions:
    """The global means of one layout, from the rank's piece (``bugs`` switch the mutants on)."""

    def __init__(self, place: Place, comm: Collectives, bugs: frozenset):
        self.place, self.comm, self.bugs = place, comm, bugs
        self.numel = math.prod(place.shape)

    def total_mean(self, local_sum: float, local_count: int) -> float:
        """Mean over every real element of the tensor (CAME-DEF-1's 1/N)."""
        if "clip-rms-per-shard" in self.bugs:
            return local_sum / local_count if local_count else float("nan")
        count = self.numel
        if "padding-in-rms" in self.bugs and self.place.layout == "zero":
            count = lay.zero_piece(self.numel, self.place.world) * self.place.world
        return float(self.comm.sum(np.array(local_sum))) / count


def _rms(red: _Reductions, x: np.ndarray, mask=None) -> float:
    sq = x * x if mask is None else (x * x)[mask]
    return math.sqrt(red.total_mean(float(np.sum(sq)), int(sq.size)))


def sharded_step(theta, grad, state, hp: StepHyper, place: Place, comm: Collectives,
                 bugs: frozenset = frozenset()):
    """(θ', state') of the rank's piece (the layouts of ``layout.state_layout``)."""
    if place.layout == "replicated":
        result = came_step.step(theta, grad, state, hp, trace=False)
        return result.theta, result.state
    if math.prod(place.shape) == 0:  # CAME-ZERO-1, decided on the full shape by every rank alike
        return np.array(theta, copy=True), {k: np.array(v, copy=True) for k, v in state.items()}
    red = _Reductions(place, comm, bugs)
    theta, grad = np.asarray(theta, np.float64), np.asarray(grad, np.float64)
    mask = None
    if place.layout == "zero":
        start = place.rank * lay.zero_piece(math.prod(place.shape), place.world)
        mask = start + np.arange(theta.size) < math.prod(place.shape)  # the real elements of the piece
    with np.errstate(all="ignore"):
        g = grad / hp.loss_scale  # CAME-STEP-1
        q = g * g + hp.eps1  # CAME-STEP-2
        new = {}
        if is_factored(place.shape):
            stats = _factored_stats(place, red, mask)
            r, c = stats(q, state["exp_avg_sq_row"], state["exp_avg_sq_col"], hp.beta2)  # CAME-STEP-3
            new["exp_avg_sq_row"], new["exp_avg_sq_col"] = r, c
            u = stats.factor(r, c) * g  # CAME-STEP-4
        else:
            v = _ema(hp.beta2, state["exp_avg_sq"], q)  # CAME-STEP-3V
            if hp.compression:
                v = v.astype(np.float16).astype(np.float64)
            new["exp_avg_sq"] = v
            u = g / np.sqrt(v)  # CAME-STEP-4V
        divisor = np.maximum(1.0, _rms(red, u, mask) / hp.clip_threshold)  # CAME-STEP-5
        u_hat = u / divisor
        m = hp.beta1 * state["exp_avg"] + (1.0 - hp.beta1) * u_hat  # CAME-STEP-6
        new["exp_avg"] = m
        if is_factored(place.shape):
            d = (u_hat - m) ** 2 + hp.eps_insta  # CAME-STEP-7
            big_r, big_c = stats(d, state["exp_avg_insta_row"], state["exp_avg_insta_col"], hp.beta3)  # CAME-STEP-8
            new["exp_avg_insta_row"], new["exp_avg_insta_col"] = big_r, big_c
            direction = stats.factor(big_r, big_c) * m  # CAME-STEP-9
        else:
            direction = m  # CAME-STEP-9V
        lr = hp.lr  # CAME-STEP-10
        if hp.eps_scale is not None:
            lr = lr * np.maximum(hp.eps_scale, _rms(red, theta, mask))
        decayed = theta - (lr * hp.weight_decay) * theta if hp.weight_decay != 0.0 else theta  # CAME-STEP-11
        new_theta = decayed - lr * direction  # CAME-STEP-12
    if mask is not None:  # the padding stays zero (CAME-SHARD-3)
        new_theta = np.where(mask, new_theta, 0.0)
        for name in ("exp_avg", "exp_avg_sq"):
            if name in new:
                new[name] = np.where(mask, new[name], 0.0)
    return new_theta, new


def _factored_stats(place: Place, red: _Reductions, mask):
    return {"rows": _RowsStats, "cols": _ColsStats, "zero": _ZeroStats}[place.layout](place, red, mask)


class _RowsStats:
    """Rows split: row statistics are complete locally; column sums and mean(r) need the ranks."""

    def __init__(self, place, red, mask):
        self.place, self.red, self.n_rows = place, red, place.shape[-2]

    def _col_sum(self, x):
        local = np.sum(x, axis=-2)
        if "allreduce-missing" in self.red.bugs:
            return local
        total = self.red.comm.sum(local)
        return self.red.comm.sum(total) if "allreduce-twice" in self.red.bugs else total

    def __call__(self, x, row, col, beta):
        return _ema(beta, row, np.mean(x, axis=-1)), _ema(beta, col, self._col_sum(x) / self.n_rows)

    def factor(self, row, col):
        if "row-mean-per-rank" in self.red.bugs:
            row_bar = np.mean(row, axis=-1, keepdims=True)
        else:
            row_bar = self.red.comm.sum(np.sum(row, axis=-1, keepdims=True)) / self.n_rows
        return _factor(row, row_bar, col)


class _ColsStats:
    """Columns split: column statistics are complete locally; row sums need the ranks."""

    def __init__(self, place, red, mask):
        self.place, self.red, self.n_cols = place, red, place.shape[-1]

    def __call__(self, x, row, col, beta):
        return _ema(beta, row, self.red.comm.sum(np.sum(x, axis=-1)) / self.n_cols), _ema(beta, col, np.mean(x, axis=-2))

    def factor(self, row, col):
        return _factor(row, np.mean(row, axis=-1, keepdims=True), col)


class _ZeroStats:
    """A flat piece: sums scattered to (batch, row, column) and all-reduced; whole statistics on every rank."""

    def __init__(self, place, red, mask):
        self.place, self.red, self.mask = place, red, mask
        *batch, self.n_rows, self.n_cols = place.shape
        self.batch = tuple(batch)
        n_batch = math.prod(self.batch)
        start = place.rank * lay.zero_piece(math.prod(place.shape), place.world)
        flat = start + np.flatnonzero(mask)
        self.b, rest = np.divmod(flat, self.n_rows * self.n_cols)
        self.i, self.j = np.divmod(rest, self.n_cols)
        self.n_batch = n_batch
        self.row_count = np.full((n_batch, self.n_rows), float(self.n_cols))
        self.col_count = np.full((n_batch, self.n_cols), float(self.n_rows))
        self.pad_cols = None
        if "padding-in-means" in red.bugs:  # the padded tail read as extra rows of the last batch slice
            pad = lay.zero_piece(math.prod(place.shape), place.world) * place.world - math.prod(place.shape)
            self.pad_cols = np.arange(math.prod(place.shape), math.prod(place.shape) + pad) % self.n_cols
            np.add.at(self.col_count[-1], self.pad_cols, 1.0)

    def _sums(self, x, extra):
        values = x[self.mask]
        rows = np.zeros((self.n_batch, self.n_rows))
        cols = np.zeros((self.n_batch, self.n_cols))
        np.add.at(rows, (self.b, self.i), values)
        np.add.at(cols, (self.b, self.j), values)
        both = self.red.comm.sum(np.concatenate([rows.ravel(), cols.ravel()]))
        rows, cols = both[:rows.size].reshape(rows.shape), both[rows.size:].reshape(cols.shape)
        if self.pad_cols is not None:  # the padding's Q = ε (a zero gradient) counted too
            np.add.at(cols[-1], self.pad_cols, extra)
        return rows, cols

    def __call__(self, x, row, col, beta):
        extra = float(np.max(x[~self.mask])) if (~self.mask).any() else 0.0
        rows, cols = self._sums(x, extra)
        row_mean = (rows / self.row_count).reshape(self.batch + (self.n_rows,))
        col_mean = (cols / self.col_count).reshape(self.batch + (self.n_cols,))
        return _ema(beta, row, row_mean), _ema(beta, col, col_mean)

    def factor(self, row, col):
        full = _factor(row, np.mean(row, axis=-1, keepdims=True), col).reshape(self.n_batch, self.n_rows, self.n_cols)
        out = np.zeros(self.mask.shape)
        out[self.mask] = full[self.b, self.i, self.j]
        return out
