"""Known deviations: per-target expected failures, with evidence (targets/<name>/deviations.json).

Each deviation names the spec clause, what the target does, the evidence, and a ``match``
that selects the failing outcomes it explains.  All keys of ``match`` must hold:

- ``variants``, ``dtype``, ``kind``: lists of allowed values;
- ``divergence_clause``: the clause of the first divergence (trajectory cases);
- ``divergence_tensor``: the tensor of the first divergence;
- ``error_clause``, ``argument``, ``category``: the error case's clause, argument, outcome category;
- ``requires_any``: the case needs at least one of these options;
- ``flags_any``: the case carries at least one of these flags;
- ``outcome``: "fail" (default) or "error".

A failing outcome explained by a deviation becomes ``expected deviation``; a deviation that
explains nothing in a run is reported as ``deviation not observed``.
"""
from __future__ import annotations

import json
from pathlib import Path

LIST_KEYS = {
    "variants": lambda r: r["variant"],
    "dtype": lambda r: r.get("dtype"),
    "kind": lambda r: r["kind"],  # "trajectory", "error" or "resume"
    "divergence_clause": lambda r: (r.get("first_divergence") or {}).get("clause"),
    "divergence_tensor": lambda r: (r.get("first_divergence") or {}).get("tensor"),
    "error_clause": lambda r: r["clauses"][0] if r["kind"] == "error" else None,
    "argument": lambda r: r.get("argument"),
    "category": lambda r: r.get("category"),
}


def load(path: Path | None) -> list[dict]:
    if path is None or not path.exists():
        return []
    data = json.loads(path.read_text())
    for d in data["deviations"]:
        missing = {"id", "clause", "summary", "evidence", "match"} - set(d)
        if missing:
            raise ValueError(f"{path}: deviation {d.get('id')} lacks {sorted(missing)}")
    return data["deviations"]


def matches(deviation: dict, record: dict) -> bool:
    m = deviation["match"]
    if record["outcome"] != m.get("outcome", "fail"):
        return False
    for key, get in LIST_KEYS.items():
        if key in m and get(record) not in m[key]:
            return False
    if "requires_any" in m and not set(m["requires_any"]) & set(record.get("requires", ())):
        return False
    if "flags_any" in m and not set(m["flags_any"]) & set(record.get("flags", ())):
        return False
    return True


def apply(deviations: list[dict], records: list[dict]) -> list[dict]:
    """Mark explained failures; return the declared deviations that explained nothing."""
    seen = set()
    for record in records:
        for d in deviations:
            if record["outcome"] in ("fail", "error") and matches(d, record):
                record["deviation"] = d["id"]
                record["observed_outcome"] = record["outcome"]
                record["outcome"] = "expected_deviation"
                seen.add(d["id"])
                break
    return [d for d in deviations if d["id"] not in seen]
