"""Properties of the float64 reference that follow from the spec's equations (Hypothesis).

Shapes run from 0-D to 4-D, with size-1 and zero-size axes; hyperparameters over their valid
ranges.  Each test's docstring names the clauses it checks.  Equalities are bitwise where the
equations make them exact in IEEE 754 arithmetic (the argument is given in the test); the one
inequality with rounding in it (the clipped RMS) has a derived tolerance.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mpmath import mp, mpf

from came_conformance.reference import optimizer
from came_conformance.reference import step as came_step
from came_conformance.reference.dtypes import round_to, ulp
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate
from came_conformance.reference.step import StepHyper

SETTINGS = settings()  # the profile of tests/conftest.py: derandomized in make test
U = 2.0 ** -53  # unit roundoff of float64

shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)
nonempty_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4)
factored_shapes = hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4)
vector_shapes = hnp.array_shapes(min_dims=0, max_dims=1, min_side=1, max_side=6)
# Finite values of moderate size, 0 or |x| in [1e-100, 1e3]: products with a loss scale in
# [2^-10, 2^20] and squares stay normal (no overflow, no underflow into subnormals), so scaling
# by a power of two is exact and the only rounding is the ordinary one.
finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False).map(lambda x: x if abs(x) >= 1e-100 else 0.0)
nonnegative = finite.map(abs)
unit = st.floats(0.0, 1.0)
below_one = st.floats(0.0, 1.0, exclude_max=True)  # β = 1 freezes a statistic at 0: see test_beta_one_*
small_eps = st.floats(1e-30, 1e-3)


def arrays(shape, elements=finite):
    return hnp.arrays(np.float64, shape, elements=elements)


step_hypers = st.builds(
    StepHyper, lr=st.floats(0.0, 1.0), beta1=unit, beta2=below_one, beta3=below_one, eps1=small_eps,
    eps_insta=small_eps, clip_threshold=st.floats(1e-3, 1e3), weight_decay=unit,
    eps_scale=st.none() | st.floats(1e-6, 1.0), loss_scale=st.floats(1e-2, 1e4) | st.sampled_from([1.0, 0.25, 1024.0]),
    compression=st.booleans())


@st.composite
def states(draw, shape):
    """A state a trajectory could reach: any exp_avg, non-negative statistics (CAME-STATE-2/3)."""
    out = {}
    for name, s in came_step.state_shapes(shape).items():
        out[name] = draw(arrays(s, finite if name == "exp_avg" else nonnegative))
    return out


@st.composite
def step_inputs(draw, shape_strategy=nonempty_shapes, hp_strategy=step_hypers):
    shape = draw(shape_strategy)
    return draw(arrays(shape)), draw(arrays(shape)), draw(states(shape)), draw(hp_strategy)


def run(theta, grad, state, hp):
    return came_step.step(theta, grad, state, hp)


def same(a, b) -> bool:
    """Bitwise-equal values: equal shapes and elements, NaN where the other has NaN."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


# --- CAME-STEP-5: clipping ------------------------------------------------------------------------------------


@SETTINGS
@given(step_inputs())
def test_clipped_update_rms_is_at_most_the_threshold(inputs):
    """CAME-STEP-5, CAME-DEF-1: RMS(Û) ≤ d, up to the rounding of the computation.

    The exact RMS of the computed Û (evaluated here in mpmath) is at most d(1 + ((N+1)/2 + 3)u):
    the computed RMS(U) has relative error ≤ ((N+1)/2 + 1)u (U² one rounding, an N-term sum N−1,
    /N one, halved by the sqrt, the sqrt one), RMS(U)/d one more, each Û_i = U_i/divisor one
    more; when no clipping happens fl(RMS/d) ≤ 1 gives the same bound.  One more u covers the
    second-order terms.
    """
    theta, grad, state, hp = inputs
    trace = run(theta, grad, state, hp).trace
    u_hat = trace["update_clipped"]
    assume(np.all(np.isfinite(trace["update"])))
    n = u_hat.size
    with mp.workdps(40):
        exact_rms = mp.sqrt(mp.fsum(mpf(float(x)) ** 2 for x in u_hat.ravel()) / n)
        limit = mpf(hp.clip_threshold) * (1 + ((n + 1) / 2 + 4) * mpf(U))
        assert exact_rms <= limit, (float(exact_rms), hp.clip_threshold)
    assert trace["clip_divisor"] >= 1.0


@SETTINGS
@given(step_inputs())
def test_clip_divisor_is_max_of_one_and_rms_over_threshold(inputs):
    """CAME-STEP-5, CAME-DEF-1: divisor = max(1, RMS(U)/d) and Û = U / divisor, bitwise."""
    theta, grad, state, hp = inputs
    trace = run(theta, grad, state, hp).trace
    u = trace["update"]
    with np.errstate(all="ignore"):
        rms = np.sqrt(np.mean(u * u))
        assert same(trace["update_rms"], rms)
        assert same(trace["clip_divisor"], np.maximum(1.0, rms / hp.clip_threshold))
        assert same(trace["update_clipped"], u / trace["clip_divisor"])


# --- CAME-STATE-*: layout and initial state --------------------------------------------------------------------


@SETTINGS
@given(shapes)
def test_state_layout_and_zero_start(shape):
    """CAME-STATE-1, CAME-STATE-2, CAME-STATE-3, CAME-STATE-4: factored iff ndim ≥ 2; a factored
    parameter keeps only row/column statistics (no n×m second moment); all state starts at zero."""
    state = came_step.init_state(shape)
    if len(shape) >= 2:
        rows, cols = shape[:-1], shape[:-2] + shape[-1:]
        expected = {"exp_avg": shape, "exp_avg_sq_row": rows, "exp_avg_sq_col": cols,
                    "exp_avg_insta_row": rows, "exp_avg_insta_col": cols}
        assert came_step.is_factored(shape)
        # only the first moment has the parameter's rank: no n×m second moment or instability
        assert all(v.ndim == len(shape) - 1 for k, v in state.items() if k != "exp_avg")
    else:
        expected = {"exp_avg": shape, "exp_avg_sq": shape}
        assert not came_step.is_factored(shape)
    assert {k: v.shape for k, v in state.items()} == expected == came_step.state_shapes(shape)
    assert all(v.dtype == np.float64 and not np.any(v) for v in state.values())
    opt_state = optimizer.init([np.zeros(shape)])
    assert opt_state.step == 0 and {k: v.shape for k, v in opt_state.tensors[0].items()} == expected


@SETTINGS
@given(step_inputs(shapes))
def test_step_keeps_the_state_layout(inputs):
    """CAME-STATE-2, CAME-STATE-3: a step returns state with exactly the names and shapes of init."""
    theta, grad, state, hp = inputs
    new_state = run(theta, grad, state, hp).state
    assert {k: v.shape for k, v in new_state.items()} == came_step.state_shapes(theta.shape)
    assert all(v.dtype == np.float64 for v in new_state.values())


@SETTINGS
@given(st.data(), st.sampled_from(["paper", "mindformers"]))
def test_first_step_from_zero_state(data, profile):
    """CAME-STATE-4, CAME-STEP-6, CAME-STEP-8: from zero state m_1 = (1−β1)Û and R_1 = (1−β3)·rowmean(D)
    exactly (β·0 = +0 and 0 + x = x in IEEE arithmetic); no bias correction."""
    shape = data.draw(nonempty_shapes)
    theta, grad = data.draw(arrays(shape)), data.draw(arrays(shape))
    hp = Hyperparameters.defaults(profile, beta1=data.draw(unit), beta3=data.draw(below_one))
    out = optimizer.update([grad], optimizer.init([theta]), [theta], hp)
    trace = out.traces[0]
    assert same(trace["exp_avg"], (1.0 - hp.beta1) * trace["update_clipped"])
    if len(shape) >= 2:
        assert same(trace["exp_avg_insta_row"], (1.0 - hp.beta3) * np.mean(trace["instability"], axis=-1))
        assert same(trace["exp_avg_insta_col"], (1.0 - hp.beta3) * np.mean(trace["instability"], axis=-2))


# --- CAME-ZERO-1, purity ------------------------------------------------------------------------------------


@SETTINGS
@given(st.data())
def test_zero_size_parameters_are_unchanged(data):
    """CAME-ZERO-1: a parameter with no elements keeps θ and its state; the others still step."""
    shape = data.draw(shapes.filter(lambda s: math.prod(s) == 0))
    theta, grad, state, hp = np.zeros(shape), np.zeros(shape), data.draw(states(shape)), data.draw(step_hypers)
    result = run(theta, grad, state, hp)
    assert result.theta.shape == shape and result.trace == {}
    assert all(same(result.state[k], state[k]) for k in state)
    other = np.ones((2, 3))
    hp_all = Hyperparameters.defaults("mindformers")
    out = optimizer.update([grad, np.ones((2, 3))], optimizer.init([theta, other]), [theta, other], hp_all)
    assert out.state.step == 1 and out.params[0].shape == shape and not same(out.params[1], other)


@SETTINGS
@given(step_inputs(shapes))
def test_inputs_are_not_mutated_and_outputs_do_not_alias_them(inputs):
    """CAME-STEP-1 … CAME-STEP-12 (a pure function): θ, G and the state passed in are unchanged, and
    the returned arrays share no memory with them."""
    theta, grad, state, hp = inputs
    copies = theta.copy(), grad.copy(), {k: v.copy() for k, v in state.items()}
    result = run(theta, grad, state, hp)
    assert same(theta, copies[0]) and same(grad, copies[1])
    assert all(same(state[k], copies[2][k]) for k in state)
    outputs = [result.theta, *result.state.values()]
    for out in outputs:
        for inp in [theta, grad, *state.values()]:
            assert not np.shares_memory(out, inp)


def test_optimizer_update_does_not_mutate_its_arguments():
    """CAME-STATE-5: optimizer.update is pure too: parameters, gradients and the CameState are unchanged."""
    params = [np.arange(6.0).reshape(2, 3), np.ones(3)]
    grads = [np.full((2, 3), 0.5), np.full(3, -2.0)]
    state = optimizer.init(params)
    out = optimizer.update(grads, state, params, Hyperparameters.defaults("paper"))
    out2 = optimizer.update(grads, out.state, out.params, Hyperparameters.defaults("paper"))
    assert state.step == 0 and all(not np.any(v) for s in state.tensors for v in s.values())
    assert out.state.step == 1 and out2.state.step == 2
    assert same(params[0], np.arange(6.0).reshape(2, 3)) and same(grads[1], np.full(3, -2.0))


@SETTINGS
@given(step_inputs(shapes))
def test_untraced_step_is_bitwise_the_traced_step(inputs):
    """CAME-STEP-1 … CAME-STEP-12, CAME-ZERO-1: step(trace=False), which reuses work buffers, gives bitwise the
    θ' and state of step(trace=True), and neither aliases its inputs."""
    theta, grad, state, hp = inputs
    traced, lean = run(theta, grad, state, hp), came_step.step(theta, grad, state, hp, trace=False)
    assert lean.trace == {} and same(lean.theta, traced.theta)
    assert all(same(lean.state[k], traced.state[k]) for k in traced.state)
    for out in [lean.theta, *lean.state.values()]:
        assert not any(np.shares_memory(out, inp) for inp in [theta, grad, *state.values()])


# --- CAME-STEP-6 / 9V / 11 / 12 --------------------------------------------------------------------------------


@SETTINGS
@given(step_inputs(hp_strategy=step_hypers.map(lambda h: replace(h, beta1=0.0))))
def test_beta1_zero_makes_exp_avg_the_clipped_update(inputs):
    """CAME-STEP-6, CAME-STEP-7: with β1 = 0, m = 0·m + 1·Û = Û bitwise (0·finite = ±0, ±0 + x = x),
    so the instability is exactly ε_insta."""
    theta, grad, state, hp = inputs
    trace = run(theta, grad, state, hp).trace
    assert same(trace["exp_avg"], trace["update_clipped"])
    if theta.ndim >= 2:
        finite_u = np.isfinite(trace["update_clipped"])
        assert np.all(trace["instability"][finite_u] == hp.eps_insta)


@SETTINGS
@given(step_inputs(), st.floats(0.0, 1.0, exclude_min=True))
def test_weight_decay_is_decoupled(inputs, decay):
    """CAME-STEP-11, CAME-STEP-12, CAME-STEP-10: λ = 0 leaves θ_decayed = θ and θ' = θ − η_eff·direction
    bitwise; λ ≠ 0 gives θ_decayed = θ − (η_eff·λ)·θ and changes nothing else (state, direction)."""
    theta, grad, state, hp = inputs
    plain = run(theta, grad, state, replace(hp, weight_decay=0.0))
    lr = plain.trace["lr_effective"]
    with np.errstate(all="ignore"):
        assert same(plain.trace["theta_decayed"], theta)
        assert same(plain.theta, theta - lr * plain.trace["direction"])
        decayed = run(theta, grad, state, replace(hp, weight_decay=decay))
        assert same(decayed.trace["theta_decayed"], theta - lr * decay * theta)
        assert same(decayed.theta, decayed.trace["theta_decayed"] - lr * decayed.trace["direction"])
    for k in plain.trace:
        if k not in ("theta_decayed", "theta"):
            assert same(plain.trace[k], decayed.trace[k]), k
    assert all(same(plain.state[k], decayed.state[k]) for k in plain.state)


@SETTINGS
@given(step_inputs(vector_shapes))
def test_vector_parameters_have_no_confidence_factor(inputs):
    """CAME-STEP-3V, CAME-STEP-4V, CAME-STEP-9V: ndim ≤ 1 keeps a full v, U = G/sqrt(v), direction = m."""
    theta, grad, state, hp = inputs
    trace = run(theta, grad, state, hp).trace
    assert "confidence" not in trace and "instability" not in trace
    assert same(trace["direction"], trace["exp_avg"])
    with np.errstate(all="ignore"):
        assert same(trace["update"], trace["grad"] / np.sqrt(trace["exp_avg_sq"]))


@SETTINGS
@given(step_inputs(factored_shapes))
def test_factored_update_and_direction_use_the_factor(inputs):
    """CAME-DEF-2, CAME-DEF-3, CAME-STEP-3, CAME-STEP-4, CAME-STEP-8, CAME-STEP-9: row stats average the
    last axis, column stats axis −2, and F(r, c)_ij = (r_i/mean(r))^(-1/2)·c_j^(-1/2) per batch slice;
    checked element by element against scalar loops (same operation order, so bitwise)."""
    theta, grad, state, hp = inputs
    trace = run(theta, grad, state, hp).trace
    with np.errstate(all="ignore"):
        q = trace["grad_sq"]
        one_minus = 1.0 - hp.beta2
        assert same(trace["exp_avg_sq_row"], hp.beta2 * state["exp_avg_sq_row"] + one_minus * q.mean(axis=-1))
        assert same(trace["exp_avg_sq_col"], hp.beta2 * state["exp_avg_sq_col"] + one_minus * q.mean(axis=-2))
        for name, row, col in (("update", "exp_avg_sq_row", "exp_avg_sq_col"),
                               ("confidence", "exp_avg_insta_row", "exp_avg_insta_col")):
            r, c = trace[row], trace[col]
            for idx in np.ndindex(theta.shape):
                b, i, j = idx[:-2], idx[-2], idx[-1]
                f = (1.0 / np.sqrt(r[b + (i,)] / np.mean(r[b]))) * (1.0 / np.sqrt(c[b + (j,)]))
                expected = f * trace["grad"][idx] if name == "update" else f
                assert same(trace[name][idx], expected), (name, idx)
        assert same(trace["direction"], trace["confidence"] * trace["exp_avg"])


# --- β2 rules, learning rate -------------------------------------------------------------------------------------


@SETTINGS
@given(st.data(), factored_shapes | vector_shapes, st.floats(0.0, 1.0))
def test_mindformers_first_step_statistics_are_the_gradient_squares(data, shape, decay_rate):
    """CAME-BETA2-2, CAME-STEP-2, CAME-STEP-3, CAME-STEP-3V, CAME-HP-3: β2_1 = 1 − 1^(−decay_rate) = 0, so
    step 1 gives r = 0·0 + 1·rowmean(G²+ε1) = rowmean(G²+ε1) bitwise (and v = G²+ε1)."""
    theta, grad = data.draw(arrays(shape)), data.draw(arrays(shape))
    hp = Hyperparameters.defaults("mindformers", decay_rate=decay_rate)
    assert hp.beta2_at(1) == 0.0
    trace = optimizer.update([grad], optimizer.init([theta]), [theta], hp).traces[0]
    q = grad * grad + hp.eps1
    if len(shape) >= 2:
        assert same(trace["exp_avg_sq_row"], np.mean(q, axis=-1))
        assert same(trace["exp_avg_sq_col"], np.mean(q, axis=-2))
    else:
        assert same(trace["exp_avg_sq"], q)


@SETTINGS
@given(st.integers(1, 10**6), st.floats(0.0, 1.0), st.floats(0.0, 1.0))
def test_beta2_rules(t, decay_rate, beta2):
    """CAME-BETA2-1, CAME-BETA2-2, CAME-HP-2, CAME-HP-3: paper β2 is constant; mindformers β2_t = 1 − t^(−decay_rate),
    in [0, 1), non-decreasing in t."""
    assert Hyperparameters.defaults("paper", beta2=beta2).beta2_at(t) == beta2
    hp = Hyperparameters.defaults("mindformers", decay_rate=decay_rate)
    b = hp.beta2_at(t)
    assert b == 1.0 - t ** (-decay_rate) and 0.0 <= b < 1.0 and hp.beta2_at(t + 1) >= b
    assert hp.step_hyper(t, 0).beta2 == b


@SETTINGS
@given(st.integers(1, 10**6), st.booleans())
def test_relative_step_learning_rate(t, warmup_init):
    """CAME-LR-5, CAME-OPT-2, CAME-OPT-3: η_t = min(1e-2, 1/sqrt(t)), or min(1e-6·t, 1/sqrt(t)) with warmup_init."""
    hp = Hyperparameters.defaults("mindformers", learning_rate=None, relative_step=True, warmup_init=warmup_init)
    ceiling = 1e-6 * t if warmup_init else 1e-2
    assert hp.lr_at(t) == min(ceiling, 1.0 / math.sqrt(t)) == hp.step_hyper(t, 0).lr


@SETTINGS
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8), st.floats(0.0, 1.0), st.floats(0.5, 1.0),
       st.integers(1, 20))
def test_learning_rate_kinds(values, base, gamma, warmup_steps):
    """CAME-LR-1, CAME-LR-2, CAME-LR-3, CAME-LR-4: constant, sequence (index k = t − 1; too short is a
    ValueError at that step) and the named schedules at k = t − 1."""
    assert LearningRate.constant(base).at(5) == base
    seq = LearningRate.sequence(values)
    assert [seq.at(t - 1) for t in range(1, len(values) + 1)] == values
    with pytest.raises(ValueError, match=r"learning_rate.*CAME-LR-3"):
        seq.at(len(values))
    for t in range(1, 6):
        k = t - 1
        assert LearningRate.exponential(base, gamma).at(k) == base * gamma ** k
        assert LearningRate.warmup_linear(base, warmup_steps).at(k) == base * min(1.0, (k + 1) / warmup_steps)
    # the optimizer reads the sequence at its own global step and fails at the step that runs out
    hp = Hyperparameters.defaults("paper", learning_rate=seq)
    p, g = [np.ones(3)], [np.ones(3)]
    state = optimizer.init(p)
    for t in range(1, len(values) + 1):
        out = optimizer.update(g, state, p, hp)
        assert out.traces[0]["lr_effective"] == values[t - 1]
        state, p = out.state, list(out.params)
    with pytest.raises(ValueError, match="CAME-LR-3"):
        optimizer.update(g, state, p, hp)


# --- options -----------------------------------------------------------------------------------------------------


@SETTINGS
@given(step_inputs(shapes), st.floats(1e-6, 1.0))
def test_scale_parameter_uses_rms_of_the_old_parameter(inputs, eps_scale):
    """CAME-STEP-10, CAME-OPT-1, CAME-DEF-1: η_eff = η·max(ε_scale, RMS(θ_{t−1})) with θ before the step;
    without scale_parameter η_eff = η."""
    theta, grad, state, hp = inputs
    assume(theta.size > 0)
    scaled = run(theta, grad, state, replace(hp, eps_scale=eps_scale))
    assert same(scaled.trace["lr_effective"], hp.lr * np.maximum(eps_scale, np.sqrt(np.mean(theta * theta))))
    zero = run(np.zeros_like(theta), grad, state, replace(hp, eps_scale=eps_scale))
    assert zero.trace["lr_effective"] == hp.lr * eps_scale
    plain = run(theta, grad, state, replace(hp, eps_scale=None))
    assert plain.trace["lr_effective"] == hp.lr


@SETTINGS
@given(step_inputs(shapes), st.integers(-10, 20))
def test_power_of_two_loss_scale_is_exact(inputs, k):
    """CAME-OPT-4, CAME-STEP-1: gradients G·L with loss_scale L = 2^k give bitwise the result of G with
    loss_scale 1 (scaling by a power of two is exact while no value overflows or underflows)."""
    theta, grad, state, hp = inputs
    scale = 2.0 ** k
    a = run(theta, grad, state, replace(hp, loss_scale=1.0))
    b = run(theta, grad * scale, state, replace(hp, loss_scale=scale))
    assert same(a.theta, b.theta) and all(same(a.trace[k], b.trace[k]) for k in a.trace)


@SETTINGS
@given(step_inputs(), st.floats(1e-2, 1e4))
def test_any_loss_scale_is_divided_out_first(inputs, scale):
    """CAME-OPT-4, CAME-STEP-1: with any L, g = (G·L)/L differs from G by at most 2 roundings
    (|g − G| ≤ 2u|G| < 2 ulp(G)), and the rest of the step is exactly the step of g with L = 1
    (L enters the equations only through CAME-STEP-1)."""
    theta, grad, state, hp = inputs
    scaled = run(theta, grad * scale, state, replace(hp, loss_scale=scale))
    g = scaled.trace["grad"]
    assert np.all(np.abs(g - grad) <= 2 * ulp("float64", grad))
    unscaled = run(theta, g, state, replace(hp, loss_scale=1.0))
    assert same(scaled.theta, unscaled.theta) and all(same(scaled.trace[k], unscaled.trace[k]) for k in scaled.trace)


@SETTINGS
@given(step_inputs(shapes))
def test_compression_stores_the_second_moment_in_float16(inputs):
    """CAME-OPT-5, CAME-STEP-3V, CAME-STEP-4V: with compression, ndim ≤ 1 stores v rounded to float16
    and uses the stored value (U = G/sqrt(v_stored)); factored statistics are unaffected (bitwise the
    same step as without compression)."""
    theta, grad, state, hp = inputs
    on = run(theta, grad, state, replace(hp, compression=True))
    off = run(theta, grad, state, replace(hp, compression=False))
    if theta.size == 0:
        return
    if theta.ndim >= 2:
        assert same(on.theta, off.theta) and all(same(on.state[k], off.state[k]) for k in on.state)
    else:
        v = on.state["exp_avg_sq"]
        assert same(v, round_to("float16", v)) and same(v, round_to("float16", off.state["exp_avg_sq"]))
        with np.errstate(all="ignore"):
            assert same(on.trace["update"], on.trace["grad"] / np.sqrt(v))


# --- non-finite values -----------------------------------------------------------------------------------------


@SETTINGS
@given(step_inputs(), st.sampled_from([math.nan, math.inf, -math.inf]), st.data())
def test_a_non_finite_gradient_propagates(inputs, bad, data):
    """CAME-NONFINITE-1: no check and no warning; one NaN or ±inf gradient element makes RMS(U) NaN (inf/inf
    in F or v), so every element of θ' and m is NaN."""
    theta, grad, state, hp = inputs
    idx = data.draw(st.tuples(*(st.integers(0, n - 1) for n in grad.shape)))
    grad = grad.copy()
    grad[idx] = bad
    assume(np.all(np.isfinite(run(theta, np.where(np.isfinite(grad), grad, 0.0), state, hp).theta)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = run(theta, grad, state, hp)
    assert np.all(np.isnan(result.theta)) and np.all(np.isnan(result.state["exp_avg"]))


@SETTINGS
@given(step_inputs(factored_shapes))
def test_beta_one_freezes_a_statistic_and_gives_nan(inputs):
    """CAME-STEP-8, CAME-STEP-9, CAME-BETA2-1, CAME-NONFINITE-1: β3 = 1 keeps R = C = 0 from the zero state,
    so F(R, C) = 0/0 = NaN (the documented consequence); β2 = 1 does the same to r, c and U."""
    theta, grad, _, hp = inputs
    zero = came_step.init_state(theta.shape)
    frozen = run(theta, grad, zero, replace(hp, beta3=1.0))
    assert not np.any(frozen.state["exp_avg_insta_row"]) and np.all(np.isnan(frozen.trace["confidence"]))
    frozen2 = run(theta, grad, zero, replace(hp, beta2=1.0))
    assert not np.any(frozen2.state["exp_avg_sq_row"]) and np.all(np.isnan(frozen2.theta))


# --- the optimizer over several parameters ----------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.lists(nonempty_shapes, min_size=1, max_size=4), st.sampled_from(["paper", "mindformers"]), st.data())
def test_one_global_step_counter_drives_every_parameter(shape_list, profile, data):
    """CAME-STATE-5, CAME-BETA2-2, CAME-LR-2: optimizer.update steps every parameter at the same t
    (state.step + 1), bitwise as reference.step with hp.step_hyper(t, i)."""
    params = [data.draw(arrays(s)) for s in shape_list]
    hp = Hyperparameters.defaults(profile, learning_rate=LearningRate.exponential(1e-2, 0.9))
    state, current = optimizer.init(params, hp), params
    for t in (1, 2, 3):
        grads = [data.draw(arrays(s)) for s in shape_list]
        out = optimizer.update(grads, state, current, hp)
        assert out.state.step == t
        for i, (p, g, s) in enumerate(zip(current, grads, state.tensors)):
            expected = came_step.step(p, g, s, hp.step_hyper(t, i))
            assert same(out.params[i], expected.theta)
            assert all(same(out.state.tensors[i][k], expected.state[k]) for k in expected.state)
        state, current = out.state, list(out.params)
