"""Deviation matching by signature and the compliance-matrix attribution (CAME-STEP-3, CAME-STEP-9, CAME-ERR-10)."""
import json

import pytest

from came_conformance import deviations, matrix


def _fail(clause, variant="graph", kind="trajectory", tensor="theta", factored=True, divergence="value",
          **extra):
    point = {"step": 1, "clause": clause, "tensor": tensor, "factored": factored, "divergence": divergence}
    return {"id": f"c-{clause}-{variant}", "kind": kind, "variant": variant, "outcome": "fail", "flags": [],
            "clauses": [clause] if kind == "error" else [], "dtype": "float64", "requires": [],
            "first_divergence": point if kind == "trajectory" else None,
            "failures": [point] if kind == "trajectory" else None, **extra}


SIGNATURE = {"kind": ["trajectory"], "variants": ["graph"], "dtype": ["float64"], "divergence_clause": ["CAME-STEP-9"],
             "divergence_tensor": ["theta"], "factored": [True]}
DEVIATION = {"id": "X-1", "clause": "CAME-STEP-9", "summary": "s", "evidence": "e", "match": SIGNATURE}


def _write(tmp_path, *entries):
    path = tmp_path / "deviations.json"
    path.write_text(json.dumps({"target": "t", "deviations": list(entries)}))
    return path


def test_a_matching_failure_becomes_an_expected_deviation():
    records = [_fail("CAME-STEP-9"), _fail("CAME-STEP-9", variant="pynative"), _fail("CAME-STEP-3")]
    status = deviations.apply([DEVIATION], records)
    assert status["X-1"]["status"] == "observed" and status["X-1"]["observed"] == 1
    assert [r["outcome"] for r in records] == ["expected_deviation", "fail", "fail"]
    assert records[0]["deviation"] == "X-1" and records[0]["observed_outcome"] == "fail"


def test_the_signature_decides_not_the_clause_alone():
    """Issue 9: a finite wrong value of an unfactored parameter is not a declared NaN of a factored one."""
    nan_dev = {**DEVIATION, "match": {**SIGNATURE, "divergence": ["nan"]}}
    assert deviations.explain([nan_dev], _fail("CAME-STEP-9", divergence="nan")) == ["X-1"]
    assert deviations.explain([nan_dev], _fail("CAME-STEP-9", divergence="value")) is None
    assert deviations.explain([DEVIATION], _fail("CAME-STEP-9", factored=False)) is None
    assert deviations.explain([DEVIATION], _fail("CAME-STEP-9", tensor="exp_avg")) is None
    assert deviations.explain([DEVIATION], {**_fail("CAME-STEP-9"), "dtype": "float16"}) is None


def test_every_failure_point_must_be_explained():
    record = _fail("CAME-STEP-9")
    record["failures"].append({"step": 1, "clause": "CAME-STEP-8", "tensor": "exp_avg_insta_row", "factored": True,
                               "divergence": "value"})
    assert deviations.explain([DEVIATION], record) is None


def test_a_clause_alone_is_refused_at_load(tmp_path):
    with pytest.raises(deviations.DeviationsFileError, match="signature"):
        deviations.load(_write(tmp_path, {**DEVIATION, "match": {"divergence_clause": ["CAME-STEP-9"]}}))
    with pytest.raises(deviations.DeviationsFileError, match="not lists"):
        deviations.load(_write(tmp_path, {**DEVIATION, "match": {**SIGNATURE, "dtype": "float64"}}))
    with pytest.raises(deviations.DeviationsFileError, match="declared twice"):
        deviations.load(_write(tmp_path, DEVIATION, DEVIATION))
    assert deviations.load(_write(tmp_path, DEVIATION)) == [DEVIATION]


def test_refuted_only_when_cases_in_scope_ran_and_passed():
    passed = {**_fail("CAME-STEP-9"), "outcome": "pass", "failures": None, "first_divergence": None}
    assert deviations.apply([DEVIATION], [_fail("CAME-STEP-3")])["X-1"]["status"] == "unverified"
    assert deviations.apply([DEVIATION], [passed])["X-1"]["status"] == "refuted"
    masked = {**passed, "variant": "pynative"}  # out of the deviation's scope: says nothing about it
    assert deviations.apply([DEVIATION], [masked])["X-1"]["status"] == "unverified"


def test_passes_are_never_turned_into_deviations():
    record = {**_fail("CAME-STEP-9"), "outcome": "pass"}
    deviations.apply([DEVIATION], [record])
    assert record["outcome"] == "pass"


def test_error_records_match_on_clause_argument_and_category():
    dev = {"id": "E-1", "clause": "CAME-ERR-10", "summary": "s", "evidence": "e",
           "match": {"kind": ["error"], "error_clause": ["CAME-ERR-10"], "argument": ["beta1"],
                     "category": ["did not raise"]}}
    hit = _fail("CAME-ERR-10", kind="error", category="did not raise", argument="beta1")
    miss = _fail("CAME-ERR-10", kind="error", category="raised another type", argument="beta1")
    deviations.apply([dev], [hit, miss])
    assert hit["outcome"] == "expected_deviation" and miss["outcome"] == "fail"


def test_declared_gaps_explain_only_what_the_target_declined():
    gap = {"id": "G-1", "clause": "CAME-ERR-S1", "summary": "s", "evidence": "e",
           "match": {"outcome": "not_applicable", "kind": ["error"], "error_clause": ["CAME-ERR-S1"]}}
    declined = {"id": "e1", "kind": "error", "variant": "default", "outcome": "not_applicable", "clauses": ["CAME-ERR-S1"],
                "na_source": "target", "reason": "no gradient list", "flags": [], "requires": []}
    undeclared = {**declined, "na_source": "declaration"}
    other = {**declined, "clauses": ["CAME-ERR-S2"]}
    deviations.apply([gap], [declined, undeclared, other])
    assert [r["outcome"] for r in (declined, undeclared, other)] == ["declared_gap", "not_applicable",
                                                                     "not_applicable"]


def test_matrix_attributes_failures_to_the_families_of_their_failing_clauses():
    assert matrix.family_of_clause("CAME-STEP-3V") == "second moment"
    assert matrix.family_of_clause("CAME-STEP-12") == "confidence update"
    assert matrix.family_of_clause("CAME-STEP-1") == "options"
    assert matrix.family_of_clause("CAME-ERR-S2") == "error contract"
    doc = {"info": {"profile": "paper"}, "records": [
        {**_fail("CAME-STEP-9"), "outcome": "expected_deviation", "deviation": "X-1"},
        {**_fail("CAME-ERR-10", kind="error"), "outcome": "pass"},
        {"kind": "trajectory", "outcome": "pass", "dtype": "float64", "requires": ["weight_decay"],
         "regimes": ["clip_active"], "steps": [{"step": 1, "per_step": {"0.exp_avg": {}, "0.theta": {}}}]},
    ]}
    cells = matrix.cells(doc)
    assert cells["confidence update"]["status"] == "deviates" and cells["confidence update"]["deviations"] == ["X-1"]
    assert cells["error contract"]["status"] == "pass"
    assert cells["weight decay"]["status"] == "pass" and cells["clipping"]["status"] == "pass"
    assert cells["low precision"]["status"] == "not covered"


def test_matrix_attributes_every_failing_clause():
    """Issue 9: a port failing the first moment and the instability statistics deviates in both families."""
    record = _fail("CAME-STEP-6", tensor="exp_avg")
    record["failures"].append({"step": 1, "clause": "CAME-STEP-8", "tensor": "exp_avg_insta_row", "factored": True,
                               "divergence": "value"})
    fams = matrix.families_of(record, "paper")
    assert {"first moment", "instability"} <= fams
