"""Quick checks of the mutation machinery (docs/mutation.md): the port, the catalogue, the driver.

- The port with no bug switch agrees with ``reference.optimizer`` within a few ulps, in both
  profiles and with every option (CAME-STEP-1 … CAME-STEP-12, CAME-OPT-1 … CAME-OPT-5).
- Every catalogue entry changes behaviour on some probe (numbers, state, or the error raised),
  so no mutant is trivially equivalent and a surviving one is a gap of the suite.
- The catalogue has at least 30 entries and covers every family; every switch is used.
- ``mutant:NAME`` resolves to a working adapter; the driver runs end to end on one mutant.
"""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

import came_conformance.mutants as mutants
from came_conformance.mutants import catalogue, port
from came_conformance.mutants.adapter import MutantAdapter
from came_conformance.protocol import Snapshot
from came_conformance.reference import optimizer
from came_conformance.reference.hyperparams import Group, Hyperparameters, LearningRate

RNG_SEED = 20230707


def _arrays(shapes, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) * scale for s in shapes]


def _grads(shapes, steps, seed, scale=1.0, loss_scale=1.0):
    return [[g * loss_scale for g in _arrays(shapes, seed + 1000 * (k + 1), scale)] for k in range(steps)]


# --------------------------------------------------------------------------------------------
# Probes: trajectories (canonical hyperparameters through the adapter's ``open``)
# --------------------------------------------------------------------------------------------

def _mf(**kw):
    return Hyperparameters.defaults("mindformers", **kw)


def _paper(**kw):
    return Hyperparameters.defaults("paper", **kw)


MIXED = ((3, 4), (4,), (), (2, 3, 4))
TRAJECTORY_PROBES = {
    # name: (hp, shapes, steps, grad scale, param scale)
    "mf-mixed": (_mf(learning_rate=LearningRate.constant(0.05), beta1=0.8, beta3=0.9, clip_threshold=0.1,
                     eps1=1e-8, weight_decay=0.1), MIXED, 4, 1.0, 1.0),
    "mf-square": (_mf(learning_rate=LearningRate.constant(0.05), clip_threshold=0.5, weight_decay=0.1),
                  ((4, 4), (2, 3, 3)), 4, 1.0, 1.0),
    "mf-groups": (_mf(learning_rate=LearningRate.constant(0.05), weight_decay=0.01,
                      groups=(Group((0,), LearningRate.constant(0.02), 0.3),)), ((3, 4), (4,)), 3, 1.0, 1.0),
    "mf-sequence": (_mf(learning_rate=LearningRate.sequence([0.01 * (1 + k) for k in range(8)])),
                    ((3, 4), (4,)), 3, 1.0, 1.0),
    "mf-schedule": (_mf(learning_rate=LearningRate.exponential(0.05, 0.5)), ((3, 4), (4,)), 3, 1.0, 1.0),
    "mf-scale-parameter": (_mf(learning_rate=LearningRate.constant(0.05), scale_parameter=True,
                               weight_decay=0.2), ((3, 4), (4,)), 3, 1.0, 1e-5),
    "mf-scale-parameter-decay": (_mf(learning_rate=LearningRate.constant(0.2), scale_parameter=True,
                                     weight_decay=0.5), ((3, 4), (4,)), 3, 1.0, 1.0),
    "mf-relative-step": (_mf(learning_rate=None, relative_step=True), ((3, 4), (4,)), 3, 1.0, 1.0),
    "mf-warmup-init": (_mf(learning_rate=None, relative_step=True, warmup_init=True), ((3, 4), (4,)), 3, 1.0, 1.0),
    "mf-compression": (_mf(learning_rate=LearningRate.constant(0.05), compression=True, beta1=0.5),
                       ((5,), ()), 4, 1.0, 1.0),
    "mf-loss-scale": (_mf(learning_rate=LearningRate.constant(0.05), loss_scale=1024.0), ((3, 4), (4,)), 3,
                      1e-6, 1.0),
    "mf-zero-size-first": (_mf(learning_rate=LearningRate.constant(0.05)), ((0, 3), (3, 4), (4,)), 3, 1.0, 1.0),
    "mf-beta3-one": (_mf(learning_rate=LearningRate.constant(0.05), beta3=1.0), ((3, 4),), 2, 1.0, 1.0),
    "mf-beta1-zero": (_mf(learning_rate=LearningRate.constant(0.05), beta1=0.0), ((3, 4),), 2, 1.0, 1.0),
    "paper-mixed": (_paper(learning_rate=LearningRate.constant(0.05), beta1=0.8, beta2=0.99, beta3=0.9,
                           clip_threshold=0.1, eps1=1e-8, weight_decay=0.1), MIXED, 4, 1.0, 1.0),
    "paper-tiny-clip": (_paper(learning_rate=LearningRate.constant(0.05), clip_threshold=1e-3), ((3, 4), (4,)), 3,
                        1.0, 1.0),
    # CAME-DEF-4: reduced axes longer than a tile (128 along rows, 32 along columns, 1024 elements)
    "mf-long-axes": (_mf(learning_rate=LearningRate.constant(0.05), clip_threshold=0.5, scale_parameter=True),
                     ((33, 129), (1025,)), 2, 1.0, 1.0),
    "paper-long-axes": (_paper(learning_rate=LearningRate.constant(0.05), clip_threshold=0.5),
                        ((33, 129), (1025,)), 2, 1.0, 1.0),
}

#: CAME-STATE-6, CAME-LR-5, CAME-BETA2-2: sessions opened at a large step counter (Adapter.open_at).
OPEN_AT_PROBES = {
    "mf-relative-step-crossover": (_mf(learning_rate=None, relative_step=True), 9998),
    "mf-warmup-init-crossover": (_mf(learning_rate=None, relative_step=True, warmup_init=True), 9998),
    "mf-float32-counter": (_mf(learning_rate=LearningRate.constant(0.05)), 2 ** 24 - 2),
    "paper-float16-counter": (_paper(learning_rate=LearningRate.constant(0.05)), 2046),
}


def _run_probe(bugs, name):
    """What a port with ``bugs`` does on a probe: its snapshots, or the error it raises."""
    hp, shapes, steps, grad_scale, param_scale = TRAJECTORY_PROBES[name]
    params = _arrays(shapes, RNG_SEED, param_scale)
    grads = _grads(shapes, steps, RNG_SEED, grad_scale, hp.loss_scale)
    adapter = MutantAdapter("probe", hp.profile, bugs)
    try:
        session = adapter.open(hp, params, "float64", "default")
        snaps = []
        for g in grads:
            session.step(g)
            snaps.append(session.read())
        return snaps
    except Exception as exc:  # noqa: BLE001 - a raise is a behaviour too
        return ("raised", type(exc).__name__)


# Mixed precision (CAME-DTYPE-4): gradients exact in another dtype than the parameters'.
#: name: (hp, shapes, steps, grad scale, parameter dtype, gradient dtype)
MIXED_PROBES = {
    "mf-amp-float16": (_mf(learning_rate=LearningRate.constant(0.05)), ((3, 4), (4,)), 3, 300.0, "float32",
                       "float16"),
    "mf-bfloat16-float32": (_mf(learning_rate=LearningRate.constant(0.05)), ((3, 4), (4,)), 3, 1.0, "bfloat16",
                            "float32"),
}
MIXED_MUTANTS = ("state-follows-grad-dtype", "square-in-grad-dtype", "grad-rounded-to-param-dtype")


def _run_mixed_probe(bugs, name):
    from came_conformance.reference.dtypes import round_to

    hp, shapes, steps, grad_scale, dtype, grad_dtype = MIXED_PROBES[name]
    params = [round_to(dtype, a) for a in _arrays(shapes, RNG_SEED)]
    grads = [[round_to(grad_dtype, g) for g in step] for step in _grads(shapes, steps, RNG_SEED, grad_scale)]
    try:
        session = MutantAdapter("probe", hp.profile, bugs).open(hp, params, dtype, "default", grad_dtype)
        snaps = []
        for g in grads:
            session.step(g)
            snaps.append(session.read())
        return snaps
    except Exception as exc:  # noqa: BLE001 - a raise is a behaviour too
        return ("raised", type(exc).__name__)


@pytest.mark.parametrize("name", MIXED_MUTANTS)
def test_mixed_precision_mutants_need_mixed_precision_cases(name):
    """CAME-DTYPE-4: each mixed-precision mutant differs on a mixed probe and is bitwise the correct
    port on every probe whose gradients have the parameters' dtype: no case before this family could
    kill it."""
    bugs = catalogue.BY_NAME[name].switches
    assert any(_snapshots_differ(_run_mixed_probe(bugs, p), _run_mixed_probe(frozenset(), p)) for p in MIXED_PROBES)
    for probe in TRAJECTORY_PROBES:
        a, b = _run_probe(bugs, probe), _run_probe(frozenset(), probe)
        assert isinstance(a, tuple) == isinstance(b, tuple)
        if not isinstance(a, tuple):
            for x, y in zip(a, b):
                assert all(np.array_equal(u, v, equal_nan=True) for u, v in zip(x.params, y.params))
                assert all(np.array_equal(s[k], r[k], equal_nan=True) for s, r in zip(x.state, y.state) for k in s)


def _or_raised(probe):
    """A probe's result, or the exception it raised (a raise is a behaviour too)."""
    def run(*args):
        try:
            return probe(*args)
        except Exception as exc:  # noqa: BLE001
            return ("raised", type(exc).__name__)
    return run


@_or_raised
def _open_at_probe(bugs, name):
    """Four steps from a state after three ordinary ones, with the counter set to t0 (CAME-STATE-6)."""
    hp, t0 = OPEN_AT_PROBES[name]
    shapes = ((3, 4), (4,))
    params = _arrays(shapes, RNG_SEED)
    start = optimizer.trajectory(params, _grads(shapes, 3, RNG_SEED + 1), Hyperparameters.defaults(hp.profile))[-1]
    session = MutantAdapter("probe", hp.profile, bugs).open_at(hp, list(start.params), list(start.state.tensors), t0,
                                                              "float64", "default")
    snaps = []
    for g in _grads(shapes, 4, RNG_SEED):
        session.step(g)
        snaps.append(session.read())
    return snaps, [s.step for s in snaps]


@_or_raised
def _nonfinite_probe(bugs, profile):
    """CAME-NONFINITE-2: θ holding +inf, -inf and NaN, with and without weight decay and scale_parameter."""
    out = []
    extra = ({},) if profile == "paper" else ({}, {"scale_parameter": True})
    for wd in (0.0, 0.1):
        for more in extra:
            hp = Hyperparameters.defaults(profile, learning_rate=LearningRate.constant(0.05), weight_decay=wd, **more)
            params = _arrays(((3, 4), (4,)), RNG_SEED)
            params[0][0, 0], params[0][1, 2], params[1][3] = np.inf, -np.inf, np.nan
            session = MutantAdapter("probe", profile, bugs).open(hp, params, "float64", "default")
            session.step(_grads(((3, 4), (4,)), 1, RNG_SEED)[0])
            out.append(session.read())
    return out


@_or_raised
def _atomic_probe(bugs, api):
    """CAME-ERR-A1: two valid steps, a step that must raise, then the read-back must be unchanged."""
    kwargs = {"learning_rate": 0.01} if api == "mindformers" else {"lr": 0.01}
    session = MutantAdapter("probe", api, bugs).construct({"params": _params(), **kwargs}, "default")
    for g in _grads(((3, 4), (4,)), 2, RNG_SEED):
        session.step(g)
    snapshots = [session.read()]
    labels = [snapshots[0].step]
    for bad in ([np.ones((3, 4)), np.ones((1, 4))], [np.ones((3, 4)), np.ones(4, dtype=np.int32)]):
        try:
            session.step(bad)
            labels.append("accepted")
        except (TypeError, ValueError) as exc:
            labels.append(type(exc).__name__)
        snapshots.append(session.read())
        labels.append(snapshots[-1].step)
    return labels, snapshots


@_or_raised
def _exhausted_sequence(bugs):
    """CAME-ERR-S5: a two-value sequence must refuse a third step."""
    optim = port.Came(_params(), learning_rate=[0.01, 0.02], bugs=bugs)
    grads = _grads(((3, 4), (4,)), 3, RNG_SEED)
    try:
        for g in grads:
            optim.step(g)
    except ValueError as exc:
        return ("ValueError", "learning_rate" in str(exc), optim.global_step)
    return "accepted"


@_or_raised
def _returns(bugs, api):
    """CAME-RETURN-1: what one step returns."""
    kwargs = {"learning_rate": 0.01} if api == "mindformers" else {"lr": 0.01}
    session = MutantAdapter("probe", api, bugs).construct({"params": _params(), **kwargs}, "default")
    return session.step(_grads(((3, 4), (4,)), 1, RNG_SEED)[0])


def _generator_params(bugs, api):
    """CAME-ERR-28: params given as a generator, as the official README's CAME(model.parameters(), ...)."""
    return _construct(bugs, api, {"params_generator": True})


def _snapshots_differ(a, b) -> bool:
    if isinstance(a, tuple) or isinstance(b, tuple):
        return a != b
    for x, y in zip(a, b):
        arrays = list(zip(x.params, y.params))
        for s, r in zip(x.state, y.state):
            if set(s) != set(r):
                return True
            arrays += [(s[k], r[k]) for k in s]
        for u, v in arrays:
            if np.shape(u) != np.shape(v) or not np.array_equal(np.isnan(u), np.isnan(v)):
                return True
            with np.errstate(all="ignore"):
                err = np.abs(np.asarray(u) - np.asarray(v))
                scale = np.maximum(np.abs(u), np.abs(v))
                err = np.where(np.isnan(u) | (u == v), 0.0, err)
            if np.any(err > 1e-9 * scale + 1e-300):
                return True
    return False


# --------------------------------------------------------------------------------------------
# Probes: documented constructors, gradients and checkpoints
# --------------------------------------------------------------------------------------------

def _params():
    return [port.Parameter(np.ones((3, 4)) * 0.5, "w"), port.Parameter(np.ones(4) * 0.25, "b")]


MF_CALLS = [dict(learning_rate=0.01), dict(learning_rate=0.01, beta1=1.0), dict(learning_rate=0.01, beta1=1.00000005),
            dict(learning_rate=0.01, beta3=1.5), dict(learning_rate=0.01, decay_rate=2.0),
            dict(learning_rate=0.01, eps=(0.0, 1e-3, 1e-16)), dict(learning_rate=0.01, loss_scale=2.0),
            dict(learning_rate=0.01, beta1=1), dict(learning_rate=0.01, scale_parameter=1),
            dict(learning_rate=0.01, clip_threshold=-1.0)]
PAPER_CALLS = [dict(lr=0.01), dict(lr=-1.0), dict(lr=0.01, clip_threshold=-1.0), dict(lr=0.01, betas=(0.9, 0.999, 2.0))]


def _construct(bugs, api, kwargs):
    kwargs = dict(kwargs)
    params = (p for p in _params()) if kwargs.pop("params_generator", False) else _params()
    kwargs = kwargs or ({"learning_rate": 0.01} if api == "mindformers" else {"lr": 0.01})
    try:
        port.constructor(api, bugs)(params, **kwargs)
        return "ok"
    except Exception as exc:  # noqa: BLE001
        names = [k for k in kwargs if re.search(rf"\b{k}\b", str(exc))]
        return (type(exc).__name__, tuple(names))


def _defaults_and_gradients(bugs, api):
    """Documented defaults (only the learning rate given), then a gradient of the wrong shape."""
    make = port.constructor(api, bugs)
    optim = make(_params(), **({"learning_rate": 0.01} if api == "mindformers" else {"lr": 0.01}))
    grads = _grads(((3, 4), (4,)), 2, RNG_SEED, 1e-9)  # G² ~ 1e-18: the ε's matter
    out = []
    for g in grads:
        optim.step(g)
        out.append([p.data.copy() for p in optim.parameters()])
    try:
        optim.step([np.ones((4, 3)), np.ones(4)])
        out.append("accepted a (4, 3) gradient for a (3, 4) parameter")
    except Exception as exc:  # noqa: BLE001
        out.append(type(exc).__name__)
    return out


def _resumed(bugs):
    """Two steps, checkpoint, restore into a fresh optimizer, two more steps (CAME-STATE-5)."""
    grads = _grads(((3, 4), (4,)), 4, RNG_SEED)
    first = port.Came(_params(), learning_rate=0.01, bugs=bugs)
    for g in grads[:2]:
        first.step(g)
    second = port.Came(_params(), learning_rate=0.01, bugs=bugs)
    second.load_state_dict(first.state_dict())
    for g in grads[2:]:
        second.step(g)
    return [p.data.copy() for p in second.parameters()]


def _differs(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) != np.shape(b) or not np.allclose(a, b, rtol=1e-9, atol=0, equal_nan=True)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return any(_differs(x, y) for x, y in zip(a, b))
    return a != b


def witnesses(bugs) -> list[str]:
    """The probes on which a port with ``bugs`` behaves differently from the correct port."""
    found = [name for name in TRAJECTORY_PROBES if _snapshots_differ(_run_probe(bugs, name),
                                                                    _run_probe(frozenset(), name))]
    for api, calls in (("mindformers", MF_CALLS), ("paper", PAPER_CALLS)):
        for kwargs in calls:
            if _construct(bugs, api, kwargs) != _construct(frozenset(), api, kwargs):
                found.append(f"{api} constructor {kwargs}")
        if _differs(_defaults_and_gradients(bugs, api), _defaults_and_gradients(frozenset(), api)):
            found.append(f"{api} defaults and gradient shape")
    if _differs(_resumed(bugs), _resumed(frozenset())):
        found.append("checkpoint and resume")
    found += [name for name in MIXED_PROBES if _snapshots_differ(_run_mixed_probe(bugs, name),
                                                                 _run_mixed_probe(frozenset(), name))]
    for name in OPEN_AT_PROBES:
        mine, correct = _open_at_probe(bugs, name), _open_at_probe(frozenset(), name)
        if mine[0] == "raised" or mine[1] != correct[1] or _snapshots_differ(mine[0], correct[0]):
            found.append(f"open at t0: {name}")
    for profile in ("mindformers", "paper"):
        if _snapshots_differ(_nonfinite_probe(bugs, profile), _nonfinite_probe(frozenset(), profile)):
            found.append(f"{profile} non-finite parameters")
        mine, correct = _atomic_probe(bugs, profile), _atomic_probe(frozenset(), profile)
        if mine[0] == "raised" or mine[0] != correct[0] or _snapshots_differ(mine[1], correct[1]):
            found.append(f"{profile} atomic step errors")
        if _returns(bugs, profile) != _returns(frozenset(), profile):
            found.append(f"{profile} step return value")
        if _generator_params(bugs, profile) != _generator_params(frozenset(), profile):
            found.append(f"{profile} params as a generator")
    if _exhausted_sequence(bugs) != _exhausted_sequence(frozenset()):
        found.append("exhausted learning-rate sequence")
    return found


# --------------------------------------------------------------------------------------------
# The correct port agrees with the reference
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(n for n in TRAJECTORY_PROBES if n != "mf-beta3-one"))
def test_correct_port_agrees_with_the_reference(name):
    """No switch: the port's parameters and state match reference.optimizer to a few ulps."""
    hp, shapes, steps, grad_scale, param_scale = TRAJECTORY_PROBES[name]
    params = _arrays(shapes, RNG_SEED, param_scale)
    grads = _grads(shapes, steps, RNG_SEED, grad_scale, hp.loss_scale)
    expected = optimizer.trajectory(params, grads, hp)
    session = MutantAdapter("none", hp.profile).open(hp, params, "float64", "default")
    for t, (g, want) in enumerate(zip(grads, expected), start=1):
        session.step(g)
        snap: Snapshot = session.read()
        assert snap.step == t  # CAME-STATE-5: one shared counter
        pairs = list(zip(snap.params, want.params))
        for got_state, want_state in zip(snap.state, want.state.tensors):
            assert set(got_state) == set(want_state)  # CAME-STATE-2, CAME-STATE-3
            pairs += [(got_state[k], want_state[k]) for k in want_state]
        for got, ref in pairs:  # normwise: cancellation in θ − η·λ·θ − η·Δ makes elementwise ulps moot
            assert got.shape == ref.shape
            if ref.size:
                ulps = np.max(np.abs(got - ref)) / np.spacing(np.max(np.abs(ref)))
                assert ulps <= 16, f"step {t}: {ulps:.3g} ulps (normwise) from the reference"


def test_correct_port_keeps_the_documented_nan_of_beta3_one():
    """β3 = 1 freezes R, C at 0 and F(R, C) = 0/0: the port gives NaN where the reference does."""
    hp, shapes, steps, *_ = TRAJECTORY_PROBES["mf-beta3-one"]
    params = _arrays(shapes, RNG_SEED)
    grads = _grads(shapes, steps, RNG_SEED)
    expected = optimizer.trajectory(params, grads, hp)[-1].params[0]
    session = MutantAdapter("none", "mindformers").open(hp, params, "float64", "default")
    for g in grads:
        session.step(g)
    assert np.isnan(expected).all() and np.isnan(session.read().params[0]).all()


def test_correct_port_follows_the_error_contract():
    """The port's constructors raise the contract's exception and name the argument (CAME-ERR-*)."""
    assert _construct(frozenset(), "mindformers", dict(learning_rate=0.01, beta3=1.5)) == ("ValueError", ("beta3",))
    assert _construct(frozenset(), "mindformers", dict(learning_rate=0.01, beta1=1)) == ("TypeError", ("beta1",))
    assert _construct(frozenset(), "mindformers", dict(learning_rate=0.01, beta1=1.0)) == "ok"
    assert _construct(frozenset(), "mindformers", dict(learning_rate=0.01, loss_scale=4)) == "ok"
    assert _construct(frozenset(), "paper", dict(lr=-1.0)) == ("ValueError", ("lr",))
    assert _construct(frozenset(), "paper", dict(lr=0.0)) == "ok"
    with pytest.raises(TypeError, match="unexpected keyword"):  # CAME-ERR-6
        port.Came(_params(), learning_rate=0.01, use_locking=True)


# --------------------------------------------------------------------------------------------
# The catalogue
# --------------------------------------------------------------------------------------------

def test_catalogue_size_families_and_names():
    names = [m.name for m in catalogue.MUTANTS]
    assert len(names) >= 30
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", n) for n in names), "names are kebab-case"
    assert {m.family for m in catalogue.MUTANTS} == set(catalogue.FAMILIES), "every family, and only those"
    assert all(m.profile in ("mindformers", "paper") for m in catalogue.MUTANTS)
    assert all(m.description and "\n" not in m.description for m in catalogue.MUTANTS)
    assert all(m.clauses for m in catalogue.MUTANTS), "each mutant names the clauses it breaks"
    used = set().union(*(m.switches for m in catalogue.MUTANTS))
    assert used == set(port.SWITCHES), f"switches without a mutant: {sorted(set(port.SWITCHES) - used)}"
    assert {c.name for c in catalogue.CONTROLS} == {"none", "none-paper"}
    assert all(not c.switches for c in catalogue.CONTROLS)


@pytest.mark.parametrize("mutant", catalogue.MUTANTS, ids=lambda m: m.name)
def test_every_mutant_changes_behaviour(mutant):
    """Not trivially equivalent: some probe tells the mutant from the correct port."""
    assert witnesses(mutant.switches), f"{mutant.name}: behaves like the correct port on every probe"


def test_unknown_switch_is_rejected():
    with pytest.raises(KeyError):
        port.Came(_params(), learning_rate=0.01, bugs=frozenset({"no-such-bug"}))


# --------------------------------------------------------------------------------------------
# Targets and the driver
# --------------------------------------------------------------------------------------------

def test_mutant_targets_resolve():
    from came_conformance.targets import resolve

    spec = resolve("mutant:clip-min")
    module, _, attr = spec.factory.partition(":")
    adapter = getattr(mutants, attr)()
    info = adapter.describe()
    assert (info.name, info.profile, info.api) == ("mutant:clip-min", "mindformers", "mindformers")
    assert mutants.factory_none().describe().profile == "mindformers"
    assert mutants.factory_none_paper().describe().profile == "paper"
    assert mutants.factory_clip_min__paper().describe().profile == "paper"
    with pytest.raises(AttributeError):
        getattr(mutants, "factory_no_such_mutant")


def test_driver_kills_one_mutant_and_passes_the_control(tmp_path):
    """``python -m came_conformance.mutation`` end to end on a small budget (Hypothesis sources only)."""
    from came_conformance import mutation

    code = mutation.main(["--only", "clip-min,none", "--sources", "hypothesis", "--examples", "5", "--jobs", "1",
                          "--out", str(tmp_path)])
    doc = json.loads((tmp_path / "mutation.json").read_text())
    assert code == 0
    (m,) = doc["mutants"]
    assert m["status"] == "killed" and m["killer"]["clause"].startswith("CAME-STEP-")
    assert m["killer"]["source_kind"] in ("tier 0", "hypothesis (trajectory)") and m["cases_to_kill"] >= 1
    (c,) = doc["controls"]
    assert c["target"] == "mutant:none" and c["status"] == "pass"
    assert "Mutation score: 1/1" in (tmp_path / "mutation.md").read_text()


def test_external_mutants_get_the_same_table(tmp_path):
    """``--targets`` takes mutants outside the suite (module:factory, or a module listing them)."""
    from came_conformance import mutation

    out = tmp_path / "mutants"
    code = mutation.main(["--targets", "tests.targets.external_mutants", "--controls", "reference",
                          "--sources", "hypothesis", "--examples", "4", "--jobs", "1", "--out", str(out)])
    doc = json.loads((out / "mutation.json").read_text())
    assert code == 0, doc["summary"]
    assert [m["name"] for m in doc["mutants"]] == ["tests.targets.misbehaving:two_bugs",
                                                   "tests.targets.misbehaving:crashing"]
    assert {m["status"] for m in doc["mutants"]} == {"killed"} and doc["summary"]["score"] == 1.0
    assert [c["target"] for c in doc["controls"]] == ["reference"] and doc["summary"]["controls_ok"]
    table = (out / "mutation.md").read_text()
    assert "| `tests.targets.misbehaving:two_bugs` | external | mindformers | killed |" in table


def test_external_mutants_module_must_list_targets(tmp_path, capsys):
    from came_conformance import mutation

    with pytest.raises(SystemExit):
        mutation.main(["--targets", "tests.targets", "--out", str(tmp_path)])
    assert "TARGETS must list" in capsys.readouterr().err


def test_same_as_names_declared_deviations():
    """A mutant's ``same_as`` names entries of the built-in deviations files that declare exactly its bug
    (conformance/stacking.py): each id must exist, or stacking would count the absorption as a survivor."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "targets"
    declared = set()
    for path in root.glob("*/deviations.json"):
        doc = json.loads(path.read_text())
        declared |= {e["id"] for e in (doc["deviations"] if isinstance(doc, dict) else doc)}
    named = {i for m in catalogue.MUTANTS for i in m.same_as}
    assert named, "no mutant names the deviation that declares its bug"
    assert named <= declared, sorted(named - declared)
