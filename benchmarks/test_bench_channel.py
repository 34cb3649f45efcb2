"""The worker channel on a (4096, 4096) float64 array: data-only frames against the old pickle channel.

Run with

    .venvs/core/bin/python -m pytest benchmarks/test_bench_channel.py -p no:cacheprovider --benchmark-enable --benchmark-only

One round is a round trip to a child process that echoes what it receives: the runner sends a
request carrying the array (as ``step`` does with gradients) and reads it back (as ``read``
returns parameters).  ``frames`` is ``conformance.channel`` over its dedicated pipes; ``pickle``
is the channel the worker used before (length-prefixed pickles, protocol 4, on the child's
stdin and stdout), reproduced here as it was, so both are timed in the same run.  Each test
records its median as a ratio to the pickle channel's (``extra_info["ratio_to_pickle"]``,
frames last): the claim to check is "no slower", i.e. a ratio <= 1.  The pickle echo only ever
sees this benchmark's own bytes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from came_conformance import channel

ROOT = Path(__file__).resolve().parent.parent
GROUP = "channel-roundtrip-4096x4096-float64"
ROUNDS = 5
MEDIANS: dict[str, float] = {}

PICKLE_ECHO = """
import pickle, struct, sys
def read_frame(stream):
    header = stream.read(8)
    if len(header) < 8:
        return None
    (size,) = struct.unpack("<Q", header)
    return pickle.loads(stream.read(size))
def write_frame(stream, obj):
    data = pickle.dumps(obj, protocol=4)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()
while (obj := read_frame(sys.stdin.buffer)) is not None:
    write_frame(sys.stdout.buffer, obj)
"""

FRAMES_ECHO = """
import sys
from came_conformance import channel
r, w = map(int, sys.argv[1:3])
while True:
    try:
        message = channel.receive(r)
    except channel.Closed:
        break
    channel.send(w, message)
"""


def _pickle_write(stream, obj) -> None:  # the old worker channel, client side
    import pickle
    import struct

    data = pickle.dumps(obj, protocol=4)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _pickle_read(stream):
    import pickle
    import struct

    (size,) = struct.unpack("<Q", stream.read(8))
    return pickle.loads(stream.read(size))


@pytest.fixture(scope="module")
def array():
    return np.random.default_rng(0).normal(size=(4096, 4096))


@pytest.fixture
def pickle_echo():
    proc = subprocess.Popen([sys.executable, "-c", PICKLE_ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=ROOT)
    yield proc
    proc.stdin.close()
    proc.wait(timeout=60)


@pytest.fixture
def frames_echo():
    req_r, req_w = os.pipe()
    rep_r, rep_w = os.pipe()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
    proc = subprocess.Popen([sys.executable, "-c", FRAMES_ECHO, str(req_r), str(rep_w)], pass_fds=(req_r, rep_w),
                            cwd=ROOT, env=env)
    os.close(req_r)
    os.close(rep_w)
    channel.enlarge_pipe(req_w)  # as the worker client does
    channel.enlarge_pipe(rep_r)
    yield req_w, rep_r
    os.close(req_w)
    proc.wait(timeout=60)
    os.close(rep_r)


def _record(benchmark, name: str) -> None:
    MEDIANS[name] = benchmark.stats.stats.median
    if "pickle" in MEDIANS:
        benchmark.extra_info["ratio_to_pickle"] = MEDIANS[name] / MEDIANS["pickle"]


def test_pickle_channel(benchmark, array, pickle_echo):
    benchmark.group = GROUP

    def roundtrip():
        _pickle_write(pickle_echo.stdin, ("step", (1, [array])))
        return _pickle_read(pickle_echo.stdout)

    back = benchmark.pedantic(roundtrip, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert np.array_equal(back[1][1][0], array)
    _record(benchmark, "pickle")


def test_frames_channel(benchmark, array, frames_echo):
    benchmark.group = GROUP
    request, reply = frames_echo

    def roundtrip():
        channel.send(request, {"id": 1, "command": "step", "args": [1, [array]]}, time.monotonic() + 600)
        return channel.receive(reply, time.monotonic() + 600)

    back = benchmark.pedantic(roundtrip, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert np.array_equal(back["args"][1][0], array)
    _record(benchmark, "frames")
