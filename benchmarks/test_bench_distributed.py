"""The rank harness, benchmarked (issue 12): what a group start costs, and what one sharded step costs.

Run with ``make bench``.  ``test_group_start``: starting a gloo group of 2 or 4 ranks (each loads the
target, then they join on 127.0.0.1), which the harness does once per world size and run instead of
once per case; the per-case saving is this figure.  ``test_sharded_step``: one fanned-out step and
read-back of a (16, 16) parameter over an existing group.  ``test_whole_run_colossalai_dist``: the
whole ``make conform TARGET=colossalai-dist`` run (its ``rank_starts`` are recorded as extra info).
"""
import sys

import numpy as np
import pytest

from came_conformance import runner
from came_conformance.distributed.harness import DistributedTargetProcess
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate
from came_conformance.targets import resolve

HP = Hyperparameters.defaults("mindformers", learning_rate=LearningRate.constant(0.01)).to_json()


def _process(tmp_path, target="reference-dist"):
    spec = resolve(target)
    return DistributedTargetProcess(spec.factory, spec.python, 120.0, tmp_path / "stderr.log", dict(spec.env))


@pytest.mark.parametrize("target", ["reference-dist", "colossalai-dist"])
@pytest.mark.parametrize("world", [2, 4])
def test_group_start(benchmark, tmp_path, target, world):
    if resolve(target).python == sys.executable and target == "colossalai-dist":
        pytest.skip("the ColossalAI environment is not installed (make setup-colossalai)")

    def start():
        process = _process(tmp_path, target)
        process.group(world)
        process.close()

    benchmark.pedantic(start, rounds=2, iterations=1)


@pytest.mark.parametrize("variant", ["zero-w2", "rows-w2", "zero-w4"])
def test_sharded_step(benchmark, tmp_path, variant):
    process = _process(tmp_path)
    try:
        sid = process.call("open", HP, [np.ones((16, 16))], "float64", variant)[1]
        grads = [np.full((16, 16), 0.5)]
        benchmark(lambda: (process.call("step", sid, grads), process.call("read", sid)))
    finally:
        process.close()


def test_whole_run_colossalai_dist(benchmark, tmp_path):
    if resolve("colossalai-dist").python == sys.executable:
        pytest.skip("the ColossalAI environment is not installed (make setup-colossalai)")
    result = benchmark.pedantic(lambda: runner.run("colossalai-dist", tmp_path / "run", runner.Settings(),
                                                   progress=lambda m: None), rounds=1, iterations=1)
    benchmark.extra_info["cases"] = len(result["records"])
    benchmark.extra_info["rank_starts"] = result["rank_starts"]
