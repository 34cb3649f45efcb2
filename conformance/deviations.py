"""Known deviations: per-target expected failures, with evidence (targets/<name>/deviations.json).

Each deviation names the spec clause, what the target does, the evidence, and a ``match``
that selects the failing outcomes it explains.  All keys of ``match`` must hold:

- ``variants``, ``dtype``, ``kind``: lists of allowed values;
- ``divergence_clause``: the clause of the first divergence (trajectory cases);
- ``divergence_tensor``: the tensor of the first divergence;
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

import hashlib
import json
from pathlib import Path

from came_conformance.reference.step import is_factored

LIST_KEYS = {
    "variants": lambda r, point: r["variant"],
    "dtype": lambda r, point: r.get("dtype"),
    "kind": lambda r, point: r["kind"],  # "trajectory", "error" or "resume"
    "divergence_clause": lambda r, point: point.get("clause"),
    "divergence_tensor": lambda r, point: point.get("tensor"),
    "error_clause": lambda r, point: r["clauses"][0] if r["kind"] == "error" else None,
    "argument": lambda r, point: r.get("argument"),
    "category": lambda r, point: r.get("category"),
}
SET_KEYS = ("requires_any", "requires_all", "flags_any")
MATCH_KEYS = set(LIST_KEYS) | set(SET_KEYS) | {"outcome"}


class DeviationsFileError(ValueError):
    """A deviations file that cannot be used: missing, not JSON, or not of the documented form."""


def load(path: Path | None, must_exist: bool = False) -> list[dict]:
    """The deviations of ``path``; none when there is no file (a built-in target without deviations).

    ``must_exist``: the file was named (``--deviations``, ``CAME_DEVIATIONS``), so a missing one is an
    error.  Every problem is a ``DeviationsFileError`` that names the file and the rule.
    """
    if path is None or not Path(path).exists():
        if must_exist:
            raise DeviationsFileError(f"deviations file {path}: no such file")
        return []
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DeviationsFileError(f"deviations file {path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("deviations"), list):
        raise DeviationsFileError(f'deviations file {path}: must be an object with a "deviations" list')
    ids = set()
    for d in data["deviations"]:
        if not isinstance(d, dict):
            raise DeviationsFileError(f"deviations file {path}: every deviation is an object, got {d!r}")
        missing = {"id", "clause", "summary", "evidence", "match"} - set(d)
        if missing:
            raise DeviationsFileError(f"{path}: deviation {d.get('id')} lacks {sorted(missing)}")
        if d["id"] in ids:
            raise DeviationsFileError(f"{path}: deviation id {d['id']!r} is declared twice")
        ids.add(d["id"])
        if not isinstance(d["match"], dict):
            raise DeviationsFileError(f"{path}: deviation {d['id']}: match must be an object")
        unknown = set(d["match"]) - MATCH_KEYS
        lists = [k for k, v in d["match"].items() if k != "outcome" and not isinstance(v, list)]
        if unknown or lists:  # a typo or a string would silently widen the match
            raise DeviationsFileError(f"{path}: deviation {d['id']}: unknown match keys {sorted(unknown)}, "
                                      f"or values that are not lists {lists}")
    return data["deviations"]


def file_identity(path: Path | None, root: Path | None = None) -> dict | None:
    """What the report records of the deviations file in force: its path (relative to ``root``
    when inside it, else as given) and its SHA-256."""
    if path is None or not Path(path).exists():
        return None
    shown = Path(path)
    if root is not None and shown.resolve().is_relative_to(root.resolve()):
        shown = shown.resolve().relative_to(root.resolve())
    return {"path": str(shown), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


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


def unexplained(deviations: list[dict], record: dict) -> list[dict]:
    """The failure points of a record that no deviation explains."""
    return [point for point in _points(record) if not any(matches(d, record, point) for d in deviations)]


def signature(record: dict, point: dict) -> tuple:
    """Where a failure point is, to tell distinct failures apart (one per signature is shrunk).

    (clause, tensor, factored or not, dtype, variant, flags, layout); for an error case the
    "tensor" is the argument and its outcome category.  ``factored`` is None when unknown.
    """
    if record["kind"] == "error":
        return (record["clauses"][0] if record.get("clauses") else None,
                f"{record.get('argument')}: {record.get('category')}", None, record.get("dtype"), record["variant"],
                tuple(sorted(record.get("flags", ()))), point.get("layout"))
    return (point.get("clause"), point.get("tensor"), _factored(record, point), record.get("dtype"), record["variant"],
            tuple(sorted(record.get("flags", ()))), point.get("layout"))


def _factored(record: dict, point: dict) -> bool | None:
    """Is the failing parameter factored (CAME-STATE-2: two or more dimensions)?"""
    params = (record.get("case") or {}).get("params")
    if params and isinstance(point.get("param"), int) and point["param"] < len(params):
        return is_factored(tuple(params[point["param"]]["shape"]))
    return None


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
