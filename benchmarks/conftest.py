"""Every benchmark records the machine's load with its figures (docs/benchmarks.md).

A timing taken on a busy machine is not a result: each benchmark's ``extra_info`` gets the 1-minute
load average before and after it and the number of CPUs, and a figure whose load exceeded half the
CPUs is marked ``loaded`` so the docs never quote it as a result.
"""
import os

import pytest


@pytest.fixture(autouse=True)
def _machine_load(request):
    before = os.getloadavg()[0]
    yield
    benchmark = request.node.funcargs.get("benchmark")
    if benchmark is None:
        return
    after = os.getloadavg()[0]
    cpus = os.cpu_count() or 1
    benchmark.extra_info.update(load_average_before=round(before, 2), load_average_after=round(after, 2),
                                cpus=cpus, loaded=max(before, after) > cpus / 2)
