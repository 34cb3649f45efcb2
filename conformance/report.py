"""Report writers: JSON (conformance/report.schema.json), a Markdown summary, JUnit XML.

Every file is written to a temporary name and renamed into place, so an interrupted run never
leaves a truncated report (the outcomes themselves are already safe in records.jsonl).
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

OUTCOMES = ("pass", "fail", "expected_deviation", "not_applicable", "error", "blocked")
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
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _versions(*names: str) -> dict[str, str]:
    from importlib.metadata import version
    return {n: version(n) for n in names}


def verdict(run: dict) -> dict:
    counts = Counter(r["outcome"] for r in run["records"])
    unexpected = counts["fail"] + counts["error"]
    ok = unexpected == 0 and not run["unobserved_deviations"] and counts["pass"] + counts["expected_deviation"] > 0
    return {"conforms_except_declared": ok, "counts": {o: counts[o] for o in OUTCOMES},
            "unexpected_failures": unexpected,
            "unobserved_deviations": [d["id"] for d in run["unobserved_deviations"]]}


def repro_command(run: dict, record: dict, case_path: str) -> str:
    """A command that replays one case, into a directory of its own (the run's report stays)."""
    return (f".venvs/core/bin/python -m came_conformance run --target {run['target']} --variant {record['variant']} "
            f"--case-file {case_path} --out reports/repro-{record['id'].replace('@', '-')}")


def write_all(run: dict, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cases_dir = out / "cases"
    cases_dir.mkdir(exist_ok=True)
    for record in run["records"]:
        if record["outcome"] in ("fail", "error") and "case" in record:
            path = cases_dir / f"{record['id']}.json"
            _atomic_write(path, dumps(record["case"], indent=1, sort_keys=True))
            record["repro"] = repro_command(run, record, os.path.relpath(path, Path.cwd()))
    summary = verdict(run)
    document = {
        "schemaVersion": SCHEMA_VERSION, "target": run["target"], "info": run["info"], "settings": run["settings"],
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(),
                        "runner_packages": _versions("numpy", "hypothesis", "mpmath"),
                        "CAME_MAX_ARRAY_SIZE": os.environ.get("CAME_MAX_ARRAY_SIZE", "64"),
                        **({"rank_starts": run["rank_starts"]} if "rank_starts" in run else {})},  # spec §9
        "seconds": run["seconds"], "verdict": summary,
        "deviations": {"declared": run["declared_deviations"], "unobserved": summary["unobserved_deviations"]},
        "records": [{k: v for k, v in r.items() if k != "case"} for r in run["records"]],
    }
    _atomic_write(out / "report.json", dumps(document, indent=1))
    _atomic_write(out / "summary.md", markdown(document))
    _atomic_write(out / "junit.xml", junit(document))
    return summary


def markdown(doc: dict) -> str:
    v, info = doc["verdict"], doc["info"] or {}
    lines = [f"# Conformance of `{doc['target']}`", "",
             f"**Verdict: {'CONFORMS (except declared deviations)' if v['conforms_except_declared'] else 'DOES NOT CONFORM'}**"
             f" — {doc['seconds']} s, seed {doc['settings']['seed']}.", "",
             f"Profile `{info.get('profile')}`, API `{info.get('api')}`, versions "
             + ", ".join(f"{k} {val}" for k, val in (info.get("versions") or {}).items()) + ".", "",
             "| outcome | cases |", "|---|---|"]
    lines += [f"| {o.replace('_', ' ')} | {n} |" for o, n in v["counts"].items()]
    by_variant: dict[str, Counter] = {}
    for r in doc["records"]:
        by_variant.setdefault(r["variant"], Counter())[r["outcome"]] += 1
    lines += ["", "| variant | " + " | ".join(o.replace("_", " ") for o in OUTCOMES) + " |",
              "|---" * (len(OUTCOMES) + 1) + "|"]
    lines += [f"| {var} | " + " | ".join(str(c[o]) for o in OUTCOMES) + " |" for var, c in by_variant.items()]
    failures = [r for r in doc["records"] if r["outcome"] in ("fail", "error")]
    if failures:
        lines += ["", "## Unexpected failures (first 20)", ""]
        for r in failures[:20]:
            lines += [f"- `{r['id']}` ({r['variant']}, {r['kind']}): {r['reason']}",
                      f"  - reproduce: `{r.get('repro', '')}`"]
    observed = Counter(r.get("deviation") for r in doc["records"] if r.get("deviation"))
    if doc["deviations"]["declared"]:
        lines += ["", "## Declared deviations", "", "| id | clause | summary | cases |", "|---|---|---|---|"]
        lines += [f"| {d['id']} | {d['clause']} | {d['summary']} | {observed.get(d['id'], 0)} |"
                  for d in doc["deviations"]["declared"]]
    if v["unobserved_deviations"]:
        lines += ["", "**Declared but not observed (the target may have been fixed; update the deviations "
                  "file):** " + ", ".join(v["unobserved_deviations"])]
    return "\n".join(lines) + "\n"


def junit(doc: dict) -> str:
    records = doc["records"]
    counts = doc["verdict"]["counts"]
    cases = []
    for r in records:
        reason = _xml_text(r["reason"])
        name = quoteattr(f"{r['kind']}:{r['id']}")
        classname = quoteattr(f"came.{doc['target']}.{r['variant']}")
        body = ""
        if r["outcome"] == "fail":
            body = f"<failure message={quoteattr(reason[:500])}>{escape(r.get('repro', ''))}</failure>"
        elif r["outcome"] == "error":
            body = f"<error message={quoteattr(reason[:500])}/>"
        elif r["outcome"] in ("not_applicable", "expected_deviation", "blocked"):
            body = f"<skipped message={quoteattr(r['outcome'] + ': ' + (r.get('deviation') or reason)[:300])}/>"
        cases.append(f'  <testcase name={name} classname={classname} time="{r.get("seconds", 0)}">{body}</testcase>')
    skipped = counts["not_applicable"] + counts["expected_deviation"] + counts["blocked"]
    head = (f'<?xml version="1.0" encoding="utf-8"?>\n<testsuite name={quoteattr("came-" + doc["target"])} '
            f'tests="{len(records)}" failures="{counts["fail"]}" errors="{counts["error"]}" skipped="{skipped}" '
            f'time="{doc["seconds"]}">')
    return "\n".join([head, *cases, "</testsuite>"]) + "\n"
