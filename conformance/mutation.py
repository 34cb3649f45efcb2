"""The mutation run (``make mutants``): does the suite catch broken CAME ports and spare correct ones?

``python -m came_conformance.mutation [--only NAME[,NAME...]] [--out reports/mutants] [--seed 0]``

1. Every mutant of ``conformance.mutants.catalogue`` is an ordinary target (``mutant:NAME``); the
   whole suite runs against it with ``Settings(stop_on_failure=True)`` and a fixed seed, and the
   first unexplained failure kills it.  For each mutant the report gives the killing check
   (record id, kind, source: fixture / error vector / Hypothesis, the first-divergence clause),
   after how many cases and how long.  The mutation score is killed / total.
2. The false-alarm control: the correct port (``mutant:none``, ``mutant:none-paper``), the
   reference (``reference``, ``reference-paper``) and the real correct ports (``came-pytorch``,
   ``pytorch-optimizer``) run the same suite without stopping; each must pass except for its
   declared deviations.  A control whose adapter is not present is reported as skipped.

Writes ``OUT/mutation.json`` and ``OUT/mutation.md`` (and every run's own reports under
``OUT/runs/``); exits 1 if any mutant survives or any control fails.  A survivor must be killed by
a new check or shown equivalent in docs/mutation.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from came_conformance import report, runner
from came_conformance.mutants.catalogue import CONTROLS, MUTANTS
from came_conformance.targets import BUILTIN

#: Targets that must pass (the false-alarm control), after the correct port in both profiles.
REAL_CONTROLS = ("reference", "reference-paper", "came-pytorch", "pytorch-optimizer")
FULL_SOURCES = runner.Settings.sources


def available_sources() -> tuple[tuple[str, ...], str]:
    """The suite's sources; without golden fixtures, the Hypothesis ones only (and say so)."""
    try:
        from came_conformance.fixtures.cases import load_cases

        load_cases("mindformers")
        load_cases("paper")
    except Exception as exc:  # noqa: BLE001 - fixtures absent or unreadable: run what exists
        return ("hypothesis", "hypothesis-errors"), f"golden fixtures unavailable ({type(exc).__name__}: {exc})"
    return FULL_SOURCES, ""


def _first_unexplained(records: list[dict]) -> tuple[int, dict] | tuple[None, None]:
    for n, r in enumerate(records, start=1):
        if r["outcome"] in ("fail", "error"):
            return n, r
    return None, None


def _source_kind(record: dict) -> str:
    source = record.get("source") or ""
    if source == "tier 0":
        return "tier 0"
    if source.startswith("boundary:"):
        return "valid boundary"
    if source in ("hypothesis:scale", "hypothesis:midrun", "hypothesis:nonfinite"):  # issue 11's trajectories
        return "hypothesis (trajectory)"
    if source == "hypothesis:return":
        return "hypothesis (return value)"
    if source.startswith("hypothesis:"):
        return "hypothesis (invalid arguments)"
    if source == "hypothesis":
        return "hypothesis (trajectory)"
    if record.get("kind") == "resume":
        return "save/resume"
    if record.get("kind") in ("atomic", "return"):  # the check of a fixture: an error or an api vector
        return f"{record['kind']} check"
    if record.get("kind") == "error":
        return "error vector"
    if record.get("kind") == "load":
        return "load"
    return "fixture"


def _killer(record: dict) -> dict:
    fd = record.get("first_divergence") or {}
    clause = fd.get("clause") or (record.get("clauses") or [""])[0]
    return {"id": record["id"], "kind": record["kind"], "source": record.get("source", ""),
            "source_kind": _source_kind(record), "outcome": record["outcome"], "clause": clause,
            "tensor": fd.get("tensor"), "step": fd.get("step"), "category": record.get("category"),
            "argument": record.get("argument"), "dtype": record.get("dtype"),
            "shrunk": bool(record.get("hypothesis")), "reason": (record.get("reason") or "")[:400],
            "repro": record.get("repro")}


def run_mutant(name: str, out: Path, seed: int, sources: tuple[str, ...], examples: int,
               shrink_calls: int) -> dict:
    """One mutant under the whole suite, stopping at the first unexplained failure."""
    from came_conformance.mutants.catalogue import lookup

    mutant = lookup(name)
    cfg = runner.Settings(seed=seed, examples=examples, sources=sources, stop_on_failure=True,
                          shrink_calls=shrink_calls)
    run_dir = out / "runs" / f"mutant-{name}"
    entry = {"name": name, "family": mutant.family, "description": mutant.description,
             "switches": sorted(mutant.switches), "profile": mutant.profile, "clauses": list(mutant.clauses)}
    started = time.perf_counter()
    try:
        result = runner.run(f"mutant:{name}", run_dir, cfg, progress=lambda message: None)
    except Exception:  # noqa: BLE001 - the suite itself crashed on this mutant: a suite bug, reported
        entry.update(status="crashed", seconds=round(time.perf_counter() - started, 2), cases=None,
                     killer=None, traceback=traceback.format_exc(limit=-6))
        return entry
    seconds = time.perf_counter() - started
    report.write_all(result, run_dir)
    n, record = _first_unexplained(result["records"])
    entry.update(seconds=round(seconds, 2), cases=len(result["records"]))
    if record is None:
        entry.update(status="survived", killer=None)
    elif record.get("kind") == "load":
        entry.update(status="broken", killer=_killer(record))  # the mutant itself failed to load
    else:
        entry.update(status="killed", killer=_killer(record), cases_to_kill=n)
    return entry


def run_control(target: str, out: Path, seed: int, sources: tuple[str, ...], examples: int) -> dict:
    """One correct target under the same suite, without stopping: it must pass (except deviations)."""
    if target in BUILTIN:
        module = BUILTIN[target][0].split(":")[0]
        if importlib.util.find_spec(module) is None:
            return {"target": target, "status": "skipped", "reason": f"adapter {module} is not present"}
    cfg = runner.Settings(seed=seed, examples=examples, sources=sources)
    run_dir = out / "runs" / target.replace(":", "-")
    started = time.perf_counter()
    result = runner.run(target, run_dir, cfg, progress=lambda message: None)
    seconds = time.perf_counter() - started
    summary = report.write_all(result, run_dir)
    failures = [r for r in result["records"] if r["outcome"] in ("fail", "error")]
    ok = not failures and summary["counts"]["pass"] + summary["counts"]["expected_deviation"] > 0
    return {"target": target, "status": "pass" if ok else "fail", "seconds": round(seconds, 2),
            "counts": summary["counts"], "unobserved_deviations": summary["unobserved_deviations"],
            "failures": [_killer(r) for r in failures[:10]], "report": str(run_dir / "summary.md")}


def _markdown(doc: dict) -> str:
    s = doc["summary"]
    lines = ["# Mutation run", "",
             f"**Mutation score: {s['killed']}/{s['mutants']} = {s['score']:.1%}**"
             f" — survivors: {', '.join(s['survivors']) or 'none'}; broken: {', '.join(s['broken']) or 'none'}.", "",
             f"Controls: {'all pass' if s['controls_ok'] else 'FAILED: ' + ', '.join(s['failed_controls'])}"
             + (f" (skipped: {', '.join(s['skipped_controls'])})" if s["skipped_controls"] else "") + ".", "",
             f"Seed {doc['settings']['seed']}, sources {', '.join(doc['settings']['sources'])}, "
             f"{doc['settings']['examples']} Hypothesis trajectory examples per run"
             + (f"; {doc['settings']['note']}" if doc['settings'].get('note') else "") + ".", "",
             f"Wall time {doc['seconds']:.1f} s ({doc['settings']['jobs']} jobs); median time to kill "
             f"{s['median_seconds_to_kill']:.2f} s, median cases to kill {s['median_cases_to_kill']}.", "",
             "| mutant | family | profile | status | killed by (source) | check | clause | cases | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m in doc["mutants"]:
        k = m.get("killer") or {}
        if m["status"] == "crashed":  # the suite itself raised: show where
            k = {"source_kind": "suite crashed", "id": m["traceback"].strip().splitlines()[-1][:120]}
        check = k.get("tensor") or k.get("category") or k.get("kind") or ""
        if k.get("argument"):
            check += f" ({k['argument']})"
        lines.append(f"| `{m['name']}` | {m['family']} | {m['profile']} | {m['status']} | "
                     f"{k.get('source_kind', '')}: `{k.get('id', '')}` | {check} | {k.get('clause', '')} | "
                     f"{m.get('cases_to_kill', m['cases'])} | {m['seconds']} |")
    lines += ["", "## Controls (must pass)", "",
              "| target | status | " + " | ".join(o.replace("_", " ") for o in report.OUTCOMES) + " | s |",
              "|---|---|" + "---|" * len(report.OUTCOMES) + "---|"]
    for c in doc["controls"]:
        counts = c.get("counts") or {}
        lines.append(f"| `{c['target']}` | {c['status']}{': ' + c['reason'] if c.get('reason') else ''} | "
                     + " | ".join(str(counts.get(k, '')) for k in report.OUTCOMES) + f" | {c.get('seconds', '')} |")
    for c in doc["controls"]:
        for f in c.get("failures", []):
            lines.append(f"- `{c['target']}` {f['outcome']} `{f['id']}` ({f['source_kind']}) {f['reason']}")
    return "\n".join(lines) + "\n"


def _parallel(fn, jobs: int, calls: list[tuple]) -> list:
    if jobs <= 1 or len(calls) <= 1:
        return [fn(*args) for args in calls]
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [f.result() for f in futures]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m came_conformance.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="run only these mutants or controls (comma-separated, "
                        "repeatable); controls run only when named")
    parser.add_argument("--out", default="reports/mutants")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=runner.Settings.examples,
                        help="Hypothesis trajectory examples per run (mutants and controls)")
    parser.add_argument("--shrink-calls", type=int, default=10,
                        help="target runs spent shrinking a mutant's failing Hypothesis example")
    parser.add_argument("--jobs", type=int, default=2, help="runs in parallel (each is two processes)")
    parser.add_argument("--no-controls", action="store_true")
    parser.add_argument("--sources", help="comma-separated subset of " + ",".join(FULL_SOURCES)
                        + " (default: all, or the Hypothesis ones when the golden fixtures are missing)")
    args = parser.parse_args(argv)

    out = Path(args.out)
    if (out / "runs").exists():
        shutil.rmtree(out / "runs")
    out.mkdir(parents=True, exist_ok=True)
    sources, note = available_sources()
    if args.sources:
        sources, note = tuple(args.sources.split(",")), "sources chosen on the command line"
    only = {n for item in args.only or () for n in item.split(",") if n}
    mutants = [m.name for m in MUTANTS if not only or m.name in only]
    mutants += sorted(n for n in only if "--" in n)  # NAME--profile: a mutant in the other profile
    controls = [f"mutant:{c.name}" for c in CONTROLS] + list(REAL_CONTROLS)
    if only:
        controls = [c for c in controls if c in only or c.split(":", 1)[-1] in only]
    if args.no_controls:
        controls = []
    unknown = only - set(mutants) - {c.split(":", 1)[-1] for c in controls} - set(controls)
    if unknown:
        parser.error(f"unknown mutants or controls: {sorted(unknown)}")

    started = time.perf_counter()
    print(f"mutation run: {len(mutants)} mutants, {len(controls)} controls, sources {','.join(sources)}"
          + (f" ({note})" if note else ""), file=sys.stderr, flush=True)
    calls = [(run_mutant, (n, out, args.seed, sources, args.examples, args.shrink_calls)) for n in mutants]
    calls += [(run_control, (c, out, args.seed, sources, args.examples)) for c in controls]
    results = _parallel(_call, args.jobs, calls)
    for r in results:
        label = r.get("name") or r.get("target")
        k = r.get("killer") or {}
        print(f"  {label:32s} {r['status']:8s} {k.get('source_kind', '')} {k.get('clause', '')}",
              file=sys.stderr)
    seconds = time.perf_counter() - started
    mutant_results = [r for r in results if "name" in r]
    control_results = [r for r in results if "target" in r]

    killed = [m for m in mutant_results if m["status"] == "killed"]
    survivors = [m["name"] for m in mutant_results if m["status"] == "survived"]
    broken = [m["name"] for m in mutant_results if m["status"] in ("broken", "crashed")]
    failed_controls = [c["target"] for c in control_results if c["status"] == "fail"]
    summary = {
        "mutants": len(mutant_results), "killed": len(killed), "survivors": survivors, "broken": broken,
        "score": len(killed) / len(mutant_results) if mutant_results else 1.0,
        "median_seconds_to_kill": statistics.median(m["seconds"] for m in killed) if killed else 0.0,
        "median_cases_to_kill": statistics.median(m["cases_to_kill"] for m in killed) if killed else 0,
        "by_source": {k: sum(1 for m in killed if m["killer"]["source_kind"] == k)
                      for k in sorted({m["killer"]["source_kind"] for m in killed})},
        "controls_ok": not failed_controls, "failed_controls": failed_controls,
        "skipped_controls": [c["target"] for c in control_results if c["status"] == "skipped"],
    }
    doc = {"settings": {"seed": args.seed, "sources": list(sources), "examples": args.examples,
                        "shrink_calls": args.shrink_calls, "jobs": args.jobs, "note": note},
           "seconds": round(seconds, 1), "summary": summary, "mutants": mutant_results, "controls": control_results}
    (out / "mutation.json").write_text(json.dumps(doc, indent=1, default=report.json_default))
    (out / "mutation.md").write_text(_markdown(doc))
    print(_markdown(doc))
    return 0 if not survivors and not broken and not failed_controls else 1


def _call(fn, args):
    return fn(*args)


if __name__ == "__main__":
    sys.exit(main())
