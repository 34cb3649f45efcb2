"""The suite's launcher of sharded targets: every rank a worker, one request fanned out to all.

``DistributedTargetProcess`` has the interface of ``conformance.worker.TargetProcess``
(``call(command, *args)`` -> ("ok", value) | ("not_applicable", why) | ("raised", type, message,
traceback, mro); ``TargetFailure`` when a rank dies or hangs), so ``conformance.execute`` runs a
case against a sharded target exactly as against any other.  Underneath:

- a **group** per world size: ``world`` ordinary workers (``TargetProcess``, one per rank, each in
  its own process group) that load ``conformance.distributed.rank:factory`` and join one gloo
  process group on 127.0.0.1, at a port that was free when the group started.  A group lives
  across cases and is torn down only when a rank dies or hangs, or at the end;
- a request is **sent to every rank first, then received from each** under one deadline (the
  per-request limit), so ranks meet in their collectives;
- ``open`` gives every rank the full starting parameters and its sharding
  (``{"layouts": [...], "shapes": [...]}``: the case's, or the variant's default); ``step`` gives
  rank k only its shard of each gradient (``layout.shard``); ``read`` returns a
  ``ShardedSnapshot``: rank 0's full view, every rank's full view, and what each rank holds itself
  (``shards``), for ``conformance.distributed.checks`` (CAME-SHARD-1 … CAME-SHARD-3);
- a rank that dies or does not answer fails the request with ``TargetFailure`` naming the rank;
  the whole group is killed (no process, no port left) and the next request starts a new one.

``starts`` records how long each group took to start (the cost the reuse saves per case).
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from came_conformance.distributed import layout
from came_conformance.protocol import Snapshot
from came_conformance.worker import TargetFailure, TargetProcess

RANK_FACTORY = "came_conformance.distributed.rank:factory"


@dataclass
class ShardedSnapshot(Snapshot):
    """Rank 0's full view (``params``, ``state``, ``step``) and each rank's, with the layouts."""

    ranks: list[Snapshot] = field(default_factory=list)
    shards: list | None = None  # per rank: per parameter, {"theta" | state name: local array}
    layouts: list[str] = field(default_factory=list)
    world: int = 1


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now (rank 0's store binds it next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RankGroup:
    """``world`` workers joined in one process group."""

    def __init__(self, spec: str, python: str, world: int, timeout: float, log_dir: Path, env: dict):
        self.world, self.port = world, free_port()
        self.ranks = [TargetProcess(RANK_FACTORY, python, timeout, log_dir / f"target-stderr-w{world}-rank{r}.log",
                                    {**env, "CAME_DIST_TARGET": spec, "CAME_DIST_RANK": str(r),
                                     "CAME_DIST_WORLD": str(world), "CAME_DIST_PORT": str(self.port),
                                     "CAME_DIST_TIMEOUT": str(timeout), "GLOO_SOCKET_IFNAME": "lo",
                                     "MASTER_ADDR": "127.0.0.1"})
                      for r in range(world)]

    def fan_out(self, per_rank_args: list[tuple], timeout: float) -> list:
        """Send every rank its request, then collect the replies under one deadline."""
        deadline = time.monotonic() + timeout
        try:
            for r, (proc, args) in enumerate(zip(self.ranks, per_rank_args)):
                try:
                    proc.send(*args)
                except TargetFailure as exc:
                    raise TargetFailure(f"rank {r} of {self.world}: {exc}") from None
            replies = []
            for r, proc in enumerate(self.ranks):
                try:
                    replies.append(proc.receive(max(deadline - time.monotonic(), 0.1)))
                except TargetFailure as exc:
                    raise TargetFailure(f"rank {r} of {self.world}: {exc}") from None
            return replies
        except TargetFailure:
            self.kill()
            raise

    def kill(self) -> None:
        for proc in self.ranks:
            proc.kill()

    def close(self) -> None:
        for proc in self.ranks:
            proc.close()


@dataclass
class _Session:
    world: int
    ids: list  # each rank's own session id
    layouts: list[str] | None  # None: constructed by the documented constructor, replicated
    shapes: list[tuple[int, ...]]


class DistributedTargetProcess:
    """A sharded target behind ``TargetProcess``'s interface (module docstring)."""

    def __init__(self, spec: str, python: str, timeout: float, log_path: Path, env: dict | None = None,
                 describe_world: int = 2):
        self.spec, self.python, self.timeout, self.log_dir = spec, python, timeout, Path(log_path).parent
        self.env, self.describe_world = dict(env or {}), describe_world
        self.groups: dict[int, RankGroup] = {}
        self.sessions: dict[int, _Session] = {}
        self.next_id = 0
        self.starts: list[dict] = []  # {"world": w, "seconds": s} per group start

    # -- groups --------------------------------------------------------------------------------------
    def group(self, world: int) -> RankGroup:
        if world not in self.groups:
            started = time.perf_counter()
            group = RankGroup(self.spec, self.python, world, self.timeout, self.log_dir, self.env)
            self.groups[world] = group
            try:  # each rank loads the target, then (its describe) joins the process group
                joined = group.fan_out([("describe",)] * world, max(self.timeout, 300.0))
            except TargetFailure:
                self._drop(world)
                raise
            bad = _first_not_ok(joined)
            if bad is not None:
                self._drop(world)
                raise TargetFailure(f"the {world} ranks could not join a process group: {bad[1:3]}")
            self.starts.append({"world": world, "seconds": round(time.perf_counter() - started, 3)})
        return self.groups[world]

    def _drop(self, world: int) -> None:
        group = self.groups.pop(world, None)
        if group is not None:
            group.kill()
        for sid in [s for s, session in self.sessions.items() if session.world == world]:
            del self.sessions[sid]

    def _fan_out(self, world: int, per_rank_args: list[tuple]) -> list:
        try:
            return self.group(world).fan_out(per_rank_args, self.timeout)
        except TargetFailure:
            self._drop(world)
            raise

    # -- the TargetProcess interface -------------------------------------------------------------------
    def call(self, command: str, *args):
        if command == "describe":
            return self._fan_out(self.describe_world, [("describe",)] * self.describe_world)[0]
        if command == "open":
            hp_json, params, dtype, variant, *rest = args
            extras = dict(rest[0]) if rest else {}  # execute's open extras: the case's layouts, a grad_dtype
            case_layouts = extras.pop("layouts", None)
            mode, world = layout.parse_variant(variant)
            shapes = [tuple(np.shape(p)) for p in params]
            layouts = list(case_layouts) if case_layouts else layout.default_layouts(mode, shapes)
            extras["sharding"] = {"layouts": layouts, "shapes": [list(s) for s in shapes]}
            replies = self._fan_out(world, [("open", hp_json, params, dtype, variant, extras)] * world)
            return self._opened(world, replies, layouts, shapes)
        if command == "open_at":  # CAME-STATE-6 mid-run sessions: the harness cannot shard a given state yet
            return ("not_applicable", "a sharded target cannot be opened at a step counter (the harness does not "
                                      "shard a start state); declare no option open_at")
        if command == "construct":
            kwargs, variant = args
            world = layout.parse_variant(variant)[1]
            return self._opened(world, self._fan_out(world, [("construct", kwargs, variant)] * world), None, [])
        session = self.sessions.get(args[0])
        if session is None:
            raise TargetFailure(f"no session {args[0]} (its ranks were torn down)")
        if command == "close":
            self.sessions.pop(args[0], None)
            replies = self._fan_out(session.world, [("close", sid) for sid in session.ids])
            return _combine(replies)
        if command == "step":
            return _combine(self._fan_out(session.world, [("step", sid, self._grads(session, args[1], r))
                                                          for r, sid in enumerate(session.ids)]))
        if command == "read":
            return self._read(session)
        raise TargetFailure(f"command {command!r} is not available for a sharded target")

    def _opened(self, world: int, replies: list, layouts, shapes):
        bad = _first_not_ok(replies)
        if bad is not None:  # close what the other ranks opened; the case sees the refusal
            closes = [("close", reply[1]) if reply[0] == "ok" else ("describe",) for reply in replies]
            self._fan_out(world, closes)
            return bad
        self.next_id += 1
        self.sessions[self.next_id] = _Session(world, [reply[1] for reply in replies], layouts, shapes)
        return ("ok", self.next_id)

    @staticmethod
    def _grads(session: _Session, grads, rank: int):
        if isinstance(grads, dict) or session.layouts is None:  # encoded error input, or replicated
            return grads
        if len(grads) != len(session.layouts):  # a wrong count is the target's to report: pass it whole
            return grads
        return [layout.shard(g, lay, session.world, rank) for g, lay in zip(grads, session.layouts)]

    def _read(self, session: _Session):
        replies = self._fan_out(session.world, [("read", sid) for sid in session.ids])
        bad = _first_not_ok(replies)
        if bad is not None:
            return bad
        views = [reply[1] for reply in replies]
        shard_replies = self._fan_out(session.world, [("shards", sid) for sid in session.ids])
        shards = [reply[1] for reply in shard_replies] if all(r[0] == "ok" for r in shard_replies) else None
        first = views[0]
        layouts = session.layouts or ["replicated"] * len(first.params)
        return ("ok", ShardedSnapshot(first.params, first.state, first.step, ranks=views, shards=shards,
                                      layouts=layouts, world=session.world))

    def kill(self) -> None:
        for world in list(self.groups):
            self._drop(world)

    def close(self) -> None:
        for world in list(self.groups):
            self.groups.pop(world).close()
        self.sessions.clear()


def _first_not_ok(replies: list):
    """The first rank's refusal or error, its message naming the rank; None if all answered ok."""
    for rank, reply in enumerate(replies):
        if reply[0] == "not_applicable":
            return ("not_applicable", f"rank {rank}: {reply[1]}")
        if reply[0] == "raised":
            return ("raised", reply[1], f"rank {rank}: {reply[2]}", *reply[3:])
    return None


def _combine(replies: list):
    bad = _first_not_ok(replies)
    return bad if bad is not None else ("ok", replies[0][1])
