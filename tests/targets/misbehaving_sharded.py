"""Sharded targets that misbehave on purpose, to test the rank harness and its checks (not CAME ports).

Each wraps the sharded reference (``reference-dist``), so everything else about it is correct:

``crashing_rank``: rank 1 dies in the middle of its third step of every session.
``hanging_rank``: rank 1 never returns from its second step (rank 0 waits in a collective).
``disagreeing``: rank 1 reports a full view whose exp_avg differs in one element (CAME-SHARD-2).
``misplaced``: rank 1 reports its piece of θ shifted by one element (CAME-SHARD-3).
"""
import os
import time

import numpy as np

from came_conformance.adapters.reference_sharded import ShardedReferenceAdapter


class _Misbehaving(ShardedReferenceAdapter):
    def __init__(self, patch):
        super().__init__()
        self.patch = patch

    def open(self, hp, params, dtype, variant, sharding=None):
        session = super().open(hp, params, dtype, variant, sharding)
        self.patch(session, sharding["rank"])
        return session


def _on_step(n, action):
    def patch(session, rank):
        original, calls = session.step, [0]

        def step(grads):
            calls[0] += 1
            if rank == 1 and calls[0] == n:
                action()
            return original(grads)

        session.step = step
    return patch


def _disagree(session, rank):
    original = session.read

    def read():
        snap = original()
        if rank == 1:
            snap.state[0]["exp_avg"] = np.array(snap.state[0]["exp_avg"], copy=True)
            snap.state[0]["exp_avg"].reshape(-1)[0] += 1.0
        return snap

    session.read = read


def _misplace(session, rank):
    original = session.shards

    def shards():
        pieces = original()
        if rank == 1:
            pieces[0]["theta"] = np.roll(pieces[0]["theta"], 1)
        return pieces

    session.shards = shards


def crashing_rank():
    return _Misbehaving(_on_step(3, lambda: os._exit(17)))


def hanging_rank():
    return _Misbehaving(_on_step(2, lambda: time.sleep(3600)))


def disagreeing():
    return _Misbehaving(_disagree)


def misplaced():
    return _Misbehaving(_misplace)
