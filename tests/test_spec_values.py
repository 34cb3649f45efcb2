"""Literal values printed in spec/came.md, checked against the reference (not restated from its code).

CAME-BETA2-2's table, CAME-LR-5's crossover at t = 10^4, CAME-LR-4's schedules at their first
steps, and the rounding of reference/dtypes.py against the oracle's exact rounding (CAME-DTYPE-2).
"""
import numpy as np
import pytest

from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate
from came_conformance.reference.oracle import DPS, mp, mpf, round_to_format

FORMATS = {"float32": (24, -126, float(np.finfo(np.float32).max)), "float16": (11, -14, 65504.0),
           "bfloat16": (8, -126, float.fromhex("0x1.fep127"))}


@pytest.mark.parametrize("t, beta2", [(1, 0.0), (2, 0.425651), (3, 0.584756), (10, 0.841511), (100, 0.974881),
                                      (1000, 0.996019), (10000, 0.999369)])
def test_beta2_schedule_table(t, beta2):
    """CAME-BETA2-2: the table of β2_t for decay_rate 0.8, to the 6 decimals the spec prints."""
    assert round(Hyperparameters.defaults("mindformers").beta2_at(t), 6) == beta2


def test_paper_beta2_is_constant():
    """CAME-BETA2-1: β2 is the same at every step."""
    hp = Hyperparameters.defaults("paper")
    assert {hp.beta2_at(t) for t in (1, 2, 10, 10 ** 6)} == {0.999}


@pytest.mark.parametrize("warmup, t, eta", [(False, 1, 1e-2), (False, 10 ** 4, 1e-2), (False, 40000, 0.005),
                                            (True, 1, 1e-6), (True, 5000, 5e-3), (True, 10 ** 4, 1e-2),
                                            (True, 40000, 0.005)])
def test_relative_step_values(warmup, t, eta):
    """CAME-LR-5: min(1e-2, 1/√t), or min(1e-6·t, 1/√t) with warmup_init; both 0.01 at t = 10^4."""
    hp = Hyperparameters.defaults("mindformers", learning_rate=None, relative_step=True, warmup_init=warmup)
    assert hp.lr_at(t) == pytest.approx(eta, rel=1e-12)


def test_schedules_at_their_first_steps():
    """CAME-LR-4: k = t − 1, so the first step uses base (exponential) and base/W (warmup_linear)."""
    exponential = LearningRate.exponential(0.1, 0.5)
    assert [exponential.at(k) for k in range(3)] == [0.1, 0.05, 0.025]
    warmup = LearningRate.warmup_linear(0.3, 3)
    assert [warmup.at(k) for k in range(4)] == [0.3 * (1 / 3), 0.3 * (2 / 3), 0.3, 0.3]


def test_sequence_index_is_zero_based():
    """CAME-LR-3: the value at 0-based index t − 1; past the end is an error."""
    seq = LearningRate.sequence([0.1, 0.2])
    assert (seq.at(0), seq.at(1)) == (0.1, 0.2)
    with pytest.raises(ValueError, match="learning_rate"):
        seq.at(2)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_round_to_matches_the_oracles_exact_rounding(dtype):
    """CAME-DTYPE-2: reference.dtypes.round_to is correctly rounded (ties to even, subnormals, overflow)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(2000) * 10.0 ** rng.integers(-45, 40, 2000)
    x = np.concatenate([x, [1 + 2 ** -8 + 2 ** -30, 2 ** -133 * 1.5, 2 ** -150, 65520.0, 3.5e38, 0.0, -0.0]])
    ours = round_to(dtype, x)
    with mp.workdps(DPS):
        exact = np.array([float(round_to_format(mpf(float(v)), FORMATS[dtype])) for v in x])
    assert np.array_equal(ours, exact)
