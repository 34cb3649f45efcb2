"""Known deviations: per-target expected failures, with evidence (targets/<name>/deviations.json).

Each deviation names the spec clause, what the target does, the evidence, and a ``match``
that selects the failing outcomes it explains.  All keys of ``match`` must hold:

- ``variants``, ``dtype``, ``kind``: lists of allowed values;
- ``divergence_clause``: the clause of the first divergence (trajectory cases);
- ``divergence_tensor``, ``divergence_step``: the tensor and step of the first divergence;
- ``divergence_layout``, ``divergence_factored``: a sharded target's layout of the failing
  parameter (spec §9) and whether it is factored (true / false);
- ``error_clause``, ``argument``, ``category``: the error case's clause, argument, outcome category;
- ``requires_any`` / ``requires_all``: the case needs at least one / all of these options;
- ``flags_any``: the case carries at least one of these flags;
- ``outcome``: "fail" (default) or "error".

A failing outcome becomes ``expected deviation`` only when every one of its failure points
(the first failing tensor of each parameter) is explained by some deviation, so one declared
deviation cannot hide an unrelated bug in the same case.  A deviation that explains nothing in
a full run is reported as ``deviation not observed``.
"""
from __future__ import annotations

import json
from pathlib import Path

LIST_KEYS = {
    "variants": lambda r, point: r["variant"],
    "dtype": lambda r, point: r.get("dtype"),
    "kind": lambda r, point: r["kind"],  # "trajectory", "error" or "resume"
    "divergence_clause": lambda r, point: point.get("clause"),
    "divergence_tensor": lambda r, point: point.get("tensor"),
    "divergence_step": lambda r, point: point.get("step"),
    # sharded targets (spec §9, conformance.distributed.checks.locate): the layout of the failing
    # parameter, and whether it is factored (ndim >= 2)
    "divergence_layout": lambda r, point: point.get("layout"),
    "divergence_factored": lambda r, point: point.get("factored"),
    "error_clause": lambda r, point: r["clauses"][0] if r["kind"] == "error" else None,
    "argument": lambda r, point: r.get("argument"),
    "category": lambda r, point: r.get("category"),
}
SET_KEYS = ("requires_any", "requires_all", "flags_any")
MATCH_KEYS = set(LIST_KEYS) | set(SET_KEYS) | {"outcome"}


def load(path: Path | None) -> list[dict]:
    if path is None or not path.exists():
        return []
    data = json.loads(path.read_text())
    for d in data["deviations"]:
        missing = {"id", "clause", "summary", "evidence", "match"} - set(d)
        if missing:
            raise ValueError(f"{path}: deviation {d.get('id')} lacks {sorted(missing)}")
        unknown = set(d["match"]) - MATCH_KEYS
        lists = [k for k, v in d["match"].items() if k != "outcome" and not isinstance(v, list)]
        if unknown or lists:  # a typo or a string would silently widen the match
            raise ValueError(f"{path}: deviation {d['id']}: unknown match keys {sorted(unknown)}, "
                             f"or values that are not lists {lists}")
    return data["deviations"]


def _points(record: dict) -> list[dict]:
    """Where a record failed: the first failing tensor of every parameter (or its one failure)."""
    return record.get("failures") or [record.get("first_divergence") or {}]


def matches(deviation: dict, record: dict, point: dict | None = None) -> bool:
    """Does ``deviation`` explain this failure point of ``record`` (default: its first)?"""
    m = deviation["match"]
    point = point if point is not None else _points(record)[0]
    if record["outcome"] != m.get("outcome", "fail"):
        return False
    if any(key in m and get(record, point) not in m[key] for key, get in LIST_KEYS.items()):
        return False
    requires, flags = set(record.get("requires", ())), set(record.get("flags", ()))
    return (("requires_any" not in m or bool(set(m["requires_any"]) & requires))
            and ("requires_all" not in m or set(m["requires_all"]) <= requires)
            and ("flags_any" not in m or bool(set(m["flags_any"]) & flags)))


def explain(deviations: list[dict], record: dict) -> list[str] | None:
    """The deviations that explain every failure point of a record, or None if one is unexplained."""
    ids = []
    for point in _points(record):
        found = next((d["id"] for d in deviations if matches(d, record, point)), None)
        if found is None:
            return None
        if found not in ids:
            ids.append(found)
    return ids


def apply(deviations: list[dict], records: list[dict]) -> list[dict]:
    """Mark explained failures; return the declared deviations that explained nothing."""
    seen = set()
    for record in records:
        ids = explain(deviations, record) if record["outcome"] in ("fail", "error") else None
        if ids:
            record["deviation"], record["deviations"] = ids[0], ids
            record["observed_outcome"] = record["outcome"]
            record["outcome"] = "expected_deviation"
            seen.update(ids)
    return [d for d in deviations if d["id"] not in seen]
