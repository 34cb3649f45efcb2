"""conformance.blockwise: the tolerance model and the comparator evaluated in blocks on two threads must
give bitwise what they give on whole arrays (docs/benchmarks.md; issue 14)."""
import dataclasses

import numpy as np
import pytest

from came_conformance import blockwise, compare, precision
from came_conformance.bounds import Q
from came_conformance.protocol import Snapshot
from came_conformance.reference import step as came_step
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate


def _bits(a):
    a = np.asarray(a)
    return a.shape, a.dtype.str, a.tobytes()


@blockwise.elementwise
def _probe(a: Q, c, scale: float):
    """Broadcasting, a scalar field, a tuple: the shapes the model's operations return."""
    x = a.x * c + scale
    return Q(x, np.abs(a.x) * 2.0 ** -24, 0.0), (np.sqrt(np.abs(x)), x > 0)


@pytest.fixture
def tiny_blocks(monkeypatch):
    monkeypatch.setattr(blockwise, "BLOCK", 64)
    monkeypatch.setattr(blockwise, "PARALLEL_FROM", 256)
    monkeypatch.setattr(blockwise, "SMALL", 16)


def test_elementwise_blocks_are_the_whole_call(tiny_blocks):
    rng = np.random.default_rng(3)
    for shape, other in [((300, 7), (7,)), ((3, 70, 9), (70, 1)), ((1, 500), (500,)), ((999,), ()), ((2, 3), (3,))]:
        a = Q(rng.standard_normal(shape), 0.0, 0.0)
        c = rng.standard_normal(other) if other else 2.5
        got = _probe(a, c, 0.5)
        whole = _probe.__wrapped__(a, c, 0.5)
        for g, w in [(got[0].x, whole[0].x), (got[0].b, whole[0].b),
                     (got[1][0], whole[1][0]), (got[1][1], whole[1][1])]:
            assert _bits(g) == _bits(w), shape
        assert got[0].r == 0.0


def _judgement(theta, grad, state, got_theta, got_state, hp, prec):
    checks = compare.check_step(2, lambda i: hp, [theta], [state], [grad], Snapshot([got_theta], [got_state], 2),
                                "float32", prec)
    return [dataclasses.asdict(c) for c in checks]


@pytest.mark.parametrize("nonfinite", [False, True])
@pytest.mark.parametrize("shape", [(33, 129), (3, 70, 91), (40_000,), (1, 700), (300, 2)])
def test_model_and_comparator_in_blocks_are_bitwise_the_whole_array_ones(monkeypatch, shape, nonfinite):
    hp = Hyperparameters.defaults("mindformers", learning_rate=LearningRate.constant(1e-3),
                                  weight_decay=1e-2).step_hyper(2, 0)
    prec = precision.resolve("float32", {"float32": {"state": "float32", "compute": "float32"}})
    rng = np.random.default_rng(7)
    theta = round_to("float32", rng.standard_normal(shape))
    grad = round_to("float32", rng.standard_normal(shape))
    if nonfinite:  # factored, they reach every element through the statistics
        grad.reshape(-1)[5] = np.nan
        grad.reshape(-1)[9] = np.inf
    state = {k: round_to("float32", np.abs(rng.standard_normal(v.shape)) * 1e-3)
             for k, v in came_step.init_state(shape).items()}
    after = came_step.step(theta, grad, state, hp, trace=False)
    got_theta = round_to("float32", after.theta)
    got_state = {k: round_to("float32", v) for k, v in after.state.items()}
    got_theta.reshape(-1)[-3] += 1e-3  # one failing element far from the start, to place the first failure
    with monkeypatch.context() as whole:
        whole.setattr(blockwise, "PARALLEL_FROM", 1 << 62)
        want = _judgement(theta, grad, state, got_theta, got_state, hp, prec)
    monkeypatch.setattr(blockwise, "BLOCK", 64)
    monkeypatch.setattr(blockwise, "PARALLEL_FROM", 256)
    monkeypatch.setattr(blockwise, "SMALL", 16)
    got = _judgement(theta, grad, state, got_theta, got_state, hp, prec)
    assert nonfinite or not want[-1]["ok"]  # θ′ fails at the element moved
    assert repr(got) == repr(want)  # repr: NaN fields compare equal, floats to the last bit
