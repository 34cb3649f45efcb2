"""Every benchmark records how busy the machine was while it ran (docs/benchmarks.md).

A timing taken on a busy machine is not a result.  Each benchmark's ``extra_info`` gets:

- ``load_average_before`` / ``load_average_after``: the 1-minute load average, and ``cpus``;
- ``other_cpu``: how many CPUs, on average over the benchmark, were busy with anything but this
  process (its threads and children) — other processes, the kernel's work for them, and time the
  hypervisor gave to other machines (steal) — read from /proc/stat against this process's own CPU
  time;
- ``loaded``: true when ``other_cpu`` exceeded a quarter of a CPU.

The load average alone cannot say that: a benchmark running on both cores raises it to about 2
by itself, and it decays over minutes, so every benchmark after a two-thread one would read as
loaded.  Where /proc/stat is absent (not Linux), ``loaded`` falls back to a load average above
half the CPUs.
"""
import os
import time

import pytest

#: Foreign CPU use (in CPUs, averaged over the benchmark) above which a figure is marked loaded.
LOADED_OTHER_CPU = 0.25


def _busy_seconds() -> float | None:
    """CPU seconds the whole machine spent busy (all but idle and iowait, steal included), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@pytest.fixture(autouse=True)
def _machine_load(request):
    before, busy0, own0, wall0 = os.getloadavg()[0], _busy_seconds(), _own_seconds(), time.monotonic()
    yield
    benchmark = request.node.funcargs.get("benchmark")
    if benchmark is None:
        return
    after, busy1, own1, wall = os.getloadavg()[0], _busy_seconds(), _own_seconds(), time.monotonic() - wall0
    cpus = os.cpu_count() or 1
    info = {"load_average_before": round(before, 2), "load_average_after": round(after, 2), "cpus": cpus}
    if busy0 is not None and busy1 is not None and wall > 0:
        other = max(0.0, (busy1 - busy0) - (own1 - own0)) / wall
        info.update(other_cpu=round(other, 3), loaded=other > LOADED_OTHER_CPU)
    else:
        info["loaded"] = max(before, after) > cpus / 2
    benchmark.extra_info.update(info)
