"""Sharded ports (spec/came.md §9): layouts, the rank harness, its checks, the control and the mutants.

- CAME-SHARD-3: the canonical layouts cut and reassemble every shape, uneven, empty and padded;
- CAME-SHARD-1, CAME-SHARD-2: the sharded reference (``reference-dist``, real gloo ranks)
  conforms in every layout, world sizes 2 and 4;
- the harness: a dead rank and a hung collective cost one case, leave no process and no port;
- the checks can fail: a rank whose view disagrees (CAME-SHARD-2), a misplaced piece (CAME-SHARD-3);
- every sharding mutant is killed by a distributed case.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from came_conformance import report, runner
from came_conformance.distributed import layout
from came_conformance.distributed.harness import DistributedTargetProcess
from came_conformance.distributed.mutants import SHARDING_MUTANTS
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate
from came_conformance.reference.step import init_state, state_shapes

SHAPES = [(), (1,), (5,), (7,), (0,), (3, 4), (5, 3), (1, 5), (0, 3), (3, 0), (2, 3, 5), (2, 1, 3, 2)]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", SHAPES)
def test_layouts_cut_and_reassemble_every_shape(shape, world):
    """CAME-SHARD-3: pieces reassemble to the tensor; blocks differ by at most one; padding is zero."""
    full = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) + 1.0
    for kind in layout.LAYOUTS:
        if kind == "rows" and len(shape) < 2 or kind == "cols" and len(shape) < 1:
            continue
        pieces = [layout.shard(full, kind, world, r) for r in range(world)]
        assert np.array_equal(layout.assemble(pieces, kind, shape), full)
        if kind == "zero":
            assert len({p.size for p in pieces}) == 1
            assert sum(p.size for p in pieces) - full.size == layout.padding(full.size, world)
            assert np.all(np.concatenate(pieces)[full.size:] == 0.0)
        if kind in ("rows", "cols"):
            sizes = [p.shape[layout.split_axis(kind, len(shape))] for p in pieces]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_state_follows_the_parameter():
    """CAME-SHARD-3's table: statistics along the split axis are split, across it replicated."""
    s = (2, 5, 3)
    assert layout.state_layout("rows", s, "exp_avg_sq_row") == "cols"
    assert layout.state_layout("rows", s, "exp_avg_insta_col") == "replicated"
    assert layout.state_layout("cols", s, "exp_avg_sq_row") == "replicated"
    assert layout.state_layout("cols", s, "exp_avg_sq_col") == "cols"
    assert layout.state_layout("zero", s, "exp_avg_sq_col") == "replicated"
    assert layout.state_layout("zero", (7,), "exp_avg_sq") == "zero"
    for name, shape in state_shapes(s).items():  # every piece of every state tensor reassembles
        value = np.arange(int(np.prod(shape)), dtype=float).reshape(shape)
        kind = layout.state_layout("rows", s, name)
        assert np.array_equal(layout.assemble([layout.shard(value, kind, 4, r) for r in range(4)], kind, shape), value)


def test_owners_name_the_rank_that_holds_an_element():
    assert layout.owners("rows", (5, 3), "theta", [4, 0], 4) == [3]
    assert layout.owners("rows", (5, 3), "theta", [1, 2], 4) == [0]  # blocks 2, 1, 1, 1
    assert layout.owners("zero", (3, 3), "exp_avg", [2, 2], 2) == [1]  # piece length 5
    assert layout.owners("cols", (5, 3), "exp_avg_sq_row", [1], 2) == [0, 1]
    assert layout.parse_variant("zero-w4") == ("zero", 4)
    with pytest.raises(ValueError, match="<mode>-w<world size>"):
        layout.parse_variant("default")


def _run(tmp_path, target, variants, sources=("sharding",), **kw):
    cfg = runner.Settings(**{"examples": 4, "error_examples": 1, "sharding_examples": 8, "sources": sources,
                             "variants": tuple(variants), **kw})
    result = runner.run(target, tmp_path / "out", cfg, progress=lambda m: None)
    return result, report.write_all(result, tmp_path / "out")


def test_sharded_reference_conforms_in_every_layout(tmp_path):
    """CAME-SHARD-1, CAME-SHARD-2, CAME-SHARD-3: the control passes on 2 and 4 real gloo ranks."""
    variants = ("replicated-w2", "zero-w2", "rows-w2", "cols-w2", "zero-w4", "rows-w4", "cols-w4")
    result, summary = _run(tmp_path, "reference-dist", variants, sources=("sharding", "hypothesis"))
    assert summary["baseline"]["answer"] == "MATCHES" and summary["counts"]["fail"] == summary["counts"]["error"] == 0, \
        [r["reason"] for r in result["records"] if r["outcome"] != "pass"]
    sharded = [r for r in result["records"] if r["source"].startswith("hypothesis:sharding")]
    assert {r["variant"] for r in sharded} == set(variants)
    drawn = {lay for r in sharded for lay in r["case"]["layouts"]}
    assert drawn == {"replicated", "zero", "rows", "cols"}
    assert {s["world"] for s in result["rank_starts"]} == {2, 4}  # one group per world size, reused


def _children() -> list[int]:
    me, out = os.getpid(), []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == me and fields[0] != "Z":
                out.append(int(entry.name))
    return out


def _port_is_free(port: int) -> bool:
    """Nothing listens on it (connections of the dead group may linger in TIME_WAIT, which is no listener)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen(1)
        except OSError:
            return False
    return True


@pytest.mark.parametrize("target, expected", [("crashing_rank", "rank 1 of 2: the target process died"),
                                              ("hanging_rank", "did not answer within")])
def test_a_dead_or_hung_rank_costs_one_case_and_leaves_nothing_behind(tmp_path, target, expected):
    import sys

    process = DistributedTargetProcess(f"tests.targets.misbehaving_sharded:{target}", sys.executable, 20.0,
                                       tmp_path / "stderr.log")
    hp = Hyperparameters.defaults("mindformers", learning_rate=LearningRate.constant(0.01)).to_json()
    params = [np.ones((3, 4)), np.ones(4)]
    grads = [np.full((3, 4), 0.5), np.full(4, 0.25)]
    try:
        reply = process.call("open", hp, params, "float64", "rows-w2")
        assert reply[0] == "ok"
        port = process.groups[2].port
        with pytest.raises(runner.execute.TargetFailure, match=expected):
            for _ in range(3):
                assert process.call("step", reply[1], grads)[0] == "ok"
        assert process.groups == {} and _children() == [] and _port_is_free(port)
        again = process.call("open", hp, params, "float64", "rows-w2")  # a fresh group serves the next case
        assert again[0] == "ok" and process.call("step", again[1], grads)[0] == "ok"
    finally:
        process.kill()
    assert _children() == []


def test_a_crashing_rank_fails_one_case_and_the_run_goes_on(tmp_path):
    result, summary = _run(tmp_path, "tests.targets.misbehaving_sharded:crashing_rank", ("rows-w2",),
                           sources=("hypothesis", "errors"))
    errors = [r for r in result["records"] if r["outcome"] == "error"]
    assert errors and "rank 1 of 2" in errors[0]["reason"] and len(errors[0]["steps"]) == 2
    assert any(r["outcome"] == "pass" for r in result["records"] if r["kind"] == "error")  # the run went on
    assert summary["spec"]["answer"] == "DOES NOT CONFORM" and summary["baseline"]["answer"] == "CHANGED"


@pytest.mark.parametrize("target, clause", [("disagreeing", "CAME-SHARD-2"), ("misplaced", "CAME-SHARD-3")])
def test_rank_checks_catch_disagreement_and_misplaced_pieces(tmp_path, target, clause):
    result, _ = _run(tmp_path, f"tests.targets.misbehaving_sharded:{target}", ("rows-w2",), sources=())
    tier0 = result["records"][0]
    assert tier0["outcome"] == "fail" and tier0["first_divergence"]["clause"] == clause
    assert tier0["first_divergence"]["rank"] == 1 and "rank 1" in tier0["reason"]


@pytest.mark.parametrize("mutant", SHARDING_MUTANTS, ids=lambda m: m.name)
def test_every_sharding_mutant_is_killed_by_a_distributed_case(tmp_path, mutant):
    """CAME-SHARD-1, CAME-SHARD-3: the mistake shows in a case of the mutant's own layouts."""
    result, _ = _run(tmp_path, f"sharded-mutant:{mutant.name}", mutant.variants, stop_on_failure=True,
                     sharding_examples=25, shrink_calls=0)
    killed = [r for r in result["records"] if r["outcome"] in ("fail", "error")]
    assert killed, f"{mutant.name} survived"
    assert killed[0]["variant"] in mutant.variants


def test_deviations_match_a_layout_a_step_and_factoredness():
    """deviations.py's layout, step and factored keys select the failure point a sharded record names (CAME-SHARD-1)."""
    from came_conformance import deviations

    point = {"clause": "CAME-STEP-3", "tensor": "exp_avg_sq_col", "step": 2, "layout": "zero", "factored": True}
    record = {"outcome": "fail", "variant": "zero-w2", "kind": "trajectory", "clauses": [], "failures": [point]}
    base = {"id": "X", "clause": "CAME-SHARD-1", "summary": "s", "evidence": "e"}
    assert deviations.matches({**base, "match": {"layout": ["zero"], "factored": [True],
                                                 "divergence_step": [2, 3]}}, record)
    assert not deviations.matches({**base, "match": {"layout": ["rows"]}}, record)
    assert not deviations.matches({**base, "match": {"factored": [False]}}, record)
    assert not deviations.matches({**base, "match": {"divergence_step": [1]}}, record)


def test_the_matrix_has_a_column_per_layout():
    from came_conformance import matrix

    records = [{"id": f"c{i}", "kind": "trajectory", "variant": v, "outcome": o, "dtype": "float64", "steps": []}
               for i, (v, o) in enumerate([("zero-w2", "pass"), ("rows-w2", "fail"), ("rows-w2", "pass")])]
    doc = {"target": "t", "info": {"world_sizes": [2], "variants": ["zero-w2", "rows-w2"], "profile": "paper",
                                   "dtypes": ["float64"], "options": [], "api": "paper"},
           "settings": {"sources": ["hypothesis"], "full_run": True}, "records": records, "verdict": {}}
    columns = matrix.by_layout([doc, {"target": "single", "info": {}, "records": [], "verdict": {}}])
    assert [c["target"] for c in columns] == ["t/zero-w2", "t/rows-w2", "single"]
    assert columns[0]["verdict"]["spec"]["answer"] == "CONFORMS"
    assert columns[1]["verdict"]["spec"]["answer"] == "DOES NOT CONFORM" and columns[1]["verdict"]["baseline"]["answer"] == "CHANGED"
