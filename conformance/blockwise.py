"""Elementwise work on large arrays, in cache-sized blocks on two threads (issue 14, docs/benchmarks.md).

The tolerance model (``conformance.bounds``, ``conformance.tolerance``) and the comparator
(``conformance.compare``) run ten or twenty NumPy passes per operation over every element of a
parameter.  On a 4096 × 4096 parameter each pass streams 128 MiB through memory and allocates a
fresh temporary of that size.  ``elementwise(fn)`` wraps a function whose every operation is
elementwise (NumPy broadcasting allowed):

- called on arrays of fewer than ``PARALLEL_FROM`` elements, it is ``fn`` itself;
- on larger ones, it runs ``fn`` on blocks of rows of the broadcast shape, on two threads (NumPy
  releases the GIL in its loops), and writes each block's results into full-size outputs.

A block's temporaries stay in cache, so a function of ten passes reads its inputs and writes its
outputs about once.  The values are bitwise those of one call on whole arrays: an elementwise
operation does not depend on where its element sits.  Results may be arrays, ``bounds.Q``
quantities, tuples of them, or scalars that every block gives alike.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

from came_conformance.reference.step import map_on_two_threads, on_pool_thread

#: Elements per block: a block and a function's temporaries (float64) stay in L2 and L3 cache.
BLOCK = 1 << 16
#: Below this many elements a call is one call on the calling thread.
PARALLEL_FROM = 1 << 18
#: A call whose arrays all have fewer elements than this runs as it is, unexamined (SMALL² is
#: PARALLEL_FROM: two such arrays cannot broadcast to a large result; three could, and would then
#: only run unblocked, to the same values).
SMALL = 1 << 9


def run_on_two_threads(tasks) -> None:
    """Run callables on the reference's two threads (``reference.step.map_on_two_threads``)."""
    map_on_two_threads(lambda task: task(), tasks)


@functools.cache
def _quantity() -> type:
    from came_conformance.bounds import Q  # bounds imports this module
    return Q


def _largest(values) -> int:
    """The most elements of any array among ``values`` (a quick look, for the small calls of most cases)."""
    Q = _quantity()
    most = 0
    for value in values:
        if isinstance(value, Q):
            most = max(most, value.x.size, getattr(value.b, "size", 1), getattr(value.r, "size", 1))
        elif isinstance(value, np.ndarray):
            most = max(most, value.size)
        elif isinstance(value, (tuple, list)):
            most = max(most, _largest(value))
    return most


def _leaves(value, found: list) -> None:
    Q = _quantity()
    if isinstance(value, Q):
        for field in (value.x, value.b, value.r):
            _leaves(field, found)
    elif isinstance(value, np.ndarray) and value.ndim:
        found.append(value.shape)
    elif isinstance(value, (tuple, list)):
        for item in value:
            _leaves(item, found)


def _cut(value, ndim: int, axis: int, rows: slice):
    """``value`` restricted to the block ``rows`` of axis ``axis`` of the ndim-dimensional broadcast shape."""
    Q = _quantity()
    if isinstance(value, Q):
        return Q(_cut(value.x, ndim, axis, rows), _cut(value.b, ndim, axis, rows), _cut(value.r, ndim, axis, rows))
    if isinstance(value, np.ndarray) and value.ndim:
        own = axis - (ndim - value.ndim)  # broadcasting aligns trailing axes
        if own < 0 or value.shape[own] == 1:
            return value  # broadcast along the cut axis: every block reads all of it
        index = [slice(None)] * value.ndim
        index[own] = rows
        return value[tuple(index)]
    if isinstance(value, tuple):
        return tuple(_cut(item, ndim, axis, rows) for item in value)
    if isinstance(value, list):
        return [_cut(item, ndim, axis, rows) for item in value]
    return value


class _NotBlockwise(Exception):
    """The first block gave a result that is neither full-shaped nor a scalar: call fn on whole arrays."""


class _Output:
    """Where a field of the results goes: a full-size array, or a scalar every block gives alike."""

    def __init__(self, first, shape, axis, rows):
        self.shape, self.axis, self.lock = shape, axis, threading.Lock()
        if np.ndim(first) == 0:
            self.scalar, self.array = first, None
            return
        if np.shape(first) != self._block_shape(rows):
            raise _NotBlockwise
        self.scalar, self.array = None, np.empty(shape, dtype=np.result_type(first))
        self.write(first, rows)

    def _block_shape(self, rows) -> tuple[int, ...]:
        shape = list(self.shape)
        shape[self.axis] = len(range(*rows.indices(self.shape[self.axis])))
        return tuple(shape)

    def write(self, value, rows) -> None:
        with self.lock:
            if self.array is None:
                if np.ndim(value) == 0 and (value == self.scalar or (value != value and self.scalar != self.scalar)):
                    return
                # a block gave an array (or another scalar) where the ones before gave this scalar
                self.array = np.full(self.shape, self.scalar, dtype=np.result_type(self.scalar, value))
        index = [slice(None)] * len(self.shape)
        index[self.axis] = rows
        block = self.array[tuple(index)]
        block[...] = np.broadcast_to(value, block.shape)

    def value(self):
        return self.scalar if self.array is None else self.array


def _outputs(result, shape, axis, rows):
    Q = _quantity()
    if isinstance(result, Q):
        return Q, [_Output(f, shape, axis, rows) for f in (result.x, result.b, result.r)]
    if isinstance(result, tuple):
        return tuple, [_outputs(item, shape, axis, rows) for item in result]
    return None, _Output(result, shape, axis, rows)


def _write(layout, result, rows) -> None:
    Q = _quantity()
    kind, out = layout
    if kind is Q:
        for o, f in zip(out, (result.x, result.b, result.r)):
            o.write(f, rows)
    elif kind is tuple:
        for item_layout, item in zip(out, result):
            _write(item_layout, item, rows)
    else:
        out.write(result, rows)


def _assemble(layout):
    Q = _quantity()
    kind, out = layout
    if kind is Q:
        x, b, r = (o.value() for o in out)
        return Q(x, b, r)
    if kind is tuple:
        return tuple(_assemble(item) for item in out)
    return out.value()


def row_blocks(shape: tuple[int, ...]) -> tuple[int, list[slice]]:
    """The axis to cut and its blocks: the first axis longer than 1, in blocks of about BLOCK elements.

    A block has at least two rows, so a result broadcast along the cut axis (length 1) is never
    mistaken for a block of a full-shaped one.
    """
    axis = next((k for k, n in enumerate(shape) if n > 1), 0)
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64)) or 1
    rows = max(2, BLOCK // inner)
    return axis, [slice(i, min(i + rows, shape[axis])) for i in range(0, shape[axis], rows)]


def elementwise(fn):
    """``fn``, evaluated in blocks of rows on two threads when its arrays are large (module docstring)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if on_pool_thread() or _largest(args) < SMALL and _largest(kwargs.values()) < SMALL:
            return fn(*args, **kwargs)
        shapes: list = []
        _leaves(args, shapes)
        _leaves(tuple(kwargs.values()), shapes)
        if not shapes:
            return fn(*args, **kwargs)
        shape = np.broadcast_shapes(*shapes)
        if int(np.prod(shape, dtype=np.int64)) < PARALLEL_FROM:
            return fn(*args, **kwargs)
        axis, blocks = row_blocks(shape)
        if len(blocks) < 2:
            return fn(*args, **kwargs)
        ndim = len(shape)

        def call(rows):
            return fn(*_cut(args, ndim, axis, rows), **{k: _cut(v, ndim, axis, rows) for k, v in kwargs.items()})

        try:
            layout = _outputs(call(blocks[0]), shape, axis, blocks[0])
        except _NotBlockwise:
            return fn(*args, **kwargs)
        run_on_two_threads(functools.partial(lambda rows: _write(layout, call(rows), rows), rows)
                           for rows in blocks[1:])
        return _assemble(layout)

    return wrapper
