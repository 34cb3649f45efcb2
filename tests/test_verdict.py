"""The verdict is earned (issues 9 and 15): two answers, evidence rules, no vacuous pass, exit codes."""
import json

import pytest

from came_conformance import report, runner, verdict
from came_conformance.__main__ import main as cli
from came_conformance.cases import InvalidCase, load_case_file

FAST = {"examples": 3, "error_examples": 1}


def _run(tmp_path, target, **kw):
    cfg = runner.Settings(**{**FAST, **kw})
    result = runner.run(target, tmp_path / "out", cfg, progress=lambda m: None)
    return result, report.write_all(result, tmp_path / "out")


def test_declining_every_numeric_case_is_inconclusive_not_conforms(tmp_path):
    """Issue 9 (1): a wrong optimizer that answers NotApplicable to every trajectory, tier 0 included."""
    _, v = _run(tmp_path, "tests.targets.evasive:declines_numbers")
    assert v["spec"]["answer"] == "INCONCLUSIVE" and v["baseline"]["answer"] == "INCONCLUSIVE"
    assert v["exit_code"] == 3 and v["counts"]["pass"] > 0  # its error cases passed: not enough
    units = {g["unit"] for g in v["evidence_gaps"]}
    assert {"numeric", "trajectory case"} <= units


def test_declining_all_but_tier0_is_inconclusive(tmp_path):
    """Issue 9 (1): tier 0 passes, everything else (the whole error contract included) is declined."""
    result, v = _run(tmp_path, "tests.targets.evasive:only_tier0", sources=runner.Settings.sources)
    assert any(r["id"] == "tier0" and r["outcome"] == "pass" for r in result["records"])
    assert v["spec"]["answer"] == "INCONCLUSIVE" and v["exit_code"] == 3
    rows = [g for g in v["evidence_gaps"] if g["unit"] == "error row"]
    assert len(rows) >= 20 and all(not g["declared"] for g in rows)


def test_a_declared_gap_keeps_the_baseline_never_the_spec_answer(tmp_path):
    path = tmp_path / "gaps.json"
    path.write_text(json.dumps({"deviations": [
        {"id": "G-NUMBERS", "clause": "CAME-HP-1", "summary": "declines numeric cases", "evidence": "test",
         "match": {"outcome": "not_applicable", "kind": ["trajectory"], "reason_contains": "prefers not"}}]}))
    cfg = runner.Settings(**FAST, deviations=str(path))
    result = runner.run("tests.targets.evasive:declines_numbers", tmp_path / "out", cfg, progress=lambda m: None)
    v = report.write_all(result, tmp_path / "out")
    assert v["spec"]["answer"] == "INCONCLUSIVE"  # a gap is never conformance
    # declared gaps cover the declined cases; the dtypes with no judged trajectory still cannot be declared away
    assert any(g["declared"] for g in v["evidence_gaps"]) and v["baseline"]["answer"] == "INCONCLUSIVE"


def test_a_resume_that_loses_everything_fails(tmp_path):
    """Issue 9 (2): restore() does nothing and read() returns no parameters: the resume checks fail."""
    result, v = _run(tmp_path, "tests.targets.evasive:forgetful_resume", sources=("resume",))
    resumes = [r for r in result["records"] if r["kind"] == "resume"]
    assert resumes and all(r["outcome"] == "fail" for r in resumes)
    assert "0 parameters" in resumes[0]["reason"]
    assert v["baseline"]["answer"] == "CHANGED" and v["exit_code"] == 1


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(grads=[]), "at least one step"),
    (lambda c: c.update(params=[], grads=[[] for _ in c["grads"]]), "at least one parameter"),
    (lambda c: c["hyperparameters"].update(beta1=float("nan")), "beta1"),
    (lambda c: c["hyperparameters"].update(eps1=0.0), "eps1"),
])
def test_crafted_case_files_are_refused_before_running(tmp_path, change, message):
    """Issue 9 (1): zero steps, zero parameters, NaN or out-of-range hyperparameters: exit 2, nothing written."""
    result, _ = _run(tmp_path / "src", "reference", sources=("hypothesis",), examples=1)
    case = json.loads(json.dumps(result["records"][0]["case"]))
    change(case)
    path = tmp_path / "case.json"
    path.write_text(report.dumps(case))
    with pytest.raises(InvalidCase, match=message):
        load_case_file(path)
    out = tmp_path / "never"
    assert cli(["run", "--target", "reference", "--case-file", str(path), "--out", str(out)]) == 2
    assert not out.exists()


def test_an_error_case_whose_match_names_nothing_is_refused(tmp_path):
    """A blank or unrelated ``match`` would let a message that names nothing pass (issue 10)."""
    case = {"kind": "error", "id": "x", "profile": "mindformers", "phase": "construction", "kwargs": {},
            "exception": "ValueError", "match": "", "clause": "CAME-ERR-10", "argument": "beta1", "grads": None,
            "source": "", "flags": []}
    path = tmp_path / "e.json"
    path.write_text(json.dumps(case))
    with pytest.raises(InvalidCase, match="match"):
        load_case_file(path)


def test_any_declared_deviation_means_does_not_conform():
    """Issue 15: a target whose every failure is declared MATCHES its baseline and still DOES NOT CONFORM."""
    records = [{"id": "a", "kind": "trajectory", "variant": "default", "outcome": "expected_deviation",
                "deviations": ["D-1"], "dtype": "float64", "clauses": ["CAME-STEP-6"],
                "failures": [{"clause": "CAME-STEP-6", "tensor": "exp_avg"}]},
               {"id": "b", "kind": "trajectory", "variant": "default", "outcome": "pass", "dtype": "float64",
                "clauses": ["CAME-STEP-6"]}]
    run = {"records": records, "info": {"dtypes": ["float64"], "variants": ["default"], "options": [],
                                        "api": "paper"},
           "settings": {"sources": ["fixtures"], "full_run": True}, "deviation_status":
               {"D-1": {"status": "observed", "observed": 1, "passed_in_scope": 1}},
           "declared_deviations": [{"id": "D-1", "match": {"kind": ["trajectory"]}}]}
    v = verdict.decide(run)
    assert v["spec"]["answer"] == "DOES NOT CONFORM" and "CONFORMS" != v["spec"]["answer"]
    assert v["baseline"]["answer"] == "MATCHES" and v["exit_code"] == 0
    assert "1 deviation (1 declared, 0 undeclared) touching CAME-STEP-6" in v["spec"]["text"]
    assert "1 of 2 judged cases failed (50 %)" in v["spec"]["text"]


def test_adafactor_presented_as_came_is_named_with_the_instability_clauses(tmp_path):
    """Issue 9: plain Adafactor behind an adapter fails CAME-STEP-7/8 too, not only the first equation."""
    result, v = _run(tmp_path, "mutant:plain-adafactor", sources=("fixtures",))
    clauses = {p["clause"] for r in result["records"] if r["outcome"] == "fail" for p in r["failures"]}
    assert {"CAME-STEP-6", "CAME-STEP-8", "CAME-STEP-12"} <= clauses
    assert "CAME-STEP-8" in v["spec"]["text"]


def test_no_declared_deviation_reads_as_conforms_anywhere(tmp_path):
    """Issue 15: console, summary.md, junit.xml and the matrix all say DOES NOT CONFORM for a target whose
    only failures are declared deviations, and MATCHES for its baseline."""
    from came_conformance import matrix

    path = tmp_path / "dev.json"
    path.write_text(json.dumps({"deviations": [
        {"id": "LR-LATE", "clause": "CAME-LR-3", "summary": "the sequence is read one step late", "evidence": "test",
         "match": {"kind": ["trajectory"], "variants": ["default"], "dtype": ["float64", "float32", "float16",
                   "bfloat16"], "divergence_clause": ["CAME-STEP-12"], "divergence_tensor": ["theta"],
                   "factored": [True, False], "divergence": ["value"], "requires_any": ["lr_sequence"]}},
        {"id": "LR-LATE-RUNS-OUT", "clause": "CAME-LR-3", "summary": "so the last step finds no value", "evidence": "test",
         "match": {"kind": ["trajectory"], "variants": ["default"], "dtype": ["float64", "float32", "float16",
                   "bfloat16"], "divergence_clause": ["CAME-STEP-1"], "divergence_tensor": [None], "factored": [None],
                   "divergence": ["raised"], "requires_any": ["lr_sequence"]}}]}))
    result = runner.run("mutant:lr-sequence-index-t", tmp_path / "out",
                        runner.Settings(**FAST, sources=("fixtures",), deviations=str(path)), progress=lambda m: None)
    v = report.write_all(result, tmp_path / "out")
    assert v["spec"]["answer"] == "DOES NOT CONFORM" and v["counts"]["expected_deviation"] > 0
    assert v["baseline"]["answer"] == "MATCHES"  # every failure point is one of the two declared signatures
    head = (tmp_path / "out" / "summary.md").read_text().splitlines()[2]
    assert head.startswith("**Spec: DOES NOT CONFORM**")
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    text, table = matrix.render([doc])
    assert "**DOES NOT CONFORM**" in text and table[doc["target"]]["verdict"]["spec"]["answer"] != "CONFORMS"


def test_a_half_precision_deviation_does_not_absorb_a_momentum_bug(tmp_path):
    """Issue 9 (4): with pytorch-optimizer's declared float16 deviations stacked on a port whose 1-D momentum
    is 100x too small, the bug is still seen, in float16 too, and the baseline is CHANGED."""
    from came_conformance import deviations, stacking

    entries = stacking.adapt(deviations.load(stacking.stackable_files()["pytorch-optimizer"]), ["default"])
    path = tmp_path / "stacked.json"
    path.write_text(json.dumps({"deviations": entries}))
    result = runner.run("tests.targets.evasive:small_vector_momentum", tmp_path / "out",
                        runner.Settings(**FAST, sources=("fixtures",), deviations=str(path)), progress=lambda m: None)
    v = report.write_all(result, tmp_path / "out")
    unexplained = [r for r in result["records"] if r["outcome"] == "fail"]
    assert v["baseline"]["answer"] == "CHANGED"
    assert {"float64", "float32", "float16", "bfloat16"} <= {r["dtype"] for r in unexplained}
    # the wrong first moment, and θ' judged from it: unfactored parameters only
    assert all(p["clause"] in ("CAME-STEP-6", "CAME-STEP-12") and p["factored"] is False
               for r in unexplained for p in r["failures"])


def test_failures_group_by_signature_with_the_smallest_case_first():
    """Issue 13: one group per signature; error cases (no gradients) and shrunk cases sort without fuss."""
    def traj(i, numel, shrunk):
        return {"id": f"t{i}", "kind": "trajectory", "variant": "v", "outcome": "fail", "dtype": "float32",
                "failures": [{"clause": "CAME-STEP-6", "tensor": "exp_avg", "factored": True, "divergence": "value"}],
                "hypothesis": {"shrunk": shrunk} if shrunk is not None else None,
                "case": {"params": [{"hex": ["0"] * numel}], "grads": [[]]}}
    err = {"id": "e", "kind": "error", "variant": "v", "outcome": "fail", "clauses": ["CAME-ERR-10"],
           "argument": "beta1", "category": "did not raise", "case": {"grads": None}}
    groups = verdict.failure_groups([traj(1, 12, None), traj(2, 30, True), traj(3, 4, None), err, dict(err, id="e2")])
    assert [g["count"] for g in groups] == [3, 2]  # numeric before the error contract
    assert groups[0]["representative"]["id"] == "t2"  # the shrunk counterexample first
    assert groups[1]["signatures"][0]["argument"] == "beta1"
