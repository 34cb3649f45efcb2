"""A target in the runner's own process, for the suite's own mutant port only (docs/mutation.md).

``InProcessTarget`` answers the requests of ``conformance.worker.TargetProcess`` (same commands,
same replies) by calling the adapter directly: no process to start and nothing to serialise,
which is what lets the mutation run afford one run per mutant and dtype.  It gives up what the
worker is for, surviving a target that crashes or hangs, so it is only for trusted NumPy code.
"""
from __future__ import annotations

import traceback

from came_conformance.protocol import NotApplicable
from came_conformance.replies import interpret
from came_conformance.worker import _Server, load_factory


class InProcessTarget:
    """Drop-in for ``TargetProcess`` (``call`` and ``close``) running ``spec`` (module:factory) here."""

    def __init__(self, spec: str):
        self.spec, self.server = spec, None

    def call(self, command: str, *args):
        if self.server is None:
            self.server = _Server(load_factory(self.spec)())
        try:
            value = self.server.handle(command, args)
        except NotApplicable as exc:
            return ("not_applicable", str(exc))
        except Exception as exc:  # noqa: BLE001 - the target's own errors are data, as in the worker
            return ("raised", type(exc).__name__, str(exc), traceback.format_exc(limit=8),
                    [c.__name__ for c in type(exc).__mro__])
        return interpret(command, {"status": "ok", "value": value})  # the checks a worker's replies get

    def close(self) -> None:
        self.server = None

    kill = close
