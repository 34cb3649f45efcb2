"""The tolerance model against an emulated-precision reference (docs/tolerances.md; CAME-DTYPE-2 … CAME-DTYPE-5).

- No false alarm: CAME computed in float32, float16 and bfloat16 (conformance.emulate), in several
  evaluation orders (multiply-add or lerp EMA, 1/sqrt or rsqrt, sqrt(mean) or ‖·‖/√N, θ − ηλθ or
  θ(1 − ηλ), division or reciprocal, sequential, pairwise or blocked sums, state in the parameter's
  dtype or in float32, stored or unrounded state reused), passes every step of the catalogue's cases.
- Realistic bugs fail in every dtype: a learning-rate sequence read one step late, a group's
  weight_decay ignored, RMS(θ) after the weight decay, a 1-D first moment 100 times too small.
- The bound is meaningful at u = 2⁻⁸, and it holds at large n (CAME-DTYPE-5).
- Compression is checked exactly: the float16 rounding of v′, nothing near it (CAME-OPT-5).
- The float64 reference lies within the model's float64 bound of the exact values (mpmath), the
  claim of docs/tolerances.md §6.
"""
from __future__ import annotations

import numpy as np
import pytest
from mpmath import mp

from came_conformance import compare, emulate, precision, tolerance
from came_conformance.fixtures import catalogue as cat
from came_conformance.fixtures.generate import trajectory_inputs
from came_conformance.protocol import Snapshot
from came_conformance.reference import oracle
from came_conformance.reference.dtypes import round_to, unit_roundoff
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate
from came_conformance.reference.step import StepHyper, init_state, step as reference_step

PROFILES = ("paper", "mindformers")


def _catalogue(profile: str) -> dict[str, cat.Traj]:
    cases = cat.trajectory_cases(profile) + cat.lowprecision_cases(profile)
    if profile == "mindformers":
        cases += cat.options_cases(profile)
    return {c.name: c for c in cases}


def _at(case: cat.Traj, dtype: str) -> cat.Traj:
    """The catalogue case with its inputs in ``dtype`` (mixed-precision cases keep their own dtypes)."""
    if case.grad_dtype:
        return case
    from dataclasses import replace

    return replace(case, dtype=dtype)


def judge(profile: str, case: cat.Traj, variant: emulate.Variant):
    """Every failing check of the emulated target ``variant`` on ``case``, judged step by step as the runner does."""
    hp, params, grads = trajectory_inputs(profile, case)
    dtype = case.dtype
    prec = variant.precision(dtype, case.grad_dtype)
    prev_p, prev_s = list(params), [init_state(np.shape(p)) for p in params]
    failures = []
    for t, (new_p, new_s) in enumerate(emulate.trajectory(hp, params, grads, dtype, variant), start=1):
        checks = compare.check_step(t, lambda i: hp.step_hyper(t, i), prev_p, prev_s, grads[t - 1],
                                    Snapshot(new_p, new_s, t), dtype, prec)
        failures += [c for c in checks if not c.ok]
        prev_p, prev_s = new_p, new_s
    return failures


# --------------------------------------------------------------------------------------------
# No false alarm
# --------------------------------------------------------------------------------------------

#: (name, variant, parameter dtype).  float16 arithmetic and float16 state are judged on the cases
#: a float16 design can carry (``_float16_viable``); every other design on every case.
VARIANTS = [
    ("float32 multiply-add", emulate.Variant(compute="float32"), "float32"),
    ("float32 lerp, rsqrt, norm, scaled decay, reciprocal clip, sequential sums",
     emulate.Variant(compute="float32", ema="lerp", rsqrt="rsqrt", rms="norm", decay="scale", clip="reciprocal",
                     summation="recursive"), "float32"),
    ("bfloat16 arithmetic and state, opmath", emulate.Variant(compute="bfloat16", opmath=True), "bfloat16"),
    ("bfloat16 lerp, rsqrt, norm, blocked sums", emulate.Variant(compute="bfloat16", ema="lerp", rsqrt="rsqrt",
                                                                 rms="norm", decay="scale", summation="blocked:2"),
     "bfloat16"),
    ("bfloat16 parameters, float32 state and arithmetic", emulate.Variant(compute="float32", state="float32"),
     "bfloat16"),
    ("float16 parameters, float32 state and arithmetic", emulate.Variant(compute="float32", state="float32",
                                                                         ema="lerp", clip="reciprocal"), "float16"),
    ("float16 arithmetic and state, opmath", emulate.Variant(compute="float16", opmath=True), "float16"),
    ("float16 state, float32 arithmetic on the unrounded state",
     emulate.Variant(compute="float32", state="float16", use_stored=False), "float16"),
]
FLOAT16_DESIGNS = {"float16 arithmetic and state, opmath", "float16 state, float32 arithmetic on the unrounded state"}


def _float16_viable(profile: str, case: cat.Traj) -> bool:
    """Can a float16 design carry this case?  Not when G² or a statistic leaves float16's normal range,
    ε matters (a zero or ε-dominated gradient), a value is non-finite, or β2 = 0.999 makes the first
    step's statistics 1000 times smaller than G² (CAME-DTYPE-3: such designs do not conform there)."""
    hp, params, grads = trajectory_inputs(profile, case)
    from came_conformance.fixtures.generate import derive_flags, run

    flags = derive_flags(hp, params, run(hp, params, grads, case.dtype), "float16")
    return not (flags & {"Float16StateRange", "ZeroGradient", "EpsDominated", "NonFinite", "BetaOne", "Beta1Zero"}) \
        and hp.profile == "mindformers" and all(np.size(p) for p in params)


def _selection(profile: str, k: int, every: int) -> list[cat.Traj]:
    """Every ``every``-th catalogue case, from the k-th: each variant sees its own share of the catalogue
    (``python -m came_conformance.tightness`` runs every variant on every case)."""
    cases = [c for c in _catalogue(profile).values() if not c.name.startswith("mixed-")]
    return cases[k::every]


def _finite_inputs(profile: str, case: cat.Traj) -> bool:
    """No infinity the EMAs would meet: gradients and the reference's state finite at every step."""
    from came_conformance.fixtures.generate import run

    hp, params, grads = trajectory_inputs(profile, case)
    if not all(np.all(np.isfinite(g)) for step in grads for g in step):
        return False
    return all(np.all(np.isfinite(v)) for s in run(hp, params, grads, case.dtype) for t in s["state"]
               for v in t.values())


@pytest.mark.parametrize("name, variant, dtype", VARIANTS, ids=[v[0] for v in VARIANTS])
def test_correct_evaluation_orders_pass(name, variant, dtype):
    """CAME-DTYPE-3: every correct design and order passes (lerp only where no infinity reaches an EMA:
    torch.lerp turns an infinite end or start into NaN where β·old + (1 − β)·new is ±inf)."""
    k = VARIANTS.index((name, variant, dtype))
    problems = []
    for profile in PROFILES:
        for case in _selection(profile, k % 7, 7):
            if name in FLOAT16_DESIGNS and not _float16_viable(profile, _at(case, dtype)):
                continue
            if variant.ema == "lerp" and not _finite_inputs(profile, _at(case, dtype)):
                continue
            for f in judge(profile, _at(case, dtype), variant)[:1]:
                problems.append(f"{profile} {case.name}: step {f.step} {f.tensor} target {f.target_value!r} "
                                f"reference {f.reference_value!r} tolerance {f.tolerance:.3g} {f.note}")
    assert not problems, f"{name} ({dtype}) raised false alarms:\n" + "\n".join(problems)


def test_float16_arithmetic_fails_where_it_loses_epsilon():
    """CAME-DTYPE-3, §4.6: in float16 arithmetic ε1 = 1e-30 rounds to 0, so a zero gradient gives NaN:
    the spec's value is finite, and the model does not excuse it."""
    case = _at(_catalogue("paper")["zero-gradient"], "float16")
    failures = judge("paper", case, emulate.Variant(compute="float16"))
    assert failures and failures[0].step >= 1


# --------------------------------------------------------------------------------------------
# Realistic bugs fail in every dtype
# --------------------------------------------------------------------------------------------

#: The designs of the mutation run's per-dtype port (conformance.mutants.adapter.PER_DTYPE).
DESIGNS = {"float32": emulate.Variant(compute="float32"),
           "float16": emulate.Variant(compute="float32", state="float32"),
           "bfloat16": emulate.Variant(compute="bfloat16", opmath=True)}
BUGS = [  # (bug, profile, catalogue case, tensor it must show in)
    ("lr_late", "mindformers", "{d}-lr-sequence-small-theta", "theta"),
    ("lr_late", "paper", "{d}-lr-sequence-small-theta", "theta"),
    ("group_wd_ignored", "paper", "{d}-groups-weight-decay", "theta"),
    ("rms_after_decay", "mindformers", "{d}-scale-parameter-weight-decay", "theta"),
    ("vector_momentum_small", "paper", "{d}-vector-only", "exp_avg"),
]


@pytest.mark.parametrize("dtype", sorted(DESIGNS))
@pytest.mark.parametrize("bug, profile, name, tensor", BUGS, ids=[f"{b[0]}-{b[1]}" for b in BUGS])
def test_realistic_bugs_fail_in_every_dtype(dtype, bug, profile, name, tensor):
    """CAME-DTYPE-2, CAME-STEP-6, CAME-STEP-10 … CAME-STEP-12: each bug is rejected, in bfloat16 arithmetic too."""
    case = _catalogue(profile)[name.format(d=dtype)]
    correct = DESIGNS[dtype]
    from dataclasses import replace

    assert not judge(profile, case, correct), "the correct design must pass this case"
    failures = judge(profile, case, replace(correct, bugs=frozenset({bug})))
    assert failures, f"{bug} passes in {dtype}"
    assert failures[0].tensor == tensor


# --------------------------------------------------------------------------------------------
# The bound says something at u = 2^-8, and at large n
# --------------------------------------------------------------------------------------------

def test_bfloat16_bounds_are_below_the_value():
    """With bfloat16 arithmetic and state, the bound of a well-conditioned tensor stays a fraction of
    the value: at most 0.25 (about 64 roundings of u = 2⁻⁸; the chain of CAME-STEP-4 … CAME-STEP-6
    has about 25, docs/tolerances.md §4) where the old first-order model gave 8 (0.81 for 0.1)."""
    worst = {}
    hp, params, grads = trajectory_inputs("paper", _catalogue("paper")["bfloat16-multi"])
    variant = DESIGNS["bfloat16"]
    prec = variant.precision("bfloat16")
    prev_p, prev_s = params, [init_state(np.shape(p)) for p in params]
    for t, (new_p, new_s) in enumerate(emulate.trajectory(hp, params, grads, "bfloat16", variant), start=1):
        for c in compare.check_step(t, lambda i: hp.step_hyper(t, i), prev_p, prev_s, grads[t - 1],
                                    Snapshot(new_p, new_s, t), "bfloat16", prec):
            assert c.ok
            if c.rel_bound is not None:
                worst[c.tensor] = max(worst.get(c.tensor, 0.0), c.rel_bound)
        prev_p, prev_s = new_p, new_s
    assert set(worst) >= {"exp_avg", "exp_avg_sq_row", "exp_avg_sq", "theta"}
    assert max(worst.values()) < 0.25, worst


@pytest.mark.parametrize("shape, summation", [((33, 1025), "recursive"), ((7, 4096), "pairwise"),
                                              ((4096, 7), "blocked:64"), ((129, 31), "recursive")])
def test_large_reductions_pass_and_stay_tight(shape, summation):
    """CAME-DTYPE-5: float32 sums of up to 4096 terms, in the declared order, pass; the statistics'
    bound stays within a few γ_depth of the value (depth from ``precision.summation_depth``)."""
    rng = np.random.default_rng(11)
    hp = Hyperparameters.defaults("mindformers", learning_rate=LearningRate.constant(1e-2))
    theta = round_to("float32", rng.standard_normal(shape))
    grads = [[round_to("float32", rng.standard_normal(shape))] for _ in range(2)]
    variant = emulate.Variant(compute="float32", summation=summation)
    prec = variant.precision("float32")
    prev_p, prev_s = [theta], [init_state(shape)]
    for t, (new_p, new_s) in enumerate(emulate.trajectory(hp, [theta], grads, "float32", variant), start=1):
        checks = compare.check_step(t, lambda i: hp.step_hyper(t, i), prev_p, prev_s, grads[t - 1],
                                    Snapshot(new_p, new_s, t), "float32", prec)
        assert all(c.ok for c in checks), [c for c in checks if not c.ok][:1]
        row = next(c for c in checks if c.tensor == "exp_avg_sq_row")
        depth = precision.summation_depth(summation, shape[-1])
        assert row.rel_bound < 4 * precision.gamma(depth, unit_roundoff("float32")) + 64 * unit_roundoff("float32")
        prev_p, prev_s = new_p, new_s


def test_summation_depths_bound_real_sums():
    """CAME-DTYPE-5: sequential, pairwise and blocked float32 sums of 4096 positive terms stay within
    γ_depth · Σ|x| of the exact sum, with the depth each rule declares."""
    rng = np.random.default_rng(5)
    x = round_to("float32", rng.uniform(0.5, 1.5, (3, 4096)))
    exact = np.array([float(mp.fsum(row.tolist())) for row in x])
    for rule in ("recursive", "pairwise", "blocked:64"):
        arith = emulate._Arith(emulate.Variant(compute="float32", summation=rule), "float32")
        err = np.abs(arith.total(x, -1) - exact)
        bound = precision.gamma(precision.summation_depth(rule, 4096), unit_roundoff("float32")) * x.sum(axis=1)
        assert np.all(err <= bound), (rule, err, bound)
    assert precision.summation_depth("cascade", 2 ** 24) < 1000 < precision.summation_depth("recursive", 2 ** 24)


# --------------------------------------------------------------------------------------------
# Declarations, compression, mixed precision
# --------------------------------------------------------------------------------------------

def test_declared_precision_and_its_defaults():
    """CAME-DTYPE-3: half tensors hold their scalars in float32 unless declared; the older state_dtype still works."""
    p = precision.resolve("bfloat16")
    assert (p.state, p.compute, p.scalars, p.accumulate, p.summation) == \
        ("bfloat16", "bfloat16", "float32", "float32", "recursive")
    p = precision.resolve("float16", state_dtype={"float16": "float32"})
    assert (p.state, p.compute) == ("float32", "float32")
    p = precision.resolve("bfloat16", {"bfloat16": {"scalars": "bfloat16", "summation": "pairwise:128"}})
    assert p.scalars == "bfloat16" and precision.summation_depth(p.summation, 1024) == 127 + 3
    with pytest.raises(ValueError, match="unknown keys"):
        precision.resolve("float32", {"float32": {"compute_dtype": "float32"}})
    with pytest.raises(ValueError, match="summation"):
        precision.resolve("float32", {"float32": {"summation": "kahan"}})


def test_bfloat16_beta2_is_charged_only_when_declared():
    """β2 = 0.999 held in bfloat16 is 1.0: r′ stays 0 at the first step.  Declared, the model sees the
    error (the bound of r′ exceeds r′); not declared (scalars in float32), r′ is bounded tightly."""
    hp = StepHyper(lr=1e-2, beta1=0.9, beta2=0.999, beta3=0.9999, eps1=1e-30, eps_insta=1e-16, clip_threshold=1.0)
    theta, grad = np.ones((3, 4)), round_to("bfloat16", np.linspace(-1, 1, 12).reshape(3, 4))
    state = init_state((3, 4))
    new = reference_step(theta, grad, state, hp).state
    tight = tolerance.step_model(theta, grad, state, new, hp, precision.resolve("bfloat16"))[0]["exp_avg_sq_row"]
    declared = tolerance.step_model(theta, grad, state, new, hp,
                                    precision.resolve("bfloat16", {"bfloat16": {"scalars": "bfloat16"}}))[0]
    assert np.all(tight.bound < 0.05 * tight.reference)
    assert np.all(declared["exp_avg_sq_row"].bound >= declared["exp_avg_sq_row"].reference)


def test_compression_is_checked_exactly():
    """CAME-OPT-5: the stored exp_avg_sq must be the float16 rounding of v′: its neighbour fails, and so
    does a value that is not a float16 value, although both are within a float16 ulp."""
    hp = StepHyper(lr=1e-2, beta1=0.9, beta2=0.5, beta3=0.99, eps1=1e-30, eps_insta=1e-16, clip_threshold=1.0,
                   compression=True)
    theta, grad = np.linspace(-1, 1, 5), np.linspace(0.3, 1.7, 5)
    state = init_state((5,))
    result = reference_step(theta, grad, state, hp)
    prec = precision.resolve("float32")
    judged = tolerance.step_model(theta, grad, state, result.state, hp, prec)[0]["exp_avg_sq"]
    assert judged.store == "float16" and judged.exact_rounding
    good = round_to("float16", judged.reference)
    assert compare.check_tensor(1, 0, judged, good).ok
    neighbour = good.copy()
    neighbour[2] = np.nextafter(np.float16(good[2]), np.float16(np.inf)).astype(np.float64)
    assert not compare.check_tensor(1, 0, judged, neighbour).ok
    off_grid = good.copy()
    off_grid[2] = (good[2] + neighbour[2]) / 2 + 1e-9
    assert not compare.check_tensor(1, 0, judged, off_grid).ok


@pytest.mark.parametrize("dtype", sorted(DESIGNS))
def test_compression_overflow_stores_inf_and_passes(dtype):
    """CAME-OPT-5: a v′ beyond float16's range is stored as +inf and U = g/√inf = 0 there; a correct
    port passes (an exact infinity carries no rounding error through 1/√·)."""
    case = _catalogue("mindformers")[f"{dtype}-compression-large-gradients"]
    assert not judge("mindformers", case, DESIGNS[dtype])


def test_mixed_precision_gradients_are_read_exactly():
    """CAME-DTYPE-4: float16 gradients of float32 parameters are exact in float32 arithmetic (no
    charge); float32 gradients of bfloat16 parameters cost one rounding in bfloat16 arithmetic."""
    x = np.array([1.0 + 2.0 ** -20])
    f32 = precision.resolve("float32", grad="float16")
    assert f32.grad_dtype == "float16" and np.all(tolerance.Algebra(f32).gradient(x).b == 0)
    bf = precision.resolve("bfloat16", grad="float32")
    assert np.all(tolerance.Algebra(bf).gradient(x).b > 2.0 ** -9)


# --------------------------------------------------------------------------------------------
# The float64 reference within the model's float64 bound (docs/tolerances.md §6)
# --------------------------------------------------------------------------------------------

def _exact_clauses(theta, grad, old, new, hp: StepHyper) -> dict[str, np.ndarray]:
    """The exact (mpmath) value of each clause from the given new state, as the model judges it."""
    V = oracle.Val
    with mp.workdps(oracle.DPS):
        shape = np.shape(theta)
        keys = list(oracle._indices(shape))
        _, th = oracle._tensor(theta)
        _, gr = oracle._tensor(grad)
        st = {k: oracle._tensor(v)[1] for k, v in old.items()}
        nw = {k: oracle._tensor(v)[1] for k, v in new.items()}
        g = {k: gr[k] / V(hp.loss_scale) for k in keys}
        q = {k: g[k] * g[k] + V(hp.eps1) for k in keys}
        out = {}
        factored = len(shape) >= 2
        if factored:
            batch, n, m = shape[:-2], shape[-2], shape[-1]
            q_rows, q_cols = oracle._row_col_means(q, batch, n, m)
            out["exp_avg_sq_row"] = oracle._ema(V(hp.beta2), st["exp_avg_sq_row"], q_rows)
            out["exp_avg_sq_col"] = oracle._ema(V(hp.beta2), st["exp_avg_sq_col"], q_cols)
            f = oracle._factor(nw["exp_avg_sq_row"], nw["exp_avg_sq_col"], batch, n, m)
            u = {k: f[k] * g[k] for k in keys}
        else:
            out["exp_avg_sq"] = oracle._ema(V(hp.beta2), st["exp_avg_sq"], q)
            u = {k: g[k] / nw["exp_avg_sq"][k].sqrt() for k in keys}
        divisor = oracle.maximum(V(1), oracle.rms(u[k] for k in keys) / V(hp.clip_threshold))
        u_hat = {k: u[k] / divisor for k in keys}
        out["exp_avg"] = oracle._ema(V(hp.beta1), st["exp_avg"], u_hat)
        if factored:
            d = {}
            for k in keys:
                w = u_hat[k] - nw["exp_avg"][k]
                d[k] = w * w + V(hp.eps_insta)
            d_rows, d_cols = oracle._row_col_means(d, batch, n, m)
            out["exp_avg_insta_row"] = oracle._ema(V(hp.beta3), st["exp_avg_insta_row"], d_rows)
            out["exp_avg_insta_col"] = oracle._ema(V(hp.beta3), st["exp_avg_insta_col"], d_cols)
            s = oracle._factor(nw["exp_avg_insta_row"], nw["exp_avg_insta_col"], batch, n, m)
            direction = {k: s[k] * nw["exp_avg"][k] for k in keys}
        else:
            direction = nw["exp_avg"]
        lr = V(hp.lr)
        if hp.eps_scale is not None:
            lr = lr * oracle.maximum(V(hp.eps_scale), oracle.rms(th[k] for k in keys))
        decayed = {k: th[k] - lr * V(hp.weight_decay) * th[k] for k in keys} if hp.weight_decay else th
        out["theta"] = {k: decayed[k] - lr * direction[k] for k in keys}
        return {name: oracle._array(np.shape(new[name]) if name in new else shape, v) for name, v in out.items()}


@pytest.mark.parametrize("seed", range(4))
def test_reference_is_within_the_float64_bound(seed):
    """docs/tolerances.md's claim, as a test: every float64 value reference.step stores lies within the
    model's float64 bound of the exact value of its clause, and so does the model's own evaluation."""
    rng = np.random.default_rng(seed)
    shapes = [(), (5,), (3, 4), (2, 3, 2)]
    hp = StepHyper(lr=float(rng.uniform(1e-3, 0.5)), beta1=float(rng.uniform(0, 0.99)),
                   beta2=float(rng.uniform(0, 0.999)), beta3=float(rng.uniform(0, 0.999)), eps1=1e-30,
                   eps_insta=1e-16, clip_threshold=float(rng.choice([0.1, 1.0, 10.0])),
                   weight_decay=float(rng.choice([0.0, 0.1])), eps_scale=1e-3 if seed % 2 else None,
                   loss_scale=float(rng.choice([1.0, 3.0])), compression=bool(seed % 2))
    prec = precision.resolve("float64")
    for shape in shapes:
        theta, grad = rng.standard_normal(shape), rng.standard_normal(shape)
        state = {k: np.abs(rng.standard_normal(v.shape)) * (0.5 if k != "exp_avg" else 1.0)
                 for k, v in init_state(shape).items()}
        state["exp_avg"] = rng.standard_normal(np.shape(theta))
        result = reference_step(theta, grad, state, hp)
        judged = tolerance.step_model(theta, grad, state, result.state, hp, prec)[0]
        exact = _exact_clauses(theta, grad, state, result.state, hp)
        fmt = {"float64": oracle.FLOAT64, "float16": oracle.FLOAT16}
        for name, j in judged.items():
            stored = np.asarray(result.theta if name == "theta" else result.state[name])
            with mp.workdps(oracle.DPS):
                for idx in np.ndindex(stored.shape):
                    x = exact[name][idx]
                    tb = float(np.broadcast_to(j.target_bound, stored.shape)[idx])
                    rb = float(np.broadcast_to(j.reference_bound, stored.shape)[idx])
                    lo = oracle.round_to_format(x - mp.mpf(tb), fmt[j.store])  # the stored value's grid
                    hi = oracle.round_to_format(x + mp.mpf(tb), fmt[j.store])
                    assert lo <= mp.mpf(float(stored[idx])) <= hi, (shape, name, idx, float(stored[idx]), float(x), tb)
                    model_err = abs(mp.mpf(float(np.asarray(j.reference)[idx])) - x)
                    assert model_err <= rb, (shape, name, idx, float(model_err), rb)
