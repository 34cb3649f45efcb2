"""Deviations stacked on mutants: a declared deviation must not absorb an unrelated bug (issue 9).

For every mutant of the catalogue and every built-in target's deviations file, the question is: if
this port also had that target's declared deviations, would the suite still catch its bug?  The
file's entries are applied to the mutant's records as they are, except that their ``variants`` are
those of the mutant (a MindSpore entry restricted to ``graph-came`` would otherwise never apply, and
the check would prove nothing).

Killing is monotone in the deviations: stacking entries can only turn failures into expected
deviations, never passes into failures, and the cases up to the mutant's killer are the same.  So a
mutant stays killed by the same record unless the stacked file explains that record; only then is the
mutant run again with the file stacked.  A mutant absorbed by a stacked file is a survivor, unless it
is the very bug the entry declares (``Mutant.same_as``), and then only that entry may absorb it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from came_conformance import deviations as deviations_mod
from came_conformance import runner
from came_conformance.targets import BUILTIN, resolve


def stackable_files() -> dict[str, Path]:
    """The built-in targets' deviations files, by target."""
    out = {}
    for name in sorted(BUILTIN):
        path = resolve(name).deviations
        if path is not None and Path(path).exists():
            out[name] = Path(path)
    return out


def adapt(entries: list[dict], variants: list[str]) -> list[dict]:
    """The entries with their ``variants`` replaced by the mutant's (everything else as declared)."""
    out = []
    for d in entries:
        match = dict(d["match"])
        if "variants" in match:
            match["variants"] = list(variants)
        out.append({**d, "match": match})
    return out


def stack(target_name: str, label: str, same_as: tuple[str, ...], killer: dict | None,
          entries_by_target: dict[str, list[dict]], out: Path, cfg: runner.Settings, variants=("default",)) -> list[dict]:
    """One row per stacked file: still killed (same record, or another after a re-run) or absorbed.

    ``target_name`` is the mutant as a target, ``label`` its name in the table, ``same_as`` the ids
    of the declared deviations that describe exactly its bug (catalogue ``Mutant.same_as``).
    """
    rows = []
    for target, entries in entries_by_target.items():
        stacked = adapt(entries, list(variants))
        row = {"mutant": label, "file": target}
        if killer is None:
            rows.append({**row, "status": "not killed alone"})
            continue
        explained = deviations_mod.explain(stacked, killer) if killer["outcome"] in ("fail", "error") else None
        if explained is None:
            rows.append({**row, "status": "killed", "by": killer["id"], "rerun": False})
            continue
        run_dir = out / "stacked" / f"{label.replace(':', '-')}--{target}"
        path = out / "stacked" / f"{label.replace(':', '-')}--{target}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"deviations": stacked}))
        result = runner.run(target_name, run_dir, dataclasses.replace(cfg, deviations=str(path)),
                            progress=lambda m: None)
        record = next((r for r in result["records"] if r["outcome"] in ("fail", "error")), None)
        absorbed_by = sorted({i for r in result["records"] for i in (r.get("deviations") or ())})
        if record is not None:
            rows.append({**row, "status": "killed", "by": record["id"], "rerun": True})
        elif absorbed_by and set(absorbed_by) <= set(same_as):
            rows.append({**row, "status": "absorbed as declared", "by": ", ".join(absorbed_by), "rerun": True})
        else:
            rows.append({**row, "status": "survived", "by": ", ".join(absorbed_by), "rerun": True})
    return rows
