"""Known deviations: per-target expected failures and declared gaps, with evidence.

A deviations file (``targets/<name>/deviations.json``, or any file given with ``--deviations``)
lists, per target, each way it departs from the spec: id, clause, summary, evidence, and a
``match`` that selects the **failure points** it explains.  A failure point is one failing tensor
(or one failed call) of one case, and it is matched by its **signature**, never by clause alone:

- numeric points (record kinds ``trajectory``, ``resume``): the clause, the tensor, whether the
  parameter is factored, the dtype, the variant and the kind of divergence (a finite value off its
  bound, a NaN or an infinity where the reference is finite, a wrong shape, a missing tensor, a call
  that raised, ...), with the case's flags and the options it needs;
- error-contract points (kind ``error``): the clause, the argument and the outcome category.

``match`` keys (every key given must hold; values are lists):

- ``variants``, ``dtype``, ``kind``: the record's execution variant, dtype, kind;
- ``divergence_clause``, ``divergence_tensor``, ``factored``, ``divergence``, ``layout``: the point's
  clause, tensor, factored-ness (true / false), divergence kind (``DIVERGENCES``: ``value`` a finite
  value off its bound, ``zero`` exactly 0 where the reference is not, ``nan`` / ``inf`` where the
  reference is finite, ``finite`` where it is not, ``shape``, ``missing``, ``raised``, ``counter``,
  ``crash``, ``count``) and sharding layout (spec §9);
- ``divergence_step``: the step at which the point failed;
- ``error_clause``, ``argument``, ``category``: an error case's clause, argument, outcome category;
- ``requires_any`` / ``requires_all``: the case needs at least one / all of these options;
- ``flags_any`` / ``flags_all`` / ``flags_none``: the case carries one / all / none of these flags;
- ``reason_contains``: for declared gaps, a substring of the target's not-applicable reason;
- ``outcome``: what it explains: ``fail`` (default), ``error`` (a crash or hang), or
  ``not_applicable`` for a **declared gap** (the target cannot express the case; see below).

``REQUIRED`` says which keys each kind of entry must give, so that no entry explains by clause alone.
A failing record becomes ``expected_deviation`` only when every one of its failure points is
explained; an N/A record at the target's own request is a gap unless a gap entry explains it.

After a full run each deviation is **observed** (it explained a failure point), **refuted** (it
explained nothing, yet cases inside its scope ran and passed: the target may have been fixed), or
**unverified** (every case in its scope was masked by another failure, blocked or not applicable).
Only refuted deviations are reported as "declared but not observed".
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

#: Kinds of divergence of a failure point (execute.divergence_kind).
DIVERGENCES = ("value", "zero", "nan", "inf", "finite", "shape", "missing", "raised", "counter", "crash", "count")

RECORD_KEYS = {
    "variants": lambda r, p: r["variant"],
    "dtype": lambda r, p: r.get("dtype"),
    "kind": lambda r, p: r["kind"],  # "trajectory", "resume", "error", ...
    "divergence_clause": lambda r, p: p.get("clause"),
    "divergence_tensor": lambda r, p: p.get("tensor"),
    "factored": lambda r, p: p.get("factored"),
    "divergence": lambda r, p: p.get("divergence"),
    "divergence_step": lambda r, p: p.get("step"),
    "layout": lambda r, p: p.get("layout") or r.get("layout"),
    "error_clause": lambda r, p: r["clauses"][0] if r["kind"] == "error" else None,
    "argument": lambda r, p: r.get("argument"),
    "category": lambda r, p: r.get("category"),
}
SET_KEYS = ("requires_any", "requires_all", "flags_any", "flags_all", "flags_none")
MATCH_KEYS = set(RECORD_KEYS) | set(SET_KEYS) | {"outcome", "reason_contains"}
OUTCOMES = ("fail", "error", "not_applicable")

#: Keys every entry must give, by what it explains: a signature, never a clause alone.
REQUIRED = {
    "numeric": ("kind", "variants", "dtype", "divergence_clause", "divergence_tensor", "factored"),
    "error": ("kind", "error_clause", "argument", "category"),
    "gap": ("kind",),
}


class DeviationsFileError(ValueError):
    """A deviations file that cannot be used: the message names the file, the entry and the rule."""


def entry_kind(match: dict) -> str:
    if match.get("outcome") == "not_applicable":
        return "gap"
    return "error" if match.get("kind") == ["error"] else "numeric"


def load(path: Path | None, must_exist: bool = False) -> list[dict]:
    """The entries of a deviations file, checked strictly (DeviationsFileError otherwise).

    No file means no deviations (a built-in target that declares none); ``must_exist``: the file was
    named (``--deviations``, ``CAME_DEVIATIONS``), so a missing one is an error.
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
    seen: set[str] = set()
    for d in data["deviations"]:
        if not isinstance(d, dict):
            raise DeviationsFileError(f"deviations file {path}: every deviation is an object, got {d!r}")
        name = d.get("id")
        missing = {"id", "clause", "summary", "evidence", "match"} - set(d)
        if missing:
            raise DeviationsFileError(f"{path}: deviation {name}: lacks {sorted(missing)}")
        if name in seen:
            raise DeviationsFileError(f"{path}: deviation id {name!r} is declared twice")
        seen.add(name)
        m = d["match"]
        if not isinstance(m, dict):
            raise DeviationsFileError(f"{path}: deviation {name}: 'match' must be an object")
        unknown = set(m) - MATCH_KEYS
        lists = [k for k, v in m.items() if k not in ("outcome", "reason_contains") and not isinstance(v, list)]
        if unknown or lists:  # a typo or a string would silently widen the match
            raise DeviationsFileError(f"{path}: deviation {name}: unknown match keys {sorted(unknown)}, "
                                     f"or values that are not lists {lists}")
        if m.get("outcome", "fail") not in OUTCOMES:
            raise DeviationsFileError(f"{path}: deviation {name}: outcome must be one of {OUTCOMES}")
        bad = [v for v in m.get("divergence", []) if v not in DIVERGENCES]
        if bad:
            raise DeviationsFileError(f"{path}: deviation {name}: divergence {bad} not among {DIVERGENCES}")
        kind = entry_kind(m)
        absent = [k for k in REQUIRED[kind] if k not in m]
        if absent:
            raise DeviationsFileError(f"{path}: deviation {name}: a {kind} entry must give {list(REQUIRED[kind])} "
                                     f"(a signature, not a clause alone); missing {absent}")
        if kind == "gap" and not set(m) & {"error_clause", "requires_any", "requires_all", "flags_any",
                                             "flags_all", "reason_contains"}:
            raise DeviationsFileError(f"{path}: deviation {name}: a declared gap must say which cases it covers "
                                     f"(error_clause, requires_*, flags_* or reason_contains)")
    return data["deviations"]


def file_identity(path: Path | None, root: Path | None = None) -> dict | None:
    """Which deviations file a report used: its path (relative to ``root`` when inside it) and SHA-256."""
    if path is None or not Path(path).exists():
        return None
    shown = Path(path)
    if root is not None and shown.resolve().is_relative_to(root.resolve()):
        shown = shown.resolve().relative_to(root.resolve())
    return {"path": str(shown), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def points(record: dict) -> list[dict]:
    """Where a record failed: every failing tensor of each parameter at its first failing step, or its
    one failed call."""
    return record.get("failures") or [record.get("first_divergence") or {}]


def signature(record: dict, point: dict) -> dict:
    """The failure signature of one point (what a deviation matches, what summaries group by)."""
    if record["kind"] == "error":
        return {"kind": "error", "clause": (record.get("clauses") or [""])[0], "argument": record.get("argument"),
                "category": record.get("category"), "variant": record["variant"]}
    return {"kind": record["kind"], "clause": point.get("clause"), "tensor": point.get("tensor"),
            "factored": point.get("factored"), "divergence": point.get("divergence"), "dtype": record.get("dtype"),
            "variant": record["variant"], "layout": point.get("layout") or record.get("layout")}


def signature_key(record: dict, point: dict) -> tuple:
    """A point's signature, hashable: what Hypothesis exploration tells apart (each distinct key is
    shrunk and reported once), the same fields summaries group by."""
    return tuple(sorted(signature(record, point).items(), key=lambda kv: kv[0]))


def unexplained(deviations: list[dict], record: dict) -> list[dict]:
    """The failure points of a record that no deviation explains."""
    return [point for point in points(record) if not any(matches(d, record, point) for d in deviations)]


def _static(m: dict, record: dict) -> bool:
    """The keys that do not depend on the failure point: variant, dtype, kind, options, flags, error row."""
    for key in ("variants", "dtype", "kind", "error_clause", "argument"):
        if key in m and RECORD_KEYS[key](record, {}) not in m[key]:
            return False
    requires, flags = set(record.get("requires", ())), set(record.get("flags", ()))
    return (("requires_any" not in m or bool(set(m["requires_any"]) & requires))
            and ("requires_all" not in m or set(m["requires_all"]) <= requires)
            and ("flags_any" not in m or bool(set(m["flags_any"]) & flags))
            and ("flags_all" not in m or set(m["flags_all"]) <= flags)
            and ("flags_none" not in m or not set(m["flags_none"]) & flags))


def point_outcome(record: dict, point: dict) -> str:
    """What a point is: a crash or hang (``error``), a wrong result (``fail``), or a gap."""
    if record.get("observed_outcome", record["outcome"]) == "not_applicable":
        return "not_applicable"
    return "error" if point.get("divergence") == "crash" else "fail"


def matches(deviation: dict, record: dict, point: dict | None = None) -> bool:
    """Does ``deviation`` explain this failure point of ``record`` (default: its first)?"""
    m = deviation["match"]
    point = point if point is not None else points(record)[0]
    outcome = point_outcome(record, point)
    if outcome != m.get("outcome", "fail") or not _static(m, record):
        return False
    if outcome == "not_applicable":
        return m.get("reason_contains", "") in (record.get("reason") or "")
    return all(key not in m or get(record, point) in m[key] for key, get in RECORD_KEYS.items())


def explain(deviations: list[dict], record: dict) -> list[str] | None:
    """The deviations that explain every failure point of a record, or None if one is unexplained."""
    ids = []
    for point in points(record):
        found = next((d["id"] for d in deviations if matches(d, record, point)), None)
        if found is None:
            return None
        if found not in ids:
            ids.append(found)
    return ids


def in_scope(deviation: dict, record: dict) -> bool:
    """Could this record have shown the deviation (its static keys hold and it is of the right kind)?"""
    return _static(deviation["match"], record)


def apply(deviations: list[dict], records: list[dict]) -> dict[str, dict]:
    """Mark explained failures and declared gaps; per deviation: observed, refuted or unverified.

    Returns ``{id: {"status": ..., "observed": n, "passed_in_scope": n}}``.
    """
    observed: dict[str, int] = {d["id"]: 0 for d in deviations}
    for record in records:
        if record["outcome"] not in ("fail", "error", "not_applicable"):
            continue
        if record["outcome"] == "not_applicable" and record.get("na_source") != "target":
            continue  # outside the target's declaration: not a gap, nothing to explain
        ids = explain(deviations, record)
        if ids:
            record["deviation"], record["deviations"] = ids[0], ids
            record["observed_outcome"] = record["outcome"]
            record["outcome"] = "expected_deviation" if record["outcome"] != "not_applicable" else "declared_gap"
            for i in ids:
                observed[i] += 1
    status = {}
    for d in deviations:
        passed = sum(1 for r in records if r["outcome"] == "pass" and in_scope(d, r))
        state = "observed" if observed[d["id"]] else "refuted" if passed else "unverified"
        status[d["id"]] = {"status": state, "observed": observed[d["id"]], "passed_in_scope": passed}
    return status
