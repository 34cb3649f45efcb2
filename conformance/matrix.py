"""The compliance matrix: spec clause families × targets (``make matrix``).

``python -m came_conformance.matrix T1 T2 ...`` runs the suite against each target (each in its
own report directory) and writes reports/matrix.md, reports/matrix.json and reports/matrix.png.
Each target gets both answers of its verdict (spec conformance, baseline) and, per clause family, a
cell: ``pass`` (some judged case exercised the family and every such case passed), ``deviates``
(declared deviation ids, and a count of undeclared failures) or ``not covered`` (no judged case).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from came_conformance import deviations, report, runner
from came_conformance.reference.dtypes import FORMATS

#: Row -> how a record is attributed to it.  Failures go to the family of the clause of their
#: first divergence; passes to every family their compared tensors and options exercise.
FAMILIES = (
    ("state layout", ("CAME-STATE-",)),
    ("second moment", ("CAME-STEP-2", "CAME-STEP-3", "CAME-STEP-4", "CAME-DEF-")),
    ("clipping", ("CAME-STEP-5",)),
    ("first moment", ("CAME-STEP-6",)),
    ("instability", ("CAME-STEP-7", "CAME-STEP-8")),
    ("confidence update", ("CAME-STEP-9", "CAME-STEP-12", "CAME-ZERO-", "CAME-NONFINITE-")),
    ("weight decay", ("CAME-STEP-11",)),
    ("schedules", ("CAME-BETA2-", "CAME-LR-")),
    ("options", ("CAME-OPT-", "CAME-GROUP-", "CAME-STEP-10", "CAME-STEP-1", "CAME-HP-")),
    ("low precision", ("CAME-DTYPE-",)),
    ("error contract", ("CAME-ERR-",)),
    ("runs to completion", ()),  # crashes and hangs with no divergence before them
)
TENSOR_FAMILY = {"exp_avg_sq_row": "second moment", "exp_avg_sq_col": "second moment", "exp_avg_sq": "second moment",
                 "exp_avg": "first moment", "exp_avg_insta_row": "instability", "exp_avg_insta_col": "instability",
                 "theta": "confidence update"}
OPTION_FAMILY = {"weight_decay": "weight decay", "lr_sequence": "schedules", "lr_schedule": "schedules",
                 "scale_parameter": "options", "relative_step": "options", "warmup_init": "options",
                 "compression": "options", "loss_scale": "options", "groups": "options", "save_restore": "state layout"}


def family_of_clause(clause: str) -> str:
    """A prefix ending in "-" names a clause group; otherwise the clause itself or its V variant."""
    for name, prefixes in FAMILIES:
        if any(clause.startswith(p) if p.endswith("-") else clause in (p, p + "V") for p in prefixes):
            return name
    return "confidence update"


def families_of(record: dict, profile: str, widest: str = "float64") -> set[str]:
    """Families a record speaks for; runs below the target's widest dtype go to "low precision"."""
    if record["kind"] == "error":
        return {"error contract"}
    if record["outcome"] in ("fail", "error", "expected_deviation"):
        points = [p for p in deviations.points(record) if p.get("clause")]
        fams = {("runs to completion" if p.get("divergence") == "crash" else family_of_clause(p["clause"]))
                for p in points} or {"runs to completion"}
    else:
        fams = {"state layout", "runs to completion"}
        for step in record.get("steps", [])[:1]:
            fams |= {TENSOR_FAMILY[k.split(".", 1)[1]] for k in step["per_step"]}
        fams |= {OPTION_FAMILY[o] for o in record.get("requires", []) if o in OPTION_FAMILY}
        if "clip_active" in record.get("regimes", []):
            fams.add("clipping")
        if profile == "mindformers":
            fams.add("schedules")  # the β2_t schedule drives every mindformers step
    if record.get("dtype") not in (None, widest):
        fams = {"low precision"}
    return fams


def cells(doc: dict) -> dict[str, dict]:
    profile = (doc["info"] or {}).get("profile")
    dtypes = (doc["info"] or {}).get("dtypes") or ["float64"]
    widest = max(dtypes, key=lambda d: FORMATS[d][0])
    seen: dict[str, dict] = defaultdict(lambda: {"pass": 0, "deviations": set(), "unexpected": 0})
    for r in doc["records"]:
        if r["outcome"] in ("not_applicable", "declared_gap", "blocked"):
            continue
        for fam in families_of(r, profile, widest):
            cell = seen[fam]
            if r["outcome"] == "pass":
                cell["pass"] += 1
            elif r["outcome"] == "expected_deviation":
                cell["deviations"].add(r["deviation"])
            else:
                cell["unexpected"] += 1
    out = {}
    for fam, _ in FAMILIES:
        c = seen.get(fam)
        if c is None:
            out[fam] = {"status": "not covered"}
        elif c["unexpected"] or c["deviations"]:
            out[fam] = {"status": "deviates", "deviations": sorted(c["deviations"]),
                        "unexpected": c["unexpected"], "passed": c["pass"]}
        else:
            out[fam] = {"status": "pass", "passed": c["pass"]}
    return out


def render(docs: list[dict]) -> tuple[str, dict]:
    table = {d["target"]: {"versions": (d["info"] or {}).get("versions", {}), "verdict": d["verdict"],
                           "cells": cells(d)} for d in docs}
    head = "| | " + " | ".join(
        f"{t}<br>{' '.join(f'{k} {v}' for k, v in col['versions'].items())}" for t, col in table.items()) + " |"
    lines = ["# CAME compliance matrix", "", "Generated by `make matrix` from the reports in reports/<target>/. "
             "Two answers per target: **spec** (CONFORMS only when nothing deviates; DOES NOT CONFORM with the "
             "number of deviations; INCONCLUSIVE when the evidence does not suffice) and **baseline** (MATCHES "
             "when the observed deviations are exactly the declared ones, what CI follows). Cells: `pass` (every "
             "judged case of the family passed), `deviates` (declared deviation ids, see "
             "targets/<target>/deviations.json, and undeclared failures), `not covered` (no judged case).", "",
             head, "|---" * (len(table) + 1) + "|"]
    lines.append("| **spec** | " + " | ".join(f"**{c['verdict']['spec']['answer']}**" for c in table.values()) + " |")
    lines.append("| **baseline** | " + " | ".join(f"**{c['verdict']['baseline']['answer']}**"
                                                  for c in table.values()) + " |")
    for fam, _ in FAMILIES:
        row = []
        for col in table.values():
            c = col["cells"][fam]
            text = c["status"]
            if c["status"] == "deviates":
                text += " " + ", ".join(c["deviations"]) + (f" +{c['unexpected']} undeclared" if c["unexpected"]
                                                            else "")
            row.append(text)
        lines.append(f"| {fam} | " + " | ".join(row) + " |")
    lines += ["", "| target | spec | baseline | pass | expected deviation | n/a | undeclared failures |",
              "|---|---|---|---|---|---|---|"]
    for t, col in table.items():
        v = col["verdict"]
        lines.append(f"| {t} | {v['spec']['answer']}: {v['spec']['text']} | {v['baseline']['answer']}: "
                     f"{v['baseline']['text']} | {v['counts']['pass']} | {v['counts']['expected_deviation']} | "
                     f"{v['counts']['not_applicable']} | {v['counts']['fail'] + v['counts']['error']} |")
    lines += ["", "![per-step error in ulps](matrix.png)", ""]
    return "\n".join(lines), table


def plot(docs: list[dict], path: Path) -> None:
    """Per target: the worst error per step and tensor, in ulps of the target's dtype.

    Top row: the per-step error (reference restarted from the target's state), the quantity the
    verdict is taken on; bottom row: the error accumulated against an uninterrupted reference run.
    Only cases that passed are drawn, so a declared deviation does not hide the rounding picture.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(docs), figsize=(4.2 * len(docs), 6.4), squeeze=False, sharey=True)
    for col, doc in enumerate(docs):
        for row, key in enumerate(("per_step", "accumulated_ulps")):
            worst: dict[str, dict[int, float]] = defaultdict(dict)
            for r in doc["records"]:
                if r["outcome"] != "pass":
                    continue
                for s in r.get("steps", []):
                    for name, v in s[key].items():
                        name = name.split(".", 1)[-1]
                        value = float(v["ulps"] if key == "per_step" else v)  # "inf" is stored as a string
                        worst[name][s["step"]] = max(worst[name].get(s["step"], 0.0), value)
            ax = axes[row][col]
            for name, by_step in sorted(worst.items()):
                xs = sorted(by_step)
                ax.plot(xs, [max(by_step[x], 1e-2) for x in xs], marker="o", ms=3, label=name)
            ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
            if row == 0:
                v = doc["verdict"]
                ax.set_title(f"{doc['target']}\nspec: {v['spec']['answer']} · baseline: {v['baseline']['answer']}",
                             fontsize=8)
            else:
                ax.set_xlabel("step")
    axes[0][0].set_ylabel("per-step error\n(max ulps, passing cases)")
    axes[1][0].set_ylabel("accumulated error\n(max ulps, passing cases)")
    axes[0][-1].legend(fontsize=6, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def by_layout(docs: list[dict]) -> list[dict]:
    """A sharded target (spec §9) becomes one column per layout variant, ``target/variant``.

    Each column's verdict is taken on that variant's records only, as if the target had that one
    variant; whether a declared deviation was refuted stays with the whole target's verdict (a
    layout alone cannot show every deviation).
    """
    out = []
    for doc in docs:
        if not (doc.get("info") or {}).get("world_sizes"):
            out.append(doc)
            continue
        for variant in doc["info"]["variants"]:
            records = [r for r in doc["records"] if r["variant"] in (variant, "-")]
            if records:
                info = {**doc["info"], "variants": [variant]}
                settings = {**(doc.get("settings") or {}), "variants": None, "case_file": None}
                declared = (doc.get("deviations") or {}).get("declared") or []
                out.append({**doc, "target": f"{doc['target']}/{variant}", "records": records, "info": info,
                            "verdict": report.verdict({"records": records, "info": info, "settings": settings,
                                                       "deviation_status": {}, "declared_deviations": declared})})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m came_conformance.matrix")
    parser.add_argument("targets", nargs="+")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--examples", type=int, default=runner.Settings.examples)
    parser.add_argument("--reuse", action="store_true", help="read existing reports instead of running")
    parser.add_argument("--out", default="reports")
    args = parser.parse_args(argv)
    out = Path(args.out)
    docs = []
    for target in args.targets:
        target_out = out / target
        if not args.reuse:
            result = runner.run(target, target_out, runner.Settings(seed=args.seed, examples=args.examples),
                                progress=lambda m: print(m, file=sys.stderr, flush=True))
            report.write_all(result, target_out)
        docs.append(json.loads((target_out / "report.json").read_text()))
    columns = by_layout(docs)
    text, table = render(columns)
    report._atomic_write(out / "matrix.md", text)
    report._atomic_write(out / "matrix.json", report.dumps(table, indent=1))
    plot(docs, out / "matrix.png")
    print(text)
    return max(d["verdict"]["exit_code"] for d in docs)


if __name__ == "__main__":
    sys.exit(main())
