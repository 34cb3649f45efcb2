"""The error contract (reference/contract.py, spec §6) on the reference fronts, and valid calls.

Every row of ``contract.CLAUSES`` is triggered, for every profile it lists, by concrete bad
inputs (``EXAMPLES``); each must raise the row's exception class, in the row's phase
(construction or step), with a message that names the argument and cites the clause id.
Hypothesis then draws invalid values per argument.  Finally, the valid calls of the documented
APIs (defaults, the MindSpore group example, every learning-rate form) must not raise and must
step.
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from came_conformance.reference import contract
from came_conformance.reference.front import MindformersCame, PaperCame, Parameter
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate

FRONTS = {"mindformers": MindformersCame, "paper": PaperCame}
SHAPE = (2, 3)


def P(shape=SHAPE, name="p") -> Parameter:
    return Parameter(np.arange(math.prod(shape), dtype=np.float64).reshape(shape) / 10.0, name)


def base_kwargs(profile: str) -> dict:
    """A valid call of the profile's constructor; each example overrides one argument."""
    return {"params": [P()], "learning_rate": 1e-3} if profile == "mindformers" else {"params": [P()], "lr": 1e-3}


@dataclass(frozen=True)
class Example:
    """One bad input: keyword overrides of ``base_kwargs``, or gradients for a step-phase clause."""

    profile: str
    argument: str  # the name the message must contain (``eps[1]``, a group's ``lr`` …)
    kwargs: dict = field(default_factory=dict)
    grads: Callable[[], list] | None = None  # step phase: the gradients to pass
    drop: tuple[str, ...] = ()  # base arguments to leave out
    steps_before: int = 0  # step phase: valid steps taken before the failing one

    def call(self) -> tuple[Any, Callable[[], Any]]:
        kwargs = {k: v for k, v in base_kwargs(self.profile).items() if k not in self.drop}
        kwargs.update(self.kwargs)
        return kwargs, lambda: FRONTS[self.profile](**kwargs)


def group(**kw) -> list:
    return [{"params": [P()], **kw}]


def _mf(argument, grads=None, drop=(), steps_before=0, **kwargs):
    return Example("mindformers", argument, kwargs, grads, drop, steps_before)


def _pp(argument, grads=None, drop=(), **kwargs):
    return Example("paper", argument, kwargs, grads, drop)


def _both(argument, grads=None, **kwargs):
    return [_mf(argument, grads, **kwargs), _pp(argument, grads, **kwargs)]


def masked(shape=SHAPE):
    return np.ma.masked_array(np.ones(shape), mask=np.zeros(shape, dtype=bool))


NAN, INF, HUGE = math.nan, math.inf, 10 ** 400
EXAMPLES: dict[str, list[Example]] = {
    "CAME-ERR-1": [_mf("learning_rate", learning_rate=v) for v in (object(), 1j, Parameter(np.ones(2)))]
                  + [_mf("lr", params=group(lr=object()))],
    "CAME-ERR-2": [e for v in ([1.0], [P(), 3], [{"params": P()}], [{"params": [1.0]}], [{"params": 5}])
                   for e in _both("params", params=v)] + [_pp("params", params=[{"order_params": [P()]}])],
    "CAME-ERR-3": [_mf(name, **{name: v}) for name in ("decay_rate", "weight_decay", "beta1", "beta3")
                   for v in (1, 0, True, "0.5", None, np.float32(0.5))]
                  + [_mf("weight_decay", params=group(weight_decay=0))],
    "CAME-ERR-4": [_mf("eps", eps=v) for v in (1e-30, "eps", None, {0: 1e-30})]
                  + [_mf("eps[1]", eps=(1e-30, 1, 1e-16)), _mf("eps[0]", eps=[None, 1e-3, 1e-16])]
                  + [_pp("eps", eps=v) for v in (1e-30, None)] + [_pp("eps[0]", eps=(0, 1e-16))],
    "CAME-ERR-5": [_mf("loss_scale", loss_scale=v) for v in (True, False, "1", None, [1], 1j)],
    "CAME-ERR-6": [_mf("use_locking", use_locking=False), _mf("use_nesterov", use_nesterov=True)],
    "CAME-ERR-7": [_mf("loss_scale", loss_scale=v) for v in (0, -1, 0.0, -0.5, NAN, INF, -INF, HUGE, -HUGE)],
    "CAME-ERR-8": [_mf(f"eps[{i}]", eps=tuple(bad if j == i else e for j, e in enumerate((1e-30, 1e-3, 1e-16))))
                   for i in range(3) for bad in (0.0, -1e-3, NAN, INF)]
                  + [_pp(f"eps[{i}]", eps=tuple(bad if j == i else e for j, e in enumerate((1e-30, 1e-16))))
                     for i in range(2) for bad in (0.0, -0.0, NAN, -INF)],
    "CAME-ERR-9": [_mf("eps", eps=v) for v in ((1e-30, 1e-16), (1e-30,) * 4, ())]
                  + [_pp("eps", eps=v) for v in ((1e-30, 1e-3, 1e-16), (1e-30,), [])],
    "CAME-ERR-10": [_mf(name, **{name: v}) for name in ("decay_rate", "weight_decay", "beta1", "beta3")
                    for v in (-0.1, 1.5, NAN, INF, -INF, -1e-300, 1.0000000000000002)]
                   + [_mf("weight_decay", params=group(weight_decay=1.5))],
    "CAME-ERR-11": [e for v in (1, "1.0", None, True, [1.0]) for e in _both("clip_threshold", clip_threshold=v)],
    "CAME-ERR-12": [e for v in (0.0, -1.0, NAN, INF, -INF) for e in _both("clip_threshold", clip_threshold=v)],
    "CAME-ERR-13": [_mf(name, **{name: v}) for name in ("scale_parameter", "relative_step", "warmup_init",
                                                       "compression") for v in (1, 0, "True", None, 1.0)],
    "CAME-ERR-14": [_mf("learning_rate", learning_rate=v) for v in
                    (-1e-3, -1, NAN, INF, [0.1, -0.1], (0.1, NAN), np.array([0.1, INF]), np.array(-0.5),
                     LearningRate.exponential(-1.0, 0.9), LearningRate.warmup_linear(0.1, -3), HUGE, [0.1, HUGE],
                     (x for x in (0.1, HUGE)))]
                   + [_mf("lr", params=group(lr=-0.01)), _mf("lr", params=group(lr=HUGE))],
    "CAME-ERR-15": [_mf("learning_rate", learning_rate=None), _mf("learning_rate", drop=("learning_rate",)),
                    _mf("learning_rate", relative_step=True), _mf("learning_rate", relative_step=True,
                                                                  learning_rate=0.0)],
    "CAME-ERR-16": [_mf("warmup_init", warmup_init=True), _mf("warmup_init", warmup_init=True, relative_step=False)],
    "CAME-ERR-17": [e for v in ([], (), [{"params": []}], [{"params": [P()]}, {"params": ()}], iter([]))
                    for e in _both("params", params=v)],
    "CAME-ERR-18": [_pp("lr", lr=v) for v in (None, "0.1", True, [0.1], np.array([0.1]))]
                   + [_pp("lr", drop=("lr",)), _pp("lr", params=group(lr="0.1"))],
    "CAME-ERR-19": [_pp("lr", lr=v) for v in (-0.1, -1, NAN, INF, -INF, HUGE)] + [_pp("lr", params=group(lr=-1.0))],
    "CAME-ERR-20": [_pp("betas", betas=v) for v in (0.9, "abc", None)]
                   + [_pp(f"betas[{i}]", betas=tuple(bad if j == i else b for j, b in enumerate((0.9, 0.999, 0.9999))))
                      for i in range(3) for bad in (1, 0, None, "0.9", True)],
    "CAME-ERR-21": [_pp("betas", betas=v) for v in ((0.9, 0.999), (0.9, 0.999, 0.9999, 0.9), ())]
                   + [_pp(f"betas[{i}]", betas=tuple(bad if j == i else b for j, b in enumerate((0.9, 0.999, 0.9999))))
                      for i in range(3) for bad in (-0.1, 1.5, NAN, INF)],
    "CAME-ERR-22": [_pp("weight_decay", weight_decay=v) for v in (0, 1, "0.0", None, True)]
                   + [_pp("weight_decay", params=group(weight_decay=0))],
    "CAME-ERR-23": [_pp("weight_decay", weight_decay=v) for v in (-0.1, NAN, INF, -INF)]
                   + [_pp("weight_decay", params=group(weight_decay=-1.0))],
    "CAME-ERR-24": [_mf("learning_rate", learning_rate=v) for v in
                    ("0.1", b"0.1", True, np.bool_(True), {"lr": 0.1}, {0.1, 0.2}, frozenset({0.1}), [0.1, "x"],
                     [True, 0.1], np.array([True, False]), np.array([0.1 + 1j]), masked((2,)),
                     LearningRate("schedule", schedule="cosine", params=(("base", 0.1),)),
                     LearningRate("schedule", schedule="exponential", params=(("base", 0.1),)))]
                   + [_mf("lr", params=group(lr="0.1")), _mf("lr", params=group(lr=True))],
    "CAME-ERR-25": [_mf("learning_rate", learning_rate=v) for v in
                    ([], (), iter([]), np.ones((2, 2)), np.ones((1, 3)), np.array([]), itertools.count(0.1),
                     itertools.repeat(0.01, 2 ** 20 + 1), LearningRate.sequence([]))]
                   + [_mf("lr", params=group(lr=[])), _mf("lr", params=group(lr=itertools.repeat(0.1)))],
    "CAME-ERR-26": [e for v in (None, "abc", True, 3, np.ones(SHAPE, dtype=np.int32), np.ones(SHAPE, dtype=bool),
                                np.ones(SHAPE, dtype=np.complex128), np.ones(SHAPE, dtype=np.longdouble), masked(),
                                np.array(["a", "b"]), np.array([1.0, None]))
                    for e in _both("params", params=[Parameter(v, "bad")])]
                   + [e for e in _both("params", params=[{"params": [P(), Parameter(np.arange(3), "int")]}])],
    "CAME-ERR-27": [e for v in ([P(), {"params": [P((3,))]}], [{"params": [P()]}, P((3,))],
                                [P(), {"params": ()}]) for e in _both("params", params=v)],
    "CAME-ERR-28": [e for v in (P(), "abc", b"ab", None, 3, 2.5, {"params": [P()]}, np.ones(SHAPE))
                    for e in _both("params", params=v)],
    "CAME-ERR-S1": [e for g in (lambda: [], lambda: [np.ones(SHAPE), np.ones(SHAPE)])
                    for e in _both("gradients", grads=g)],
    "CAME-ERR-S2": [e for g in (lambda: [np.ones((3, 2))], lambda: [np.ones(6)], lambda: [np.ones((1, 2, 3))],
                               lambda: [np.float64(1.0)]) for e in _both("gradients", grads=g)],
    "CAME-ERR-S3": [e for g in (lambda: [np.ones(SHAPE, dtype=np.int64)], lambda: [np.ones(SHAPE, dtype=bool)],
                               lambda: [np.ones(SHAPE, dtype=np.complex128)], lambda: [np.full(SHAPE, "a")],
                               lambda: [np.ones(SHAPE, dtype=np.longdouble)], lambda: [masked()])
                    for e in _both("gradients", grads=g)],
    "CAME-ERR-S4": [e for g in (lambda: None, lambda: np.ones(SHAPE), lambda: (g for g in [np.ones(SHAPE)]),
                               lambda: {0: np.ones(SHAPE)}) for e in _both("gradients", grads=g)],
    "CAME-ERR-S5": [_mf("learning_rate", grads=lambda: [np.ones(SHAPE)], steps_before=2, learning_rate=[0.1, 0.2]),
                    _mf("learning_rate", grads=lambda: [np.ones(SHAPE)], steps_before=1,
                        learning_rate=np.array([0.1])),
                    _mf("lr", grads=lambda: [np.ones(SHAPE)], steps_before=3,
                        params=group(lr=(x for x in (0.1, 0.2, 0.3))))],
}

#: Clauses whose exception is raised by Python itself, whose message cannot cite a clause id:
#: an unexpected keyword (CAME-ERR-6, spec §6.1 "An argument that is not in the profile's signature").
PYTHON_RAISED = {"CAME-ERR-6"}

CASES = [pytest.param(clause, ex, id=f"{clause.id}-{ex.profile}-{i}")
         for clause in contract.CLAUSES for i, ex in enumerate(EXAMPLES.get(clause.id, []))]


def check_message(exc: BaseException, clause: contract.ErrorClause, argument: str) -> None:
    message = str(exc)
    assert re.search(rf"(?<![\w]){re.escape(argument)}(?![\w])", message), (argument, message)
    if clause.id not in PYTHON_RAISED:
        assert f"[{clause.id}]" in message, (clause.id, message)


@pytest.mark.parametrize("clause, example", CASES)
def test_each_clause_raises_as_the_contract_says(clause, example):
    """CAME-ERR-1 … CAME-ERR-23, CAME-ERR-S1 … CAME-ERR-S3: the right class, phase and message."""
    assert example.profile in clause.profiles
    exc_type = {"TypeError": TypeError, "ValueError": ValueError}[clause.exception]
    _, construct = example.call()
    if clause.phase == "construction":
        assert example.grads is None
        with pytest.raises(exc_type) as info:
            construct()
    else:
        optim = construct()  # construction succeeds
        for _ in range(example.steps_before):
            optim.step(grads_for(optim))
        before = [p.copy() for p in optim.parameters()], optim.state
        with pytest.raises(exc_type) as info:
            optim.step(example.grads())
        # CAME-ERR-A1: a step error changes nothing, not even the counter, and stepping goes on
        assert optim.state is before[1] and all(np.array_equal(a, b) for a, b in zip(optim.parameters(), before[0]))
        assert optim.state.step == example.steps_before
        if clause.id != "CAME-ERR-S5":
            optim.step(grads_for(optim))
            assert optim.state.step == example.steps_before + 1
    check_message(info.value, clause, example.argument)


def test_every_clause_is_exercised_for_every_profile_it_lists():
    """CAME-ERR-1 … CAME-ERR-23, CAME-ERR-S1 … CAME-ERR-S3: EXAMPLES covers each (clause, profile) pair, and
    cites no clause the contract does not have."""
    ids = {c.id for c in contract.CLAUSES}
    assert set(EXAMPLES) == ids
    for clause in contract.CLAUSES:
        covered = {ex.profile for ex in EXAMPLES[clause.id]}
        assert covered == set(clause.profiles), (clause.id, covered, clause.profiles)
        for ex in EXAMPLES[clause.id]:
            group_lr = ("CAME-ERR-1", "CAME-ERR-14", "CAME-ERR-24", "CAME-ERR-25")  # a group's lr is a learning rate
            assert ex.argument.split("[")[0] in clause.arguments or ex.argument == "lr" and clause.id in group_lr, \
                (clause.id, ex.argument)


def test_arguments_outside_a_profile_are_unexpected_keywords():
    """CAME-ERR-6, CAME-ERRATUM-1, CAME-HP-4: use_locking / use_nesterov, and the other API's argument names,
    are TypeError (unexpected keyword) in each front."""
    for name in ("use_locking", "use_nesterov", "lr", "betas"):
        with pytest.raises(TypeError, match=name):
            MindformersCame([P()], learning_rate=0.1, **{name: 0.1})
    for name in ("learning_rate", "beta1", "decay_rate", "loss_scale", "scale_parameter"):
        with pytest.raises(TypeError, match=name):
            PaperCame([P()], lr=0.1, **{name: 0.1})


# --- Hypothesis: invalid values per argument -------------------------------------------------------------------

not_a_float = (st.integers() | st.booleans() | st.text(max_size=3) | st.none() | st.lists(st.floats(), max_size=2)
               | st.builds(np.float32, st.floats(0, 1, width=32)))
not_a_number = st.booleans() | st.text(max_size=3) | st.none() | st.lists(st.integers(), max_size=2) | \
    st.dictionaries(st.text(max_size=1), st.integers(), max_size=1)
outside_unit = st.floats(allow_nan=True).filter(lambda x: not 0.0 <= x <= 1.0)
not_positive_finite = st.floats(allow_nan=True).filter(lambda x: not (x > 0 and math.isfinite(x)))
not_nonnegative_finite = st.floats(allow_nan=True).filter(lambda x: not (x >= 0 and math.isfinite(x)))
HSET = settings()  # the profile of tests/conftest.py: derandomized in make test


def assert_raises(clause_id: str, argument: str, profile: str, **overrides) -> None:
    clause = contract.BY_ID[clause_id]
    kwargs = {**base_kwargs(profile), **overrides}
    with pytest.raises({"TypeError": TypeError, "ValueError": ValueError}[clause.exception]) as info:
        FRONTS[profile](**kwargs)
    check_message(info.value, clause, argument)


@HSET
@given(st.sampled_from(["decay_rate", "weight_decay", "beta1", "beta3"]), not_a_float | outside_unit)
def test_hypothesis_mindformers_unit_interval_floats(name, value):
    """CAME-ERR-3, CAME-ERR-10, CAME-ERRATUM-3, CAME-ERRATUM-4: non-floats (int, bool, numpy.float32 …) are
    TypeError; floats outside [0, 1], NaN and ±inf are ValueError."""
    clause = "CAME-ERR-10" if isinstance(value, float) else "CAME-ERR-3"
    assert_raises(clause, name, "mindformers", **{name: value})


@HSET
@given(st.sampled_from(["mindformers", "paper"]), not_a_float | not_positive_finite)
def test_hypothesis_clip_threshold(profile, value):
    """CAME-ERR-11, CAME-ERR-12: clip_threshold must be a float, finite and > 0."""
    clause = "CAME-ERR-12" if isinstance(value, float) else "CAME-ERR-11"
    assert_raises(clause, "clip_threshold", profile, clip_threshold=value)


@HSET
@given(not_a_number | st.integers(max_value=0) | not_positive_finite)
def test_hypothesis_loss_scale(value):
    """CAME-ERR-5, CAME-ERR-7, CAME-ERRATUM-2: loss_scale is an int or float (not bool), finite and > 0."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    assert_raises("CAME-ERR-7" if number else "CAME-ERR-5", "loss_scale", "mindformers", loss_scale=value)


@HSET
@given(st.sampled_from(["mindformers", "paper"]), st.data(), not_a_float | not_positive_finite)
def test_hypothesis_eps_elements(profile, data, value):
    """CAME-ERR-4, CAME-ERR-8, CAME-ERRATUM-5: every eps element is a float, finite and > 0."""
    good = [1e-30, 1e-3, 1e-16] if profile == "mindformers" else [1e-30, 1e-16]
    i = data.draw(st.integers(0, len(good) - 1))
    good[i] = value
    clause = "CAME-ERR-8" if isinstance(value, float) else "CAME-ERR-4"
    assert_raises(clause, f"eps[{i}]", profile, eps=tuple(good))


@HSET
@given(st.sampled_from(["mindformers", "paper"]), st.lists(st.floats(1e-30, 1.0), max_size=6))
def test_hypothesis_eps_length(profile, values):
    """CAME-ERR-9, CAME-ERRATUM-5: eps has exactly 3 values (mindformers) or 2 (paper)."""
    n = 3 if profile == "mindformers" else 2
    if len(values) == n:
        FRONTS[profile](**{**base_kwargs(profile), "eps": values})
    else:
        assert_raises("CAME-ERR-9", "eps", profile, eps=values)


@HSET
@given(st.text(max_size=2) | st.booleans() | st.dictionaries(st.text(max_size=1), st.floats(), max_size=1)
       | st.frozensets(st.floats(0, 1), max_size=2) | not_nonnegative_finite
       | st.lists(not_nonnegative_finite, min_size=1, max_size=3) | st.just([]) | st.complex_numbers()
       | st.integers(min_value=2 ** 1024))
def test_hypothesis_learning_rate(value):
    """CAME-ERR-1, CAME-ERR-14, CAME-ERR-24, CAME-ERR-25, CAME-LR-1: learning_rate is a number, tensor, iterable
    of numbers or schedule (TypeError otherwise), non-empty, and every value is finite and ≥ 0 (ValueError)."""
    if isinstance(value, complex):
        clause = "CAME-ERR-1"
    elif isinstance(value, list) and not value:
        clause = "CAME-ERR-25"
    elif isinstance(value, (float, list)) or isinstance(value, int) and not isinstance(value, bool):
        clause = "CAME-ERR-14"
    else:
        clause = "CAME-ERR-24"
    assert_raises(clause, "learning_rate", "mindformers", learning_rate=value)


@HSET
@given(not_a_number.filter(lambda v: not isinstance(v, dict)) | not_nonnegative_finite)
def test_hypothesis_paper_lr(value):
    """CAME-ERR-18, CAME-ERR-19: the paper lr is an int or float (not bool), finite and ≥ 0; it is required."""
    number = isinstance(value, float)
    assert_raises("CAME-ERR-19" if number else "CAME-ERR-18", "lr", "paper", lr=value)


@HSET
@given(st.data(), not_a_float | outside_unit)
def test_hypothesis_paper_betas(data, value):
    """CAME-ERR-20, CAME-ERR-21, CAME-ERRATUM-3: each of the three betas is a float in [0, 1]."""
    i = data.draw(st.integers(0, 2))
    betas = [0.9, 0.999, 0.9999]
    betas[i] = value
    assert_raises("CAME-ERR-21" if isinstance(value, float) else "CAME-ERR-20", f"betas[{i}]", "paper",
                  betas=tuple(betas))


@HSET
@given(not_a_float | not_nonnegative_finite)
def test_hypothesis_paper_weight_decay(value):
    """CAME-ERR-22, CAME-ERR-23: the paper weight_decay is a float, finite and ≥ 0 (no upper bound)."""
    assert_raises("CAME-ERR-23" if isinstance(value, float) else "CAME-ERR-22", "weight_decay", "paper",
                  weight_decay=value)


@HSET
@given(st.sampled_from(["scale_parameter", "relative_step", "warmup_init", "compression"]),
       st.integers() | st.floats() | st.text(max_size=2) | st.none())
def test_hypothesis_flags(name, value):
    """CAME-ERR-13: the four options are bools."""
    assert_raises("CAME-ERR-13", name, "mindformers", **{name: value})


# --- valid calls ------------------------------------------------------------------------------------------------


def grads_for(optim) -> list[np.ndarray]:
    return [np.full(np.shape(p), 0.5) for p in optim.parameters()]


def lr_seen(optim, index=0) -> float:
    return float(optim.last_traces[index]["lr_effective"])


def test_defaults_are_the_profiles_canonical_values():
    """CAME-HP-1, CAME-HP-2, CAME-HP-3, CAME-HP-4: default constructor arguments give each profile's defaults."""
    mf = MindformersCame([P()], learning_rate=0.01)
    assert mf.hp == Hyperparameters.defaults("mindformers", learning_rate=LearningRate.constant(0.01))
    assert (mf.hp.eps1, mf.hp.eps_scale, mf.hp.eps_insta) == (1e-30, 1e-3, 1e-16)
    assert (mf.hp.decay_rate, mf.hp.beta1, mf.hp.beta3, mf.hp.clip_threshold) == (0.8, 0.9, 0.99, 1.0)
    assert not (mf.hp.scale_parameter or mf.hp.relative_step or mf.hp.warmup_init or mf.hp.compression)
    assert mf.hp.loss_scale == 1.0 and mf.hp.weight_decay == 0.0
    paper = PaperCame([P()], lr=0.01)
    assert paper.hp == Hyperparameters.defaults("paper", learning_rate=LearningRate.constant(0.01))
    assert (paper.hp.eps1, paper.hp.eps_insta, paper.hp.beta1, paper.hp.beta2, paper.hp.beta3) == \
        (1e-30, 1e-16, 0.9, 0.999, 0.9999)
    # the eps trap of CAME-HP-4: the paper's eps[1] is ε_insta, the mindformers' eps[1] is ε_scale
    assert PaperCame([P()], lr=0.01, eps=(1e-30, 1e-7)).hp.eps_insta == 1e-7
    assert MindformersCame([P()], learning_rate=0.01, eps=(1e-30, 1e-7, 1e-16)).hp.eps_scale == 1e-7
    for optim, returned in ((mf, np.array(True)), (paper, None)):  # CAME-RETURN-1
        for t in (1, 2):
            out = optim.step(grads_for(optim)) if t == 1 else optim(grads_for(optim))
            assert optim.state.step == t
            if returned is None:
                assert out is None
            else:
                assert isinstance(out, np.ndarray) and out.dtype == np.bool_ and out.shape == () and bool(out)


def test_mindspore_group_example():
    """CAME-GROUP-1, CAME-GROUP-2: the MindSpore docstring example: conv params with their own weight_decay,
    the rest with their own lr, plus order_params; group values override the top-level ones."""
    conv = [P((2, 3), "conv1.weight"), P((4,), "conv1.bias")]
    rest = [P((3, 2), "dense.weight")]
    group_params = [{"params": conv, "weight_decay": 0.01}, {"params": rest, "lr": 0.01},
                    {"order_params": conv + rest}]
    optim = MindformersCame(group_params, learning_rate=0.1, weight_decay=0.0)
    assert [p.name for p in optim.params] == ["conv1.weight", "conv1.bias", "dense.weight"]
    for t in (1, 2):
        before = [p.copy() for p in optim.parameters()]
        assert optim.step(grads_for(optim))
        assert [lr_seen(optim, i) for i in range(3)] == [0.1, 0.1, 0.01]
        assert [optim.hp.step_hyper(t, i).weight_decay for i in range(3)] == [0.01, 0.01, 0.0]
        # the conv group decays: θd = θ − η·λ·θ; the other does not
        assert np.array_equal(optim.last_traces[0]["theta_decayed"], before[0] - 0.1 * 0.01 * before[0])
        assert np.array_equal(optim.last_traces[2]["theta_decayed"], before[2])
    # the Parameter objects see the new values
    assert all(np.array_equal(p.value, v) for p, v in zip(optim.params, optim.parameters()))
    paper = PaperCame([{"params": [P()], "lr": 0.5, "weight_decay": 0.25}, {"params": [P((3,))]}], lr=0.1)
    paper.step(grads_for(paper))
    assert [lr_seen(paper, 0), lr_seen(paper, 1)] == [0.5, 0.1]
    assert [paper.hp.step_hyper(1, i).weight_decay for i in range(2)] == [0.25, 0.0]


LR_FORMS = [
    pytest.param(1, [1.0, 1.0, 1.0], id="int"),
    pytest.param(0.01, [0.01] * 3, id="float"),
    pytest.param(0.0, [0.0] * 3, id="zero"),
    pytest.param([0.3, 0.2, 0.1], [0.3, 0.2, 0.1], id="list"),
    pytest.param((0.3, 0.2, 0.1, 0.05), [0.3, 0.2, 0.1], id="tuple"),
    pytest.param(np.array([0.3, 0.2, 0.1]), [0.3, 0.2, 0.1], id="1-D array"),
    pytest.param(np.array([0.3, 0.2, 0.1], dtype=np.float32), [float(np.float32(v)) for v in (0.3, 0.2, 0.1)],
                 id="1-D float32 array"),
    pytest.param(np.array(0.25), [0.25] * 3, id="0-D array"),
    pytest.param(LearningRate.exponential(0.1, 0.5), [0.1, 0.05, 0.025], id="exponential"),
    pytest.param(LearningRate.warmup_linear(0.3, 3), [0.1, 0.2, 0.3], id="warmup_linear"),
]


@pytest.mark.parametrize("value, expected", LR_FORMS)
def test_learning_rate_forms_are_accepted_and_step(value, expected):
    """CAME-LR-1, CAME-LR-2, CAME-LR-3, CAME-LR-4, CAME-ERRATUM-6: every documented form of learning_rate
    (int converted to float) is accepted, and η_t is its value at k = t − 1."""
    optim = MindformersCame([P(), P((4,))], learning_rate=value)
    seen = []
    for _ in expected:
        optim.step(grads_for(optim))
        seen.append(lr_seen(optim))
    # rel 1e-15: ``expected`` is written as decimal literals, while warmup_linear computes
    # base·(k + 1)/W in float64 (0.3·(1/3) = 0.09999999999999999), one rounding away.
    assert seen == pytest.approx(expected, rel=1e-15, abs=0.0)


def test_exhausted_learning_rate_sequence_fails_at_that_step():
    """CAME-LR-3, CAME-ERR-S5, CAME-ERR-A1: step L + 1 of a length-L sequence raises ValueError naming
    learning_rate (or a group's lr), and changes nothing."""
    optim = MindformersCame([P()], learning_rate=[0.1, 0.2])
    optim.step(grads_for(optim))
    optim.step(grads_for(optim))
    state, values = optim.state, [p.copy() for p in optim.parameters()]
    with pytest.raises(ValueError, match=r"learning_rate.*CAME-LR-3.*\[CAME-ERR-S5\]"):
        optim.step(grads_for(optim))
    assert optim.state is state and np.array_equal(optim.parameters()[0], values[0])
    grouped = MindformersCame([{"params": [P()], "lr": [0.1]}, {"params": [P((3,))]}], learning_rate=0.2)
    grouped.step(grads_for(grouped))
    with pytest.raises(ValueError, match=r"^lr: .*\[CAME-ERR-S5\]"):
        grouped.step(grads_for(grouped))
    assert grouped.state.step == 1


def test_options_and_boundary_values_are_accepted():
    """CAME-OPT-1 … CAME-OPT-5, CAME-LR-5, CAME-ERRATUM-2, CAME-ERRATUM-4, CAME-ERRATUM-6, CAME-ERRATUM-7:
    valid values at the edges of their ranges construct and step."""
    calls = [
        dict(learning_rate=None, relative_step=True),
        dict(relative_step=True, warmup_init=True),
        dict(learning_rate=0.1, scale_parameter=True, compression=True, loss_scale=1024),
        dict(learning_rate=0.1, loss_scale=0.5),  # float loss scale (CAME-ERRATUM-2)
        dict(learning_rate=0.1, weight_decay=1.0, beta1=0.0, beta3=0.0, decay_rate=0.0),  # [0, 1] inclusive
        dict(learning_rate=0.1, beta1=1.0, decay_rate=1.0, eps=[1e-30, 1e-3, 1e-16], clip_threshold=1e-300),
        dict(learning_rate=0.1, scale_parameter=np.bool_(True)),
    ]
    for kwargs in calls:
        optim = MindformersCame([P(), P((3,)), P(())], **kwargs)
        optim.step(grads_for(optim))
    relative = MindformersCame([P()], relative_step=True)
    relative.step(grads_for(relative))
    assert lr_seen(relative) == 1e-2  # min(1e-2, 1/sqrt(1))
    warm = MindformersCame([P()], relative_step=True, warmup_init=True)
    warm.step(grads_for(warm))
    assert lr_seen(warm) == 1e-6  # min(1e-6·1, 1)
    for kwargs in (dict(lr=0), dict(lr=2.5, weight_decay=3.0), dict(lr=0.1, betas=[0.0, 1.0, 0.5]),
                   dict(lr=np.float64(0.1), eps=[1e-30, 1e-16], clip_threshold=np.float64(2.0))):
        optim = PaperCame((P(),), **kwargs)
        optim.step(grads_for(optim))


def test_params_may_be_any_iterable():
    """CAME-GROUP-1, CAME-ERR-28: `CAME(model.parameters(), ...)`, the official README's usage, passes a generator;
    any iterable of parameters (or of group dicts, or a group's 'params') is read once, in order."""
    for front, kwargs in ((PaperCame, {"lr": 0.01}), (MindformersCame, {"learning_rate": 0.01})):
        params = [P((2, 3), "a"), P((3,), "b")]
        for given in ((p for p in params), iter(params), tuple(params), {"x": params[0], "y": params[1]}.values(),
                      [{"params": (p for p in params)}], ({"params": [p]} for p in params)):
            optim = front(given, **kwargs)
            assert [p.name for p in optim.params] == ["a", "b"]
            optim.step([np.ones((2, 3)), np.ones(3)])
            assert optim.state.step == 1


def test_the_error_contract_rows_of_the_reference_front_name_argument_and_rule():
    """CAME-ERR-7, CAME-ERR-14, CAME-ERR-19, CAME-ERR-25, CAME-ERR-26, CAME-ERR-S3, CAME-ERR-S4 (issue: the
    reference front's gaps): an int beyond float's range, an endless iterator, parameter values that are not real
    floats and masked arrays are clear TypeError/ValueError naming the argument, not OverflowError, a hang, a
    silent conversion or a traceback from NumPy."""
    with pytest.raises(ValueError, match=r"^loss_scale: must be finite .*\[CAME-ERR-7\]"):
        MindformersCame([P()], learning_rate=0.1, loss_scale=10 ** 400)
    with pytest.raises(ValueError, match=r"^learning_rate: must be finite .*\[CAME-ERR-14\]"):
        MindformersCame([P()], learning_rate=10 ** 400)
    with pytest.raises(ValueError, match=r"^lr: must be finite .*\[CAME-ERR-19\]"):
        PaperCame([P()], lr=10 ** 400)
    with pytest.raises(ValueError, match=r"^learning_rate: an iterable must give 1 to 1048576 values.*\[CAME-ERR-25\]"):
        MindformersCame([P()], learning_rate=itertools.repeat(0.1))  # read 2^20 + 1 values, then refused
    for bad in (None, "1.5", True, np.ones(SHAPE, dtype=np.complex64), np.ones(SHAPE, dtype=np.longdouble), masked()):
        with pytest.raises(TypeError, match=r"^params: a parameter must hold real floating-point values.*CAME-ERR-26"):
            PaperCame([Parameter(bad, "w")], lr=0.1)
    optim = PaperCame([P()], lr=0.1)
    for bad, clause in ((None, "CAME-ERR-S4"), ([masked()], "CAME-ERR-S3")):
        with pytest.raises(TypeError, match=rf"^gradients.*\[{clause}\]"):
            optim.step(bad)
    assert optim.state.step == 0
