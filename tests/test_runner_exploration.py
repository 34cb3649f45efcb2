"""Exploration past the first failure, per-variant declarations, loud declarations (README "Adapter protocol")."""
import json
from collections import Counter

from came_conformance import deviations, report, runner


def _run(tmp_path, target, **kw):
    cfg = runner.Settings(**{"examples": 25, "error_examples": 2, "sources": ("hypothesis",), **kw})
    result = runner.run(target, tmp_path / "out", cfg, progress=lambda m: None)
    report.write_all(result, tmp_path / "out")
    return result


def _signatures(result, shrunk):
    return Counter(deviations.signature_key(r, p) for r in result["records"] if r.get("hypothesis", {}).get("shrunk") is shrunk
                   for p in deviations.unexplained([], r))


def test_hypothesis_reports_each_signature_once_past_the_first_failure(tmp_path):
    """Two independent bugs: both are found, each signature is shrunk once (CAME-STEP-6, CAME-STEP-12).

    Before, the first failure ended the property, so the second bug was never reported."""
    result = _run(tmp_path, "tests.targets.misbehaving:two_bugs", examples=40)  # seed 0 reaches both in 40
    shrunk = _signatures(result, True)
    tensors = {(dict(sig)["tensor"], dict(sig)["dtype"]) for sig in shrunk}
    assert ("exp_avg", "float16") in tensors and ("theta", "float64") in tensors, tensors
    # a shrunk record reports at least one signature no earlier shrunk record had
    reported = set()
    for r in result["records"]:
        if r.get("hypothesis", {}).get("shrunk"):
            sigs = {deviations.signature_key(r, p) for p in deviations.unexplained([], r)}
            assert sigs - reported, r["id"]
            reported |= sigs
    # every drawn case is recorded once; a failure whose signatures were all reported is marked unshrunk
    ids = [r["id"] for r in result["records"]]
    assert len(ids) == len(set(ids))
    assert set(_signatures(result, False)) <= reported


def test_exploration_stops_at_the_signature_limit(tmp_path):
    result = _run(tmp_path, "tests.targets.misbehaving:two_bugs", signatures=1)
    assert len([r for r in result["records"] if r.get("hypothesis", {}).get("shrunk")]) == 1


def test_options_and_dtypes_per_variant(tmp_path):
    """The narrow variant is asked only for float32 and no groups (the target asserts it in open())."""
    result = _run(tmp_path, "tests.targets.misbehaving:narrow", sources=("fixtures", "hypothesis"), examples=10)
    narrow = [r for r in result["records"] if r["variant"] == "narrow"]
    assert narrow and not [r for r in narrow if r["outcome"] in ("fail", "error")], \
        [r["reason"] for r in narrow if r["outcome"] in ("fail", "error")][:3]
    ran = [r for r in narrow if r["outcome"] == "pass"]
    assert {r["dtype"] for r in ran} == {"float32"}
    assert all("groups" not in r.get("requires", ()) for r in ran)
    assert any(r["outcome"] == "not_applicable" and "groups" in r["reason"] for r in narrow)
    wide = {r["dtype"] for r in result["records"] if r["variant"] == "wide" and r["outcome"] == "pass"}
    assert {"float64", "float16"} <= wide


def test_a_target_without_float32_is_told_it_loses_the_api_vectors(tmp_path):
    result = _run(tmp_path, "tests.targets.misbehaving:float64_only", sources=("fixtures",))
    assert result["warnings"] and "api vectors" in result["warnings"][0]
    assert "**Warning:**" in (tmp_path / "out" / "summary.md").read_text()
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["warnings"] == result["warnings"]


def test_an_invalid_declaration_is_refused(tmp_path):
    result = _run(tmp_path, "tests.targets.misbehaving:bad_declaration")
    assert [r["kind"] for r in result["records"]] == ["load"]
    assert "no-such-variant" in result["records"][0]["reason"]
