"""Report writers: JSON (conformance/report.schema.json), a Markdown summary, JUnit XML.

Every file is written to a unique temporary name and renamed into place (``rundir.publish``),
so an interrupted run never leaves a truncated report (the outcomes themselves are already
safe in records.jsonl); every file carries the run id, and a run that did not finish never
reads as a pass (``run.status``; the verdict decides, and junit.xml follows it).
"""
from __future__ import annotations

import json
import math
import os
import platform
import re
import sys
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from came_conformance import names, rundir
from came_conformance import verdict as verdict_mod
from came_conformance.deviations import entry_kind

OUTCOMES = ("pass", "fail", "expected_deviation", "not_applicable", "declared_gap", "error", "blocked")
SCHEMA_VERSION = "1"
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")


def json_default(obj):
    """Sets and tuples as sorted lists, NumPy scalars as Python numbers."""
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def strict(obj):
    """The same data as strict JSON: non-finite floats become the strings "nan", "inf", "-inf"."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else repr(obj)
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    return obj


def dumps(obj, **kw) -> str:
    """Strict JSON (no NaN or Infinity tokens), readable by any JSON parser."""
    return json.dumps(strict(json.loads(json.dumps(obj, default=json_default))), allow_nan=False, **kw)


_XML_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _xml_text(text: str) -> str:
    return _XML_FORBIDDEN.sub("?", text)


def _atomic_write(path: Path, text: str) -> None:
    rundir.RunDirectory(path.parent).publish({path.name: text})


def _versions(*names: str) -> dict[str, str]:
    from importlib.metadata import version
    return {n: version(n) for n in names}


def verdict(run: dict) -> dict:
    """Both answers and their evidence (conformance/verdict.py)."""
    return verdict_mod.decide(run)


def repro_command(run: dict, record: dict, case_path: str) -> str:
    """A command that replays one case, into a directory of its own (the run's report stays)."""
    from came_conformance.runner import Settings

    return names.reproduce_command(run.get("target_argument", run["target"]), record["variant"], case_path,
                                   record["id"], run["settings"].get("timeout"), Settings.timeout)


def write_all(run: dict, out) -> dict:
    """The reports of ``run`` into ``out`` (a path, or its claim), then the claim is released."""
    directory = out if isinstance(out, rundir.RunDirectory) else rundir.held(out) or rundir.RunDirectory(Path(out))
    out, files, run_info = directory.path, {}, run.get("run") or {"id": directory.run_id, "status": rundir.COMPLETE}
    directory.run_id = directory.run_id or run_info["id"]
    for record in run["records"]:
        if record["outcome"] in ("fail", "error", "expected_deviation") and "case" in record:
            if not names.is_case_id(record["id"]):  # only content hashes name files
                record["repro"] = f"(not saved: {record['id'][:80]!r} is not a case id)"
                continue
            rel = f"cases/{record['id']}.json"
            files[rel] = dumps({"run_id": run_info["id"], "target": run["target"], "variant": record["variant"],
                                "case": record["case"]}, indent=1, sort_keys=True)
            record["repro"] = repro_command(run, record, os.path.relpath(out / rel, Path.cwd()))
    summary = verdict(run)
    document = {
        "schemaVersion": SCHEMA_VERSION, "target": run["target"], "info": run["info"], "settings": run["settings"],
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "runner_packages": _versions("numpy", "hypothesis", "mpmath"),
                        "CAME_MAX_ARRAY_SIZE": os.environ.get("CAME_MAX_ARRAY_SIZE", "64"),
                        **({"rank_starts": run["rank_starts"]} if "rank_starts" in run else {})},  # spec §9
        "run": run_info, "seconds": run["seconds"], "verdict": summary,
        "deviations": {"file": run.get("deviations_file"), "declared": run["declared_deviations"],
                       "status": run.get("deviation_status") or {}},
        "coverage": verdict_mod.coverage(run["records"]),
        "records": [{k: v for k, v in r.items() if k != "case"} for r in run["records"]],
        "warnings": run.get("warnings", []),
    }
    files["report.json"] = dumps(document, indent=1)
    files["summary.md"] = markdown(document, run["records"]) + f"\nRun `{run_info['id']}`.\n"
    files["junit.xml"] = junit(document)  # renamed last: a junit.xml only ever sits beside its report
    directory.publish(files)
    directory.write_run({"status": run_info["status"], "reason": run_info.get("reason", ""),
                         "seconds": run["seconds"], "records": len(document["records"])})
    if directory.claimed:
        directory.release()
    return summary


def headline(v: dict) -> list[str]:
    """The two answers, one line each: what someone who reads nothing else must learn."""
    return [f"**Spec: {v['spec']['answer']}** — {v['spec']['text']}.",
            f"**Baseline: {v['baseline']['answer']}** — {v['baseline']['text']}."]


def _signature_text(sig: dict) -> str:
    if sig.get("kind") == "error":
        return f"{sig['clause']} `{sig.get('argument')}`: {sig.get('category')} ({sig.get('variant')})"
    where = sig.get("tensor") or "-"
    fact = {True: "factored", False: "unfactored", None: ""}[sig.get("factored")]
    bits = [b for b in (fact, sig.get("dtype"), sig.get("variant"), sig.get("layout"),
                        f"divergence {sig.get('divergence')}" if sig.get("divergence") else "") if b]
    return f"{sig.get('clause')} {where} ({', '.join(bits)})"


def _serious(doc: dict, groups: list[dict]) -> list[str]:
    """Most serious first: undeclared failures, then declared deviations, numeric before wording."""
    declared = {d["id"]: d for d in doc["deviations"]["declared"]}
    lines, listed = [], set()
    for g in groups:
        if not g["expected"]:
            r = g["representative"]
            lines.append(f"**Undeclared** ({g['severity']}, {g['count']} case{'s' if g['count'] != 1 else ''}): "
                         + "; ".join(dict.fromkeys(_signature_text(s) for s in g["signatures"]))
                         + f". E.g. `{r['id']}`: {r['reason'][:300]}")
    ranked = []
    for g in groups:
        for i in g["deviations"]:
            if i not in listed:
                listed.add(i)
                ranked.append((verdict_mod.SEVERITY.index(g["severity"]), i))
    counts = Counter(d for r in doc["records"] for d in (r.get("deviations") or ()))
    for _, i in sorted(ranked):
        d = declared.get(i, {"clause": "?", "summary": i})
        what = "error contract" if entry_kind(d.get("match", {})) == "error" else "numeric"
        lines.append(f"**{i}** ({d['clause']}, {what}, {counts[i]} case{'s' if counts[i] != 1 else ''}): "
                     f"{d['summary']}.")
    return lines


def markdown(doc: dict, records: list[dict] | None = None) -> str:
    v, info = doc["verdict"], doc["info"] or {}
    records = records if records is not None else doc["records"]
    groups = verdict_mod.failure_groups(records)
    parts = v["parts"]
    lines = [f"# Conformance of `{doc['target']}`", "", *headline(v), "",
             f"Numeric: spec {parts['numeric']['spec']['answer']}, baseline {parts['numeric']['baseline']['answer']}."
             f" Error contract: spec {parts['error_contract']['spec']['answer']}, baseline "
             f"{parts['error_contract']['baseline']['answer']}. Exit code {v['exit_code']}.", ""]
    serious = _serious(doc, groups)
    if serious:
        lines += ["## Most serious first", ""] + [f"{n}. {text}" for n, text in enumerate(serious[:15], 1)]
        if len(serious) > 15:
            lines.append(f"… and {len(serious) - 15} more below.")
        lines.append("")
    dev_file = doc["deviations"].get("file")
    lines += ["## Scope", "",
              f"Profile `{info.get('profile')}`, API `{info.get('api')}`, versions "
              + ", ".join(f"{k} {val}" for k, val in (info.get("versions") or {}).items()) + ".",
              f"Variants {', '.join(info.get('variants') or [])}; dtypes {', '.join(info.get('dtypes') or [])}; "
              f"options {', '.join(sorted(info.get('options') or [])) or 'none'}.",
              f"Deviations file: {dev_file['path']} (sha256 {dev_file['sha256'][:16]}…)." if dev_file
              else "No deviations file.",
              f"{doc['seconds']} s, seed {doc['settings']['seed']}"
              + (f"; partial run: {'; '.join(v['partial'])}" if v["partial"] else "") + ".", "",
              "| outcome | cases |", "|---|---|"]
    lines += [f"| {o.replace('_', ' ')} | {n} |" for o, n in v["counts"].items()]
    for warning in doc.get("warnings", []):
        lines += ["", f"**Warning:** {warning}"]
    by_variant: dict[str, Counter] = {}
    for r in records:
        by_variant.setdefault(r["variant"], Counter())[r["outcome"]] += 1
    lines += ["", "| variant | " + " | ".join(o.replace("_", " ") for o in OUTCOMES) + " |",
              "|---" * (len(OUTCOMES) + 1) + "|"]
    lines += [f"| {var} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |" for var, c in by_variant.items()]
    if v["evidence_gaps"]:
        lines += ["", "## Evidence gaps", "", "What the run needed and did not judge (a CONFORMS needs none; a "
                  "MATCHES needs each declared as a gap in the deviations file).", ""]
        lines += [f"- {g['unit']}: {g['what']}" + (f" (declared: {g.get('deviation')})" if g["declared"] else "")
                  for g in v["evidence_gaps"][:40]]
        if len(v["evidence_gaps"]) > 40:
            lines.append(f"- … and {len(v['evidence_gaps']) - 40} more (report.json, verdict.evidence_gaps)")
    unexpected = [g for g in groups if not g["expected"]]
    if unexpected:
        lines += ["", "## Unexplained failures, by signature", "",
                  "Each group: the failure points its cases share; the smallest (shrunk) counterexample first.", ""]
        for g in unexpected:
            r = g["representative"]
            lines += [f"- **{g['count']} case{'s' if g['count'] != 1 else ''}** — "
                      + "; ".join(dict.fromkeys(_signature_text(s) for s in g["signatures"])),
                      f"  - e.g. `{r['id']}` ({r['variant']}, {r['kind']}, {r.get('source', '')}): {r['reason'][:400]}",
                      f"  - reproduce: `{r.get('repro', '')}`"]
    if doc["deviations"]["declared"]:
        status = doc["deviations"]["status"]
        lines += ["", "## Declared deviations", "", "| id | clause | summary | status | cases |", "|---|---|---|---|---|"]
        lines += [f"| {d['id']} | {d['clause']} | {d['summary']} | {status.get(d['id'], {}).get('status', '-')} | "
                  f"{status.get(d['id'], {}).get('observed', 0)} |" for d in doc["deviations"]["declared"]]
    lines += ["", "## Clause coverage", "", "Cases per clause: passed / failed (declared deviations included) / "
              "not applicable, over all variants.", "", "| clause | passed | failed | n/a |", "|---|---|---|---|"]
    for clause, by_variant in doc["coverage"].items():
        tot = Counter()
        for n in by_variant.values():
            tot.update(n)
        lines.append(f"| {clause} | {tot['passed']} | {tot['failed']} | {tot['not_applicable']} |")
    if v["never_exercised"]:
        lines += ["", "Never exercised by a judged case: " + ", ".join(v["never_exercised"]) + "."]
    return "\n".join(lines) + "\n"


def junit(doc: dict) -> str:
    """JUnit XML; a run that did not finish or did not earn its answer has a failing ``verdict`` case."""
    records = doc["records"]
    v = doc["verdict"]
    cases = []
    failures = errors = skipped = 0
    for r in records:
        reason = _xml_text(r["reason"])
        name = quoteattr(f"{r['kind']}:{r['id']}")
        classname = quoteattr(f"came.{doc['target']}.{r['variant']}")
        body = ""
        if r["outcome"] == "fail":
            failures += 1
            body = f"<failure message={quoteattr(reason[:500])}>{escape(_xml_text(r.get('repro', '')))}</failure>"
        elif r["outcome"] == "error":
            errors += 1
            body = f"<error message={quoteattr(reason[:500])}/>"
        elif r["outcome"] in ("not_applicable", "expected_deviation", "blocked", "declared_gap"):
            skipped += 1
            body = f"<skipped message={quoteattr(r['outcome'] + ': ' + (r.get('deviation') or reason)[:300])}/>"
        cases.append(f'  <testcase name={name} classname={classname} time="{r.get("seconds", 0)}">{body}</testcase>')
    answer = f"spec {v['spec']['answer']}; baseline {v['baseline']['answer']}: {v['baseline']['text']}"
    body = "" if v["baseline"]["answer"] == "MATCHES" else f"<failure message={quoteattr(_xml_text(answer)[:1000])}/>"
    failures += bool(body)
    cases.append(f'  <testcase name="verdict" classname={quoteattr("came." + doc["target"])} time="0">{body}</testcase>')
    head = (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name={quoteattr("came-" + doc["target"])} '
            f'tests="{len(cases)}" failures="{failures}" errors="{errors}" skipped="{skipped}" '
            f'time="{doc["seconds"]}">\n  <properties><property name="run_id" '
            f'value={quoteattr(str((doc.get("run") or {}).get("id")))}/></properties>')
    return "\n".join([head, *cases, "</testsuite>"]) + "\n"
