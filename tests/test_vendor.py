"""A vendor validates a port in fifteen minutes (README "Validating your port"): the test plays the vendor.

From an empty directory, with the suite installed from its wheel into a fresh environment: the
scaffold (``came-conform new-adapter``), a small NumPy port of the vendor's own (tests/vendor/
tinycame.py, copied in: it is not part of the suite's packages) with one deliberate difference,
declared with its evidence in the deviations file the scaffold wrote.  The port reaches a verdict
with the console script and with the pytest plugin, the same records either way.

The wheel goes into a venv with no packages of its own: a ``.pth`` line puts this interpreter's
site-packages (NumPy, Hypothesis, pytest, ...) behind it, so nothing is downloaded and the suite
itself comes only from the wheel.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVIATION = {
    "id": "TINY-WD-NOT-TIMES-LR", "clause": "CAME-STEP-11",
    "summary": "weight decay is not multiplied by the learning rate",
    "what_the_target_does": "theta <- theta - weight_decay * theta, where the spec has theta - lr * weight_decay * theta",
    "evidence": "tinycame.CAME._update, the line marked 'the deliberate difference'",
    "match": {"kind": ["trajectory"], "variants": ["default"], "dtype": ["float64", "float32", "float16", "bfloat16"],
              "divergence_clause": ["CAME-STEP-12"], "divergence_tensor": ["theta"], "factored": [True, False],
              "divergence": ["value"], "requires_any": ["weight_decay"]},
}
EXAMPLES = "6"


def conforms(summary: dict) -> bool:
    """Does the run match its declared baseline (the answer CI follows)?"""
    return summary["baseline"]["answer"] == "MATCHES"


def _run(args, cwd, env, expect=0):
    out = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == expect, f"{args} exited {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def _sources() -> Path:
    """The files a clone has (tracked, and new ones not ignored), without generated reports."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split()
    return [f for f in listed if not f.startswith("reports/") and (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv with the suite installed from a wheel built from this checkout."""
    base = tmp_path_factory.mktemp("vendor")
    src, dist, venv = base / "src", base / "dist", base / "venv"
    for name in _sources():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CAME_DEVIATIONS", "CAME_TARGET_PYTHON")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", str(dist), str(src)], base, env)
    wheel, = dist.glob("came_conformance-*.whl")
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], base, env)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    (purelib / "core-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q",
          str(wheel)], base, env)
    return venv, env


def test_the_wheel_has_the_suite_under_one_namespace(installed):
    venv, env = installed
    out = _run([str(venv / "bin" / "python"), "-c", "import came_conformance, came_conformance.fixtures.load as l, "
                "came_conformance.targets as t, os; print(came_conformance.__file__); print(len(l.files())); "
                "print(t.resolve('came-pytorch').deviations.is_file())"], venv, env)
    module, files, deviations = out.stdout.split()
    assert str(venv) in module and int(files) >= 10 and deviations == "True"
    purelib = Path(module).parent.parent
    assert not (purelib / "reference").exists() and not (purelib / "fixtures").exists()


def test_a_vendor_reaches_a_verdict_from_an_empty_directory(installed, tmp_path):
    venv, env = installed
    bin_ = venv / "bin"
    work = tmp_path / "my-port"
    work.mkdir()
    _run([str(bin_ / "came-conform"), "new-adapter", "--framework", "numpy", "--optimizer", "tinycame:CAME", "tiny"],
         work, env)
    assert sorted(p.name for p in work.iterdir()) == ["tiny_adapter.py", "tiny_deviations.json"]
    shutil.copy(ROOT / "tests" / "vendor" / "tinycame.py", work / "tinycame.py")
    # The vendor's edits where the skeleton says RULE: the port keeps float64 state whatever the dtype.
    adapter = work / "tiny_adapter.py"
    text = adapter.read_text()
    assert "            state_dtype={},  # RULE" in text
    adapter.write_text(text.replace("            state_dtype={},  # RULE",
                                    '            state_dtype={"float32": "float64", "float16": "float64"},  # RULE'))

    # Without declaring its difference the port does not conform, and the failures are exactly it.
    _run([str(bin_ / "came-conform"), "run", "--target", "tiny_adapter:factory", "--examples", EXAMPLES,
          "--sources", "fixtures", "--out", "undeclared"], work, env, expect=1)
    undeclared = json.loads((work / "undeclared" / "report.json").read_text())
    failed = [r for r in undeclared["records"] if r["outcome"] in ("fail", "error")]
    assert failed and all(r["first_divergence"]["tensor"] == "theta" and "weight_decay" in r["requires"]
                          for r in failed), [r["reason"] for r in failed][:3]

    deviations = work / "tiny_deviations.json"
    stub = json.loads(deviations.read_text())
    stub["deviations"].append(DEVIATION)
    deviations.write_text(json.dumps(stub, indent=1))

    # The console script, with the deviations file.
    out = _run([str(bin_ / "came-conform"), "run", "--target", "tiny_adapter:factory", "--deviations",
                "tiny_deviations.json", "--examples", EXAMPLES, "--out", "report"], work, env)
    doc = json.loads((work / "report" / "report.json").read_text())
    assert conforms(doc["verdict"]), out.stdout[-2000:]
    assert doc["deviations"]["file"] == {"path": "tiny_deviations.json",
                                         "sha256": hashlib.sha256(deviations.read_bytes()).hexdigest()}
    explained = [r for r in doc["records"] if r["outcome"] == "expected_deviation"]
    assert explained and {r["deviation"] for r in explained} == {DEVIATION["id"]}
    assert {r["kind"] for r in doc["records"] if r["outcome"] == "pass"} >= {"trajectory", "error", "resume"}

    # The pytest plugin (entry point pytest11 of the wheel), in a directory with no tests of its own.
    out = _run([str(bin_ / "python"), "-m", "pytest", "--came-target=tiny_adapter:factory",
                "--came-deviations=tiny_deviations.json", f"--came-examples={EXAMPLES}", "--came-out=pytest-report",
                "-q", "-p", "no:cacheprovider", "-rN"], work, env)
    assert "xfailed" in out.stdout and "baseline MATCHES" in out.stdout, out.stdout[-2000:]
    plugin = json.loads((work / "pytest-report" / "report.json").read_text())
    assert conforms(plugin["verdict"])
    assert [(r["id"], r["variant"], r["outcome"]) for r in plugin["records"]] == \
        [(r["id"], r["variant"], r["outcome"]) for r in doc["records"]]


def test_the_installed_plugin_is_inert_and_registers_once(installed, tmp_path):
    """Entry point and ``-p came_conformance.pytest_plugin`` are one plugin; without --came-target it adds nothing."""
    venv, env = installed
    (tmp_path / "test_own.py").write_text("def test_own():\n    pass\n")
    for extra in ([], ["-p", "came_conformance.pytest_plugin"]):
        out = _run([str(venv / "bin" / "python"), "-m", "pytest", *extra, "-q", "-p", "no:cacheprovider"], tmp_path,
                   env)
        assert "1 passed" in out.stdout and "came[" not in out.stdout, out.stdout
