"""The conformance runner itself: verdicts, robustness, reproducibility, reports."""
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from came_conformance import report, runner
from came_conformance.reference.contract import clauses_for

ROOT = Path(__file__).resolve().parent.parent
HYPOTHESIS_ONLY = ("hypothesis", "hypothesis-errors")


def _run(tmp_path, target, **kw):
    cfg = runner.Settings(**{"examples": 6, "error_examples": 2, "sources": HYPOTHESIS_ONLY, **kw})
    result = runner.run(target, tmp_path / "out", cfg, progress=lambda m: None)
    summary = report.write_all(result, tmp_path / "out")
    return result, summary


def test_reference_passes_everything(tmp_path):
    """CAME-STEP-1 … CAME-STEP-12 through the runner: the reference conforms to itself (a full run)."""
    result, summary = _run(tmp_path, "reference", sources=runner.Settings.sources)
    assert summary["spec"]["answer"] == "CONFORMS" and summary["baseline"]["answer"] == "MATCHES", summary
    assert summary["exit_code"] == 0 and not summary["evidence_gaps"]
    assert summary["counts"]["fail"] == summary["counts"]["error"] == 0
    kinds = {r["kind"] for r in result["records"]}
    assert kinds == {"trajectory", "error", "resume", "atomic", "return"}  # CAME-ERR-A1, CAME-RETURN-1
    # every error clause of the mindformers API with a strategy was exercised
    exercised = {r["clauses"][0] for r in result["records"] if r["kind"] == "error"}
    assert {"CAME-ERR-3", "CAME-ERR-10", "CAME-ERR-7", "CAME-ERR-12"} <= exercised
    assert exercised <= {c.id for c in clauses_for("mindformers")}


def test_reports_are_valid_and_complete(tmp_path):
    result, _ = _run(tmp_path, "reference-paper")
    out = tmp_path / "out"
    doc = json.loads((out / "report.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    schema = json.loads((report.SCHEMA_PATH).read_text())
    jsonschema.validate(doc, schema)
    assert len(doc["records"]) == len(result["records"]) == len((out / "records.jsonl").read_text().splitlines())
    suite = ET.parse(out / "junit.xml").getroot()
    assert int(suite.get("tests")) == len(doc["records"]) + 1  # and the verdict itself, as one test case
    verdict_case = suite.find("testcase[@name='verdict']")
    assert verdict_case is not None and (verdict_case.find("failure") is None) == (
        doc["verdict"]["baseline"]["answer"] == "MATCHES")
    assert (out / "summary.md").read_text().splitlines()[2].startswith("**Spec: ")


def test_same_seed_same_cases_and_verdicts(tmp_path):
    a, _ = _run(tmp_path / "a", "reference", seed=7)
    b, _ = _run(tmp_path / "b", "reference", seed=7)
    assert [(r["id"], r["outcome"]) for r in a["records"]] == [(r["id"], r["outcome"]) for r in b["records"]]


def test_a_crashing_target_fails_the_case_and_the_run_goes_on(tmp_path):
    result, summary = _run(tmp_path, "tests.targets.misbehaving:crashing", examples=3)
    errors = [r for r in result["records"] if r["outcome"] == "error"]
    assert errors and "died (exit code 17)" in errors[0]["reason"]
    assert "at step 3" in errors[0]["reason"] and len(errors[0]["steps"]) == 2  # steps 1-2 were kept
    assert summary["spec"]["answer"] == "DOES NOT CONFORM" and summary["baseline"]["answer"] == "CHANGED"
    # the run went on after the crash, in a fresh worker: the error-contract cases all ran and passed
    later = [r for r in result["records"] if r["kind"] == "error"]
    assert later and all(r["outcome"] == "pass" for r in later)


def test_a_hanging_target_times_out_and_the_run_goes_on(tmp_path):
    result, _ = _run(tmp_path, "tests.targets.misbehaving:hanging", sources=("hypothesis",), examples=2,
                     timeout=3.0, shrink_calls=0)
    errors = [r for r in result["records"] if r["outcome"] == "error"]
    assert errors and "did not answer within 3 s" in errors[0]["reason"]


def test_case_file_replays_a_saved_case(tmp_path):
    result, _ = _run(tmp_path, "reference", sources=("hypothesis",), examples=1)
    case = result["records"][0]["case"]
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    replay, summary = _run(tmp_path / "replay", "reference", case_file=str(path))
    assert [r["id"] for r in replay["records"]] == [case["id"]]
    assert summary["counts"]["pass"] == 1


def test_unknown_target_is_a_clear_error():
    with pytest.raises(SystemExit, match="TARGET must be one of"):
        runner.resolve("no-such-target")


def test_fixtures_and_resume_pass_on_the_reference(tmp_path):
    """CAME-STATE-5: the golden vectors pass, and resuming from a checkpoint gives the same numbers."""
    result, summary = _run(tmp_path, "reference-paper", sources=("fixtures", "resume"))
    assert summary["baseline"]["answer"] == "MATCHES" and summary["spec"]["answer"] == "INCONCLUSIVE", summary
    assert summary["partial"] == ["sources fixtures, resume only"]  # a subset cannot certify conformance
    resumes = [r for r in result["records"] if r["kind"] == "resume"]
    assert {r["dtype"] for r in resumes} == {"float64", "float32", "float16", "bfloat16"}
    assert all(r["outcome"] == "pass" for r in resumes)


def test_cases_do_not_depend_on_the_entry_point(tmp_path):
    """Hypothesis mines constants from loaded modules; the runner loads all of the project's first,
    so `run`, `matrix` and `mutation` draw the same cases from the same seed (fresh processes)."""
    import subprocess
    import sys

    script = ("import sys, json\n{extra}from pathlib import Path\nfrom conformance import runner\n"
              "r = runner.run('reference-paper', Path(sys.argv[1]), runner.Settings(examples=4, "
              "sources=('hypothesis',)), progress=lambda m: None)\n"
              "print(json.dumps([x['id'] for x in r['records']]))")
    ids = []
    for extra in ("", "import came_conformance.matrix, came_conformance.mutation\n"):
        out = subprocess.run([sys.executable, "-c", script.format(extra=extra), str(tmp_path / str(len(ids)))],
                             capture_output=True, text=True, check=True, cwd=ROOT)
        ids.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert ids[0] == ids[1] and len(ids[0]) > 1


def test_progress_is_one_line_on_a_terminal_and_nothing_elsewhere():
    """Issue 14: units done / total, the variant, cases and elapsed on a terminal; quiet in a log."""
    import io

    from came_conformance.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, said = Terminal(), []
    p = Progress("t", 10, said.append, stream=tty)
    p.message("[t/v] fixtures: 3 trajectories")
    p.update(4, "v", 17, force=True)
    p.close()
    assert "[t/v] 4/10 units, 17 cases" in tty.getvalue() and "fixtures: 3" in tty.getvalue() and not said
    log, said = io.StringIO(), []
    p = Progress("t", 10, said.append, stream=log)
    p.message("[t/v] fixtures: 3 trajectories")
    p.update(4, "v", 17, force=True)
    p.close()
    assert log.getvalue() == "" and said == ["[t/v] fixtures: 3 trajectories"]


def test_new_families_pass_on_the_reference(tmp_path):
    """Mid-run starts (CAME-STATE-6), non-finite parameters (CAME-NONFINITE-2), atomic step errors (CAME-ERR-A1) and
    return values (CAME-RETURN-1) all pass on the reference, in both profiles."""
    for target in ("reference", "reference-paper"):
        result, summary = _run(tmp_path / target, target, sources=("fixtures", "errors"))
        assert summary["baseline"]["answer"] == "MATCHES" and summary["counts"]["fail"] == 0, summary
        kinds = {r["kind"] for r in result["records"]}
        assert {"atomic", "return"} <= kinds
        midrun = [r for r in result["records"] if "midrun" in r["source"]]
        assert midrun and all(r["outcome"] == "pass" for r in midrun)
        assert max(s["step"] for r in midrun for s in r["steps"]) == 2 ** 31 - 1
        atomic = [r for r in result["records"] if r["kind"] == "atomic"]
        assert all(r["outcome"] == "pass" and r["clauses"][0] == "CAME-ERR-A1" for r in atomic)


@pytest.mark.parametrize("mutant, sources, kind, clause", [
    ("partial-update-before-error", ("fixtures", "errors"), "atomic", "CAME-ERR-A1"),
    ("counter-advances-on-error", ("fixtures", "errors"), "atomic", "CAME-ERR-A1"),
    ("step-returns-tuple", ("fixtures",), "return", "CAME-RETURN-1"),
    ("step-counter-float32", ("fixtures",), "trajectory", "CAME-STATE-5"),
    ("wd-no-zero-guard", ("fixtures",), "trajectory", "CAME-STEP-12"),  # theta: inf became NaN
    ("lr-sequence-repeats-last", ("fixtures", "errors"), "error", "CAME-ERR-S5"),
])
def test_each_new_check_fails_its_mutant(tmp_path, mutant, sources, kind, clause):
    """The new checks find what they are for: each of these mutants fails a record of that kind and clause."""
    result, summary = _run(tmp_path, f"mutant:{mutant}", sources=sources)
    failed = [r for r in result["records"] if r["outcome"] == "fail" and r["kind"] == kind]
    assert failed and summary["baseline"]["answer"] == "CHANGED"
    clauses = {(r.get("first_divergence") or {}).get("clause") or r["clauses"][0] for r in failed}
    assert clause in clauses, clauses


def test_a_recipe_case_replays_from_its_file(tmp_path):
    """A recipe case (CAME-DEF-4) is saved as its recipe, not as tensors, and replays; a tile-tail mutant fails it."""
    from came_conformance.cases import TrajectoryCase, content_id, from_json, to_json
    from came_conformance.fixtures.recipe import Recipe
    from came_conformance.reference.hyperparams import Hyperparameters, LearningRate

    rc = Recipe("test/replay", 24, ((33, 129), (1025,)), 2, 0, (0, -2))
    hp = Hyperparameters.defaults("paper", learning_rate=LearningRate.constant(0.01), clip_threshold=0.5)
    case = TrajectoryCase("", "paper", hp, rc.params(), rc.gradients(), "float32", recipe=rc.to_json())
    case.id = "h-" + content_id(to_json(case))
    text = json.dumps(to_json(case))
    assert len(text) < 2000 and "hex" not in text
    again = from_json(json.loads(text))
    assert [p.tolist() for p in again.params] == [p.tolist() for p in case.params]
    path = tmp_path / "case.json"
    path.write_text(text)
    _, good = _run(tmp_path / "good", "reference-paper", case_file=str(path))
    _, bad = _run(tmp_path / "bad", "mutant:row-mean-tile-tail--paper", case_file=str(path))
    assert good["counts"]["pass"] == 1 and bad["counts"]["fail"] == 1


def test_an_atomic_record_replays_as_an_atomic_check(tmp_path):
    """A saved atomic (or return) record's case carries its check, so --case-file replays that check."""
    result, _ = _run(tmp_path / "run", "mutant:partial-update-before-error", sources=("fixtures", "errors"))
    record = next(r for r in result["records"] if r["kind"] == "atomic" and r["outcome"] == "fail")
    path = tmp_path / "case.json"
    path.write_text(json.dumps(record["case"]))
    replay, _ = _run(tmp_path / "replay", "mutant:partial-update-before-error", case_file=str(path))
    assert [(r["kind"], r["outcome"]) for r in replay["records"]] == [("atomic", "fail")]


def test_long_records_keep_their_first_last_and_worst_steps():
    """execute.thin_steps: a 10^4-step trajectory keeps 200 of its per-step entries, in step order."""
    from came_conformance.execute import MAX_STEPS_KEPT, thin_steps

    steps = [{"step": t, "per_step": {"0.theta": {"ulps": 0.0, "bound_ratio": 1.0 if t == 5000 else 0.1}}}
             for t in range(1, 10_051)]
    kept = thin_steps(steps)
    assert len(kept) == MAX_STEPS_KEPT and [e["step"] for e in kept] == sorted(e["step"] for e in kept)
    assert kept[0]["step"] == 1 and kept[-1]["step"] == 10_050 and any(e["step"] == 5000 for e in kept)


def test_describe_return_is_plain_data():
    """CAME-RETURN-1: protocol.describe_return turns what a step returns into JSON-able data."""
    import numpy as np

    from came_conformance.protocol import describe_return
    from came_conformance.returns import problem

    assert describe_return(None) == {"type": "none"}
    assert describe_return((True, np.bool_(True))) == {"type": "tuple", "items": [{"type": "bool", "value": True}] * 2}
    tensor = describe_return(np.array(True))
    assert tensor == {"type": "tensor", "dtype": "bool", "shape": [], "values": [True]}
    json.dumps([tensor, describe_return(np.ones((2, 2))), describe_return(object())])
    assert problem("mindformers", tensor) == "" and problem("paper", describe_return(None)) == ""
    assert problem("mindformers", describe_return((True, True))) and problem("paper", tensor)
    assert problem("mindformers", describe_return(np.array([True, True])))  # one element, not one per parameter


def test_long_trajectories_are_judged_at_sampled_steps():
    """execute.judged_steps: every step up to 200; beyond, the first and last 50, every 25th and ±8 around each
    counter crossover (2^11, 10^4, 2^24, 2^31 - 1) that the range holds."""
    from came_conformance.execute import judged_steps

    assert judged_steps(0, 200) is None
    judged = judged_steps(0, 10_050)
    assert set(range(1, 51)) | set(range(10_001, 10_051)) <= judged
    assert set(range(2040, 2057)) | set(range(9992, 10_009)) <= judged
    assert 5001 in judged and 5002 not in judged and len(judged) < 700
    late = judged_steps(2 ** 24 - 3, 300)  # a session opened near the float32 counter's end
    assert {2 ** 24 - 2, 2 ** 24, 2 ** 24 + 8} <= late and 2 ** 24 + 150 not in late


def test_stacked_reruns_keep_a_slow_tier_only_for_its_own_killer():
    """mutation._tier_of: the slow tier a killing record came from (a stacked re-run keeps only that one)."""
    from came_conformance.mutation import _tier_of

    assert _tier_of({"source": "fixture:came_paper_scale_test.json"}) == "scale"
    assert _tier_of({"source": "hypothesis:midrun"}) == "horizon"
    assert _tier_of({"source": "fixture:came_paper_midrun_test.json"}) is None  # mid-run vectors are fixtures
    assert _tier_of({"source": "hypothesis"}) is None and _tier_of(None) is None
