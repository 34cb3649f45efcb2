"""The conformance run: every case source, every execution variant, one stream of outcomes.

Sources, in this order (fast and fixed first): the golden fixtures of the target's profile,
the error vectors, Hypothesis trajectories, Hypothesis invalid arguments, save-and-resume.
Each outcome is appended to ``records.jsonl`` as soon as it exists, so a crash or a kill of
the run itself loses nothing; the final reports are written from it.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings, strategies as st

from conformance import deviations as deviations_mod
from conformance import execute, strategies
from conformance.report import json_default
from conformance.cases import ErrorCase, TrajectoryCase, content_id, from_json, to_json
from conformance.targets import resolve
from conformance.worker import TargetProcess
from reference import contract
from reference.dtypes import round_to


@dataclass
class Settings:
    seed: int = 0
    examples: int = 25  # Hypothesis trajectory examples per variant
    error_examples: int = 3  # Hypothesis examples per (error clause, argument)
    timeout: float = 120.0  # per request to the target, seconds
    shrink_seconds: float = 60.0  # wall-time budget for shrinking one failure
    variants: tuple[str, ...] | None = None
    case_file: str | None = None
    sources: tuple[str, ...] = ("fixtures", "errors", "hypothesis", "hypothesis-errors", "resume")
    stop_on_failure: bool = False  # mutation runs: the first unexplained failure ends the run

    def to_json(self) -> dict:
        return dict(self.__dict__)


class StopRun(Exception):
    """Raised by the sink after the first unexplained failure when ``stop_on_failure`` is set."""


class Sink:
    """Appends each outcome to records.jsonl at once (nothing is lost when a run dies)."""

    def __init__(self, out: Path, deviations: list[dict], stop_on_failure: bool = False):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "records.jsonl"
        self.path.write_text("")
        self.deviations, self.records, self.stop_on_failure = deviations, [], stop_on_failure

    def explained(self, record: dict) -> bool:
        return any(deviations_mod.matches(d, record) for d in self.deviations)

    def add(self, record: dict) -> dict:
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(json.dumps(record, default=json_default) + "\n")
        if self.stop_on_failure and record["outcome"] in ("fail", "error") and not self.explained(record):
            raise StopRun(record["id"])
        return record


def _run(target, case, variant, sink) -> dict:
    record = execute.run_case(target, case, variant)
    record["requires"] = sorted(case.requires())
    return record


def fixture_cases(profile: str, dtypes: tuple[str, ...]):
    """The golden vectors of ``profile``; float64 ones run at float32 on a target without float64."""
    from fixtures.cases import load_cases  # numpy-side loader of the golden vectors

    cases = load_cases(profile)
    if "float64" not in dtypes and "float32" in dtypes:
        cases["trajectory"] = [at_dtype(c, "float32") if c.dtype == "float64" else c for c in cases["trajectory"]]
    return cases


def at_dtype(case: TrajectoryCase, dtype: str) -> TrajectoryCase:
    """The same start and gradients rounded to ``dtype`` (a new case: its own id, no golden values)."""
    return dataclasses.replace(
        case, id=f"{case.id}@{dtype}", dtype=dtype, params=[round_to(dtype, p) for p in case.params],
        grads=[[round_to(dtype, g) for g in step] for step in case.grads], expected=None,
        source=f"{case.source} (run at {dtype}: the target has no {case.dtype})")


VALID_KWARGS = {
    "mindformers": {"params": [{"$param": [2, 3]}, {"$param": [3]}], "learning_rate": 0.01},
    "paper": {"params": [{"$param": [2, 3]}, {"$param": [3]}], "lr": 0.01},
}


def _property(strategy, make_case, target, variant, sink, cfg, max_examples):
    """Run one Hypothesis property: record the generated cases; shrink an unexplained failure.

    While shrinking, every failing candidate Hypothesis tries is smaller than the best so far,
    so the last failure seen is the shrunk example; it is recorded once, with the seed.  After
    ``shrink_seconds`` candidates stop failing, which ends shrinking early on slow targets.
    """
    state = {"failed_at": None, "last_failure": None}

    @settings(max_examples=max_examples, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink), print_blob=False)
    @hypothesis_seed(cfg.seed)
    @given(drawn=strategy)
    def prop(drawn):
        case = make_case(drawn)
        record = _run(target, case, variant, sink)
        failed = record["outcome"] in ("fail", "error") and not sink.explained(record)
        if state["failed_at"] is None and not failed:
            sink.add(record)
            return
        if failed and state["failed_at"] is None:
            state["failed_at"] = time.monotonic()
        in_budget = time.monotonic() - state["failed_at"] < cfg.shrink_seconds
        if failed and (in_budget or state["last_failure"] is None):
            state["last_failure"] = record
            raise AssertionError(record["reason"])

    try:
        prop()
    except Exception:  # noqa: BLE001 - AssertionError, or Hypothesis's flaky/group errors when a budget ended
        if state["last_failure"] is None:
            raise
    if state["last_failure"] is not None:
        record = state["last_failure"]
        record["hypothesis"] = {"seed": cfg.seed, "shrunk": True}
        sink.add(record)


def _error_property(target, variant, sink, cfg, clause, argument):
    strategy = strategies.invalid_argument(clause.id, argument)
    if strategy is None:
        return

    def make_case(bad):
        kwargs = {**VALID_KWARGS[target.info.api], argument: bad}
        body = {"kwargs": kwargs, "clause": clause.id, "argument": argument}
        return ErrorCase("h-" + content_id(body), target.info.api, clause.phase, kwargs, clause.exception,
                         rf"\b{argument}\b", clause.id, argument, source=f"hypothesis:{clause.id}:{argument}")

    _property(strategy, make_case, target, variant, sink, cfg, cfg.error_examples)


def _trajectory_property(target, variant, sink, cfg):
    info = target.info
    strategy = strategies.trajectory_cases(info.profile, info.dtypes, info.options)
    _property(strategy, lambda case: case, target, variant, sink, cfg, cfg.examples)


def _resume(target, case, variant, sink):
    """Save mid-trajectory, restore into a fresh session, finish: same numbers as uninterrupted."""
    p = target.process
    started = time.perf_counter()
    record = execute._record(case, variant, execute.PASS)
    record.update(kind="resume", clauses=["CAME-STATE-5"], id="resume-" + case.id)
    half = len(case.grads) // 2
    try:
        whole = p.call("open", case.hp.to_json(), case.params, case.dtype, variant)[1]
        first = p.call("open", case.hp.to_json(), case.params, case.dtype, variant)[1]
        for grads in case.grads:
            p.call("step", whole, grads)
        for grads in case.grads[:half]:
            p.call("step", first, grads)
        blob = p.call("save", first)
        second = p.call("open", case.hp.to_json(), case.params, case.dtype, variant)[1]
        restored = p.call("restore", second, blob[1]) if blob[0] == "ok" else blob
        if restored[0] != "ok":
            record.update(outcome=execute.FAIL, reason=f"save/restore raised: {restored[1:3]}")
        else:
            for grads in case.grads[half:]:
                p.call("step", second, grads)
            a, b = p.call("read", whole)[1], p.call("read", second)[1]
            import numpy as np
            diffs = [f"param {i}" for i, (x, y) in enumerate(zip(a.params, b.params))
                     if not np.array_equal(x, y, equal_nan=True)]
            diffs += [f"param {i} {k}" for i, (s, r) in enumerate(zip(a.state, b.state)) for k in s
                      if not np.array_equal(s[k], r.get(k), equal_nan=True)]
            if diffs:
                record.update(outcome=execute.FAIL, reason="resumed run differs from the uninterrupted run in "
                              + ", ".join(diffs[:5]), first_divergence={"clause": "CAME-STATE-5",
                                                                      "step": half + 1})
    except execute.TargetFailure as exc:
        record.update(outcome=execute.ERROR, reason=str(exc))
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["requires"] = ["save_restore"]
    return record


def run(target_name: str, out: Path, cfg: Settings, progress=print) -> dict:
    spec = resolve(target_name)
    declared = deviations_mod.load(spec.deviations)
    sink = Sink(out, declared, cfg.stop_on_failure)
    process = TargetProcess(spec.factory, spec.python, cfg.timeout, out / "target-stderr.log", dict(spec.env))
    started, info = time.time(), None
    try:
        target = execute.Target(spec.name, process)
        info = target.info
        variants = cfg.variants or info.variants
        if cfg.case_file:
            case = from_json(json.loads(Path(cfg.case_file).read_text()))
            for variant in variants:
                sink.add(_run(target, case, variant, sink))
        else:
            fixtures = fixture_cases(info.profile, info.dtypes) if "fixtures" in cfg.sources else {"trajectory": [], "error": []}
            for variant in variants:
                progress(f"[{spec.name}/{variant}] fixtures: {len(fixtures['trajectory'])} trajectories, "
                         f"{len(fixtures['error'])} error vectors")
                for case in fixtures["trajectory"]:
                    sink.add(_run(target, case, variant, sink))
                # Construction is the same Python call in every execution variant: construction-phase
                # error cases run once, on the first variant; step-phase ones run on every variant.
                phases = ("construction", "step") if variant == variants[0] else ("step",)
                if "errors" in cfg.sources:
                    for case in fixtures["error"]:
                        if case.profile == info.api and case.phase in phases:
                            sink.add(_run(target, case, variant, sink))
                if "hypothesis" in cfg.sources:
                    progress(f"[{spec.name}/{variant}] hypothesis trajectories: {cfg.examples} examples")
                    _trajectory_property(target, variant, sink, cfg)
                if "hypothesis-errors" in cfg.sources:
                    progress(f"[{spec.name}/{variant}] hypothesis invalid arguments")
                    for clause in contract.clauses_for(info.api):
                        for argument in clause.arguments if clause.phase in phases else ():
                            _error_property(target, variant, sink, cfg, clause, argument)
                if "resume" in cfg.sources and "save_restore" in info.options:
                    for case in [c for c in fixtures["trajectory"] if c.dtype in info.dtypes][:3]:
                        if not (case.requires() - set(info.options)):
                            sink.add(_resume(target, case, variant, sink))
    except StopRun:
        pass
    except execute.TargetFailure as exc:  # the target could not even describe itself
        sink.stop_on_failure = False
        sink.add({"id": "load", "kind": "load", "variant": "-", "source": "", "flags": [], "clauses": [],
                  "dtype": None, "outcome": execute.ERROR, "reason": str(exc)})
    finally:
        process.close()
    unobserved = deviations_mod.apply(declared, sink.records)
    return {"target": spec.name, "info": dict(info.__dict__) if info else None, "settings": cfg.to_json(),
            "started": started, "seconds": round(time.time() - started, 2), "records": sink.records,
            "unobserved_deviations": unobserved, "declared_deviations": declared}
