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
    assert kinds == {"trajectory", "error", "resume"}
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
