"""Command line: ``python -m came_conformance run --target T`` (README "Running the suite")."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from came_conformance import deviations, report, runner, scaffold
from came_conformance.cases import InvalidCase


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m came_conformance")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the suite against one target and write reports/<target>/")
    run.add_argument("--target", required=True, help="built-in name, mutant:NAME, or module:factory")
    run.add_argument("--out", help="report directory (default reports/<target>)")
    run.add_argument("--seed", type=int, default=0, help="Hypothesis seed (recorded in the report)")
    run.add_argument("--examples", type=int, default=runner.Settings.examples,
                     help="Hypothesis trajectory examples per variant")
    run.add_argument("--error-examples", type=int, default=runner.Settings.error_examples)
    run.add_argument("--timeout", type=float, default=runner.Settings.timeout, help="seconds per target request")
    run.add_argument("--shrink-calls", type=int, default=runner.Settings.shrink_calls,
                     help="target runs spent shrinking one Hypothesis failure (a count, so runs reproduce)")
    run.add_argument("--variant", action="append", help="run only this execution variant (repeatable)")
    run.add_argument("--case-file", help="replay one saved case (reports/<target>/cases/<id>.json)")
    run.add_argument("--sources", help="comma-separated subset of " + ",".join(runner.Settings.sources))
    run.add_argument("--signatures", type=int, default=runner.Settings.signatures,
                     help="distinct failure signatures a Hypothesis property reports before it stops drawing")
    add_deviations_argument(run)
    scaffold.add_parser(sub)
    args = parser.parse_args(argv)
    if args.command == "new-adapter":
        return scaffold.main(args)
    deviations_file = checked_deviations(parser, args.deviations)

    sources = tuple(args.sources.split(",")) if args.sources else runner.Settings.sources
    unknown = set(sources) - set(runner.Settings.sources)
    if unknown:
        parser.error(f"--sources: unknown {sorted(unknown)}; choose from {','.join(runner.Settings.sources)}")
    cfg = runner.Settings(seed=args.seed, examples=args.examples, error_examples=args.error_examples,
                          timeout=args.timeout, shrink_calls=args.shrink_calls, case_file=args.case_file,
                          variants=tuple(args.variant) if args.variant else None, sources=sources,
                          signatures=args.signatures, deviations=deviations_file)
    out = Path(args.out or f"reports/{args.target.replace(':', '-')}")
    try:
        result = runner.run(args.target, out, cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    except (InvalidCase, deviations.DeviationsFileError) as exc:  # input errors: one line, exit 2, nothing written
        print(f"came_conformance: {exc}", file=sys.stderr)
        return 2
    summary = report.write_all(result, out)
    print((out / "summary.md").read_text())
    counts = summary["counts"]
    print(f"spec: {summary['spec']['answer']} — {summary['spec']['text']}")
    print(f"baseline: {summary['baseline']['answer']} — {summary['baseline']['text']}")
    print(f"conformance: {counts['pass']} passed, {counts['fail'] + counts['error']} failed unexpectedly, "
          f"{counts['expected_deviation']} expected deviations, {counts['not_applicable']} not applicable, "
          f"{len(summary['evidence_gaps'])} evidence gaps; reports in {out}/ (exit {summary['exit_code']})")
    return summary["exit_code"]


def add_deviations_argument(run) -> None:
    run.add_argument("--deviations", metavar="FILE",
                     help="deviations file for this target, any target (format: conformance/deviations.py); "
                          "default: $CAME_DEVIATIONS, else a built-in target's targets/<name>/deviations.json")


def checked_deviations(parser, named: str | None) -> str | None:
    """--deviations (or CAME_DEVIATIONS), loaded once here so a bad file is a usage error, not a run."""
    path = named or os.environ.get("CAME_DEVIATIONS") or None
    if path is not None:
        try:
            deviations.load(Path(path), must_exist=True)
        except deviations.DeviationsFileError as exc:
            parser.error(f"--deviations{'' if named else ' (from CAME_DEVIATIONS)'}: {exc}")
    return path


if __name__ == "__main__":
    sys.exit(main())
