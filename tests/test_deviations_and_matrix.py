"""Deviation matching and the compliance-matrix attribution (CAME-STEP-3, CAME-STEP-9, CAME-ERR-10)."""
from came_conformance import deviations, matrix


def _fail(clause, variant="graph", kind="trajectory", **extra):
    return {"id": f"c-{clause}-{variant}", "kind": kind, "variant": variant, "outcome": "fail", "flags": [],
            "clauses": [clause] if kind == "error" else [], "dtype": "float64", "requires": [],
            "first_divergence": {"step": 1, "clause": clause, "tensor": "theta"} if kind == "trajectory" else None,
            **extra}


DEVIATION = {"id": "X-1", "clause": "CAME-STEP-9", "summary": "s", "evidence": "e",
             "match": {"variants": ["graph"], "divergence_clause": ["CAME-STEP-9"]}}


def test_a_matching_failure_becomes_an_expected_deviation():
    records = [_fail("CAME-STEP-9"), _fail("CAME-STEP-9", variant="pynative"), _fail("CAME-STEP-3")]
    unobserved = deviations.apply([DEVIATION], records)
    assert unobserved == []
    assert [r["outcome"] for r in records] == ["expected_deviation", "fail", "fail"]
    assert records[0]["deviation"] == "X-1" and records[0]["observed_outcome"] == "fail"


def test_a_deviation_that_explains_nothing_is_reported():
    assert deviations.apply([DEVIATION], [_fail("CAME-STEP-3")]) == [DEVIATION]


def test_passes_are_never_turned_into_deviations():
    record = {**_fail("CAME-STEP-9"), "outcome": "pass"}
    deviations.apply([DEVIATION], [record])
    assert record["outcome"] == "pass"


def test_error_records_match_on_clause_argument_and_category():
    dev = {"id": "E-1", "clause": "CAME-ERR-10", "summary": "s", "evidence": "e",
           "match": {"kind": ["error"], "error_clause": ["CAME-ERR-10"], "category": ["did not raise"]}}
    hit = _fail("CAME-ERR-10", kind="error", category="did not raise", argument="beta1")
    miss = _fail("CAME-ERR-10", kind="error", category="raised another type", argument="beta1")
    deviations.apply([dev], [hit, miss])
    assert hit["outcome"] == "expected_deviation" and miss["outcome"] == "fail"


def test_matrix_attributes_failures_to_the_family_of_their_first_divergence():
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
    assert cells["error contract"]["status"] == "conforms"
    assert cells["weight decay"]["status"] == "conforms" and cells["clipping"]["status"] == "conforms"
    assert cells["low precision"]["status"] == "n/a"
