"""Hostile targets (tests/targets/hostile.py): a target cannot forge, tear, flood or escape the report.

One test per way a target, or a user's input, broke the runner before the data-only channel,
the run directory and the bounded capture (issue 10), and one per way the runner already
survived (segfault, hang, junk output, bad read-backs), so none comes back.  Subprocess tests
wait with generous limits and poll; nothing here asserts a duration.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from came_conformance import cli, compare, report, rundir, runner
from tests.targets import hostile

ROOT = Path(__file__).resolve().parent.parent
H = "tests.targets.hostile:"
FAST = {"examples": 3, "error_examples": 1, "shrink_calls": 0}


@pytest.fixture(autouse=True)
def marks(tmp_path, monkeypatch):
    """The folder where hostile targets count and leave their pids; any process they left is ended."""
    folder = tmp_path / "marks"
    folder.mkdir()
    monkeypatch.setenv("HOSTILE_MARKS", str(folder))
    yield folder
    for name in ("hang.pid", "child.pid"):
        if (folder / name).exists():
            pid = int((folder / name).read_text())
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_until(predicate, limit: float = 120.0) -> bool:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


def run_in_process(tmp_path, target, name="out", **kw):
    cfg = runner.Settings(**{**FAST, "sources": ("hypothesis",), **kw})
    out = tmp_path / name
    result = runner.run(target, out, cfg, progress=lambda m: None)
    summary = report.write_all(result, out)
    return result, summary, out


def lines(out: Path) -> list[str]:
    return (out / "records.jsonl").read_text().splitlines()


def start_cli(tmp_path, *args) -> subprocess.Popen:
    log = open(tmp_path / "runner-output.txt", "w")
    return subprocess.Popen([sys.executable, "-m", "came_conformance", "run", *args], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=os.environ.copy())


def run_cli(*args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, "-m", "came_conformance", *args], cwd=cwd, capture_output=True,
                          text=True, env=env or os.environ.copy(), timeout=900)


# --------------------------------------------------------------------------------------------
# The channel: forged, stray and unreadable replies
# --------------------------------------------------------------------------------------------
def test_a_reply_cannot_run_code_in_the_runner(tmp_path):
    """A wrong optimizer whose describe() reply, unpickled, stopped every comparison: no pass, nothing patched."""
    original = compare.check_step
    try:
        result, summary, _ = run_in_process(tmp_path, H + "forging", sources=("fixtures",))
        patched = compare.check_step is not original
    finally:
        compare.check_step = original
    assert not patched, "the target's reply ran code in the runner"
    assert summary["counts"]["pass"] == 0 and summary["baseline"]["answer"] != "MATCHES"
    (load,) = result["records"]
    assert load["kind"] == "load" and "cannot cross the channel" in load["reason"]


def test_a_stray_frame_costs_one_case_and_no_one_gets_another_case_s_answer(tmp_path):
    result, summary, _ = run_in_process(tmp_path, H + "stray_frame", sources=("fixtures",))
    errors = [r for r in result["records"] if r["outcome"] == "error"]
    assert len(errors) == 1 and "extra or forged frame" in errors[0]["reason"]
    others = [r for r in result["records"] if r is not errors[0]]
    assert len(others) > 20 and all(r["outcome"] in ("pass", "not_applicable") for r in others)


def test_output_at_interpreter_start_up_does_not_reach_the_channel(tmp_path, monkeypatch):
    """A sitecustomize banner on stdout made every worker start fail."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("print('Welcome to this machine!')\n")
    monkeypatch.setenv("PYTHONPATH", str(site))
    result, summary, out = run_in_process(tmp_path, "reference")
    assert summary["counts"]["pass"] and not summary["counts"]["fail"] + summary["counts"]["error"], \
        [r["reason"] for r in result["records"] if r["outcome"] != "pass"]
    assert "Welcome to this machine!" in (out / "target-stderr.log").read_text()


@pytest.mark.parametrize("factory, field", [
    ("describe_unknown_dtype", "dtypes"), ("describe_unknown_profile", "profile"), ("describe_unknown_api", "api"),
    ("describe_dtypes_string", "dtypes"), ("describe_none", "top level"), ("describe_bytes_version", "versions"),
])
def test_a_bad_describe_is_a_load_error_with_a_report(tmp_path, factory, field):
    result, summary, out = run_in_process(tmp_path, H + factory, sources=runner.Settings.sources)
    (load,) = result["records"]
    assert load["kind"] == "load" and load["outcome"] == "error"
    assert "describe() returned an invalid TargetInfo" in load["reason"] and field in load["reason"]
    assert json.loads((out / "report.json").read_text())["verdict"]["counts"]["error"] == 1


@pytest.mark.parametrize("factory, words", [
    ("readback_list", "did not return a Snapshot"), ("readback_none", "did not return a Snapshot"),
    ("readback_strings", "not an array"), ("readback_object_array", "dtype object cannot cross the channel"),
])
def test_a_read_back_that_is_not_a_snapshot_is_that_case_s_error(tmp_path, factory, words):
    result, summary, out = run_in_process(tmp_path, H + factory)
    tier0 = result["records"][0]
    assert tier0["id"] == "tier0" and tier0["outcome"] == "error" and words in tier0["reason"]
    assert (out / "report.json").exists()


def test_a_short_read_back_fails_the_case(tmp_path):
    """Already survived: a Snapshot with too few parameters is a located failure."""
    result, _, _ = run_in_process(tmp_path, H + "readback_short")
    assert result["records"][0]["outcome"] == "fail"
    assert "read-back has 1 parameters" in result["records"][0]["reason"]


# --------------------------------------------------------------------------------------------
# Crashes, hangs, output: bounded, and blamed on the right worker
# --------------------------------------------------------------------------------------------
def test_a_segfault_costs_one_case(tmp_path):
    """Already survived."""
    result, _, _ = run_in_process(tmp_path, H + "segfault", sources=("fixtures",))
    errors = [r for r in result["records"] if r["outcome"] == "error"]
    assert len(errors) == 1 and "died (exit code -11" in errors[0]["reason"]
    assert len(errors[0]["steps"]) == 1  # the step measured before it is kept
    assert sum(r["outcome"] == "pass" for r in result["records"]) > 20


def test_junk_on_stdout_and_stderr_changes_nothing(tmp_path):
    """Already survived: what a target prints, even bytes that look like a frame, is only logged."""
    result, summary, out = run_in_process(tmp_path, H + "junk_output")
    assert summary["counts"]["pass"] and not summary["counts"]["fail"] + summary["counts"]["error"]
    assert "junk on stdout" in (out / "target-stderr.log").read_text(errors="replace")


def test_a_hang_times_out_and_the_run_goes_on(tmp_path):
    """Already survived."""
    result, _, _ = run_in_process(tmp_path, H + "hang_once", sources=("fixtures",), timeout=20.0)
    errors = [r for r in result["records"] if r["outcome"] == "error"]
    assert len(errors) == 1 and "did not answer within 20 s" in errors[0]["reason"]
    assert sum(r["outcome"] == "pass" for r in result["records"]) > 20


def test_stderr_floods_are_bounded_and_each_crash_quotes_only_its_own_worker(tmp_path):
    result, _, out = run_in_process(tmp_path, H + "flood_then_crash", sources=("fixtures",))
    errors = [r for r in result["records"] if r["outcome"] == "error"]
    assert len(errors) == hostile.FLOOD_CRASHES
    for n, record in enumerate(errors, start=1):
        tokens = {t for t in record["reason"].split() if t.startswith(("CRASH-", "END-"))}
        assert tokens == {f"END-{n}"}, tokens  # its own last output, never an earlier worker's
    assert max(map(len, lines(out))) < 64 << 10
    assert (out / "target-stderr.log").stat().st_size < 9 << 20
    assert "reached its limit" in (out / "target-stderr.log").read_text(errors="replace")


def test_a_huge_exception_message_is_truncated_with_a_note(tmp_path):
    result, _, out = run_in_process(tmp_path, H + "huge_message")
    record = result["records"][0]
    assert "truncated" in record["reason"] and len(json.dumps(record)) < 64 << 10
    assert max(map(len, lines(out))) < 64 << 10


# --------------------------------------------------------------------------------------------
# Processes: start-up, children, a runner that dies or is interrupted
# --------------------------------------------------------------------------------------------
@pytest.mark.timeout(240)
def test_start_up_is_bounded_by_the_timeout(tmp_path):
    result, _, _ = run_in_process(tmp_path, H + "slow_start", timeout=3.0)
    (load,) = result["records"]
    assert load["kind"] == "load" and "did not start within 3 s" in load["reason"]


def test_what_a_worker_started_does_not_outlive_the_run(tmp_path, marks):
    run_in_process(tmp_path, H + "spawns_child")
    child = int((marks / "child.pid").read_text())
    assert wait_until(lambda: not alive(child), 60), "the worker's child survived the run"


def test_a_killed_runner_leaves_no_worker_and_no_stale_report(tmp_path, marks):
    """SIGKILL of the runner mid-run: its spinning worker dies, and the previous run's reports are gone."""
    _, summary, out = run_in_process(tmp_path, "reference")
    assert (out / "junit.xml").exists() and summary["counts"]["pass"]
    proc = start_cli(tmp_path, "--target", H + "spin_once", "--out", str(out), "--sources", "fixtures",
                     "--timeout", "600")
    try:
        assert wait_until(lambda: (marks / "hang.pid").exists()), (tmp_path / "runner-output.txt").read_text()
    finally:
        proc.kill()
        proc.wait()
    worker = int((marks / "hang.pid").read_text())
    assert wait_until(lambda: not alive(worker), 60), "the hung worker outlived its runner"
    assert not any((out / name).exists() for name in rundir.REPORTS), "a report of the previous run is still there"
    run_id = json.loads((out / rundir.RUN).read_text())["run_id"]
    assert lines(out) and {json.loads(line)["run_id"] for line in lines(out)} == {run_id}
    with open(out / rundir.RECORDS, "a") as fh:
        fh.write('{"id": "torn-by-a-kill", "kind": "traj')  # a line cut by the kill
    assert cli.main(["report", "--out", str(out)]) == cli.ABORTED
    doc = json.loads((out / "report.json").read_text())
    assert doc["run"] == {"id": run_id, "status": "aborted", "reason": doc["run"]["reason"]}
    assert len(doc["records"]) == len(lines(out)) - 1
    assert ET.parse(out / "junit.xml").getroot().find("testcase[@name='verdict']/failure") is not None


def test_sigint_while_a_target_hangs_writes_an_aborted_report(tmp_path, marks):
    out = tmp_path / "out"
    proc = start_cli(tmp_path, "--target", H + "hang_once", "--out", str(out), "--sources", "fixtures",
                     "--timeout", "600")
    try:
        assert wait_until(lambda: (marks / "hang.pid").exists()), (tmp_path / "runner-output.txt").read_text()
        proc.send_signal(signal.SIGINT)
        assert wait_until(lambda: proc.poll() is not None, 120), "SIGINT waited for the hung request"
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == cli.ABORTED, (tmp_path / "runner-output.txt").read_text()[-2000:]
    doc = json.loads((out / "report.json").read_text())
    assert doc["run"]["status"] == "aborted" and "SIGINT" in doc["run"]["reason"]
    assert doc["verdict"]["baseline"]["answer"] == "INCONCLUSIVE" and doc["records"]
    assert ET.parse(out / "junit.xml").getroot().find("testcase[@name='verdict']/failure") is not None
    assert "aborted (SIGINT" in (out / "summary.md").read_text().splitlines()[3]
    worker = int((marks / "hang.pid").read_text())
    assert wait_until(lambda: not alive(worker), 60)


def test_a_second_run_into_a_busy_directory_refuses_and_sigterm_aborts_the_first(tmp_path, marks, capsys):
    out = tmp_path / "out"
    first = start_cli(tmp_path, "--target", H + "hang_once", "--out", str(out), "--sources", "fixtures",
                      "--timeout", "600")
    try:
        assert wait_until(lambda: (marks / "hang.pid").exists()), (tmp_path / "runner-output.txt").read_text()
        before = (out / rundir.RECORDS).read_bytes()
        assert cli.main(["run", "--target", "reference", "--out", str(out), "--sources", "hypothesis"]) == cli.USAGE
        message = capsys.readouterr().err
        assert f"pid {first.pid}" in message and message.count("\n") == 1
        assert (out / rundir.RECORDS).read_bytes() == before
        first.send_signal(signal.SIGTERM)
        assert wait_until(lambda: first.poll() is not None, 120)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == cli.ABORTED
    assert json.loads((out / "report.json").read_text())["run"]["status"] == "aborted"


# --------------------------------------------------------------------------------------------
# Report files: one run each, never torn or mixed
# --------------------------------------------------------------------------------------------
def test_a_run_killed_between_renames_leaves_nothing_of_the_previous_run(tmp_path, monkeypatch):
    _, failing, out = run_in_process(tmp_path, H + "wrong")
    assert failing["counts"]["fail"]
    real_replace, renamed = os.replace, []

    def dying_replace(src, dst):  # the first report file is renamed into place, then the run dies
        if Path(dst).name in rundir.REPORTS:
            if renamed:
                raise SystemExit("killed between renames")
            renamed.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", dying_replace)
    with pytest.raises(SystemExit):
        run_in_process(tmp_path, "reference")
    monkeypatch.setattr(os, "replace", real_replace)
    rundir.held(out).release()
    run_id = json.loads((out / rundir.RUN).read_text())["run_id"]
    present = [name for name in rundir.REPORTS if (out / name).exists()]
    assert present and all(run_id in (out / name).read_text() for name in present), present


def test_a_leftover_temporary_file_does_not_break_the_report(tmp_path):
    result, _, out = run_in_process(tmp_path, "reference")
    (out / "report.json.tmp").mkdir()  # the name every run used to share
    report.write_all(result, out)
    assert json.loads((out / "report.json").read_text())["run"]["id"] == result["run"]["id"]


def test_every_file_of_a_run_carries_its_run_id(tmp_path):
    result, _, out = run_in_process(tmp_path, H + "wrong")
    run_id = result["run"]["id"]
    case_files = list((out / "cases").glob("*.json"))
    assert case_files
    for path in [out / n for n in (*rundir.REPORTS, rundir.RUN, rundir.LOG)] + case_files:
        assert run_id in path.read_text(), path.name
    assert all(json.loads(line)["run_id"] == run_id for line in lines(out))


# --------------------------------------------------------------------------------------------
# Names: case ids and reproduce lines
# --------------------------------------------------------------------------------------------
def _saved_case(tmp_path) -> dict:
    result, _, out = run_in_process(tmp_path, H + "wrong", name="source")
    return json.loads(next((out / "cases").glob("h-*.json")).read_text())


def test_a_case_id_cannot_name_a_file_outside_the_report(tmp_path, capsys):
    saved = _saved_case(tmp_path)
    saved["case"]["id"] = "../../escaped"
    path = tmp_path / "case.json"
    path.write_text(json.dumps(saved))
    out = tmp_path / "deep" / "er" / "out"
    code = cli.main(["run", "--target", H + "wrong", "--case-file", str(path), "--out", str(out)])
    assert code == cli.USAGE and "is not a case id" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.rglob("escaped*"))


def test_the_report_never_names_a_file_with_a_bad_id(tmp_path):
    result, _, out = run_in_process(tmp_path, H + "wrong")
    bad = next(r for r in result["records"] if r["outcome"] == "fail")
    bad["id"] = "../escaped"
    report.write_all(result, out)
    assert not (out / "escaped.json").exists() and "not saved" in bad["repro"]


def test_a_reproduce_line_replays_a_module_factory_case_exactly_when_pasted(tmp_path, monkeypatch):
    """Quoted word by word, the target as given (module:factory), the environment the run had (PYTHONPATH)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    out = tmp_path / "dir with space;touch PWNED;#"
    run_in_process(tmp_path, H + "wrong", name=out.name)
    record = next(r for r in json.loads((out / "report.json").read_text())["records"] if r.get("repro"))
    line, words = record["repro"], shlex.split(record["repro"])
    assert words[words.index("--target") + 1] == H + "wrong" and f"PYTHONPATH={ROOT}" in words
    assert words[words.index("--case-file") + 1] == os.path.relpath(out / "cases" / f"{record['id']}.json")
    done = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == cli.CHANGED, done.stderr[-2000:]
    assert record["id"] in done.stdout and not (tmp_path / "PWNED").exists()


# --------------------------------------------------------------------------------------------
# The command line and its inputs: one line, exit code 2, nothing written
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, named", [
    (["--examples", "0"], "--examples"), (["--error-examples", "-1"], "--error-examples"),
    (["--timeout", "0"], "--timeout"), (["--timeout", "nan"], "--timeout"), (["--timeout", "inf"], "--timeout"),
    (["--shrink-calls", "x"], "--shrink-calls"), (["--sources", "fixtures,nope"], "--sources"),
    (["--variant", "nope"], "--variant"), (["--target", "no-such-target"], "--target"),
    (["--target", "mutant:no-such-mutant"], "--target"), (["--target", "os:system;rm"], "--target"),
])
def test_a_bad_argument_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, args, named):
    out = tmp_path / "out"
    argv = ["run", "--target", "reference", "--out", str(out), *args]
    assert cli.main(argv) == cli.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err, err
    assert not out.exists()


def _case_variants(saved: dict) -> dict:
    case = saved["case"]
    bad_shape = json.loads(json.dumps(case))
    bad_shape["grads"][0][0]["shape"] = [99]
    nan_hp = json.loads(json.dumps(case))
    nan_hp["hyperparameters"]["eps1"] = "nan"
    error = {"kind": "error", "id": "h-0123456789abcdef", "profile": "mindformers", "phase": "construction",
             "kwargs": {"params": [{"$param": [2]}], "learning_rate": -1.0}, "exception": "ValueError",
             "match": "(unclosed", "clause": "CAME-ERR-3", "argument": "learning_rate", "grads": None,
             "source": "t", "flags": []}
    return {"not JSON": "{", "a list": "[]", "no grads": json.dumps({k: v for k, v in case.items() if k != "grads"}),
            "grads of another shape": json.dumps(bad_shape), "a string for a float": json.dumps(nan_hp),
            "a bad regex": json.dumps(error), "unknown kind": json.dumps({**case, "kind": "movie"})}


def test_a_malformed_case_file_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    for what, text in _case_variants(_saved_case(tmp_path)).items():
        path, out = tmp_path / "case.json", tmp_path / "out"
        path.write_text(text)
        assert cli.main(["run", "--target", "reference", "--case-file", str(path), "--out", str(out)]) == cli.USAGE, what
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--case-file" in err, (what, err)
        assert not out.exists(), what


def _repository_copy(tmp_path) -> Path:
    copy = tmp_path / "repo"
    for name in ("came_conformance", "conformance", "reference", "fixtures", "spec", "targets"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _relist(copy: Path, rel: str) -> None:
    """Write a manifest that vouches for ``rel`` as it now is (a forger's, or a careless regeneration)."""
    manifest = copy / "fixtures" / "SHA256SUMS"
    digest = hashlib.sha256((copy / "fixtures" / rel).read_bytes()).hexdigest()
    kept = [line for line in manifest.read_text().splitlines() if not line.endswith("  " + rel)]
    manifest.write_text("\n".join(sorted(kept + [f"{digest}  {rel}"], key=lambda x: x.split()[1])) + "\n")


def test_tampered_or_malformed_fixtures_stop_the_run_naming_the_file(tmp_path):
    """Blanking the error vectors' match patterns once made a target whose messages name nothing conform."""
    copy = _repository_copy(tmp_path)
    rel = "data/came_mindformers_errors_test.json"
    doc = json.loads((copy / "fixtures" / rel).read_text())
    for t in doc["tests"]:
        t["match"] = ""
    (copy / "fixtures" / rel).write_text(json.dumps(doc))
    out = tmp_path / "out"
    args = ["run", "--target", "reference", "--sources", "errors", "--out", str(out)]
    for damage, words in [("tampered", "SHA-256"), ("malformed", "not strict JSON"),
                          ("off-schema", "does not validate"), ("unlisted", "not in fixtures/SHA256SUMS")]:
        if damage == "malformed":
            (copy / "fixtures" / rel).write_text("{")
            _relist(copy, rel)
        elif damage == "off-schema":
            (copy / "fixtures" / rel).write_text(json.dumps({**doc, "tests": [{"id": "x"}]}))
            _relist(copy, rel)
        elif damage == "unlisted":
            shutil.copy(ROOT / "fixtures" / rel, copy / "fixtures" / rel)
            shutil.copy(ROOT / "fixtures" / "SHA256SUMS", copy / "fixtures" / "SHA256SUMS")
            (copy / "fixtures" / "data" / "came_paper_extra_test.json").write_text("{}")
        done = run_cli(*args, cwd=copy)
        assert done.returncode == cli.USAGE, (damage, done.stdout[-1000:] + done.stderr[-1000:])
        assert "fixtures/data/came_" in done.stderr and words in done.stderr, (damage, done.stderr)
        assert done.stderr.count("\n") == 1 and not out.exists(), damage


# --------------------------------------------------------------------------------------------
# No pickle where a target's bytes arrive
# --------------------------------------------------------------------------------------------
def test_no_runner_module_unpickles():
    """The runner side of the suite (all of conformance/ but the code that runs inside a worker)."""
    worker_side = {"mutants"}  # the mutant port pickles its own checkpoint, inside its worker
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "conformance").rglob("*.py")
                 if not worker_side & set(p.relative_to(ROOT / "conformance").parts)
                 and p.parent.name != "adapters"
                 and any(word in p.read_text() for word in ("import pickle", "pickle.load", "allow_pickle=True"))]
    assert offenders == []
