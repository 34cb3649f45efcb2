"""The target runs in a worker process: crashes and hangs cost one case, never the run.

``python -m came_conformance.worker MODULE:FACTORY`` serves requests on stdin/stdout as
length-prefixed pickles (only between the suite's own processes; nothing is stored this way).
The worker moves the process's fd 1 to stderr first, so a framework that prints to stdout
cannot corrupt the channel.  ``TargetProcess`` is the client: one request at a time, each
with a time limit; a dead or hung worker is killed, the call fails with the reason, and the
next call starts a fresh worker.
"""
from __future__ import annotations

import importlib
import os
import pickle
import struct
import subprocess
import sys
import threading
import traceback
from collections import deque
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


class TargetFailure(Exception):
    """The worker died or did not answer in time (outcome ``error``)."""


def load_factory(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "factory")


def _read_frame(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))


def _write_frame(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=4)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


class _Server:
    def __init__(self, adapter):
        self.adapter, self.sessions, self.next_id = adapter, {}, 0

    def _keep(self, session) -> int:
        self.next_id += 1
        self.sessions[self.next_id] = session
        return self.next_id

    def handle(self, command: str, args: tuple):
        from came_conformance import arguments
        from came_conformance.reference.hyperparams import Hyperparameters

        if command == "describe":
            return self.adapter.describe()
        if command == "open":
            hp_json, params, dtype, variant = args
            return self._keep(self.adapter.open(Hyperparameters.from_json(hp_json), params, dtype, variant))
        if command == "open_at":  # CAME-STATE-6; optional for adapters (option "open_at")
            hp_json, params, state, step, dtype, variant = args
            if not hasattr(self.adapter, "open_at"):
                from came_conformance.protocol import NotApplicable

                raise NotApplicable("the adapter has no open_at: it cannot open a session at a given step counter")
            return self._keep(self.adapter.open_at(Hyperparameters.from_json(hp_json), params, state, step, dtype,
                                                   variant))
        if command == "construct":
            kwargs, variant = args
            return self._keep(self.adapter.construct(arguments.decode(kwargs, self.adapter.native()), variant))
        if command == "close":
            self.sessions.pop(args[0], None)
            return None
        session = self.sessions[args[0]]
        if command == "step":
            grads = args[1]
            if isinstance(grads, dict):  # encoded step-phase error input
                grads = arguments.decode(grads["encoded"], self.adapter.native())
            return session.step(grads)
        if command == "read":
            return session.read()
        if command == "save":
            return session.save()
        if command == "restore":
            return session.restore(args[1])
        raise ValueError(f"unknown command {command!r}")


def serve(spec: str) -> None:
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed to stdout now goes to stderr
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    from came_conformance.protocol import NotApplicable

    try:
        server = _Server(load_factory(spec)())
    except BaseException as exc:  # noqa: BLE001 - report any failure to load the target
        _write_frame(channel, ("load_failed", type(exc).__name__, str(exc), traceback.format_exc()))
        return
    _write_frame(channel, ("ready",))
    while (request := _read_frame(requests)) is not None:
        command, args = request
        try:
            reply = ("ok", server.handle(command, args))
        except NotApplicable as exc:
            reply = ("not_applicable", str(exc))
        except BaseException as exc:  # noqa: BLE001 - the target's own errors are data here
            reply = ("raised", type(exc).__name__, str(exc), traceback.format_exc(limit=8),
                     [c.__name__ for c in type(exc).__mro__])
        _write_frame(channel, reply)


class TargetProcess:
    """Client side of one worker; restarts it after a crash or a time-out."""

    def __init__(self, spec: str, python: str, timeout: float, log_path: Path, env: dict | None = None):
        self.spec, self.python, self.timeout, self.log_path = spec, python, timeout, log_path
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self._stderr_tail: deque[str] = deque(maxlen=40)

    def _start(self, startup_timeout: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.proc = subprocess.Popen([self.python, "-m", "came_conformance.worker", self.spec], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env, cwd=REPO,
                                         start_new_session=True)
        except OSError as exc:
            raise TargetFailure(f"the worker could not be started with {self.python!r}: {exc}") from None
        threading.Thread(target=self._drain_stderr, args=(self.proc,), daemon=True).start()
        first = self._receive(startup_timeout)
        if first[0] == "load_failed":
            self.kill()
            raise TargetFailure(f"the target could not be loaded: {first[1]}: {first[2]}\n{first[3]}")

    def _drain_stderr(self, proc) -> None:
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace")
                log.write(line)
                self._stderr_tail.append(line.rstrip())

    def _receive(self, timeout: float):
        result: list = []

        def read():
            try:
                result.append(("frame", _read_frame(self.proc.stdout)))
            except Exception as exc:  # noqa: BLE001 - an unreadable reply is the target's failure
                result.append(("unreadable", exc))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if reader.is_alive():
            self.kill()
            raise TargetFailure(f"the target did not answer within {timeout:.0f} s (killed)")
        kind, value = result[0]
        if kind == "unreadable":
            self.kill()
            raise TargetFailure(f"the target's reply could not be read ({type(value).__name__}: {value}); killed")
        if value is None:
            try:
                code = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # it closed its output but lives on
                code = "none: it closed its output and was killed"
            self.kill()
            tail = "\n".join(list(self._stderr_tail)[-12:])
            raise TargetFailure(f"the target process died (exit code {code})\n{tail}")
        return value

    def call(self, command: str, *args):
        """Returns ("ok", value) | ("not_applicable", why) | ("raised", type, message, traceback)."""
        if self.proc is None:
            self._start(max(self.timeout, 300.0))
        try:
            _write_frame(self.proc.stdin, (command, args))
        except (BrokenPipeError, OSError):
            self.kill()
            raise TargetFailure("the target process closed its input") from None
        return self._receive(self.timeout)

    def kill(self) -> None:
        """End the worker and everything it started (its own process group)."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        """Let the worker finish on end of input (its exit handlers run), else kill it."""
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
                self.proc = None
            except (OSError, subprocess.TimeoutExpired):
                self.kill()


if __name__ == "__main__":
    serve(sys.argv[1])
