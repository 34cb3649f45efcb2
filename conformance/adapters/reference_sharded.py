"""Target ``reference-dist``: the reference, sharded, on real ranks (spec/came.md §9).

Each rank keeps only its piece of every parameter and of its state (``layout.state_layout``) and
steps it with ``conformance.distributed.sharded_step``, all-reducing partial sums over gloo where
a shard sees only part of a mean or an RMS.  ``read`` all-gathers the pieces into the full
tensors; ``shards`` reports the pieces themselves.  It must pass in every layout (the control of
the sharded cases); with ``CAME_SHARDED_BUGS`` set (``sharded-mutant:NAME``) it is a sharding mutant.

It is also the worked example of a sharded adapter (README "Sharded ports").
"""
from __future__ import annotations

import os

import numpy as np

from came_conformance.adapters.reference import ALL_OPTIONS, ReferenceAdapter
from came_conformance.adapters.reference import Session as ReplicatedSession
from came_conformance.distributed import layout as lay
from came_conformance.distributed.sharded_step import SWITCHES, Collectives, Place, sharded_step
from came_conformance.protocol import NotApplicable, Snapshot, TargetInfo
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Hyperparameters
from came_conformance.reference.optimizer import check_gradients
from came_conformance.reference.step import init_state

VARIANTS = ("replicated-w2", "zero-w2", "rows-w2", "cols-w2", "zero-w4", "rows-w4", "cols-w4")


def all_gather(value):
    """Every rank's value, rank 0 first (torch.distributed over gloo)."""
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


class ShardedSession:
    """One rank's pieces of every parameter and of its state, stepped together (CAME-STATE-5)."""

    def __init__(self, hp: Hyperparameters, params, dtype: str, sharding: dict, bugs: frozenset):
        self.hp, self.dtype, self.bugs, self.t = hp, dtype, bugs, 0
        self.rank, self.world = sharding["rank"], sharding["world_size"]
        self.places = [Place(tuple(np.shape(p)), layout, self.rank, self.world)
                       for p, layout in zip(params, sharding["layouts"])]
        for place in self.places:
            lay.check_layout(place.layout, place.shape)
        self.theta = [self._piece(np.asarray(p, np.float64), place) for p, place in zip(params, self.places)]
        self.state = [{name: lay.shard(value, lay.state_layout(place.layout, place.shape, name), self.world, self.rank)
                       for name, value in init_state(place.shape).items()} for place in self.places]
        self.comm = Collectives()

    def _piece(self, full, place: Place):
        if "shard-offset-off-by-one" in self.bugs and self.rank > 0 and place.layout in ("rows", "zero"):
            # the mutant: every piece but the first starts one element (zero) or one row (rows) early
            full = np.roll(full.reshape(-1), 1).reshape(full.shape) if place.layout == "zero" \
                else np.roll(full, 1, axis=-2)
        return lay.shard(full, place.layout, self.world, self.rank)

    def step(self, grads) -> None:
        grads = check_gradients(grads, self.theta)  # CAME-ERR-S1 … CAME-ERR-S3 on the pieces
        self.t += 1
        for i, (place, g) in enumerate(zip(self.places, grads)):
            theta, state = sharded_step(self.theta[i], g, self.state[i], self.hp.step_hyper(self.t, i), place,
                                        self.comm, self.bugs)
            self.theta[i] = round_to(self.dtype, theta) if self.dtype != "float64" else theta  # CAME-DTYPE-2
            self.state[i] = state

    def read(self) -> Snapshot:
        pieces = all_gather((self.theta, self.state))
        params, states = [], []
        for i, place in enumerate(self.places):
            params.append(lay.assemble([p[0][i] for p in pieces], place.layout, place.shape))
            full_state = init_state(place.shape)
            states.append({name: lay.assemble([p[1][i][name] for p in pieces],
                                              lay.state_layout(place.layout, place.shape, name), np.shape(value))
                           for name, value in full_state.items()})
        return Snapshot(params, states, self.t)

    def shards(self) -> list[dict]:
        return [{"theta": np.array(t), **{k: np.array(v) for k, v in s.items()}}
                for t, s in zip(self.theta, self.state)]


class _Replicated(ReplicatedSession):
    """A constructor-made session: every rank holds everything (the replicated layout)."""

    def shards(self) -> list[dict]:
        snap = self.read()
        return [{"theta": p, **s} for p, s in zip(snap.params, snap.state)]


class ShardedReferenceAdapter(ReferenceAdapter):
    def __init__(self, bugs=frozenset()):
        super().__init__("mindformers")
        unknown = set(bugs) - set(SWITCHES)
        if unknown:
            raise ValueError(f"CAME_SHARDED_BUGS: unknown switches {sorted(unknown)}; choose from {SWITCHES}")
        self.bugs = frozenset(bugs)

    def describe(self) -> TargetInfo:
        info = super().describe()
        name = "reference-dist" + (f" (bugs: {','.join(sorted(self.bugs))})" if self.bugs else "")
        return TargetInfo(name=name, profile=info.profile, api=info.api, versions=info.versions, dtypes=info.dtypes,
                          variants=VARIANTS, options=ALL_OPTIONS - {"save_restore", "open_at"}, world_sizes=(2, 4),
                          precision=info.precision)  # float64 state and arithmetic, as the reference's

    def open(self, hp, params, dtype, variant, sharding=None):
        if sharding is None:
            raise NotApplicable("a sharded target runs under the rank harness (conformance.distributed)")
        return ShardedSession(hp, params, dtype, sharding, self.bugs)

    def construct(self, kwargs, variant):
        session = super().construct(kwargs, variant)
        return _Replicated(session.optim, session.dtype)


def factory() -> ShardedReferenceAdapter:
    bugs = os.environ.get("CAME_SHARDED_BUGS", "")
    return ShardedReferenceAdapter(frozenset(b for b in bugs.split(",") if b))
