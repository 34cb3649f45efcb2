"""The sharding mutants: the sharded reference with one realistic sharding mistake each (spec §9).

``sharded-mutant:NAME`` (conformance.targets) is ``reference-dist`` with the switch ``NAME`` of
``conformance.distributed.sharded_step`` on; ``variants`` are where the mistake is reachable.
The distributed cases must kill every one (``make mutants``, tests/test_distributed.py).
"""
from __future__ import annotations

from dataclasses import dataclass

from came_conformance.distributed.sharded_step import SWITCHES


@dataclass(frozen=True)
class ShardingMutant:
    name: str
    description: str
    variants: tuple[str, ...]
    clauses: tuple[str, ...]


SHARDING_MUTANTS = (
    ShardingMutant("clip-rms-per-shard", "RMS(U) for clipping over the rank's shard only, no all-reduce",
                   ("zero-w2", "rows-w2", "cols-w2"), ("CAME-STEP-5", "CAME-SHARD-1")),
    ShardingMutant("row-mean-per-rank", "the row normaliser mean(r) of F taken over the rank's rows only",
                   ("rows-w2",), ("CAME-DEF-3", "CAME-SHARD-1")),
    ShardingMutant("padding-in-rms", "ZeRO padding counted in the element count of every RMS",
                   ("zero-w2", "zero-w4"), ("CAME-DEF-1", "CAME-SHARD-3")),
    ShardingMutant("padding-in-means", "ZeRO padding read as extra rows: its Q = ε counted in the column means",
                   ("zero-w2", "zero-w4"), ("CAME-DEF-2", "CAME-SHARD-3")),
    ShardingMutant("allreduce-twice", "the column sums of a row-split matrix all-reduced twice",
                   ("rows-w2",), ("CAME-STEP-3", "CAME-SHARD-1")),
    ShardingMutant("allreduce-missing", "the column sums of a row-split matrix never all-reduced",
                   ("rows-w2",), ("CAME-STEP-3", "CAME-SHARD-1")),
    ShardingMutant("shard-offset-off-by-one", "every rank but the first slices its piece of θ one row "
                   "(rows) or one element (ZeRO) early", ("zero-w2", "rows-w2"), ("CAME-SHARD-3",)),
)

assert {m.name for m in SHARDING_MUTANTS} == set(SWITCHES), "every switch is one mutant"
BY_NAME = {m.name: m for m in SHARDING_MUTANTS}
