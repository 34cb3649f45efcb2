"""The factory a rank's worker loads (``python -m came_conformance.worker came_conformance.distributed.rank:factory``).

The harness (``conformance.distributed.harness``) starts one ordinary worker per rank, with the
real target and the rank's place in the environment:

    CAME_DIST_TARGET   module:factory of the sharded target
    CAME_DIST_RANK, CAME_DIST_WORLD, CAME_DIST_PORT, CAME_DIST_TIMEOUT (seconds per collective)

``factory()`` loads the target at once (its imports are the slow part of a start) and returns it
wrapped so that ``describe``, which the harness sends to every rank when it starts a group, joins
the gloo process group on 127.0.0.1 (CAME-SHARD-1); every later request of the worker's life
reuses that group.
"""
from __future__ import annotations

import atexit
import os
from datetime import timedelta

from came_conformance.worker import load_factory


class RankAdapter:
    """The target's adapter, joined to the process group before it opens or constructs anything."""

    def __init__(self, adapter, rank: int, world: int, port: int, timeout: float):
        self.adapter, self.rank, self.world, self.port, self.timeout = adapter, rank, world, port, timeout
        self.joined = False

    def _join(self) -> None:
        if self.joined:
            return
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{self.port}", rank=self.rank,
                                world_size=self.world, timeout=timedelta(seconds=self.timeout))
        atexit.register(dist.destroy_process_group)
        self.joined = True

    def describe(self):
        self._join()
        return self.adapter.describe()

    def native(self):
        return self.adapter.native()

    def open(self, hp, params, dtype, variant, sharding=None, **extras):
        self._join()
        sharding = {**(sharding or {}), "rank": self.rank, "world_size": self.world}
        return self.adapter.open(hp, params, dtype, variant, sharding=sharding, **extras)

    def construct(self, kwargs, variant):
        self._join()
        return self.adapter.construct(kwargs, variant)


def factory() -> RankAdapter:
    env = os.environ
    # gloo binds its own connections to the interface of the host name unless told otherwise: loopback only
    env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    return RankAdapter(load_factory(env["CAME_DIST_TARGET"])(), int(env["CAME_DIST_RANK"]),
                       int(env["CAME_DIST_WORLD"]), int(env["CAME_DIST_PORT"]), float(env["CAME_DIST_TIMEOUT"]))
