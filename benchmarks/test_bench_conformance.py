"""Whole conformance runs, benchmarked (issue: reference within 1 min, MindSpore within 10 min).

Run with ``make bench``.  Each run is one round (a run is long and deterministic); the figure
is reported as a ratio against the ``reference`` run benchmarked in the same process, and in
seconds.  The one-time environment install is outside the measurement (``make setup`` first).
"""
import sys
from pathlib import Path

import pytest

from came_conformance import runner
from came_conformance.targets import resolve

RESULTS = {}


def _run_once(target: str, tmp: Path) -> dict:
    return runner.run(target, tmp / target, runner.Settings(), progress=lambda m: None)


@pytest.mark.parametrize("target", ["reference", "mindspore"])
def test_whole_run(benchmark, tmp_path, target):
    spec = resolve(target)
    if target == "mindspore" and spec.python == sys.executable:
        pytest.skip("the MindSpore environment is not installed (make setup-mindspore)")
    result = benchmark.pedantic(_run_once, args=(target, tmp_path), rounds=1, iterations=1)
    RESULTS[target] = benchmark.stats.stats.mean
    benchmark.extra_info["cases"] = len(result["records"])
    if "reference" in RESULTS and target != "reference":
        benchmark.extra_info["ratio_to_reference_run"] = RESULTS[target] / RESULTS["reference"]


@pytest.mark.parametrize("signatures", [1, runner.Settings.signatures])
def test_exploration_cost(benchmark, tmp_path, signatures):
    """What exploring past the first failure costs: the Hypothesis trajectories of a target with two
    bugs (tests/targets/misbehaving.py), stopping after the first signature (as before) or not."""
    cfg = runner.Settings(sources=("hypothesis",), signatures=signatures)
    result = benchmark.pedantic(runner.run, args=("tests.targets.misbehaving:two_bugs", tmp_path / "out", cfg),
                                kwargs={"progress": lambda m: None}, rounds=1, iterations=1)
    benchmark.extra_info["cases"] = len(result["records"])
    benchmark.extra_info["shrunk_failures"] = sum(1 for r in result["records"] if r.get("hypothesis", {}).get("shrunk"))
