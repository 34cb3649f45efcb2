"""What a sharded run adds to the per-step comparison (spec/came.md CAME-SHARD-2, CAME-SHARD-3).

``compare.check_step`` judges rank 0's full view against the reference (CAME-SHARD-1).  Here:

- ``check_ranks``: every other rank's full view equals rank 0's bit for bit (CAME-SHARD-2): the
  replicas of a sharded optimizer never drift apart;
- the same function: what each rank holds itself (``shards``) is the layout's piece of the full
  tensor (CAME-SHARD-3; the value a port keeps in ZeRO's padding is its own), so a port whose gather hides a misplaced shard is caught;
- ``locate``: the ranks that own the element a failure names, for the record.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from came_conformance.compare import ORDER, TensorCheck
from came_conformance.distributed import layout


@dataclass
class RankCheck(TensorCheck):
    """A TensorCheck that names the rank it found."""

    rank: int | None = None


def _first_difference(a: np.ndarray, b: np.ndarray) -> tuple[list[int], float, float] | None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return [], float("nan"), float("nan")
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    if same.all():
        return None
    flat = int(np.argmin(same.ravel()))
    index = [int(i) for i in np.unravel_index(flat, a.shape)]
    return index, float(a.ravel()[flat]), float(b.ravel()[flat])


def _tensors(view, i: int) -> dict:
    out = {"theta": view.params[i]}
    out.update(view.state[i] if i < len(view.state) else {})
    return out


def _fail(step, i, name, clause, rank, found, note) -> RankCheck:
    index, got, want = found
    return RankCheck(step=step, param=i, tensor=name, clause=clause, ok=False, max_ulps=np.inf, max_abs=np.inf,
                     max_rel=np.inf, worst_bound_ratio=np.inf, index=index or None, target_value=got,
                     reference_value=want, tolerance=0.0, note=note, element_ulps=np.inf, rank=rank)


def check_ranks(step: int, snap) -> list[RankCheck]:
    """Replica agreement (CAME-SHARD-2) and shard placement (CAME-SHARD-3) of one step's read-back."""
    out: list[RankCheck] = []
    first = snap.ranks[0]
    for i, lay in enumerate(snap.layouts):
        full = _tensors(first, i)
        shape = tuple(np.shape(first.params[i]))
        for rank, view in enumerate(snap.ranks[1:], start=1):
            other = _tensors(view, i)
            for name in [n for n in ORDER if n in full]:
                found = _first_difference(other.get(name, np.full(np.shape(full[name]), np.nan)), full[name])
                if found is not None:
                    out.append(_fail(step, i, name, "CAME-SHARD-2", rank, found,
                                     f"rank {rank}'s full view differs from rank 0's (target: rank {rank}, "
                                     f"reference: rank 0)"))
                    break
        for rank, pieces in enumerate(snap.shards or []):
            held = pieces[i] if i < len(pieces) else {}
            for name in [n for n in ORDER if n in held and n in full]:
                kind = layout.state_layout(lay, shape, name)
                expected = layout.shard(full[name], kind, snap.world, rank)
                got = np.asarray(held[name])
                if kind == "zero" and got.shape == expected.shape:  # the padding's value is the port's own
                    real = max(0, min(expected.size, int(np.size(full[name])) - rank * expected.size))
                    got, expected = got[:real], expected[:real]
                found = _first_difference(got, expected)
                if found is not None:
                    out.append(_fail(step, i, name, "CAME-SHARD-3", rank, found,
                                     f"rank {rank} holds {np.shape(held[name])} where the {kind} layout puts the "
                                     f"piece {np.shape(expected)} of the full tensor (target: rank {rank}'s piece, "
                                     f"reference: the layout's piece of rank 0's full view)"))
                    break
    return out


def locate(point: dict, snap) -> dict:
    """Add ``rank`` (the owning ranks of the failing element), ``layout`` and ``factored`` to a failure point."""
    i = point.get("param")
    if i is None or i >= len(snap.layouts) or point.get("tensor") is None:
        return point
    lay = snap.layouts[i]
    point["layout"] = lay
    point["factored"] = np.ndim(snap.params[i]) >= 2
    if point.get("rank") is None:
        shape = tuple(np.shape(snap.params[i]))
        index = point.get("index")
        if point["tensor"] in ORDER and (index is None or len(index) > 0):
            point["rank"] = layout.owners(lay, shape, point["tensor"], index, snap.world)
    return point
