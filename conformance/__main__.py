"""Command line: ``python -m came_conformance run --target T`` (README "Running the suite")."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from came_conformance import report, runner


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
    run.add_argument("--sharding-examples", type=int, default=runner.Settings.sharding_examples,
                     help="Hypothesis sharded cases per variant of a sharded target")
    run.add_argument("--timeout", type=float, default=runner.Settings.timeout, help="seconds per target request")
    run.add_argument("--shrink-calls", type=int, default=runner.Settings.shrink_calls,
                     help="target runs spent shrinking one Hypothesis failure (a count, so runs reproduce)")
    run.add_argument("--variant", action="append", help="run only this execution variant (repeatable)")
    run.add_argument("--case-file", help="replay one saved case (reports/<target>/cases/<id>.json)")
    run.add_argument("--sources", help="comma-separated subset of " + ",".join(runner.Settings.sources))
    args = parser.parse_args(argv)

    sources = tuple(args.sources.split(",")) if args.sources else runner.Settings.sources
    unknown = set(sources) - set(runner.Settings.sources)
    if unknown:
        parser.error(f"--sources: unknown {sorted(unknown)}; choose from {','.join(runner.Settings.sources)}")
    cfg = runner.Settings(seed=args.seed, examples=args.examples, error_examples=args.error_examples,
                          sharding_examples=args.sharding_examples,
                          timeout=args.timeout, shrink_calls=args.shrink_calls, case_file=args.case_file,
                          variants=tuple(args.variant) if args.variant else None, sources=sources)
    out = Path(args.out or f"reports/{args.target.replace(':', '-')}")
    result = runner.run(args.target, out, cfg, progress=lambda m: print(m, file=sys.stderr, flush=True))
    summary = report.write_all(result, out)
    print((out / "summary.md").read_text())
    counts = summary["counts"]
    print(f"conformance: {counts['pass']} passed, {summary['unexpected_failures']} failed, "
          f"{counts['expected_deviation']} expected deviations, {counts['not_applicable']} not applicable; "
          f"reports in {out}/")
    return 0 if summary["conforms_except_declared"] else 1


if __name__ == "__main__":
    sys.exit(main())
