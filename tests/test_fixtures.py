"""The golden vectors (fixtures/): stored = regenerated, loadable without NumPy, reproduced by the reference.

Each test cites the clauses its vectors probe; fixtures/check.py verifies that the vectors
probe every clause the reference implements.
"""
from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from came_conformance.adapters.reference import ReferenceAdapter
from came_conformance.arguments import decode
from came_conformance.fixtures import check as fcheck
from came_conformance.fixtures import generate as gen
from came_conformance.fixtures.cases import load_cases, load_vectors
from came_conformance.fixtures.load import float_to_hex, read_raw
from came_conformance.reference.dtypes import round_to

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASES = load_vectors()
NUMERIC = [c for c in CASES if c.kind in ("trajectory", "api")]
ERRORS = [c for c in CASES if c.kind == "error"]


def hexes(a) -> list[str]:
    return [float_to_hex(x) for x in np.asarray(a, dtype=np.float64).reshape(-1).tolist()]


def test_check_passes():
    """``python -m came_conformance.fixtures.check``: schemas, ids, counts, regeneration (0 ulp) and clause coverage."""
    lines = []
    problems = fcheck.check(report=lines.append)
    assert not problems, "\n".join(lines)


def test_generation_is_deterministic_and_ids_stable():
    """Two generations give the same bytes; ids hash only the inputs, so they survive a change of expectations."""
    first, second = gen.build_all(), gen.build_all()
    assert first == second
    stored_ids = {t["id"] for path in _data_files() for t in read_raw(path)["tests"]}
    fresh_ids = {t["id"] for rel, text in first.items() if rel.startswith("data/") for t in json.loads(text)["tests"]}
    assert stored_ids == fresh_ids
    doc = read_raw(os.path.join(ROOT, "fixtures", "data", "came_paper_trajectory_test.json"))
    t = copy.deepcopy(doc["tests"][0])
    t["expected"][0]["params"][0]["values"][0] = "0000000000000000"
    t["comment"] = "changed"
    assert gen.content_id(gen.id_inputs("trajectory", "paper", t)) == t["id"]
    t["grads"][0][0]["values"][0] = "0000000000000000"
    assert gen.content_id(gen.id_inputs("trajectory", "paper", t)) != t["id"]


def _data_files():
    d = os.path.join(ROOT, "fixtures", "data")
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith("_test.json"))


def test_stdlib_loader_reads_every_file_without_numpy():
    """fixtures/load.py needs only the standard library: run it with site-packages disabled (-I -S)."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "try:\n"
        "    import numpy\n"
        "    print('NUMPY-IMPORTABLE'); sys.exit(2)\n"
        "except ImportError:\n"
        "    pass\n"
        "from fixtures import load\n"
        "out = {}\n"
        "for path in load.files():\n"
        "    doc = load.read(path)\n"
        "    n = 0\n"
        "    for t in load.iter_tests(path):\n"
        "        for e in t.get('expected', []):\n"
        "            for p in e['params']:\n"
        "                if isinstance(p, dict):  # a recipe vector's summary of a large tensor\n"
        "                    assert len(p['sha256']) == 64 and p['samples']\n"
        "                    continue\n"
        "                assert isinstance(p, load.Tensor) and len(p.values) == p.size\n"
        "                p.nested()\n"
        "        n += 1\n"
        "    out[path.rsplit('/', 1)[-1]] = [n, doc['numberOfTests']]\n"
        "assert 'numpy' not in sys.modules\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    counts = json.loads(proc.stdout)
    assert len(counts) == len(_data_files()) and all(n == m > 0 for n, m in counts.values())


def test_recipe_inputs_reproduce_with_the_standard_library():
    """fixtures/recipe.py defines the recipe inputs with the standard library only: under ``python -I -S`` it
    regenerates the parameters of every recipe vector up to 5000 elements and matches their stored SHA-256
    digests (the digests the NumPy path of the generator wrote), and the first gradients' too."""
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from fixtures import load, recipe\n"
        "checked = 0\n"
        "for path in load.files():\n"
        "    for t in load.read_raw(path)['tests']:\n"
        "        if 'recipe' not in t:\n"
        "            continue\n"
        "        r = recipe.Recipe.from_json(t['recipe'])\n"
        "        for i, shape in enumerate(r.shapes):\n"
        "            n = 1\n"
        "            for d in shape:\n"
        "                n *= d\n"
        "            if n > 5000:\n"
        "                continue\n"
        "            assert recipe.summary(r.param_values(i), shape) == t['inputs']['params'][i], (path, i)\n"
        "            assert recipe.summary(r.grad_values(1, i), shape) == t['inputs']['gradsStep1'][i], (path, i)\n"
        "            checked += 1\n"
        "assert 'numpy' not in sys.modules\n"
        "print(checked)\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert int(proc.stdout) >= 6


def test_recipe_numpy_path_is_the_standard_library_path_bit_for_bit():
    """fixtures.recipe: the vectorised generator and summary give the stdlib definition's bits (CAME-DEF-4 inputs)."""
    from came_conformance.fixtures import recipe

    r = recipe.Recipe("test/bits", 24, ((3, 7), (1025,)), 2, -3, (2, -7))
    for i, shape in enumerate(r.shapes):
        assert r.params()[i].ravel().tolist() == r.param_values(i)
        assert r.gradients()[1][i].ravel().tolist() == r.grad_values(2, i)
        assert recipe.summary(r.param_values(i), shape) == recipe.summary_of_array(r.params()[i])
    a = r.params()[1]
    assert np.array_equal(a, round_to("float32", a)) and 0 < np.min(np.abs(a)) and np.max(np.abs(a)) < 2.0 ** -3
    assert np.array_equal(recipe.array("test/bits", (5,), 8, 0), round_to("bfloat16", recipe.array("test/bits", (5,), 8, 0)))


def test_loader_decodes():
    """Hex floats, tensors of every rank, NaN canonical (CAME-NONFINITE-1)."""
    from came_conformance.fixtures.load import Tensor, decode_tensor, hex_to_float

    assert hex_to_float("3fb999999999999a") == 0.1
    assert float_to_hex(-0.0) == "8000000000000000"
    assert float_to_hex(float("nan")) == float_to_hex(-float("nan")) == "7ff8000000000000"
    assert decode_tensor({"shape": [], "values": ["4000000000000000"]}).nested() == 2.0
    assert decode_tensor({"shape": [0, 3], "values": []}).nested() == []
    t = Tensor((2, 1, 3), [float(i) for i in range(6)])
    assert t.nested() == [[[0.0, 1.0, 2.0]], [[3.0, 4.0, 5.0]]]
    with pytest.raises(ValueError):
        decode_tensor({"shape": [2], "values": ["4000000000000000"]})


@pytest.mark.parametrize("case", NUMERIC, ids=[c.pytest_id for c in NUMERIC])
def test_reference_reproduces_vector(case):
    """The reference adapter reproduces every trajectory and api vector bit for bit.

    Clauses probed by these vectors: CAME-DEF-1 CAME-DEF-2 CAME-DEF-3, CAME-STATE-1 CAME-STATE-2
    CAME-STATE-3 CAME-STATE-4 CAME-STATE-5, CAME-STEP-1 CAME-STEP-2 CAME-STEP-3 CAME-STEP-3V
    CAME-STEP-4 CAME-STEP-4V CAME-STEP-5 CAME-STEP-6 CAME-STEP-7 CAME-STEP-8 CAME-STEP-9 CAME-STEP-9V
    CAME-STEP-10 CAME-STEP-11 CAME-STEP-12, CAME-ZERO-1, CAME-NONFINITE-1, CAME-LR-1 CAME-LR-2
    CAME-LR-3 CAME-LR-4 CAME-LR-5, CAME-BETA2-1 CAME-BETA2-2, CAME-HP-1 CAME-HP-2 CAME-HP-3 CAME-HP-4,
    CAME-GROUP-1, CAME-OPT-1 CAME-OPT-2 CAME-OPT-3 CAME-OPT-4 CAME-OPT-5, CAME-DTYPE-1 CAME-DTYPE-2
    CAME-DTYPE-3, CAME-ERRATUM-2 CAME-ERRATUM-6 CAME-ERRATUM-7.
    """
    adapter = ReferenceAdapter(case.profile)
    if case.kind == "api":
        session = adapter.construct(decode(copy.deepcopy(case.kwargs), adapter.native()), "default")
        assert session.optim.hp == case.hp  # CAME-HP-4: documented arguments -> canonical hyperparameters
        assert [hexes(p) for p in session.read().params] == [hexes(p) for p in case.params]
    else:
        for p in case.params:  # inputs are exact in the vector's dtype (CAME-DTYPE-2)
            assert hexes(p) == hexes(round_to(case.dtype, p))
        if case.start is None:
            session = adapter.open(case.hp, [p.copy() for p in case.params], case.dtype, "default")
        else:  # CAME-STATE-6: a mid-run vector opens at its step counter with its state
            session = adapter.open_at(case.hp, [p.copy() for p in case.params], case.start[1], case.start[0],
                                      case.dtype, "default")
    for grads, (step, params, state) in zip(case.grads, case.expected):
        session.step([g.copy() for g in grads])
        snap = session.read()
        assert snap.step == step
        for i, (got, want) in enumerate(zip(snap.params, params)):
            assert got.shape == want.shape and hexes(got) == hexes(want), f"step {step} params[{i}]"
        for i, (got, want) in enumerate(zip(snap.state, state)):
            assert sorted(got) == sorted(want), f"step {step} state[{i}] names"
            for name in want:
                assert got[name].shape == want[name].shape, f"step {step} state[{i}].{name} shape"
                assert hexes(got[name]) == hexes(want[name]), f"step {step} state[{i}].{name}"


@pytest.mark.parametrize("case", ERRORS, ids=[c.pytest_id for c in ERRORS])
def test_error_vector_raises_on_reference(case):
    """Every error vector raises exactly its exception, with a message naming the argument, on the reference front.

    Clauses: CAME-ERR-1 CAME-ERR-2 CAME-ERR-3 CAME-ERR-4 CAME-ERR-5 CAME-ERR-6 CAME-ERR-7 CAME-ERR-8
    CAME-ERR-9 CAME-ERR-10 CAME-ERR-11 CAME-ERR-12 CAME-ERR-13 CAME-ERR-14 CAME-ERR-15 CAME-ERR-16
    CAME-ERR-17 CAME-ERR-18 CAME-ERR-19 CAME-ERR-20 CAME-ERR-21 CAME-ERR-22 CAME-ERR-23 CAME-ERR-24
    CAME-ERR-25 CAME-ERR-26 CAME-ERR-27 CAME-ERR-28 CAME-ERR-S1 CAME-ERR-S2 CAME-ERR-S3 CAME-ERR-S4
    CAME-ERR-S5 (after valid steps, changing nothing: CAME-ERR-A1); errata CAME-ERRATUM-1 CAME-ERRATUM-2
    CAME-ERRATUM-3 CAME-ERRATUM-4 CAME-ERRATUM-5 CAME-ERRATUM-6.
    """
    adapter = ReferenceAdapter(case.profile)
    hooks = adapter.native()
    kwargs = decode(copy.deepcopy(case.kwargs), hooks)
    expected = {"TypeError": TypeError, "ValueError": ValueError}[case.error["exception"]]
    with pytest.raises(Exception) as info:
        if case.error["phase"] == "construction":
            adapter.construct(kwargs, "default")
        else:
            session = adapter.construct(kwargs, "default")
            for valid in case.grads_before or ():  # CAME-ERR-A1, CAME-ERR-S5: the valid steps first
                session.step(decode(copy.deepcopy(valid), hooks))
            before = session.read()
            session.step(decode(copy.deepcopy(case.grads), hooks))
    if case.error["phase"] == "step":  # CAME-ERR-A1: nothing changed
        after = session.read()
        assert after.step == before.step == len(case.grads_before or ())
        assert all(hexes(a) == hexes(b) for a, b in zip(after.params, before.params))
        assert all(hexes(a[k]) == hexes(b[k]) for a, b in zip(after.state, before.state) for k in a)
    assert type(info.value) is expected, repr(info.value)
    assert re.search(case.error["match"], str(info.value)), str(info.value)
    assert case.error["clause"] in case.clauses


def test_error_vector_base_call_is_valid():
    """Each error vector changes one argument of a call that succeeds (CAME-HP-2, CAME-HP-3)."""
    from came_conformance.fixtures import catalogue

    for profile in gen.PROFILES:
        gen.check_base_kwargs(profile)
        assert catalogue.base_kwargs(profile)["params"]


def _schemas():
    return {name: read_raw(os.path.join(ROOT, "fixtures", "schema", name))
            for name in os.listdir(os.path.join(ROOT, "fixtures", "schema"))}


@pytest.mark.parametrize("name", ["came_mindformers_trajectory_test.json", "came_paper_api_test.json",
                                  "came_mindformers_errors_test.json"])
def test_schema_rejects_unknown_and_missing_fields(name):
    """additionalProperties: false and required, at file, vector, tensor and hyperparameter level."""
    doc = read_raw(os.path.join(ROOT, "fixtures", "data", name))
    step_tests = [t for t in doc["tests"] if t.get("phase") == "step"]
    doc["tests"] = doc["tests"][:2] + step_tests[:1]  # the schema does not count; keep validation fast
    schemas = _schemas()
    assert fcheck.validate_schema({name: doc}, schemas) == []

    def bad(mutate):
        d = copy.deepcopy(doc)
        mutate(d)
        return fcheck.validate_schema({name: d}, schemas)

    assert bad(lambda d: d.update(extra=1))
    assert bad(lambda d: d["tests"][0].update(extra=1))
    assert bad(lambda d: d.pop("numberOfTests"))
    assert bad(lambda d: d["tests"][0].pop("id"))
    assert bad(lambda d: d["tests"][0].pop("flags"))
    assert bad(lambda d: d["tests"][0]["flags"].append("NotAFlag"))
    if "errors" in name:
        assert bad(lambda d: d["tests"][0].pop("exception"))
        assert bad(lambda d: d["tests"][0].update(grads=[]))  # construction-phase vectors have no grads
        step = next(i for i, t in enumerate(doc["tests"]) if t["phase"] == "step")
        assert bad(lambda d: d["tests"][step].pop("grads"))
    else:
        assert bad(lambda d: d["tests"][0]["params"][0].update(dtype="float64"))
        assert bad(lambda d: d["tests"][0]["params"][0]["values"].append("0.1"))
        assert bad(lambda d: d["tests"][0]["hyperparameters"].pop("beta1"))
        assert bad(lambda d: d["tests"][0]["hyperparameters"].update(lr="3f50624dd2f1a9fc"))
        assert bad(lambda d: d["tests"][0]["expected"][0]["state"][0].update(exp_avg_res_row=
                                                                            d["tests"][0]["params"][0]))


def test_check_reports_ulps_per_tensor_and_step():
    """A changed expected value is reported with the vector id, step, tensor and its distance in ulps."""
    name = "came_mindformers_trajectory_test.json"
    stored = {name: read_raw(os.path.join(ROOT, "fixtures", "data", name))}
    fresh = copy.deepcopy(stored)
    t = stored[name]["tests"][1]
    v = t["expected"][2]["state"][0]["exp_avg"]["values"]
    v[0] = format(int(v[0], 16) + 3, "016x")
    problems = fcheck.compare(stored, fresh, lambda s: None)
    assert problems == [f"{name} {t['id']}: step 3 state[0].exp_avg: max 3 ulp"]
    assert fcheck.ulps("0000000000000000", "8000000000000000") == 0
    assert fcheck.ulps("0000000000000001", "8000000000000001") == 2
    assert fcheck.ulps("7ff8000000000000", "fff8000000000001") == 0


def test_every_error_clause_has_an_error_vector():
    """Every error-contract row of reference/contract.py, for each of its profiles (CAME-ERR-1 … CAME-ERR-23, CAME-ERR-S1 … CAME-ERR-S3)."""
    from came_conformance.reference import contract

    have = {(c.profile, c.error["clause"]) for c in ERRORS}
    for row in contract.CLAUSES:
        for profile in row.profiles:
            assert (profile, row.id) in have, (profile, row.id)


def test_profiles_and_options_covered():
    """Both profiles, every option, every shape family and dtype appear among the vectors."""
    flags = {f for c in NUMERIC for f in c.flags}
    for f in ("Rank0", "Vector1D", "Matrix", "HigherRank", "SizeOneAxis", "ZeroSize", "ClipActive", "ClipInactive",
              "EpsDominated", "ZeroGradient", "NonFinite", "WeightDecay", "ScaleParameter", "ParamScaleFloor",
              "RelativeStep", "WarmupInit", "Compression", "LossScale", "ParamGroups", "LrSequence", "LrSchedule",
              "Beta1Zero", "LowPrecision", "MultiParam", "NonFiniteParam", "MidRun", "CounterLimit", "LrCrossover"):
        assert f in flags, f
    recipe_flags = {f for c in CASES if c.kind == "recipe" for f in c.flags}
    assert {"TileLengths", "RealisticLayer", "LongHorizon", "LrCrossover", "CounterLimit"} <= recipe_flags
    assert {c.profile for c in NUMERIC} == {c.profile for c in ERRORS} == {"paper", "mindformers"}
    assert {c.dtype for c in NUMERIC} == {"float64", "float32", "float16", "bfloat16"}
    assert all(len(c.grads) >= 7 for c in NUMERIC if c.kind == "trajectory" and c.family not in ("nonfinite", "midrun"))
    # CAME-STATE-6: mid-run vectors start just before 2048, 2^24 and 10^4, and end at 2^31 - 1
    starts = {c.start[0] + len(c.grads) for c in NUMERIC if c.start}
    assert {2049, 2 ** 24 + 1, 2 ** 31 - 1, 10_001} <= starts
    assert max(c.recipe["steps"] for c in CASES if c.kind == "recipe") > 10 ** 4


def test_runner_cases():
    """fixtures.cases.load_cases gives the runner TrajectoryCase/ErrorCase objects equal to the vectors."""
    for profile in ("paper", "mindformers"):
        cases = load_cases(profile)
        traj = [v for v in NUMERIC if v.kind == "trajectory" and v.profile == profile]
        assert [c.id for c in cases["trajectory"] if c.kwargs is None] == [v.id for v in traj]
        api = [c for c in cases["trajectory"] if c.kwargs is not None]
        assert {c.id for c in api} == {v.id for v in NUMERIC if v.kind == "api"}
        assert all(c.dtype == "float32" for c in api)  # constructor-made parameters (adapter protocol)
        assert {c.id for c in cases["error"]} == {v.id for v in ERRORS}
        for c, v in zip([c for c in cases["trajectory"] if c.kwargs is None], traj):
            assert c.hp == v.hp and c.dtype == v.dtype and len(c.grads) == len(c.expected) == len(v.grads)
            assert c.start_step == (v.start[0] if v.start else 0) and (c.start_state is None) == (v.start is None)
        for family in ("scale", "horizon"):  # recipe vectors: their own runner tiers
            assert [c.id for c in cases[family]] == [v.id for v in CASES if v.kind == "recipe"
                                                      and v.family == family and v.profile == profile]
        assert {c.id for c in load_cases(profile, api=profile)["error"]} == \
            {v.id for v in ERRORS if v.profile == profile}


def test_captured_cases_regenerate_and_bad_captures_are_refused():
    """``python -m came_conformance.fixtures.add`` keeps runner cases (CAME-ZERO-1 regression from came-pytorch) and
    refuses a case the reference contradicts."""
    stored = {t["id"]: t for path in _data_files() for t in read_raw(path)["tests"]}
    kept = gen.captured()
    assert kept
    for obj in kept:
        _, _, vector = gen.captured_vector(obj)
        assert stored[vector["id"]] == vector
    wrong = {"kind": "error", "id": "h-x", "profile": "paper", "phase": "construction", "clause": "CAME-ERR-11",
             "argument": "clip_threshold", "exception": "TypeError", "match": r"\bclip_threshold\b", "grads": None,
             "kwargs": {"params": [{"$param": [2]}], "lr": 0.01, "clip_threshold": 2.0}, "flags": [], "source": "t"}
    with pytest.raises(gen.GenerationError, match="no exception"):
        gen.captured_vector(wrong)
    inexact = {"kind": "trajectory", "id": "h-y", "profile": "paper", "dtype": "float16", "flags": [],
               "clauses": [], "source": "t", "hyperparameters": gen.Hyperparameters.defaults("paper").to_json(),
               "params": [{"shape": [1], "hex": [float_to_hex(0.1)]}],
               "grads": [[{"shape": [1], "hex": [float_to_hex(0.5)]}]]}
    with pytest.raises(gen.GenerationError, match="not exact in float16"):
        gen.captured_vector(inexact)
