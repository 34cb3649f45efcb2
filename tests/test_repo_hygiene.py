"""Repository hygiene: no machine paths, valid deviations files, README commands that exist."""
import re
import subprocess
from pathlib import Path

import pytest

from came_conformance import deviations
from came_conformance.targets import BUILTIN

ROOT = Path(__file__).resolve().parent.parent
SPEC_IDS = set(re.findall(r"^\*\*(CAME-[A-Z0-9]+(?:-[A-Z0-9]+)*)\*\*", (ROOT / "spec" / "came.md").read_text(),
                          re.M))


def tracked_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [ROOT / line for line in out.splitlines() if (ROOT / line).is_file()]


def test_no_path_of_a_developer_machine_is_written_down():
    pattern = re.compile(r"/(?:work|root|home|tmp|opt|mnt|Users)/[A-Za-z]")
    offenders = [str(p.relative_to(ROOT)) for p in tracked_files()
                 if p.suffix in {".py", ".md", ".json", ".toml", ".ini", ".txt", ""} and p.stat().st_size < 5_000_000
                 and pattern.search(p.read_text(errors="replace"))]
    assert offenders == []


@pytest.mark.parametrize("target", sorted(t for t in BUILTIN if (ROOT / "targets" / t / "deviations.json").exists()))
def test_deviations_files_are_well_formed(target):
    """Each declared deviation cites an existing spec clause, has evidence, and matches by signature."""
    path = ROOT / "targets" / target / "deviations.json"
    declared = deviations.load(path)  # strict: signature keys required, no clause-alone entries
    ids = [d["id"] for d in declared]
    assert len(ids) == len(set(ids))
    for d in declared:
        assert d["clause"] in SPEC_IDS, d
        assert d["evidence"].strip() and d["summary"].strip()
        assert set(d["match"]) <= deviations.MATCH_KEYS, d


def test_readme_make_targets_exist():
    makefile = (ROOT / "Makefile").read_text()
    for target in set(re.findall(r"`make ([a-z-]+)", (ROOT / "README.md").read_text())):
        assert re.search(rf"^{target}:", makefile, re.M), target
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_fixture_ids_cited_in_documents_exist():
    """Deviation evidence and docs cite golden vectors by id; each must still exist (ids are content hashes)."""
    stored = set(re.findall(r'"id": "([0-9a-f]{16})"', "".join(
        p.read_text() for p in (ROOT / "fixtures" / "data").glob("*.json"))))
    cited = {}
    for path in [*(ROOT / "targets").glob("*/deviations.json"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]:
        for found in re.findall(r"(?<![0-9a-zA-Z-])([0-9a-f]{16})(?![0-9a-f])", path.read_text()):
            cited.setdefault(found, path.relative_to(ROOT))
    missing = {i: str(p) for i, p in cited.items() if i not in stored}
    assert missing == {}


def test_hypothesis_is_derandomized_in_make_test():
    """tests/conftest.py: ``make test`` gives the same verdict twice (profile ci); only the nightly profile is random."""
    import os

    from hypothesis import settings

    profile = os.environ.get("CAME_HYPOTHESIS_PROFILE", "ci")
    assert settings.default.derandomize == (profile == "ci") and settings.default.database is None
    assert settings.get_profile("nightly").max_examples > settings.get_profile("ci").max_examples
