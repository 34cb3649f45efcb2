"""Traceability between spec/came.md and the code: every clause is tested, every citation exists.

A clause is *defined* by a line of spec/came.md that starts with its bold id (spec, preamble).
A file *cites* an id by writing it anywhere (docstring, comment, string).  A citation that ends
in ``-*`` or in a bare ``-`` (``CAME-ERR-*``, a prefix string) names a family of clauses and is
valid when at least one defined id belongs to that family.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "spec" / "came.md"
ID = r"CAME-[A-Z0-9]+(?:-[A-Z0-9]+)*"
DEFINITION = re.compile(rf"^\*\*({ID})\*\*", re.M)
# an id, optionally followed by "-*" or a dangling "-": then it is a family (prefix) reference
CITATION = re.compile(rf"({ID})(-\*|-(?![A-Z0-9]))?")
CITING_DIRS = ("tests", "reference", "conformance", "fixtures")


def defined_ids() -> set[str]:
    if not SPEC.is_file():
        pytest.fail(f"{SPEC.relative_to(ROOT)} does not exist: the clauses the code cites are defined nowhere")
    ids = DEFINITION.findall(SPEC.read_text(encoding="utf-8"))
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    assert not duplicates, f"clauses defined more than once in spec/came.md: {duplicates}"
    assert ids, "spec/came.md defines no clause (no line starts with a bold CAME id)"
    return set(ids)


def citations(path: Path) -> list[tuple[str, bool]]:
    """(id, is_family) for every citation in the file."""
    return [(m.group(1), m.group(2) is not None) for m in CITATION.finditer(path.read_text(encoding="utf-8"))]


def python_files(directory: str) -> list[Path]:
    return sorted(p for p in (ROOT / directory).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_defined_clause_is_cited_by_a_test():
    """Each clause of spec/came.md is cited by at least one file under tests/."""
    defined = defined_ids()
    cited = {cid for path in python_files("tests") for cid, family in citations(path) if not family}
    missing = sorted(defined - cited, key=lambda s: (s.rsplit("-", 1)[0], len(s), s))
    assert not missing, f"clauses no test cites: {missing}"


def test_no_file_cites_an_undefined_clause():
    """Every id cited in tests/, reference/, conformance/ and fixtures/ is defined in spec/came.md."""
    defined = defined_ids()
    bad = []
    for directory in CITING_DIRS:
        for path in python_files(directory):
            for cid, family in citations(path):
                ok = any(d.startswith(cid + "-") for d in defined) if family else cid in defined
                if not ok:
                    bad.append(f"{path.relative_to(ROOT)}: {cid}{'-*' if family else ''}")
    assert not bad, "citations of clauses spec/came.md does not define:\n" + "\n".join(sorted(set(bad)))


def test_the_parser_itself():
    """The patterns find definitions only at line starts, and tell families from ids."""
    text = "**CAME-STEP-3** defined\n see **CAME-STEP-4** not a definition\n**CAME-ERR-S1** (x)\n"
    assert DEFINITION.findall(text) == ["CAME-STEP-3", "CAME-ERR-S1"]
    found = [(m.group(1), m.group(2) is not None) for m in CITATION.finditer(
        'CAME-ERR-* and "CAME-LR-", CAME-STEP-3V, CAME-BETA2-1 … CAME-STEP-12.')]
    prefix = "CAME" + "-"  # split, so that this file cites no family that does not exist
    assert found == [(prefix + "ERR", True), (prefix + "LR", True), ("CAME-STEP-3V", False),
                     ("CAME-BETA2-1", False), ("CAME-STEP-12", False)]


def test_the_error_table_in_the_spec_is_generated_from_the_contract():
    """CAME-ERR-1 … CAME-ERR-23, CAME-ERR-S1 … CAME-ERR-S3: spec §6.2 equals render_contract's output."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("render_contract", ROOT / "spec" / "render_contract.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.embedded() == module.render(), "run: python spec/render_contract.py --write"
