"""Targets that attack the runner on purpose (tests/test_hostile.py), one failure class each.

Each wraps the reference adapter and misbehaves in one way; everything else about it is
correct.  Those that misbehave "once" count across worker restarts with files in the folder
named by ``$HOSTILE_MARKS`` (the test's temporary directory), where they also leave their
process ids for the test to watch.  These are not CAME ports.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

from came_conformance.adapters.reference import ReferenceAdapter, Session
from came_conformance.protocol import Snapshot, TargetInfo

TIER0_SHAPES = [(3, 4), (4,)]  # runner.tier0_case: hostile steps leave tier 0 alone so the variant runs


def _marks() -> str:
    return os.environ["HOSTILE_MARKS"]


def _mark(name: str, text: str = "") -> None:
    with open(os.path.join(_marks(), name), "w") as fh:
        fh.write(text)


def _first_time(name: str) -> bool:
    """True for the first caller across every worker process of the test."""
    try:
        fd = os.open(os.path.join(_marks(), name), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def _count(name: str) -> int:
    """1, 2, 3, ... across every worker process of the test."""
    n = 1
    while not _first_time(f"{name}.{n}"):
        n += 1
    return n


class _Wrapped(ReferenceAdapter):
    """The reference, with ``on_step(session, grads, t)`` called before each step of a case."""

    def on_step(self, session, grads, t):
        pass

    def open(self, hp, params, dtype, variant, **extras):
        session = super().open(hp, params, dtype, variant, **extras)
        original, calls = session.step, [0]
        tier0 = [tuple(np.shape(p)) for p in params] == TIER0_SHAPES

        def step(grads):
            calls[0] += 1
            if not tier0:
                self.on_step(session, grads, calls[0])
            return original(grads)

        session.step = step
        return session


# ---- a plainly wrong optimizer (every parameter off by 1e-3 after each step) ----
class _Wrong(ReferenceAdapter):
    def open(self, hp, params, dtype, variant, **extras):
        session = super().open(hp, params, dtype, variant, **extras)
        original = session.step

        def step(grads):
            original(grads)
            session.optim._values = tuple(v + 1e-3 for v in session.optim._values)

        session.step = step
        return session


def wrong():
    return _Wrong("mindformers")


# ---- a reply that runs code in the runner if the runner unpickles it ----
FORGED_CODE = ("(setattr(__import__('came_conformance.compare', fromlist=['compare']), 'check_step', "
               "lambda *a, **k: []), '1.0')[1]")


class _Forge:
    """Pickles as a call of eval(FORGED_CODE): whoever unpickles it stops comparing anything."""

    def __reduce__(self):
        return (eval, (FORGED_CODE,))


class _Forging(_Wrong):
    def describe(self):
        info = super().describe()
        return TargetInfo(**{**info.__dict__, "versions": {"numpy": _Forge()}})


def forging():
    return _Forging("mindformers")


# ---- one stray frame on the reply channel ----
def _reply_fd() -> int:
    arg = next(a for a in sys.argv if a.startswith("--channel="))
    return int(arg.split("=", 1)[1].split(",")[1])


def _stray_frame() -> None:
    """Write one reply nobody asked for, in whichever wire format this worker speaks."""
    from came_conformance import worker

    if hasattr(worker, "_write_frame"):  # the pickle channel on stdout
        frame = sys._getframe()
        while frame is not None and frame.f_code.co_name != "serve":
            frame = frame.f_back
        worker._write_frame(frame.f_locals["channel"], ("ok", None))
    else:
        from came_conformance import channel

        channel.send(_reply_fd(), {"id": 10 ** 9, "status": "ok", "value": None})


class _StrayFrame(_Wrapped):
    def on_step(self, session, grads, t):
        if _first_time("stray"):
            _stray_frame()


def stray_frame():
    return _StrayFrame("mindformers")


# ---- crashes ----
class _Segfault(_Wrapped):
    def on_step(self, session, grads, t):
        if t == 2 and _first_time("segfault"):
            import ctypes
            ctypes.string_at(0)


def segfault():
    return _Segfault("mindformers")


FLOOD_BYTES = 3 << 20
FLOOD_CRASHES = 4


class _FloodThenCrash(_Wrapped):
    """Before each of its first crashes: CRASH-n, megabytes without a newline, END-n; then it dies."""

    def on_step(self, session, grads, t):
        if t == 2:
            n = _count("flood")
            if n <= FLOOD_CRASHES:
                os.write(2, f"CRASH-{n} ".encode() + b"x" * FLOOD_BYTES + f" END-{n}".encode())
                os._exit(3)


def flood_then_crash():
    return _FloodThenCrash("mindformers")


HUGE_MESSAGE_CHARS = 5_000_000


class _HugeMessage(ReferenceAdapter):
    def open(self, hp, params, dtype, variant, **extras):
        raise ValueError("the target refuses: " + "x" * HUGE_MESSAGE_CHARS)


def huge_message():
    return _HugeMessage("mindformers")


# ---- output on stdout and stderr, including bytes that look like frames ----
class _Junk(_Wrapped):
    def on_step(self, session, grads, t):
        print("junk on stdout", flush=True)
        os.write(1, b"CAME\x01\x00\x00\x00\xff\xff\xff\xff junk \x00\x80\n")
        os.write(2, b"\x00\xff junk on stderr\n")


def junk_output():
    return _Junk("mindformers")


# ---- read-backs that are not Snapshots ----
class _BadSession(Session):
    def __init__(self, optim, dtype, kind):
        super().__init__(optim, dtype)
        self.kind = kind

    def read(self):
        snap = super().read()
        if self.kind == "list":
            return [snap.params, snap.state]
        if self.kind == "none":
            return None
        if self.kind == "strings":
            return Snapshot(["not an array" for _ in snap.params], snap.state, snap.step)
        if self.kind == "short":
            return Snapshot(snap.params[:-1], snap.state[:-1], snap.step)
        if self.kind == "object-array":
            return Snapshot([np.array([object()]) for _ in snap.params], snap.state, snap.step)
        raise AssertionError(self.kind)


class _BadReadback(ReferenceAdapter):
    def __init__(self, kind):
        super().__init__("mindformers")
        self.kind = kind

    def open(self, hp, params, dtype, variant, **extras):
        session = super().open(hp, params, dtype, variant, **extras)
        return _BadSession(session.optim, session.dtype, self.kind)


def readback_list():
    return _BadReadback("list")


def readback_none():
    return _BadReadback("none")


def readback_strings():
    return _BadReadback("strings")


def readback_short():
    return _BadReadback("short")


def readback_object_array():
    return _BadReadback("object-array")


# ---- describe() that breaks the declaration ----
class _BadDescribe(ReferenceAdapter):
    def __init__(self, change):
        super().__init__("mindformers")
        self.change = change

    def describe(self):
        info = super().describe()
        return self.change(info)


def _with(**fields):
    return lambda info: TargetInfo(**{**info.__dict__, **fields})


def describe_unknown_dtype():
    return _BadDescribe(_with(dtypes=("float64", "float8")))


def describe_unknown_profile():
    return _BadDescribe(_with(profile="adafactor"))


def describe_unknown_api():
    return _BadDescribe(_with(api="keras"))


def describe_dtypes_string():
    return _BadDescribe(_with(dtypes="float64"))


def describe_none():
    return _BadDescribe(lambda info: None)


def describe_bytes_version():
    return _BadDescribe(_with(versions={"numpy": b"2.4"}))


# ---- hangs and processes ----
class _HangOnce(_Wrapped):
    """Hangs in its first non-tier-0 step, after leaving its pid in hang.pid."""

    spin = False

    def on_step(self, session, grads, t):
        if _first_time("hang"):
            _mark("hang.pid", str(os.getpid()))
            if self.spin:
                while True:
                    pass
            time.sleep(3600)


class _SpinOnce(_HangOnce):
    spin = True


def hang_once():
    return _HangOnce("mindformers")


def spin_once():
    return _SpinOnce("mindformers")


class _SpawnsChild(ReferenceAdapter):
    def open(self, hp, params, dtype, variant, **extras):
        if _first_time("child"):
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
            _mark("child.pid", str(child.pid))
        return super().open(hp, params, dtype, variant, **extras)


def spawns_child():
    return _SpawnsChild("mindformers")


def slow_start():
    time.sleep(3600)
