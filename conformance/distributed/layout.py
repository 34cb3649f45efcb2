"""The canonical sharding layouts of a parameter and of its state (spec/came.md CAME-SHARD-3).

A parameter of shape S over ``world`` ranks is laid out as one of:

- ``replicated``: every rank holds all of it (data parallel: gradients arrive already averaged);
- ``zero``: ZeRO's flat partition: the C-order flattening, padded with zeros to a multiple of
  ``world``, split into ``world`` equal contiguous pieces; rank k holds piece k (padding included);
- ``rows``: tensor parallel by rows: split along axis -2 (ndim >= 2) into ``world`` contiguous blocks;
- ``cols``: tensor parallel by columns: split along axis -1 (ndim >= 1).

Blocks of an uneven split differ by at most one index, the larger ones first (``numpy.array_split``),
so a rank's block may be empty.  The state follows (``state_layout``): ``exp_avg`` and
``exp_avg_sq`` as the parameter; a statistic along the split axis is split with it; a statistic
across it, and every statistic under ``zero``, is replicated.

Variants of a sharded target are ``<mode>-w<world>``: ``replicated-w2``, ``zero-w4``, ``rows-w2``,
``cols-w4``; ``default_layouts`` gives the layout of each parameter in a case that names none.
"""
from __future__ import annotations

import math
import re

import numpy as np

LAYOUTS = ("replicated", "zero", "rows", "cols")
MODES = LAYOUTS
_VARIANT = re.compile(r"^(replicated|zero|rows|cols)-w([1-9][0-9]*)$")


def parse_variant(variant: str) -> tuple[str, int]:
    """``"rows-w2"`` -> ``("rows", 2)``; a clear error for anything else."""
    found = _VARIANT.match(variant)
    if not found:
        raise ValueError(f"variant {variant!r}: a sharded target's variants are <mode>-w<world size>, "
                         f"mode one of {MODES}")
    return found.group(1), int(found.group(2))


def allowed(mode: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    """The layouts a parameter of ``shape`` may take under a variant's mode (what Hypothesis draws from)."""
    if mode in ("replicated", "zero"):
        return (mode,)
    split = "rows" if mode == "rows" and len(shape) >= 2 else "cols"
    return (split, "replicated") if len(shape) >= 1 else ("replicated",)


def default_layouts(mode: str, shapes) -> list[str]:
    """Each parameter's layout when a case names none: the mode's split where the shape allows it."""
    return [allowed(mode, tuple(s))[0] for s in shapes]


def check_layout(layout: str, shape: tuple[int, ...]) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r}: must be one of {LAYOUTS}")
    if layout == "rows" and len(shape) < 2 or layout == "cols" and len(shape) < 1:
        raise ValueError(f"layout {layout!r} needs a parameter with {2 if layout == 'rows' else 1} or more axes, "
                         f"got shape {shape}")


def split_axis(layout: str, ndim: int) -> int | None:
    return {"rows": ndim - 2, "cols": ndim - 1}.get(layout)


def bounds(n: int, world: int, rank: int) -> tuple[int, int]:
    """[start, stop) of rank's block of ``n`` indices (numpy.array_split: larger blocks first)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def zero_piece(numel: int, world: int) -> int:
    """Length of each rank's flat piece: the padded numel over world (LowLevelZero's split)."""
    return math.ceil(numel / world) if numel else 0


def padding(numel: int, world: int) -> int:
    """ZeRO's padding: (world - numel % world) % world zeros at the end of the flattening."""
    return (world - numel % world) % world


def shard(array: np.ndarray, layout: str, world: int, rank: int) -> np.ndarray:
    """Rank's piece of a full array under ``layout`` (a copy)."""
    array = np.asarray(array)
    if layout == "replicated":
        return array.copy()
    if layout == "zero":
        flat = np.concatenate([array.reshape(-1), np.zeros(padding(array.size, world), array.dtype)])
        piece = zero_piece(array.size, world)
        return flat[rank * piece:(rank + 1) * piece].copy()
    axis = split_axis(layout, array.ndim)
    start, stop = bounds(array.shape[axis], world, rank)
    return np.take(array, np.arange(start, stop), axis=axis)


def assemble(pieces: list, layout: str, shape: tuple[int, ...]) -> np.ndarray:
    """The full array from every rank's piece (rank 0 first); padding is dropped."""
    shape = tuple(shape)
    if layout == "replicated":
        return np.asarray(pieces[0]).copy()
    if layout == "zero":
        flat = np.concatenate([np.asarray(p).reshape(-1) for p in pieces])
        return flat[:math.prod(shape)].reshape(shape).copy()
    return np.concatenate([np.asarray(p) for p in pieces], axis=split_axis(layout, len(shape)))


def state_layout(layout: str, shape: tuple[int, ...], name: str) -> str:
    """The layout of state tensor ``name`` of a parameter laid out as ``layout`` (CAME-SHARD-3).

    Row statistics have shape S[:-1] (their last axis is the rows), column statistics
    S[:-2] + S[-1:] (their last axis is the columns).
    """
    if name in ("exp_avg", "exp_avg_sq", "theta") or layout in ("replicated",):
        return layout
    if layout == "zero":
        return "replicated"
    along_rows = name.endswith("_row")
    if layout == "rows":
        return "cols" if along_rows else "replicated"  # the row statistic's last axis is the rows
    return "replicated" if along_rows else "cols"


def owners(layout: str, shape: tuple[int, ...], name: str, index, world: int) -> list[int]:
    """The ranks that hold element ``index`` of tensor ``name`` (theta or a state name)."""
    kind = state_layout(layout, tuple(shape), name)
    if kind == "replicated" or index is None:
        return list(range(world))
    if name in ("exp_avg", "exp_avg_sq", "theta"):
        tensor_shape = tuple(shape)
    elif name.endswith("_row"):
        tensor_shape = tuple(shape[:-1])
    else:
        tensor_shape = tuple(shape[:-2]) + tuple(shape[-1:])
    if kind == "zero":
        flat = int(np.ravel_multi_index(tuple(index), tensor_shape)) if tensor_shape else 0
        return [flat // zero_piece(math.prod(tensor_shape), world)]
    axis = split_axis(kind, len(tensor_shape))
    position = index[axis]
    return [r for r in range(world) if bounds(tensor_shape[axis], world, r)[0] <= position
            < bounds(tensor_shape[axis], world, r)[1]]
