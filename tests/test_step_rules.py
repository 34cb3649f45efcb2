"""The per-step rules the oracle takes as given, checked on their own (docs/reference-accuracy.md).

``reference/oracle.py`` recomputes a step from a resolved ``StepHyper``, which it gets from
``Hyperparameters.step_hyper`` like the reference does, so it cannot see a wrong β2_t or η_t.
Here each rule is written again from spec/came.md's text, evaluated in mpmath (60 digits), and
``step_hyper(t, i)`` must be within 2 float64 ulps of it (a libm power or square root is within
one ulp, the product or difference after it one rounding more): CAME-BETA2-1, CAME-BETA2-2,
CAME-LR-2 … CAME-LR-5, CAME-GROUP-1, CAME-STEP-10 (scale_parameter's ε_scale), over every t up to
3000, around the crossover t = 10^4, and at large t (2^24, 10^6, 2^31 − 1; CAME-STATE-6).
"""
from __future__ import annotations

import numpy as np
import pytest
from mpmath import mp, mpf, sqrt

from came_conformance.reference.dtypes import ulp
from came_conformance.reference.hyperparams import Group, Hyperparameters, LearningRate

STEPS = sorted(set(range(1, 3001)) | set(range(9_900, 10_101)) | {2 ** 24 - 1, 2 ** 24, 2 ** 24 + 1, 10 ** 6,
                                                                   2 ** 31 - 1})


def close(got: float, exact, ulps: float = 2.0) -> bool:
    return abs(mpf(got) - exact) <= ulps * mpf(float(ulp("float64", float(exact)))) or got == exact == 0


def _check(values, exact, what):
    bad = [(t, v, float(e)) for t, v, e in zip(STEPS, values, exact) if not close(v, e)]
    assert not bad, f"{what}: {bad[:3]}"


@pytest.mark.parametrize("c", [0.0, 0.3, 0.8, 1.0])
def test_beta2_schedule(c):
    """CAME-BETA2-2: β2_t = 1 − t^(−c) (decay_rate c), t the 1-based shared counter; CAME-BETA2-1: constant."""
    hp = Hyperparameters.defaults("mindformers", decay_rate=c)
    with mp.workdps(60):
        _check([hp.step_hyper(t, 0).beta2 for t in STEPS], [1 - mpf(t) ** (-mpf(c)) for t in STEPS], f"c={c}")
    paper = Hyperparameters.defaults("paper", beta2=0.95)
    assert {paper.step_hyper(t, 0).beta2 for t in STEPS} == {0.95}


@pytest.mark.parametrize("warmup", [False, True])
def test_relative_step_across_the_crossover(warmup):
    """CAME-LR-5: min(1e-2, 1/sqrt(t)), or min(1e-6·t, 1/sqrt(t)) with warmup_init (CAME-OPT-3); the branch changes at
    t = 10^4 (1/sqrt(10^4) = 1e-2 = 1e-6·10^4) and stays changed at 2^24 and 2^31 − 1."""
    hp = Hyperparameters.defaults("mindformers", learning_rate=None, relative_step=True, warmup_init=warmup)
    with mp.workdps(60):
        exact = [min(mpf(1e-6) * t if warmup else mpf(1e-2), 1 / sqrt(mpf(t))) for t in STEPS]
        _check([hp.step_hyper(t, 0).lr for t in STEPS], exact, f"warmup_init={warmup}")
    before, after = hp.step_hyper(9_999, 0).lr, hp.step_hyper(10_001, 0).lr
    assert (before < 1e-2) == warmup and after < 1e-2


def test_learning_rate_forms_and_group_overrides():
    """CAME-LR-2 … CAME-LR-4 at k = t − 1, CAME-GROUP-1: a group's lr and weight_decay replace the top-level ones for
    its parameters only; CAME-STEP-10: ε_scale is passed exactly when scale_parameter is on."""
    seq = [0.1, 0.2, 0.05]
    hp = Hyperparameters.defaults(
        "mindformers", learning_rate=LearningRate.exponential(0.02, 0.999), weight_decay=0.1, scale_parameter=True,
        groups=(Group((1,), LearningRate.warmup_linear(0.3, 2500), 0.0), Group((2,), LearningRate.sequence(seq), None)))
    with mp.workdps(60):
        _check([hp.step_hyper(t, 0).lr for t in STEPS], [mpf(0.02) * mpf(0.999) ** (t - 1) for t in STEPS],
               "exponential")
        _check([hp.step_hyper(t, 1).lr for t in STEPS],
               [mpf(0.3) * min(1, mpf(t) / mpf(2500)) for t in STEPS], "warmup_linear")
    assert [hp.step_hyper(t, 2).lr for t in (1, 2, 3)] == seq
    with pytest.raises(ValueError, match=r"^lr: .*\[CAME-ERR-S5\]"):
        hp.step_hyper(4, 2)
    assert [hp.step_hyper(3, i).weight_decay for i in range(3)] == [0.1, 0.0, 0.1]
    one = hp.step_hyper(5, 0)
    assert (one.eps_scale, one.beta1, one.beta3, one.eps1, one.eps_insta, one.clip_threshold, one.loss_scale) == \
        (hp.eps_scale, hp.beta1, hp.beta3, hp.eps1, hp.eps_insta, hp.clip_threshold, hp.loss_scale)
    assert Hyperparameters.defaults("mindformers").step_hyper(1, 0).eps_scale is None
    assert np.isfinite(hp.step_hyper(2 ** 31 - 1, 0).lr)
