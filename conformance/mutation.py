"""The mutation run (``make mutants``): does the suite catch broken CAME ports and spare correct ones?

``python -m came_conformance.mutation [--only NAME[,NAME...]] [--out reports/mutants] [--seed 0]``

1. Every mutant of ``conformance.mutants.catalogue`` is an ordinary target (``mutant:NAME``), and
   every sharding mutant of ``conformance.distributed.mutants`` (``sharded-mutant:NAME``, on the
   layouts where its mistake is reachable, reported as ``sharded:NAME``); the
   whole suite runs against it with ``Settings(stop_on_failure=True)`` and a fixed seed, and the
   first unexplained failure kills it.  For each mutant the report gives the killing check
   (record id, kind, source: fixture / error vector / Hypothesis, the first-divergence clause),
   after how many cases and how long.  The mutation score is killed / total.
2. The false-alarm control: the correct port (``mutant:none``, ``mutant:none-paper``), the
   reference (``reference``, ``reference-paper``) and the real correct ports (``came-pytorch``,
   ``pytorch-optimizer``) run the same suite without stopping; each must pass except for its
   declared deviations.  A control whose adapter is not present is reported as skipped.
3. External mutants: ``--targets module:factory_a,module:factory_b`` (or a module whose ``TARGETS``
   lists such strings) replaces the catalogue with a vendor's own broken ports, judged and
   tabled the same way; ``--controls`` names the correct targets that must pass beside them.

Writes ``OUT/mutation.json`` and ``OUT/mutation.md`` (and every run's own reports under
``OUT/runs/``); exits 1 if any mutant survives or any control fails.  A survivor must be killed by
a new check or shown equivalent in docs/mutation.md.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import shutil
import statistics
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from came_conformance import deviations as deviations_mod
from came_conformance import report, runner, stacking
from came_conformance.mutants.catalogue import CONTROLS, MUTANTS
from came_conformance.targets import BUILTIN

#: Targets that must pass (the false-alarm control), after the correct port in both profiles.
REAL_CONTROLS = ("reference", "reference-paper", "came-pytorch", "pytorch-optimizer")
#: With --sharded: the sharded reference on real gloo ranks, the control of the sharding mutants.
SHARDED_CONTROLS = ("reference-dist",)
FULL_SOURCES = runner.Settings.sources
#: Per-dtype runs (docs/mutation.md "Per dtype"): the port takes parameters of one dtype only and
#: computes as conformance.mutants.adapter.PER_DTYPE says; the numeric sources only (the error
#: contract does not depend on the dtype); in this process (the port is the suite's own NumPy code).
PER_DTYPE = ("float32", "float16", "bfloat16")
PER_DTYPE_SOURCES = ("fixtures", "hypothesis", "resume")
PER_DTYPE_EXAMPLES = 10


def dtype_exemption(mutant, dtype: str) -> str | None:
    """Why ``mutant`` cannot differ from the correct port in the per-dtype run of ``dtype``, or None.

    Each reason is an equivalence of the run, not a weakness of a check: no input of that run can
    make the mutant compute anything other than the correct port does (docs/mutation.md).
    """
    if mutant.family == "error contract":
        return "argument validation does not depend on the parameters' dtype: the main run's verdict"
    if mutant.family == "atomic step errors" or mutant.name == "lr-sequence-repeats-last":
        return "it acts on step-phase errors only, and the per-dtype sources hold no error case: the main run's verdict"
    if mutant.family == "return value" and dtype != "float32":
        return "the return value is checked through the documented constructor, whose parameters are float32 (protocol)"
    if mutant.family == "reductions at scale":
        return "it differs only along axes longer than 32 elements, which only the scale tier has, and the scale " \
               "tier is not a per-dtype source: the main run's verdict"
    if mutant.family == "long horizons" and dtype != "float32":
        return "it differs only at step counters past 2^11, which only the float32 mid-run vectors and the " \
               "horizon tier reach: the main run's verdict"
    if mutant.family == "documented defaults" and dtype != "float32":
        return "the defaults act through the documented constructor, whose parameters are float32 (protocol)"
    if mutant.name == "state-float32":
        return "it changes float64 parameters only"
    if mutant.name in ("state-follows-grad-dtype", "square-in-grad-dtype") and dtype == "bfloat16":
        return "no gradient dtype is coarser than bfloat16 arithmetic: there is nothing to round through"
    if mutant.name == "grad-rounded-to-param-dtype" and dtype in ("float32", "bfloat16"):
        return f"rounding a gradient to {dtype} is what reading it into {dtype} arithmetic does anyway"
    return None


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
               shrink_calls: int, in_process: bool = False) -> dict:
    """One mutant of the catalogue under the whole suite, stopping at the first unexplained failure
    (``NAME@dtype``: the port computing in that dtype)."""
    from came_conformance.mutants.catalogue import lookup

    base, _, dtype = name.partition("@")
    mutant = lookup(base)
    entry = {"name": name, "family": mutant.family, "description": mutant.description,
             "switches": sorted(mutant.switches), "profile": mutant.profile, "clauses": list(mutant.clauses),
             "dtype": dtype or None}
    return _kill(entry, f"mutant:{name}", out / "runs" / f"mutant-{name}", seed, sources, examples, shrink_calls,
                 in_process)


def run_external_mutant(target: str, out: Path, seed: int, sources: tuple[str, ...], examples: int,
                        shrink_calls: int) -> dict:
    """A mutant that lives outside the suite (``module:factory``), judged exactly like the catalogue's."""
    entry = {"name": target, "family": "external", "description": f"external target {target}", "switches": [],
             "profile": None, "clauses": []}
    return _kill(entry, target, out / "runs" / f"external-{target.replace(':', '-')}", seed, sources, examples,
                 shrink_calls)


def _kill(entry: dict, target: str, run_dir: Path, seed: int, sources: tuple[str, ...], examples: int,
          shrink_calls: int, in_process: bool = False) -> dict:
    cfg = runner.Settings(seed=seed, examples=examples, sources=sources, stop_on_failure=True,
                          shrink_calls=shrink_calls, in_process=in_process)
    started = time.perf_counter()
    try:
        result = runner.run(target, run_dir, cfg, progress=lambda message: None)
    except Exception:  # noqa: BLE001 - the suite itself crashed on this mutant: a suite bug, reported
        entry.update(status="crashed", seconds=round(time.perf_counter() - started, 2), cases=None,
                     killer=None, traceback=traceback.format_exc(limit=-6))
        return entry
    seconds = time.perf_counter() - started
    report.write_all(result, run_dir)
    if entry["profile"] is None and result["info"]:
        entry["profile"] = result["info"]["profile"]
    entry["run_target"] = target
    entry["variants"] = list((result["info"] or {}).get("variants") or ["default"])
    n, record = _first_unexplained(result["records"])
    entry.update(seconds=round(seconds, 2), cases=len(result["records"]))
    if record is None:
        entry.update(status="survived", killer=None)
    elif record.get("kind") == "load":
        entry.update(status="broken", killer=_killer(record))  # the mutant itself failed to load
    else:
        entry.update(status="killed", killer=_killer(record), cases_to_kill=n,
                     killer_record={k: v for k, v in record.items() if k != "case"})
    return entry


#: The slow tiers (conformance.tiers): a stacked re-run includes one only when the mutant's killer came from it.
SLOW_SOURCES = frozenset({"scale", "horizon"})


def _tier_of(record: dict | None) -> str | None:
    """The slow tier a record came from (its fixture file or Hypothesis source names it), or None."""
    source = (record or {}).get("source") or ""
    if "_scale_test" in source or source == "hypothesis:scale":
        return "scale"
    if "_horizon_test" in source or source == "hypothesis:midrun":
        return "horizon"
    return None


def run_stacking(entry: dict, killer_record: dict | None, out: Path, seed: int, sources: tuple[str, ...],
                 examples: int, shrink_calls: int) -> list[dict]:
    """The mutant with each built-in target's deviations stacked on it (conformance/stacking.py)."""
    from came_conformance.mutants.catalogue import BY_NAME

    sources = tuple(s for s in sources if s not in SLOW_SOURCES or s == _tier_of(killer_record))
    cfg = runner.Settings(seed=seed, examples=examples, sources=sources, stop_on_failure=True,
                          shrink_calls=shrink_calls)
    files = {t: deviations_mod.load(p) for t, p in stacking.stackable_files().items()}
    base = entry["name"].partition("--")[0]
    same_as = BY_NAME[base].same_as if entry.get("family") != "external" and base in BY_NAME else ()
    return stacking.stack(entry["run_target"], entry["name"], same_as, killer_record, files, out, cfg,
                          entry.get("variants") or ["default"])


def external_targets(items: list[str]) -> list[str]:
    """Targets from --targets / --controls: each item is one (``module:factory``, a built-in name,
    ``mutant:NAME``), or a module whose ``TARGETS`` lists ``"module:factory"`` strings."""
    out = []
    for item in (i for value in items for i in value.split(",") if i):
        if ":" in item or item in BUILTIN:
            out.append(item)
            continue
        listed = getattr(importlib.import_module(item), "TARGETS", None)
        if not isinstance(listed, (list, tuple)) or not all(isinstance(t, str) and ":" in t for t in listed):
            raise ValueError(f"module {item}: TARGETS must list 'module:factory' strings, got {listed!r}")
        out.extend(listed)
    return out


def run_sharding_mutant(name: str, out: Path, seed: int, sources: tuple[str, ...], examples: int,
                        shrink_calls: int) -> dict:
    """One sharding mutant (conformance.distributed.mutants) on the variants where it is reachable."""
    from came_conformance.distributed.mutants import BY_NAME as SHARDED

    mutant = SHARDED[name]
    cfg = runner.Settings(seed=seed, examples=examples, sources=sources, stop_on_failure=True,
                          shrink_calls=shrink_calls, variants=mutant.variants)
    run_dir = out / "runs" / f"sharded-mutant-{name}"
    entry = {"name": f"sharded:{name}", "family": "sharding", "description": mutant.description,
             "switches": [name], "profile": "mindformers", "clauses": list(mutant.clauses)}
    started = time.perf_counter()
    result = runner.run(f"sharded-mutant:{name}", run_dir, cfg, progress=lambda message: None)
    report.write_all(result, run_dir)
    n, record = _first_unexplained(result["records"])
    entry.update(seconds=round(time.perf_counter() - started, 2), cases=len(result["records"]))
    if record is None:
        entry.update(status="survived", killer=None)
    else:
        entry.update(status="killed", killer=_killer(record), cases_to_kill=n)
    return entry


def run_control(target: str, out: Path, seed: int, sources: tuple[str, ...], examples: int,
                in_process: bool = False) -> dict:
    """One correct target under the same suite, without stopping: it must pass (except deviations)."""
    if target in BUILTIN:
        module = BUILTIN[target][0].split(":")[0]
        if importlib.util.find_spec(module) is None:
            return {"target": target, "status": "skipped", "reason": f"adapter {module} is not present"}
    cfg = runner.Settings(seed=seed, examples=examples, sources=sources, in_process=in_process)
    run_dir = out / "runs" / target.replace(":", "-")
    started = time.perf_counter()
    result = runner.run(target, run_dir, cfg, progress=lambda message: None)
    seconds = time.perf_counter() - started
    summary = report.write_all(result, run_dir)
    failures = [r for r in result["records"] if r["outcome"] in ("fail", "error")]
    ok = summary["baseline"]["answer"] == "MATCHES"
    return {"target": target, "status": "pass" if ok else "fail", "seconds": round(seconds, 2),
            "counts": summary["counts"], "spec": summary["spec"], "baseline": summary["baseline"],
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
    st = s.get("stacked") or {}
    if st:
        lines += ["", "## Deviations stacked on mutants", "",
                  f"Each mutant with each built-in target's deviations file stacked on it (conformance/stacking.py): "
                  f"{st['pairs']} pairs, {st['reruns']} re-run because the file explained the killing case; "
                  f"survivors: {', '.join(st['survivors']) or 'none'}."
                  + (f" Absorbed by the deviation that declares the same bug: {'; '.join(st['absorbed_as_declared'])}."
                     if st["absorbed_as_declared"] else "")]
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
    lines += _per_dtype_markdown(doc)
    return "\n".join(lines) + "\n"


def _per_dtype_markdown(doc: dict) -> list[str]:
    per = doc.get("per_dtype") or {}
    if not per:
        return []
    lines = ["", "## Per dtype (the port computing as `conformance.mutants.adapter.PER_DTYPE` says)", "",
             f"Sources {', '.join(PER_DTYPE_SOURCES)}, {doc['settings'].get('per_dtype_examples')} Hypothesis "
             f"examples per run, in process.", "",
             "| dtype | mutants run | killed | kill rate | survivors | equivalent in this dtype | cases run | "
             "controls |", "|---|---|---|---|---|---|---|---|"]
    for dtype, d in per.items():
        lines.append(f"| {dtype} | {d['run']} | {d['killed']} | {d['score']:.1%} | "
                     f"{', '.join(d['survivors']) or 'none'} | {len(d['exempt'])} | {d['cases']} | "
                     f"{'pass' if d['controls_ok'] else 'FAILED: ' + ', '.join(d['failed_controls'])} |")
    lines += ["", "| mutant | " + " | ".join(per) + " |", "|---|" + "---|" * len(per)]
    names = sorted({m for d in per.values() for m in d["status"]})
    for name in names:
        cells = []
        for d in per.values():
            st = d["status"].get(name, "")
            cells.append(st)
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    lines += ["", "Equivalent in a dtype (not run there), with the reason:", ""]
    for dtype, d in per.items():
        for name, why in d["exempt"].items():
            lines.append(f"- {dtype}, `{name}`: {why}")
    return lines


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
    parser.add_argument("--port-controls", action="store_true",
                        help="of the controls, only the correct port's (mutant:none, mutant:none-paper): the ones "
                             "every kill is measured against; not the real ports (make mutants-quick)")
    parser.add_argument("--sharded", action="store_true",
                        help="also the sharding mutants (conformance.distributed.mutants) on real gloo ranks, "
                             "with the reference-dist control")
    parser.add_argument("--sharded-only", action="store_true",
                        help="only the sharding mutants and their control (make mutants-sharded)")
    parser.add_argument("--no-stacking", action="store_true",
                        help="skip stacking each built-in target's deviations file on every mutant")
    parser.add_argument("--sources", help="comma-separated subset of " + ",".join(FULL_SOURCES)
                        + " (default: all, or the Hypothesis ones when the golden fixtures are missing)")
    parser.add_argument("--targets", action="append", help="mutants outside the suite instead of the catalogue: "
                        "module:factory (comma-separated, repeatable) or a module whose TARGETS lists them")
    parser.add_argument("--controls", action="append", help="with --targets: correct targets that must pass "
                        "(module:factory or built-in names, same form); default none")
    parser.add_argument("--dtypes", default=",".join(PER_DTYPE),
                        help="per-dtype runs (comma-separated subset of " + ",".join(PER_DTYPE) + "; '' for none)")
    parser.add_argument("--per-dtype-examples", type=int, default=PER_DTYPE_EXAMPLES,
                        help="Hypothesis trajectory examples per per-dtype run")
    args = parser.parse_args(argv)

    out = Path(args.out)
    if (out / "runs").exists():
        shutil.rmtree(out / "runs")
    out.mkdir(parents=True, exist_ok=True)
    sources, note = available_sources()
    if args.sources:
        sources, note = tuple(args.sources.split(",")), "sources chosen on the command line"
    only = {n for item in args.only or () for n in item.split(",") if n}
    mutants = [] if args.sharded_only else [m.name for m in MUTANTS if not only or m.name in only]
    mutants += sorted(n for n in only if "--" in n)  # NAME--profile: a mutant in the other profile
    sharded_run = args.sharded or args.sharded_only or any(n.startswith("sharded:") for n in only)
    controls = [] if args.sharded_only else [f"mutant:{c.name}" for c in CONTROLS] + list(REAL_CONTROLS)
    controls += list(SHARDED_CONTROLS if sharded_run else ())
    if only:
        controls = [c for c in controls if c in only or c.split(":", 1)[-1] in only]
    if args.port_controls:
        controls = [c for c in controls if c.startswith("mutant:")]
    if args.no_controls:
        controls = []
    unknown = only - set(mutants) - {c.split(":", 1)[-1] for c in controls} - set(controls) - \
        {n for n in only if n.startswith("sharded:")}
    if unknown:
        parser.error(f"unknown mutants or controls: {sorted(unknown)}")
    external: list[str] = []
    if args.targets:
        try:
            external = external_targets(args.targets)
            controls = external_targets(args.controls or [])
        except (ImportError, ValueError) as exc:
            parser.error(f"--targets/--controls: {exc}")
        mutants = []

    started = time.perf_counter()
    print(f"mutation run: {len(mutants) + len(external)} mutants, {len(controls)} controls, sources {','.join(sources)}"
          + (f" ({note})" if note else ""), file=sys.stderr, flush=True)
    from came_conformance.distributed.mutants import SHARDING_MUTANTS

    sharded = [m.name for m in SHARDING_MUTANTS if sharded_run and not external
               and (not only or f"sharded:{m.name}" in only)]
    # The suite's own port runs in the driver's process (conformance/inprocess.py); real targets in a worker.
    calls = [(run_mutant, (n, out, args.seed, sources, args.examples, args.shrink_calls, True)) for n in mutants]
    calls += [(run_external_mutant, (t, out, args.seed, sources, args.examples, args.shrink_calls)) for t in external]
    calls += [(run_sharding_mutant, (n, out, args.seed, sources, args.examples, args.shrink_calls)) for n in sharded]
    calls += [(run_control, (c, out, args.seed, sources, args.examples, c.startswith("mutant:"))) for c in controls]
    dtypes = [d for d in args.dtypes.split(",") if d] if not (external or args.sharded_only) else []
    unknown_dtypes = set(dtypes) - set(PER_DTYPE)
    if unknown_dtypes:
        parser.error(f"--dtypes: {sorted(unknown_dtypes)} not among {PER_DTYPE}")
    per_sources = tuple(x for x in PER_DTYPE_SOURCES if x in sources)
    exempt = {d: {} for d in dtypes}
    for d in dtypes:
        for m in MUTANTS:
            if only and m.name not in only:
                continue
            why = dtype_exemption(m, d)
            if why:
                exempt[d][m.name] = why
                continue
            calls.append((run_mutant, (f"{m.name}@{d}", out, args.seed, per_sources, args.per_dtype_examples,
                                       args.shrink_calls, True)))
        if not args.no_controls:
            for c in CONTROLS:
                if not only or c.name in only:
                    calls.append((run_control, (f"mutant:{c.name}@{d}", out, args.seed, per_sources,
                                                args.per_dtype_examples, True)))
    results = _parallel(_call, args.jobs, calls)
    for r in results:
        label = r.get("name") or r.get("target")
        k = r.get("killer") or {}
        print(f"  {label:32s} {r['status']:8s} {k.get('source_kind', '')} {k.get('clause', '')}",
              file=sys.stderr)
    per_dtype = {}
    for d in dtypes:
        ran = [r for r in results if "name" in r and r.get("dtype") == d]
        ctl = [r for r in results if "target" in r and r["target"].endswith(f"@{d}")]
        killed_d = [r for r in ran if r["status"] == "killed"]
        per_dtype[d] = {
            "run": len(ran), "killed": len(killed_d), "score": len(killed_d) / len(ran) if ran else 1.0,
            "survivors": [r["name"].partition("@")[0] for r in ran if r["status"] == "survived"],
            "broken": [r["name"] for r in ran if r["status"] in ("broken", "crashed")],
            "exempt": exempt[d], "cases": sum(r.get("cases") or 0 for r in ran) + sum(
                sum((r.get("counts") or {}).values()) for r in ctl),
            "status": {**{r["name"].partition("@")[0]: r["status"] for r in ran},
                       **{name: "equivalent" for name in exempt[d]}},
            "controls_ok": all(r["status"] == "pass" for r in ctl),
            "failed_controls": [r["target"] for r in ctl if r["status"] == "fail"],
        }
    results = [r for r in results if not r.get("dtype") and "@" not in r.get("target", "")]
    mutant_results = [r for r in results if "name" in r]
    control_results = [r for r in results if "target" in r]
    stacked = [] if args.no_stacking else [row for rows in _parallel(_call, args.jobs, [
        (run_stacking, ({k: m.get(k) for k in ("name", "family", "run_target", "variants")},
                        m.pop("killer_record", None), out, args.seed, sources, args.examples, args.shrink_calls))
        for m in mutant_results if m.get("run_target")]) for row in rows]
    for m in mutant_results:
        m.pop("killer_record", None)
    stacked_survivors = sorted({f"{r['mutant']} + {r['file']}" for r in stacked if r["status"] == "survived"})
    seconds = time.perf_counter() - started

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
        "stacked": {"pairs": len(stacked), "survivors": stacked_survivors,
                    "reruns": sum(1 for r in stacked if r.get("rerun")),
                    "absorbed_as_declared": sorted(f"{r['mutant']} + {r['file']} ({r['by']})" for r in stacked
                                                   if r["status"] == "absorbed as declared")},
    }
    doc = {"settings": {"seed": args.seed, "sources": list(sources), "examples": args.examples,
                        "shrink_calls": args.shrink_calls, "jobs": args.jobs, "note": note, "dtypes": dtypes,
                        "per_dtype_examples": args.per_dtype_examples},
           "seconds": round(seconds, 1), "summary": summary, "mutants": mutant_results, "controls": control_results,
           "stacked": stacked, "per_dtype": per_dtype}
    (out / "mutation.json").write_text(json.dumps(doc, indent=1, default=report.json_default))
    (out / "mutation.md").write_text(_markdown(doc))
    print(_markdown(doc))
    per_dtype_ok = all(not d["survivors"] and not d["broken"] and d["controls_ok"] for d in per_dtype.values())
    return 0 if not survivors and not broken and not failed_controls and not stacked_survivors and per_dtype_ok else 1


def _call(fn, args):
    return fn(*args)


if __name__ == "__main__":
    sys.exit(main())
