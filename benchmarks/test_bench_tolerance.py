"""The cost of judging one step (conformance.compare.check_step) on a large parameter.

Run with

    .venvs/core/bin/python -m pytest benchmarks/test_bench_tolerance.py -p no:cacheprovider --benchmark-enable --benchmark-only

One (4096, 4096) and one (1024, 1024) float32 parameter at step 2 of the reference's trajectory,
judged as what it is, a target computing in float64 and storing float32 (docs/tolerances.md; a
float32 accumulator in any order would have no bound for the 2^24-term RMS, CAME-DTYPE-5): the
clause-local model of every stored tensor,
the unconditional reference step beside it, and the grid comparison.  ``extra_info`` records the
time as a ratio to one traced reference step (``trace=True``, issue 14's yardstick) and to one
untraced step of the same parameter, medians of 3 measured in the same run, and the tracemalloc peak of one judgement beyond its inputs as a multiple of the parameter's
size: absolute seconds depend on the machine and its load.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from came_conformance import compare, precision
from came_conformance.protocol import Snapshot
from came_conformance.reference import step as came_step
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate

HP = Hyperparameters.defaults("mindformers", learning_rate=LearningRate.constant(1e-3), weight_decay=1e-2)


def _case(n: int):
    rng = np.random.default_rng(0)
    theta = round_to("float32", rng.normal(size=(n, n)))
    grads = [round_to("float32", rng.normal(size=(n, n))) for _ in range(2)]
    state = came_step.init_state(theta.shape)
    first = came_step.step(theta, grads[0], state, HP.step_hyper(1, 0), trace=False)
    theta1 = round_to("float32", first.theta)
    state1 = {k: round_to("float32", v) for k, v in first.state.items()}
    second = came_step.step(theta1, grads[1], state1, HP.step_hyper(2, 0), trace=False)
    snap = Snapshot([round_to("float32", second.theta)], [{k: round_to("float32", v) for k, v in second.state.items()}],
                    2)
    return theta1, state1, grads[1], snap


@pytest.mark.parametrize("n", [1024, 4096])
@pytest.mark.benchmark(group="judge-one-step-float32")
def test_judging_one_step(benchmark, n):
    theta, state, grad, snap = _case(n)

    prec = precision.resolve("float32", {"float32": {"state": "float32", "compute": "float64"}})

    def judge():
        return compare.check_step(2, lambda i: HP.step_hyper(2, i), [theta], [state], [grad], snap, "float32", prec)

    checks = benchmark.pedantic(judge, rounds=3, warmup_rounds=0)
    assert all(c.ok for c in checks)
    hp = HP.step_hyper(2, 0)
    steps = {trace: _median_seconds(lambda: came_step.step(theta, grad, state, hp, trace=trace)) for trace in (True, False)}
    tracemalloc.start()
    judge()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    median = benchmark.stats.stats.median
    # issue 14's yardstick is the traced step (what the comparison itself runs); the untraced one beside it
    benchmark.extra_info["median_ratio_to_traced_reference_step"] = median / steps[True]
    benchmark.extra_info["median_ratio_to_one_reference_step"] = median / steps[False]
    benchmark.extra_info["peak_memory_in_parameter_sizes"] = peak / theta.nbytes


def _median_seconds(fn, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return sorted(times)[rounds // 2]
