"""Command line: ``python -m came_conformance run --target T`` (README "Exit codes").

Every argument is checked before the report directory is touched: a bad one is one line on
stderr naming the argument and the rule, and exit code ``USAGE`` (2).  So are a case file
(``cases.load_case_file``), a deviations file, the golden vectors (``fixtures.manifest``), an
unknown ``--variant`` (the target's own declaration, asked for in a worker of its own) and a
report directory another run holds.  ``report`` rebuilds the reports of a run that was killed
outright from what it left (``run.json`` and ``records.jsonl``).  ``exit_code`` maps a run
onto its exit code: the verdict's (conformance/verdict.py), and ``ABORTED`` for a run a signal
ended, whatever was measured before it.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from came_conformance import report, rundir, runner, scaffold
from came_conformance.replies import VARIANT_PATTERN

MATCHES, CHANGED, USAGE, ABORTED = 0, 1, 2, 3  # ABORTED is also the verdict's INCONCLUSIVE
_MODULE_FACTORY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$")
MAX_TIMEOUT = 86400.0
PROG = "python -m came_conformance"


def exit_code(summary: dict, status: str) -> int:
    """0: baseline MATCHES; 1: CHANGED; 3: INCONCLUSIVE, or the run did not finish (aborted)."""
    return ABORTED if status == rundir.ABORTED else summary["exit_code"]


class UsageError(Exception):
    """A bad argument or input: one line, exit code USAGE, nothing written."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise UsageError(f"{self.prog}: {message}")


def _count(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}")
        return value
    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(f"must be a number of seconds in (0, {MAX_TIMEOUT:g}], got {text!r}")
    return value


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog=PROG)
    sub = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run the suite against one target and write reports/<target>/")
    run.add_argument("--target", required=True, help="built-in name, mutant:NAME, or module:factory")
    run.add_argument("--out", help="report directory (default reports/<target>)")
    run.add_argument("--seed", type=_seed, default=0, help="Hypothesis seed (recorded in the report)")
    run.add_argument("--examples", type=_count(1), default=runner.Settings.examples,
                     help="Hypothesis trajectory examples per variant")
    run.add_argument("--error-examples", type=_count(1), default=runner.Settings.error_examples)
    run.add_argument("--sharding-examples", type=_count(1), default=runner.Settings.sharding_examples,
                     help="Hypothesis sharded cases per variant of a sharded target")
    run.add_argument("--timeout", type=_seconds, default=runner.Settings.timeout,
                     help="seconds per target request, start-up included")
    run.add_argument("--shrink-calls", type=_count(0), default=runner.Settings.shrink_calls,
                     help="target runs spent shrinking one Hypothesis failure (a count, so runs reproduce)")
    run.add_argument("--variant", action="append", help="run only this execution variant (repeatable)")
    run.add_argument("--case-file", help="replay one saved case (reports/<target>/cases/<id>.json)")
    run.add_argument("--sources", help="comma-separated subset of " + ",".join(runner.Settings.sources))
    run.add_argument("--slow-tiers", choices=runner.SLOW_TIER_POLICIES, default=runner.Settings.slow_tiers,
                     help="the scale and horizon tiers on the first execution variant (default) or on every one")
    run.add_argument("--signatures", type=_count(1), default=runner.Settings.signatures,
                     help="distinct failure signatures a Hypothesis property reports before it stops drawing")
    run.add_argument("--deviations", metavar="FILE",
                     help="deviations file for this target, any target (format: conformance/deviations.py); "
                          "default: $CAME_DEVIATIONS, else a built-in target's targets/<name>/deviations.json")
    scaffold.add_parser(sub)
    rebuild = sub.add_parser("report", help="rebuild the reports of a killed run from its run.json and records.jsonl")
    rebuild.add_argument("--out", required=True, help="the report directory of that run")
    return top


def _check_target(target: str, deviations: str | None = None):
    from came_conformance.targets import BUILTIN, resolve

    if target.startswith("mutant:"):
        from came_conformance.mutants.catalogue import lookup

        try:
            lookup(target.split(":", 1)[1])
        except KeyError:
            raise UsageError(f"argument --target: no mutant named {target.split(':', 1)[1]!r} "
                             f"(see conformance/mutants/catalogue.py)") from None
    elif target not in BUILTIN and not _MODULE_FACTORY.match(target):
        raise UsageError(f"argument --target: must be one of {', '.join(sorted(BUILTIN))}, mutant:NAME, or "
                         f"package.module:factory; got {target[:120]!r}")
    return resolve(target, deviations)


def _check_variants(spec, variants: tuple[str, ...], timeout: float) -> None:
    """Ask the target for its variants in a short-lived worker; unknown ones are a usage error."""
    from came_conformance.worker import TargetFailure, TargetProcess

    process = TargetProcess(spec.factory, spec.python, timeout, None, dict(spec.env))
    try:
        reply = process.call("describe")
    except TargetFailure:
        return  # the run itself records why the target cannot describe itself
    finally:
        process.kill()
    if reply[0] == "ok" and set(variants) - set(reply[1].variants):
        raise UsageError(f"argument --variant: {', '.join(sorted(set(variants) - set(reply[1].variants)))} "
                         f"not among the target's variants ({', '.join(reply[1].variants)})")


def settings(args) -> tuple[runner.Settings, Path]:
    """The run's settings and directory, every input checked; UsageError otherwise."""
    from came_conformance import deviations as deviations_mod
    from came_conformance.cases import InvalidCase, load_case_file
    from came_conformance.fixtures import manifest

    sources = tuple(args.sources.split(",")) if args.sources else runner.Settings.sources
    unknown = sorted(set(sources) - set(runner.Settings.sources))
    if unknown or len(set(sources)) != len(sources) or not sources:
        raise UsageError(f"argument --sources: each of {','.join(runner.Settings.sources)} at most once; "
                         f"got {args.sources!r}")
    spec = _check_target(args.target, args.deviations)
    try:
        deviations_mod.load(spec.deviations, must_exist=spec.deviations_named)
    except deviations_mod.DeviationsFileError as exc:
        named = "--deviations" if args.deviations else "CAME_DEVIATIONS" if spec.deviations_named else "deviations"
        raise UsageError(f"argument {named}: {exc}") from None
    out = Path(args.out or f"reports/{args.target.replace(':', '-')}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"argument --out: {out} exists and is not a directory")
    if args.case_file:
        try:
            load_case_file(args.case_file)
        except InvalidCase as exc:
            raise UsageError(str(exc)) from None
    if any(s in sources for s in ("fixtures", "errors", "resume")) and not args.case_file:
        try:
            manifest.verify()
        except manifest.FixtureIntegrityError as exc:
            raise UsageError(f"golden vectors: {exc}") from None
    variants = tuple(args.variant) if args.variant else None
    if variants:
        bad = [v for v in variants if not re.match(VARIANT_PATTERN, v)]
        if bad:
            raise UsageError(f"argument --variant: {bad[0][:80]!r} is not a variant name")
        _check_variants(spec, variants, args.timeout)
    cfg = runner.Settings(seed=args.seed, examples=args.examples, error_examples=args.error_examples,
                          sharding_examples=args.sharding_examples, timeout=args.timeout,
                          shrink_calls=args.shrink_calls, case_file=args.case_file,
                          variants=variants, sources=sources, signatures=args.signatures, slow_tiers=args.slow_tiers,
                          deviations=str(spec.deviations) if spec.deviations_named else None)
    return cfg, out


def _run(args) -> int:
    from came_conformance.cases import InvalidCase
    from came_conformance.conform import conform
    from came_conformance.deviations import DeviationsFileError

    cfg, out = settings(args)
    try:
        result, summary = conform(args.target, out, cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (rundir.DirectoryBusy, InvalidCase, DeviationsFileError) as exc:  # raised before anything is written
        raise UsageError(str(exc)) from None
    print((out / "summary.md").read_text())
    counts, status = summary["counts"], result["run"]["status"]
    code = exit_code(summary, status)
    print(f"spec: {summary['spec']['answer']} — {summary['spec']['text']}")
    print(f"baseline: {summary['baseline']['answer']} — {summary['baseline']['text']}")
    print(f"conformance: {counts['pass']} passed, {counts['fail'] + counts['error']} failed unexpectedly, "
          f"{counts['expected_deviation']} expected deviations, {counts['not_applicable']} not applicable, "
          f"{len(summary['evidence_gaps'])} evidence gaps" + (f"; run {status}" if status != rundir.COMPLETE else "")
          + f"; reports in {out}/ (exit {code})")
    return code


def _rebuild(args) -> int:
    """Reports from run.json and records.jsonl of a run that died without writing them (SIGKILL, power loss)."""
    from came_conformance import deviations as deviations_mod
    from came_conformance.targets import resolve

    out = Path(args.out)
    try:
        run_doc = json.loads((out / rundir.RUN).read_text())
        records = rundir.read_records(out / rundir.RECORDS, run_doc["run_id"])
        target = run_doc["target"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"argument --out: {out} holds no run to rebuild ({str(exc)[:200]})") from None
    try:
        directory = rundir.RunDirectory(out)
        directory._lock(target)  # not cleared: the records are the input
    except rundir.DirectoryBusy as exc:
        raise UsageError(str(exc)) from None
    directory.run_id, directory.started = run_doc["run_id"], run_doc.get("started")
    try:
        spec = resolve(target)
        declared = deviations_mod.load(spec.deviations)
        for r in records:
            r.pop("run_id", None)
        finished = run_doc.get("status") in (rundir.COMPLETE, rundir.STOPPED)
        why = "" if finished else "the runner died before writing its reports; rebuilt from records.jsonl"
        result = {"target": spec.name, "target_argument": target, "info": run_doc.get("info"),
                  "settings": run_doc.get("settings") or {}, "started": run_doc.get("started"),
                  "seconds": run_doc.get("seconds", 0.0), "records": records,
                  "deviation_status": deviations_mod.apply(declared, records), "declared_deviations": declared,
                  "deviations_file": deviations_mod.file_identity(spec.deviations), "stopped": None,
                  "aborted": why or None,
                  "run": directory.run_fields(run_doc["status"] if finished else rundir.ABORTED, why)}
        summary = report.write_all(result, directory)
    finally:
        directory.release()
    print(f"rebuilt the reports of run {directory.run_id} from {len(records)} records in {out}/")
    return exit_code(summary, result["run"]["status"])


def main(argv=None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.command == "new-adapter":
            try:
                return scaffold.main(args)
            except SystemExit as exc:  # its refusals are usage errors too
                if isinstance(exc.code, str):
                    raise UsageError(exc.code) from None
                raise
        return _run(args) if args.command == "run" else _rebuild(args)
    except UsageError as exc:
        text = (str(exc) or "usage error").splitlines()[0]
        print(text if text.startswith(PROG) else f"{PROG}: {text}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:  # before the run began (conform.py handles it during the run): nothing written
        print(f"{PROG}: interrupted before the run began", file=sys.stderr)
        return ABORTED
