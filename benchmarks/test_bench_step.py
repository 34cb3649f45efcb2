"""One CAME step on a (4096, 4096) float64 parameter: the reference against came-pytorch.

Run with

    .venvs/core/bin/python -m pytest benchmarks/test_bench_step.py -p no:cacheprovider --benchmark-enable --benchmark-only

(the normal test run skips benchmarks: pyproject's addopts has --benchmark-skip and testpaths
is tests/).  All timings share the group ``step-4096x4096-float64`` so the table shows them side
by side; each test also records its time as a ratio to the came-pytorch step measured in the same
run (``extra_info``, medians), because absolute seconds depend on the machine and its load.

The reference is timed twice: ``trace=False`` (what an optimizer needs: θ' and the state) and
``trace=True`` (every intermediate of the spec kept, what the conformance comparison uses).
came-pytorch runs on CPU in float64, with torch's default thread count and with one thread
(NumPy is single-threaded).

Memory: the peak of memory allocated during one reference step beyond its inputs, measured with
tracemalloc (NumPy reports its array allocations to it), as a multiple of the parameter's size.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from came_conformance import blockwise
from came_conformance.reference import step as came_step

torch = pytest.importorskip("torch", reason="torch is not installed: came-pytorch needs it")
import came_pytorch  # noqa: E402

N = 4096
GROUP = "step-4096x4096-float64"
ROUNDS = 9
HP = came_step.StepHyper(lr=1e-3, beta1=0.9, beta2=0.999, beta3=0.9999, eps1=1e-30, eps_insta=1e-16,
                         clip_threshold=1.0, weight_decay=1e-2)
MEDIANS: dict[str, float] = {}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    theta, grad = rng.normal(size=(N, N)), rng.normal(size=(N, N))
    return theta, grad, came_step.init_state(theta.shape)


@pytest.fixture(scope="module")
def official(data):
    theta, grad, _ = data
    p = torch.nn.Parameter(torch.tensor(theta, dtype=torch.float64))
    optim = came_pytorch.CAME([p], lr=HP.lr, eps=(HP.eps1, HP.eps_insta), clip_threshold=HP.clip_threshold,
                              betas=(HP.beta1, HP.beta2, HP.beta3), weight_decay=HP.weight_decay)
    g = torch.tensor(grad, dtype=torch.float64)

    def one_step():
        p.grad = g
        optim.step()

    one_step()  # state allocated: later rounds time the steady-state step
    return one_step


def _record(benchmark, name: str, threads: int | None = None) -> None:
    """Medians, not means: a round that page-faults in fresh arrays, or meets a busy core, is an outlier."""
    MEDIANS[name] = benchmark.stats.stats.median
    benchmark.extra_info["torch_threads"] = threads or torch.get_num_threads()
    if "came-pytorch" in MEDIANS:
        benchmark.extra_info["median_ratio_to_came_pytorch"] = MEDIANS[name] / MEDIANS["came-pytorch"]
    if "one pass" in MEDIANS:
        benchmark.extra_info["median_ratio_to_roofline"] = MEDIANS[name] / (STEP_PASSES * MEDIANS["one pass"])


#: Full-size passes (reads and writes of one parameter's size) of the untraced factored step with weight
#: decay (reference/step.py): Q (read G, write Q), Q's column means (read), U (read G, write U), RMS (read
#: U), the moments (read U and m, write m' and D), D's column means (read), θ' (read m' and θ, write θ').
STEP_PASSES = 14


@pytest.mark.benchmark(group=GROUP)
def test_memory_bandwidth(benchmark, data):
    """The roofline's yardstick, in the same run: z = x + y over the parameter's size (3 passes), its
    halves on two threads as the reference's blocks run.  The roofline of the step is STEP_PASSES such
    passes; ``_record`` gives each reference figure as a multiple of it."""
    theta, grad, _ = data
    out = np.empty_like(theta)
    half = theta.shape[0] // 2
    halves = [(slice(0, half),), (slice(half, None),)]

    def add():
        blockwise.run_on_two_threads(lambda rows=rows: np.add(theta[rows], grad[rows], out=out[rows])
                                     for rows in halves)

    benchmark.pedantic(add, rounds=ROUNDS, warmup_rounds=1)
    MEDIANS["one pass"] = benchmark.stats.stats.median / 3
    benchmark.extra_info["bytes_per_second"] = 3 * theta.nbytes / benchmark.stats.stats.median
    benchmark.extra_info["roofline_step_seconds"] = STEP_PASSES * MEDIANS["one pass"]


@pytest.mark.benchmark(group=GROUP)
def test_came_pytorch_step(benchmark, official):
    benchmark.pedantic(official, rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "came-pytorch")


@pytest.mark.benchmark(group=GROUP)
def test_came_pytorch_step_one_thread(benchmark, official):
    """The same with one torch thread, like NumPy (less sensitive to a busy machine, too)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.pedantic(official, rounds=ROUNDS, warmup_rounds=1)
    finally:
        torch.set_num_threads(threads)
    _record(benchmark, "came-pytorch, 1 thread", threads=1)


@pytest.mark.benchmark(group=GROUP)
def test_reference_step(benchmark, data):
    theta, grad, state = data
    result = benchmark.pedantic(came_step.step, args=(theta, grad, state, HP), kwargs={"trace": False},
                                rounds=ROUNDS, warmup_rounds=1)
    assert np.all(np.isfinite(result.theta))
    _record(benchmark, "reference")


@pytest.mark.benchmark(group=GROUP)
def test_reference_step_with_trace(benchmark, data):
    theta, grad, state = data
    benchmark.pedantic(came_step.step, args=(theta, grad, state, HP), rounds=ROUNDS, warmup_rounds=1)
    _record(benchmark, "reference, trace=True")


def peak_multiple(theta, grad, state, trace: bool) -> float:
    """Peak bytes allocated during one step beyond what existed before it, / the parameter's bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = came_step.step(theta, grad, state, HP, trace=trace)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    del result
    return (peak - before) / theta.nbytes


@pytest.mark.benchmark(group="step-4096x4096-float64-memory")
def test_reference_step_peak_memory(benchmark, data):
    """θ' and m' are new arrays (the step is a pure function); the other full-size intermediates live in
    the buffer of θ' before θ' is written, and a block's temporaries in per-thread scratch (two threads, four
    buffers of BLOCK elements): 2 parameter sizes, the scratch, and the O(n + m) row and column vectors.
    Issue 14 asks for at most 3."""
    theta, grad, state = data
    lean = benchmark.pedantic(peak_multiple, args=(theta, grad, state, False), rounds=1, iterations=1)
    traced = peak_multiple(theta, grad, state, True)
    benchmark.extra_info["peak_memory_multiple"] = lean
    benchmark.extra_info["peak_memory_multiple_trace"] = traced
    print(f"\npeak additional memory: trace=False {lean:.3f} x parameter, trace=True {traced:.3f} x parameter")
    small_vectors = 64 * (theta.shape[0] + theta.shape[1]) * 8 / theta.nbytes  # a few dozen length-n vectors
    scratch = 2 * 4 * came_step.BLOCK * 8 / theta.nbytes  # scratch names "g", "q", "a", "u"
    assert lean <= 2 + scratch + small_vectors
