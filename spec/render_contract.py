"""Print the error-contract table of spec/came.md §6 from reference.contract.

The table (an overview) and the defining line of every error clause sit between the markers
``<!-- contract:begin -->`` and ``<!-- contract:end -->`` and must equal ``render()`` exactly,
so the prose and the data cannot drift apart.  Regenerate with:

    python spec/render_contract.py            # print
    python spec/render_contract.py --write    # update came.md
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere in the repo

from came_conformance.reference.contract import CLAUSES, ErrorClause  # noqa: E402

BEGIN = "<!-- contract:begin -->"
END = "<!-- contract:end -->"
SPEC = Path(__file__).with_name("came.md")

HEADER = ("| id | profiles | argument(s) | bad value | exception | phase | origin |",
          "|---|---|---|---|---|---|---|")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def row(clause: ErrorClause) -> str:
    arguments = ", ".join(f"`{a}`" for a in clause.arguments)
    profiles = ", ".join(clause.profiles)
    return (f"| {clause.id} | {profiles} | {arguments} | {_cell(clause.bad_values)} | {clause.exception} "
            f"| {clause.phase} | {clause.origin} |")


def definition(clause: ErrorClause) -> str:
    """The clause's defining line: it starts with the bold id, as every spec clause does."""
    arguments = ", ".join(f"`{a}`" for a in clause.arguments)
    return (f"**{clause.id}** ({', '.join(clause.profiles)}; {clause.phase}; {clause.origin}) {arguments}: "
            f"{clause.bad_values} → {clause.exception}. Rule: {clause.rule}.")


def render() -> str:
    """The markdown table, then one defining line per clause, in the order of reference.contract.CLAUSES."""
    table = "\n".join((*HEADER, *(row(c) for c in CLAUSES)))
    return table + "\n\n" + "\n\n".join(definition(c) for c in CLAUSES)


def embedded(spec_text: str | None = None) -> str:
    """The table currently written in spec/came.md between the markers (without them)."""
    text = SPEC.read_text(encoding="utf-8") if spec_text is None else spec_text
    start = text.index(BEGIN) + len(BEGIN)
    return text[start:text.index(END)].strip("\n")


def write() -> None:
    """Replace the text between the markers in spec/came.md with render()."""
    text = SPEC.read_text(encoding="utf-8")
    start = text.index(BEGIN) + len(BEGIN)
    SPEC.write_text(text[:start] + "\n" + render() + "\n" + text[text.index(END):], encoding="utf-8")


if __name__ == "__main__":

    if sys.argv[1:] == ["--write"]:
        write()
    else:
        print(render())
