"""How tight is the tolerance model?  The table of docs/tolerances.md §5.

``python -m came_conformance.tightness [--reports DIR ...]`` prints, per implementation and dtype
and per judged tensor, the worst and the median ratio of the observed error to the tolerance
(``TensorCheck.worst_bound_ratio``: ≤ 1 passes, so 1 means no room and 0.01 a bound 100 times the
error), and the largest tolerance / |value| over well-conditioned elements (``rel_bound``).

Rows come from two sources: the emulated reference (``conformance.emulate``) computing in each
precision, run here over every catalogue case it can carry; and conformance reports of real
targets (``reports/<target>/records.jsonl`` of ``python -m came_conformance run``), over the cases
that passed.  Nothing here changes a verdict.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from came_conformance import compare, emulate
from came_conformance.fixtures import catalogue as cat
from came_conformance.fixtures.generate import derive_flags, run, trajectory_inputs
from came_conformance.protocol import Snapshot
from came_conformance.reference.step import init_state
from came_conformance.tolerance import ORDER

#: (row label, design, parameter dtype): the reference computing in each precision.
DESIGNS = [
    ("emulated, float32 arithmetic and state", emulate.Variant(compute="float32"), "float32"),
    ("emulated, float32, lerp/rsqrt/norm/sequential sums",
     emulate.Variant(compute="float32", ema="lerp", rsqrt="rsqrt", rms="norm", summation="recursive"), "float32"),
    ("emulated, bfloat16 arithmetic and state (float32 opmath)", emulate.Variant(compute="bfloat16", opmath=True),
     "bfloat16"),
    ("emulated, float16 parameters, float32 state and arithmetic", emulate.Variant(compute="float32", state="float32"),
     "float16"),
    ("emulated, float16 arithmetic and state (float32 opmath)", emulate.Variant(compute="float16", opmath=True),
     "float16"),
]
FLOAT16_UNCARRIED = {"Float16StateRange", "ZeroGradient", "EpsDominated", "NonFinite", "BetaOne", "Beta1Zero"}


class Stats:
    """Per tensor: every check's worst ratio, and the largest well-conditioned tolerance / |value|."""

    def __init__(self):
        self.ratios, self.rel = defaultdict(list), defaultdict(float)

    def add(self, tensor: str, ratio: float, rel: float | None) -> None:
        if np.isfinite(ratio):
            self.ratios[tensor].append(float(ratio))
        if rel is not None and np.isfinite(rel):
            self.rel[tensor] = max(self.rel[tensor], float(rel))

    def row(self, tensor: str) -> str:
        r = self.ratios.get(tensor)
        if not r:
            return "—"
        return f"{max(r):.2g} / {statistics.median(r):.2g}"


def _cases(profile: str) -> list[cat.Traj]:
    cases = cat.trajectory_cases(profile) + cat.lowprecision_cases(profile)
    if profile == "mindformers":
        cases += cat.options_cases(profile)
    return [c for c in cases if not c.grad_dtype]


def emulated(variant: emulate.Variant, dtype: str, stats: Stats) -> int:
    """Run ``variant`` over the catalogue at ``dtype``; returns the number of cases it carried."""
    from dataclasses import replace

    carried = 0
    for profile in ("paper", "mindformers"):
        for case in _cases(profile):
            case = replace(case, dtype=dtype)
            hp, params, grads = trajectory_inputs(profile, case)
            if variant.compute == "float16" or variant.state == "float16":
                if derive_flags(hp, params, run(hp, params, grads, dtype), "float16") & FLOAT16_UNCARRIED:
                    continue  # CAME-DTYPE-3: float16 arithmetic or state cannot carry these cases
            if variant.ema == "lerp" and not (all(np.all(np.isfinite(g)) for s in grads for g in s) and all(
                    np.all(np.isfinite(v)) for s in run(hp, params, grads, dtype) for t in s["state"]
                    for v in t.values())):
                continue  # torch.lerp turns an infinite start or end into NaN
            prec = variant.precision(dtype)
            prev_p, prev_s = list(params), [init_state(np.shape(p)) for p in params]
            checks = []
            for t, (new_p, new_s) in enumerate(emulate.trajectory(hp, params, grads, dtype, variant), start=1):
                checks += compare.check_step(t, lambda i: hp.step_hyper(t, i), prev_p, prev_s, grads[t - 1],
                                             Snapshot(new_p, new_s, t), dtype, prec)
                prev_p, prev_s = new_p, new_s
            if all(c.ok for c in checks):  # a failing case is reported by the tests, not averaged here
                carried += 1
                for c in checks:
                    stats.add(c.tensor, c.worst_bound_ratio, c.rel_bound)
    return carried


def from_report(directory: Path) -> dict[tuple[str, str], Stats]:
    """Per (variant, dtype) of a conformance run's passing trajectory cases."""
    out: dict[tuple[str, str], Stats] = defaultdict(Stats)
    for line in (directory / "records.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") != "trajectory" or r.get("outcome") != "pass":
            continue
        for s in r.get("steps", []):
            for key, v in s["per_step"].items():
                rel = v.get("rel_bound")
                out[(r["variant"], r["dtype"])].add(key.split(".", 1)[1], _number(v["bound_ratio"]),
                                                    _number(rel) if rel is not None else None)
    return out


def _number(x) -> float:
    return float(x) if not isinstance(x, str) else float(x.lower().replace("infinity", "inf"))


def markdown(rows: list[tuple[str, str, Stats]]) -> str:
    tensors = [t for t in ORDER]
    head = "| implementation | dtype | " + " | ".join(f"`{t}`" for t in tensors) + " |"
    lines = ["Observed error / tolerance, worst / median over every check (≤ 1 passes):", "", head,
             "|---|---|" + "---|" * len(tensors)]
    for label, dtype, st in rows:
        lines.append(f"| {label} | {dtype} | " + " | ".join(st.row(t) for t in tensors) + " |")
    lines += ["", "Largest tolerance / |value| over well-conditioned elements (cancellation factor ≤ 2):", "", head,
              "|---|---|" + "---|" * len(tensors)]
    for label, dtype, st in rows:
        lines.append(f"| {label} | {dtype} | " + " | ".join(
            f"{st.rel[t]:.2g}" if t in st.rel else "—" for t in tensors) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m came_conformance.tightness", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports", nargs="*", default=[], help="conformance run directories (records.jsonl)")
    parser.add_argument("--no-emulated", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    if not args.no_emulated:
        for label, variant, dtype in DESIGNS:
            st = Stats()
            n = emulated(variant, dtype, st)
            rows.append((f"{label} ({n} cases)", dtype, st))
    for d in args.reports:
        path = Path(d)
        for (variant, dtype), st in sorted(from_report(path).items()):
            rows.append((f"`{path.name}` {variant}", dtype, st))
    sys.stdout.write(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
