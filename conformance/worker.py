"""The target runs in a worker process: crashes, hangs and bad replies cost one case, never the run.

``python -m came_conformance.worker MODULE:FACTORY --channel R,W,L`` serves requests read from
fd R and answers on fd W, in the data-only frames of ``conformance.channel`` (never stdout:
what the target prints goes to the run's bounded capture, ``conformance.capture``).  Fd L is a
lifeline: the runner holds its other end, and a small watchdog process forked before the
target is imported kills the worker's whole process group when it closes, so a worker never
outlives its runner, however it hangs.

``TargetProcess`` is the client: one request at a time, each with a request id and a time
limit (start-up included).  Every reply is checked (``conformance.replies``) before it is
returned; a dead, hung or lying worker is killed with its process group, the call raises
``TargetFailure`` with the reason, and the next call starts a fresh worker.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from came_conformance import capture, channel
from came_conformance.replies import BadReply, TargetFailure, interpret

REPO = Path(__file__).resolve().parent.parent
__all__ = ["TargetFailure", "BadReply", "TargetProcess", "serve"]
WORKER_MESSAGE_CHARS = 64 << 10  # what the worker sends of an exception; the runner keeps less


def load_factory(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "factory")


# --------------------------------------------------------------------------------------------
# Server (in the worker process)
# --------------------------------------------------------------------------------------------
def _wire(value):
    """Protocol objects as channel values: TargetInfo and Snapshot as dicts, sets as sorted lists and
    tuples as lists, inside dicts too (``variant_options`` maps variants to sets)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _wire_field(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def _wire_field(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=str)
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, dict):
        return {k: _wire_field(x) for k, x in v.items()}
    return v


class _Server:
    def __init__(self, adapter):
        self.adapter, self.sessions, self.next_id = adapter, {}, 0

    def _keep(self, session) -> int:
        self.next_id += 1
        self.sessions[self.next_id] = session
        return self.next_id

    def handle(self, command: str, args: list):
        from came_conformance import arguments
        from came_conformance.reference.hyperparams import Hyperparameters

        if command == "describe":
            return _wire(self.adapter.describe())
        if command == "open":  # keyword extras: a mixed-precision case's grad_dtype, a rank's sharding
            hp_json, params, dtype, variant, *rest = args
            extras = rest[0] if rest else {}
            if not isinstance(extras, dict) or set(extras) - {"grad_dtype", "sharding"}:
                raise ValueError(f"open: unknown extras {extras!r}")
            return self._keep(self.adapter.open(Hyperparameters.from_json(hp_json), params, dtype, variant,
                                                **extras))
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
            return _wire(session.read())
        if command == "shards":  # a sharded target's rank: what it holds itself (conformance.distributed)
            return session.shards()
        if command == "save":
            blob = session.save()
            return bytes(blob) if isinstance(blob, (bytearray, memoryview)) else blob
        if command == "restore":
            return session.restore(args[1])
        raise ValueError(f"unknown command {command!r}")


def _exception_reply(exc: BaseException) -> dict:
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - an exception whose str() fails is still an answer
        message = f"<{type(exc).__name__} whose str() failed>"
    return {"status": "raised", "type": type(exc).__name__,
            "message": capture.truncate(message, WORKER_MESSAGE_CHARS),
            "traceback": capture.truncate(traceback.format_exc(limit=8), WORKER_MESSAGE_CHARS, keep="tail"),
            "mro": [c.__name__ for c in type(exc).__mro__]}


def _send_reply(reply_fd: int, rid, reply: dict, command: str) -> None:
    try:
        chunks = channel.pack({"id": rid, **reply})
    except (channel.ChannelError, RecursionError, ValueError, TypeError) as exc:
        chunks = channel.pack({"id": rid, "status": "unsendable",
                               "message": f"the target's {command}() returned something the channel cannot "
                                          f"carry: {capture.truncate(str(exc), 2000)}"})
    channel.write_chunks(reply_fd, chunks)


def _watch_lifeline(lifeline_fd: int) -> None:
    """Fork a watchdog that kills this worker's process group when the runner's end of the lifeline closes."""
    worker = os.getpid()
    if os.fork() != 0:
        os.close(lifeline_fd)
        return
    try:  # the watchdog: keep nothing open but the lifeline, so pipes see their ends close
        os.closerange(0, lifeline_fd)
        os.closerange(lifeline_fd + 1, max(lifeline_fd + 2, min(os.sysconf("SC_OPEN_MAX"), 1 << 16)))
        while os.read(lifeline_fd, 4096):
            pass
    finally:
        try:
            if os.getpgid(0) == worker:  # the worker leads its own group: end it and all it started
                os.killpg(worker, signal.SIGKILL)
            else:
                os.kill(worker, signal.SIGKILL)
        finally:
            os._exit(0)


def serve(spec: str, request_fd: int, reply_fd: int, lifeline_fd: int) -> None:
    _watch_lifeline(lifeline_fd)
    from came_conformance.protocol import NotApplicable

    try:
        server = _Server(load_factory(spec)())
    except BaseException as exc:  # noqa: BLE001 - report any failure to load the target
        _send_reply(reply_fd, 0, {**_exception_reply(exc), "status": "load_failed"}, "load")
        return
    _send_reply(reply_fd, 0, {"status": "ready", "protocol": channel.VERSION, "pid": os.getpid()}, "load")
    while True:
        try:
            request = channel.receive(request_fd, None, channel.DEFAULT_MAX_PAYLOAD_BYTES)
        except channel.Closed:
            return
        command, args = request.get("command"), request.get("args") or []
        try:
            reply = {"status": "ok", "value": server.handle(command, args)}
        except NotApplicable as exc:
            reply = {"status": "not_applicable", "message": capture.truncate(str(exc), WORKER_MESSAGE_CHARS)}
        except BaseException as exc:  # noqa: BLE001 - the target's own errors are data here
            reply = _exception_reply(exc)
        _send_reply(reply_fd, request.get("id"), reply, str(command))


# --------------------------------------------------------------------------------------------
# Client (in the runner)
# --------------------------------------------------------------------------------------------
def _exit_text(code) -> str:
    if isinstance(code, int) and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


def worker_pythonpath() -> str:
    """The worker's PYTHONPATH: the source checkout when the suite runs from one (a wheel's suite
    is already on the worker's own python), the caller's current directory, where a vendor's
    ``module:factory`` usually lives, then the caller's PYTHONPATH."""
    checkout = [str(REPO)] if (REPO / "conformance").is_dir() and (REPO / "came_conformance").is_dir() else []
    return os.pathsep.join(p for p in (*checkout, os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)


class TargetProcess:
    """Client side of one worker; restarts it after a crash, a time-out or a broken reply.

    ``call(command, *args)`` returns ("ok", value) | ("not_applicable", why) |
    ("raised", type, message, traceback, mro_names), or raises TargetFailure.
    """

    def __init__(self, spec: str, python: str, timeout: float, log_path: Path | None, env: dict | None = None,
                 max_reply_bytes: int = channel.DEFAULT_MAX_PAYLOAD_BYTES):
        self.spec, self.python, self.timeout, self.max_reply_bytes = spec, python, timeout, max_reply_bytes
        self.log_path = log_path
        self.env = {**os.environ, "PYTHONPATH": worker_pythonpath(), **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = capture.Log(log_path)
        self.tail = capture.Tail()
        self._fds: tuple[int, int, int] | None = None
        self._drain = None
        self._last_id = 0
        self._pending: tuple = (None, None, None)  # (command, request id, deadline) between send and receive

    # ---- start-up ----
    def _start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        life_r, life_w = os.pipe()
        out_r, out_w = os.pipe()
        for fd in (req_w, rep_r):
            channel.enlarge_pipe(fd)
        argv = [self.python, "-m", "came_conformance.worker", self.spec, f"--channel={req_r},{rep_w},{life_r}"]
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                         pass_fds=(req_r, rep_w, life_r), env=self.env, cwd=REPO,
                                         start_new_session=True)
        except OSError as exc:
            for fd in (req_w, rep_r, life_w, out_r):
                os.close(fd)
            raise TargetFailure(f"the worker could not be started with {self.python!r}: {exc}") from None
        finally:
            for fd in (req_r, rep_w, life_r, out_w):
                os.close(fd)
        os.set_blocking(req_w, False)
        os.set_blocking(rep_r, False)
        self._fds = (req_w, rep_r, life_w)
        self.tail = capture.Tail()  # this worker's output only
        self.log.write(f"----- worker {self.proc.pid} started: {self.spec} -----\n".encode())
        self._drain = capture.drain(out_r, self.tail, self.log)
        self._last_id = 0
        message = self._receive(time.monotonic() + self.timeout, 0, "start-up")
        if message.get("status") == "load_failed":
            _, kind, text, trace, _ = interpret("load", {**message, "status": "raised"})
            self.kill()
            raise TargetFailure(f"the target could not be loaded: {kind}: {text}\n{trace}")
        if message.get("status") != "ready":
            self.kill()
            raise BadReply(f"the worker's first frame is not 'ready' but {str(message.get('status'))[:40]!r}")

    # ---- one request ----
    def _died(self):
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # it closed its output but lives on
            code = "none: it closed its output and was killed"
        self.kill()
        if self._drain is not None:
            self._drain.join(2)  # the last of its output
        raise TargetFailure(f"the target process died (exit code {_exit_text(code)})\n{self.tail.text()}")

    def _receive(self, deadline: float, rid: int, command: str) -> dict:
        try:
            message = channel.receive(self._fds[1], deadline, self.max_reply_bytes)
        except channel.Timeout:
            self.kill()
            what = "start" if rid == 0 else "answer"
            raise TargetFailure(f"the target did not {what} within {self.timeout:g} s (killed)") from None
        except channel.Closed:
            self._died()
        except channel.ChannelError as exc:
            self.kill()
            raise BadReply(f"the target's reply to {command} broke the channel ({exc}); killed") from None
        if message.get("id") != rid:
            self.kill()
            raise BadReply(f"the target answered request {str(message.get('id'))[:40]} while request {rid} "
                           f"({command}) was pending: an extra or forged frame; killed")
        return message

    def call(self, command: str, *args):
        """Returns ("ok", value) | ("not_applicable", why) | ("raised", type, message, traceback, mro_names)."""
        self.send(command, *args)
        return self.receive()

    def send(self, command: str, *args) -> None:
        """The first half of ``call``: the request is written (the rank harness sends to every rank
        before it receives from any)."""
        if self.proc is None:
            if command == "close":
                self._pending = (command, None, None)  # the session ended with its worker
                return
            self._guarded(self._start)
        self._last_id += 1
        rid = self._last_id
        chunks = channel.pack({"id": rid, "command": command, "args": list(args)})
        deadline = time.monotonic() + self.timeout
        self._guarded(self._write, chunks, deadline)
        self._pending = (command, rid, deadline)

    def _guarded(self, function, *args):
        """Interrupted mid-request (SIGINT: conform.py), the worker is killed: its reply would come out of turn."""
        try:
            return function(*args)
        except TargetFailure:
            raise
        except BaseException:
            self.kill()
            raise

    def receive(self, timeout: float | None = None):
        """The reply to the last ``send``, within ``timeout`` seconds from now (default: the
        per-request limit, counted from the send)."""
        command, rid, deadline = self._pending
        self._pending = (None, None, None)
        if command is None:
            raise RuntimeError("receive() without a pending send()")
        if rid is None:
            return ("ok", None)  # close of a session that ended with its worker
        if timeout is not None:
            deadline = time.monotonic() + timeout
        return interpret(command, self._guarded(self._receive, deadline, rid, command))

    def _write(self, chunks, deadline: float) -> None:
        try:
            channel.write_chunks(self._fds[0], chunks, deadline)
        except channel.Timeout:
            self.kill()
            raise TargetFailure(f"the target did not take its request within {self.timeout:g} s (killed)") from None
        except OSError:  # it closed its input: it is dying or dead
            self._died()

    # ---- ending ----
    def _close_fds(self) -> None:
        if self._fds is not None:
            for fd in self._fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds = None

    def kill(self) -> None:
        """End the worker and everything it started (its own process group)."""
        if self.proc is not None:
            for kill in (os.killpg, os.kill):  # the group, and the worker itself should it have left it
                try:
                    kill(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.proc.wait()
            self.proc = None
        self._close_fds()

    def close(self) -> None:
        """Let the worker finish on end of input (its exit handlers run), then end what it left behind."""
        if self.proc is not None:
            try:
                os.close(self._fds[0])
            except OSError:
                pass
            self._fds = (-1, *self._fds[1:])
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def _main(argv: list[str]) -> None:
    spec, channel_arg = argv[0], next(a for a in argv[1:] if a.startswith("--channel="))
    request_fd, reply_fd, lifeline_fd = (int(x) for x in channel_arg.split("=", 1)[1].split(","))
    serve(spec, request_fd, reply_fd, lifeline_fd)


if __name__ == "__main__":
    _main(sys.argv[1:])
