"""A deviations file for any target: --deviations / CAME_DEVIATIONS, as strict as the built-in files."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from came_conformance import deviations, runner
from came_conformance.targets import TARGETS_DIR, resolve

ROOT = Path(__file__).resolve().parent.parent
GOOD = {"deviations": [{"id": "V-1", "clause": "CAME-STEP-6", "summary": "s", "evidence": "e",
                        "match": {"kind": ["trajectory"], "variants": ["default"], "dtype": ["float64"],
                                  "divergence_clause": ["CAME-STEP-6"], "divergence_tensor": ["exp_avg"],
                                  "factored": [True]}}]}


@pytest.mark.parametrize("content, message", [
    (None, "no such file"),
    ("{not json", "not readable JSON"),
    ('["V-1"]', 'an object with a "deviations" list'),
    (json.dumps({"deviations": ["V-1"]}), "every deviation is an object"),
    (json.dumps({"deviations": [{"id": "V-1"}]}), "lacks"),
    (json.dumps({"deviations": [GOOD["deviations"][0]] * 2}), "declared twice"),
    (json.dumps({"deviations": [{**GOOD["deviations"][0], "match": {"dtype": "float16"}}]}), "not lists"),
    (json.dumps({"deviations": [{**GOOD["deviations"][0], "match": {"dtypes": ["float16"]}}]}), "unknown match keys"),
])
def test_a_named_file_that_cannot_be_used_is_refused_with_the_rule(tmp_path, content, message):
    path = tmp_path / "deviations.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(deviations.DeviationsFileError, match=message):
        deviations.load(path, must_exist=True)


def test_named_file_wins_over_the_environment_and_the_builtin(tmp_path, monkeypatch):
    named, env = tmp_path / "named.json", tmp_path / "env.json"
    monkeypatch.setenv("CAME_DEVIATIONS", str(env))
    assert resolve("came-pytorch", str(named)).deviations == named
    assert resolve("came-pytorch").deviations == env and resolve("my.module:factory").deviations == env
    monkeypatch.delenv("CAME_DEVIATIONS")
    assert resolve("came-pytorch").deviations == TARGETS_DIR / "came-pytorch" / "deviations.json"
    assert resolve("my.module:factory").deviations is None


def test_the_report_names_the_file_and_its_hash(tmp_path):
    path = tmp_path / "vendor-deviations.json"
    path.write_text(json.dumps(GOOD))
    cfg = runner.Settings(examples=2, sources=("hypothesis",), deviations=str(path))
    result = runner.run("reference", tmp_path / "out", cfg, progress=lambda m: None)
    assert result["deviations_file"] == {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert [d["id"] for d in result["declared_deviations"]] == ["V-1"]


def test_the_command_line_refuses_a_bad_file_as_a_usage_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    out = subprocess.run([sys.executable, "-m", "came_conformance", "run", "--target", "reference", "--deviations",
                          str(bad), "--out", str(tmp_path / "out")], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2 and "--deviations" in out.stderr and "not readable JSON" in out.stderr
    assert not (tmp_path / "out").exists()
