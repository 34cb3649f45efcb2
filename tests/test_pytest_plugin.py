"""The pytest plugin (conformance/pytest_plugin.py): inert without --came-target, the run's verdicts with it."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pytest(tmp_path, *args):
    (tmp_path / "test_own.py").write_text("def test_own():\n    assert True\n")
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "came_conformance.pytest_plugin", "-p",
                           "no:cacheprovider", "-q", "-rA", *args], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}, timeout=900)


def test_without_a_target_the_plugin_adds_nothing(tmp_path):
    out = _pytest(tmp_path)
    assert out.returncode == 0 and "1 passed" in out.stdout and "came[" not in out.stdout, out.stdout
    assert not (tmp_path / "reports").exists()


def test_each_unit_is_an_item_with_the_runs_verdict(tmp_path):
    out = _pytest(tmp_path, "--came-target=tests.targets.misbehaving:two_bugs", "--came-sources=hypothesis",
                  "--came-examples=10", f"--came-out={tmp_path / 'out'}")
    assert out.returncode == 1, out.stdout[-3000:]
    assert "PASSED test_own.py::test_own" in out.stdout  # the vendor's own tests run beside
    assert "FAILED came[tests.targets.misbehaving.two_bugs]::default/hypothesis" in out.stdout
    assert "PASSED came[tests.targets.misbehaving.two_bugs]::default/tier0" in out.stdout
    assert "DOES NOT CONFORM" in out.stdout
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["verdict"]["spec"]["answer"] == "DOES NOT CONFORM" and doc["verdict"]["baseline"]["answer"] == "CHANGED"
    assert any(r.get("hypothesis", {}).get("shrunk") for r in doc["records"])
