"""Sharded CAME ports (spec/came.md §9): layouts, the rank harness, sharded cases and checks.

- ``layout``: the four canonical layouts of a parameter over ranks and of its state (CAME-SHARD-3).
- ``harness``: ``DistributedTargetProcess``, the suite's own launcher of ranks over torch.distributed
  (gloo, 127.0.0.1); it has ``TargetProcess``'s interface, so ``execute`` runs cases unchanged.
- ``rank``: the factory a rank worker loads: it joins the process group, then loads the target.
- ``checks``: replicas agree and shards sit where the layout says (CAME-SHARD-2, CAME-SHARD-3);
  the owning rank of a failing element.
- ``strategies``: Hypothesis draws of layouts and of shapes that split unevenly.
- ``mutants``: the sharding mutants of the sharded reference.
"""
