"""Hypothesis draws of sharded cases (spec/came.md §9): layouts as well as shapes.

For a variant ``<mode>-w<world>`` a case has one to three parameters of 1 to 3 axes (0-D too,
where the mode allows it) whose lengths run from 0 (when the target takes zero-size parameters)
to 2·world + 1, so that axis lengths and element counts divisible and not divisible by the world
size, odd counts, blocks of whole rows and blocks that split rows (ZeRO), empty blocks and ZeRO
padding all come up; each parameter's layout is drawn from what the mode allows
(``layout.allowed``: under ``rows`` a matrix may also stay replicated, a vector be split or not).
Trajectories have 3 to 6 steps, so state is judged after step 1 too.
"""
from __future__ import annotations

import math

from hypothesis import strategies as st

from came_conformance.cases import TrajectoryCase, content_id, to_json
from came_conformance.distributed import layout
from came_conformance.fixtures.generate import derive_flags, numeric_clauses, run as reference_run
from came_conformance.reference.dtypes import round_to
from came_conformance.strategies import MAX_SIZE, arrays, hyperparameters


@st.composite
def sharded_shape(draw, mode: str, world: int, allow_zero: bool, allow_rank0: bool):
    lowest = 0 if mode in ("replicated", "zero") and allow_rank0 else 1
    ndim = draw(st.integers(lowest, 3), label="ndim")
    side = st.integers(0 if allow_zero else 1, 2 * world + 1)
    shape = tuple(draw(st.lists(side, min_size=ndim, max_size=ndim), label="shape"))
    if math.prod(shape) > MAX_SIZE:
        shape = tuple(min(s, 2) for s in shape)
    return shape


@st.composite
def sharded_cases(draw, profile: str, dtypes: tuple[str, ...], options: frozenset[str], variant: str):
    """A whole sharded case for ``variant`` of a target with these dtypes and options (CAME-SHARD-1)."""
    mode, world = layout.parse_variant(variant)
    dtype = draw(st.sampled_from(dtypes), label="dtype")
    count = draw(st.integers(1, 3), label="parameter count")
    shapes = [draw(sharded_shape(mode, world, "zero_size" in options, "rank0" in options), label=f"shape {i}")
              for i in range(count)]
    layouts = tuple(draw(st.sampled_from(layout.allowed(mode, s)), label=f"layout {i}") for i, s in enumerate(shapes))
    hp = draw(hyperparameters(profile, options), label="hyperparameters")
    steps = draw(st.integers(3, 6), label="steps")
    seed = draw(st.integers(0, 2 ** 32 - 1), label="seed")
    scales = [10.0 ** draw(st.integers(-8, 3), label=f"grad scale {k + 1}") for k in range(steps)]
    params = [arrays(s, 1.0, seed + i, dtype) for i, s in enumerate(shapes)]
    grads = [[round_to(dtype, arrays(s, scales[k], seed + 1000 * (k + 1) + i, "float64") * hp.loss_scale)
              for i, s in enumerate(shapes)] for k in range(steps)]
    flags = derive_flags(hp, params, reference_run(hp, params, grads, dtype), dtype)
    clauses = sorted(set(numeric_clauses(hp, flags, params)) | {"CAME-SHARD-1", "CAME-SHARD-3"})
    case = TrajectoryCase("", profile, hp, params, grads, dtype=dtype, flags=tuple(sorted(flags)),
                          clauses=tuple(clauses), source=f"hypothesis:sharding:{variant}", layouts=layouts)
    case.id = "s-" + content_id(to_json(case))
    return case
