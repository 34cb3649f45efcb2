"""The verdict: two answers, each earned from evidence (README "Reading a verdict").

**Spec conformance** answers "does the target do what spec/came.md says, within what it declares?":

- ``DOES NOT CONFORM`` when any case failed, crashed or was blocked, declared deviations included;
- ``INCONCLUSIVE`` when nothing failed but the evidence does not suffice (``EVIDENCE`` below), or the
  run was partial (a case file, a subset of sources or variants, a stopped or aborted run);
- ``CONFORMS`` only when every evidence unit was judged and every judged case passed.

**Baseline** answers "does it behave exactly as its deviations file says?", which is what CI
follows:

- ``CHANGED`` when a failure point is not explained by a declared deviation, or (full runs) a
  declared deviation is refuted: it explained nothing, yet cases in its scope ran and passed;
- ``INCONCLUSIVE`` when nothing changed but some evidence is missing and not declared as a gap, or the
  run was aborted;
- ``MATCHES`` otherwise.

EVIDENCE, the units a run must judge (a unit is required when the run selected its source and some
case of it lies inside the target's declaration; judged means pass, fail, error or expected deviation):

- numeric: every execution variant, in every dtype the target declares, judges at least one
  trajectory (tier 0, fixtures, Hypothesis); a variant blocked by its tier-0 failure already fails;
- error contract: every row (clause, argument) of the target's API is judged, construction rows
  once, step rows on every variant; a row answered only "not applicable" is not judged;
- resume: a target that declares ``save_restore`` judges a resume check on every variant;
- no case the target's declaration covers may be declined by the target at run time (``NotApplicable``
  raised by the adapter) unless its deviations file declares that gap; declared gaps keep the baseline,
  never the spec answer.

Exit codes (``exit_code``): 0 baseline MATCHES, 1 CHANGED, 3 INCONCLUSIVE or aborted (2 is kept for
usage and input errors, raised before any case runs).
"""
from __future__ import annotations

from collections import Counter, defaultdict

from came_conformance import deviations as deviations_mod
from came_conformance.reference import contract

CONFORMS, DOES_NOT_CONFORM, INCONCLUSIVE = "CONFORMS", "DOES NOT CONFORM", "INCONCLUSIVE"
MATCHES, CHANGED = "MATCHES", "CHANGED"
EXIT_CODES = {MATCHES: 0, CHANGED: 1, INCONCLUSIVE: 3}
JUDGED = ("pass", "fail", "error", "expected_deviation")
FAILED = ("fail", "error", "expected_deviation", "blocked")
NUMERIC_KINDS = ("trajectory", "resume", "blocked", "load")

#: Error-contract categories and numeric failures, most serious first (summaries list them in this order).
SEVERITY = ("numeric", "runs to completion", "did not raise", "rejected a valid value", "raised another type",
            "setup failed", "raised, but the message does not name the argument")


def exit_code(verdict: dict) -> int:
    return EXIT_CODES[verdict["baseline"]["answer"]]


def _numeric(record: dict) -> bool:
    return record["kind"] in NUMERIC_KINDS


def _scope(run: dict) -> dict:
    """What the run set out to judge: its variants, sources, and whether it is a full run."""
    settings, info = run["settings"], run["info"] or {}
    variants = list(settings.get("variants") or info.get("variants") or [])
    partial = []
    if settings.get("case_file"):
        partial.append(f"a replayed case file ({settings['case_file']})")
    if settings.get("variants"):
        partial.append(f"variants {', '.join(settings['variants'])} only")
    if not settings.get("full_run", True) and not settings.get("case_file") and not settings.get("variants"):
        partial.append(f"sources {', '.join(settings['sources'])} only")
    if run.get("stopped"):
        partial.append(run["stopped"])
    if run.get("aborted"):
        partial.append(f"aborted ({run['aborted']})")
    return {"variants": variants, "sources": set(settings["sources"]), "case_file": settings.get("case_file"),
            "partial": partial}


def evidence_gaps(run: dict) -> list[dict]:
    """Every evidence unit the run needed and did not judge (``EVIDENCE``), and every undeclared gap.

    Each gap: ``{"unit", "what", "declared"}``; ``declared`` is true for a target-declined case that a
    declared gap entry of the deviations file explains.
    """
    info, records = run["info"] or {}, run["records"]
    if not info:
        return [{"unit": "load", "what": "the target did not describe itself", "declared": False}]
    scope = _scope(run)
    gaps: list[dict] = []
    for r in records:
        if r["outcome"] in ("not_applicable", "declared_gap") and r.get("na_source") == "target":
            gaps.append({"unit": f"{r['kind']} case", "what": f"{r['id']} ({r['variant']}): the target declined it: "
                         f"{(r.get('reason') or '')[:160]}", "declared": r["outcome"] == "declared_gap",
                         "deviation": r.get("deviation")})
    if scope["case_file"]:
        for variant in scope["variants"]:
            if not any(r["variant"] == variant and r["outcome"] in JUDGED for r in records):
                gaps.append({"unit": "case", "what": f"the case file was not judged on {variant}", "declared": False})
        return gaps
    blocked = {r["variant"] for r in records if r["outcome"] == "blocked"}
    by_variant_dtype = defaultdict(int)
    for r in records:
        if _numeric(r) and r["outcome"] in JUDGED:
            by_variant_dtype[(r["variant"], r.get("dtype"))] += 1
    if scope["sources"] & {"fixtures", "hypothesis"}:
        for variant in scope["variants"]:
            if variant in blocked:
                continue
            for dtype in info.get("dtypes") or ():
                if not by_variant_dtype[(variant, dtype)]:
                    gaps.append({"unit": "numeric", "what": f"no {dtype} trajectory was judged on variant "
                                 f"{variant}", "declared": False})
    if "resume" in scope["sources"] and "save_restore" in (info.get("options") or ()):
        for variant in scope["variants"]:
            if variant not in blocked and not any(r["kind"] == "resume" and r["variant"] == variant
                                                  and r["outcome"] in JUDGED for r in records):
                gaps.append({"unit": "resume", "what": f"no resume check was judged on variant {variant}",
                             "declared": False})
    if "errors" in scope["sources"]:
        gaps += _error_row_gaps(info, records, scope["variants"])
    return gaps


def _error_row_gaps(info: dict, records: list[dict], variants: list[str]) -> list[dict]:
    """Rows of the API's error contract that were applicable but never judged."""
    rows: dict[tuple, dict] = {}
    for r in records:
        if r["kind"] != "error" or not r.get("argument") or (r.get("source") or "").startswith("boundary:"):
            continue  # valid-boundary acceptances are checked, but they do not stand in for a row's errors
        clause = r["clauses"][0]
        row = contract.BY_ID.get(clause)
        key = (clause, r["argument"], r["variant"] if row is not None and row.phase == "step" else "*")
        cell = rows.setdefault(key, {"applicable": False, "judged": False})
        cell["applicable"] |= r.get("na_source") != "declaration"
        cell["judged"] |= r["outcome"] in JUDGED
    gaps = []
    for row in contract.clauses_for(info.get("api")):
        for argument in row.arguments:
            for variant in (variants if row.phase == "step" else ["*"]):
                cell = rows.get((row.id, argument, variant))
                if cell and cell["applicable"] and not cell["judged"]:
                    where = f" on variant {variant}" if variant != "*" else ""
                    gaps.append({"unit": "error row", "what": f"{row.id} ({argument}){where}: no case was judged "
                                 f"(not applicable is not a pass)", "declared": all(
                                     r["outcome"] == "declared_gap" for r in records if r["kind"] == "error"
                                     and r["clauses"][0] == row.id and r.get("argument") == argument
                                     and r.get("na_source") == "target")})
    return gaps


def coverage(records: list[dict]) -> dict[str, dict[str, dict[str, int]]]:
    """Per spec clause and variant: cases passed, failed (expected deviations and crashes included), N/A."""
    table: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for r in records:
        column = "passed" if r["outcome"] == "pass" else "failed" if r["outcome"] in FAILED else "not_applicable"
        for clause in r.get("clauses") or ():
            table[clause][r["variant"]][column] += 1
    return {c: {v: {k: n[k] for k in ("passed", "failed", "not_applicable")} for v, n in sorted(by.items())}
            for c, by in sorted(table.items(), key=lambda kv: _clause_key(kv[0]))}


def _clause_key(clause: str):
    import re
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", clause)]


def never_exercised(records: list[dict]) -> list[str]:
    """Clauses some case of this run cites but no judged case exercised."""
    cited, judged = set(), set()
    for r in records:
        cited.update(r.get("clauses") or ())
        if r["outcome"] in JUDGED:
            judged.update(r.get("clauses") or ())
    return sorted(cited - judged, key=_clause_key)


def failure_groups(records: list[dict]) -> list[dict]:
    """Failing records grouped by the signature of their failure points, most serious first."""
    groups: dict[str, dict] = {}
    for r in records:
        if r["outcome"] not in ("fail", "error", "expected_deviation"):
            continue
        pts = deviations_mod.points(r)
        sigs = [deviations_mod.signature(r, p) for p in pts]
        key = repr(sorted(repr(sorted(s.items())) for s in sigs))
        g = groups.setdefault(key, {"signatures": sigs, "count": 0, "records": [], "expected": True,
                                    "deviations": set(), "severity": _severity(r)})
        g["count"] += 1
        g["records"].append(r["id"])
        g["expected"] &= r["outcome"] == "expected_deviation"
        g["deviations"].update(r.get("deviations") or ())
        best = g.get("representative")
        if best is None or _smaller(r, best):
            g["representative"] = r
    out = sorted(groups.values(), key=lambda g: (g["expected"], SEVERITY.index(g["severity"]), -g["count"]))
    for g in out:
        g["deviations"] = sorted(g["deviations"])
    return out


def _severity(record: dict) -> str:
    if record["kind"] == "error":
        return record.get("category") if record.get("category") in SEVERITY else "raised another type"
    fd = record.get("first_divergence") or {}
    return "runs to completion" if fd.get("divergence") == "crash" else "numeric"


def _size(record: dict) -> tuple:
    """How small a counterexample is: shrunk first, then fewer elements and steps."""
    case = record.get("case") or {}
    numel = sum(len(p.get("hex", ())) for p in case.get("params") or ())
    return (not (record.get("hypothesis") or {}).get("shrunk", False), numel, len(case.get("grads") or ()))


def _smaller(a: dict, b: dict) -> bool:
    return _size(a) < _size(b)


def _answer_spec(records, gaps, scope) -> tuple[str, str]:
    failed = [r for r in records if r["outcome"] in FAILED]
    judged = [r for r in records if r["outcome"] in JUDGED]
    if failed:
        clauses = sorted({p.get("clause") or (r.get("clauses") or ["?"])[0] for r in failed
                          for p in deviations_mod.points(r)} - {None},
                         key=lambda c: (c in contract.BY_ID, _clause_key(c)))  # numeric clauses before the error contract
        deviations = {d for r in failed for d in r.get("deviations") or ()}
        unexplained = len(failure_groups([r for r in failed if r["outcome"] != "expected_deviation"]))
        blocked = sum(1 for r in failed if r["outcome"] == "blocked")
        count = len(deviations) + unexplained
        share = f"{len(failed) - blocked} of {len(judged)} judged cases failed" + (
            f" ({100 * (len(failed) - blocked) / len(judged):.0f} %)" if judged else "")
        text = (f"{count} deviation{'s' if count != 1 else ''} ({len(deviations)} declared, {unexplained} "
                f"undeclared) touching {', '.join(clauses[:12])}{' …' if len(clauses) > 12 else ''}; {share}"
                + (f"; {blocked} variant{'s' if blocked != 1 else ''} blocked" if blocked else "")
                + (f"; {len(gaps)} evidence gap{'s' if len(gaps) != 1 else ''} besides" if gaps else ""))
        return DOES_NOT_CONFORM, text
    reasons = list(scope["partial"])
    if gaps:
        reasons.append(f"{len(gaps)} evidence gap{'s' if len(gaps) != 1 else ''} ({_gap_summary(gaps)})")
    if not judged:
        reasons.append("no case was judged")
    if reasons:
        return INCONCLUSIVE, "no case failed, but " + "; ".join(reasons)
    return CONFORMS, f"all {len(judged)} judged cases passed"


def _gap_summary(gaps: list[dict]) -> str:
    units = Counter(g["unit"] for g in gaps)
    return ", ".join(f"{n} {u}" for u, n in units.most_common())


def _answer_baseline(records, gaps, scope, status) -> tuple[str, str]:
    unexplained = [r for r in records if r["outcome"] in ("fail", "error")]
    refuted = sorted(i for i, s in status.items() if s["status"] == "refuted") if not scope["partial"] else []
    if unexplained or refuted:
        parts = []
        if unexplained:
            groups = failure_groups(unexplained)
            parts.append(f"{len(unexplained)} case{'s' if len(unexplained) != 1 else ''} failed in "
                         f"{len(groups)} way{'s' if len(groups) != 1 else ''} no declared deviation explains")
        if refuted:
            parts.append(f"declared but not observed although their cases ran and passed: {', '.join(refuted)}")
        return CHANGED, "; ".join(parts)
    undeclared = [g for g in gaps if not g["declared"]]
    aborted = [p for p in scope["partial"] if p.startswith("aborted")]
    if undeclared or aborted:
        reasons = aborted + ([f"{len(undeclared)} undeclared evidence gap{'s' if len(undeclared) != 1 else ''} "
                              f"({_gap_summary(undeclared)})"] if undeclared else [])
        return INCONCLUSIVE, "nothing changed, but " + "; ".join(reasons)
    observed = sorted(i for i, s in status.items() if s["status"] == "observed")
    unverified = sorted(i for i, s in status.items() if s["status"] == "unverified")
    text = (f"every failure is a declared deviation ({len(observed)} observed)" if observed
            else "no failure, as declared")
    if unverified:
        text += f"; {len(unverified)} declared deviation{'s' if len(unverified) != 1 else ''} could not be " \
                f"checked (their cases were masked, blocked or not run): {', '.join(unverified)}"
    return MATCHES, text


def _part(records, gaps, scope, status) -> dict:
    spec, spec_text = _answer_spec(records, gaps, scope)
    baseline, baseline_text = _answer_baseline(records, gaps, scope, status)
    return {"spec": {"answer": spec, "text": spec_text}, "baseline": {"answer": baseline, "text": baseline_text}}


def decide(run: dict) -> dict:
    """Both answers for the whole run and for its numeric and error-contract parts, with the evidence."""
    records, scope = run["records"], _scope(run)
    status = run.get("deviation_status") or {}
    gaps = evidence_gaps(run)
    counts = Counter(r["outcome"] for r in records)
    numeric = [r for r in records if _numeric(r)]
    errors = [r for r in records if r["kind"] == "error"]
    numeric_ids = {d["id"] for d in run.get("declared_deviations", ())
                   if deviations_mod.entry_kind(d["match"]) != "error"}
    whole = _part(records, gaps, scope, status)
    verdict = {
        **whole,
        "parts": {
            "numeric": _part(numeric, [g for g in gaps if g["unit"] not in ("error row", "error case")], scope,
                             {i: s for i, s in status.items() if i in numeric_ids}),
            "error_contract": _part(errors, [g for g in gaps if g["unit"] in ("error row", "error case")], scope,
                                    {i: s for i, s in status.items() if i not in numeric_ids}),
        },
        "counts": {o: counts[o] for o in ("pass", "fail", "expected_deviation", "not_applicable", "declared_gap",
                                          "error", "blocked")},
        "partial": scope["partial"],
        "evidence_gaps": gaps,
        "never_exercised": never_exercised(records),
        "deviations": status,
    }
    verdict["exit_code"] = exit_code(verdict)
    return verdict
