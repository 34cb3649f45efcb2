"""The conformance run: every case source, every execution variant, one stream of outcomes.

Per variant, in this order (fast and fixed first): tier 0, the golden fixtures of the target's
profile (and the step's return value on the api vectors), the error vectors and valid boundaries
(and the atomicity of every step error), Hypothesis trajectories, Hypothesis invalid arguments,
save-and-resume, then the slow tiers: scale (conformance.tiers) and long horizons.  Each outcome is appended to ``records.jsonl`` as soon as it
exists, so a crash or a kill of the run itself loses no outcome already obtained; the final
reports are then written from the same records.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, Phase, given, seed as hypothesis_seed, settings

from came_conformance import atomic, returns, tiers
from came_conformance import deviations as deviations_mod
from came_conformance import execute, strategies
from came_conformance.arguments import param_values
from came_conformance.cases import ErrorCase, TrajectoryCase, content_id, from_json, to_json
from came_conformance.report import dumps
from came_conformance.targets import resolve
from came_conformance.worker import TargetProcess
from came_conformance.reference import contract
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Hyperparameters


@dataclass
class Settings:
    seed: int = 0
    examples: int = 25  # Hypothesis trajectory examples per variant
    error_examples: int = 3  # Hypothesis examples per (error clause, argument)
    timeout: float = 120.0  # per request to the target, seconds
    shrink_calls: int = 40  # target runs Hypothesis may spend shrinking one failure (a count: reproducible)
    variants: tuple[str, ...] | None = None
    case_file: str | None = None
    sources: tuple[str, ...] = ("fixtures", "errors", "hypothesis", "hypothesis-errors", "resume", "scale", "horizon")
    stop_on_failure: bool = False  # mutation runs: the first unexplained failure ends the run
    scale_examples: int = 3  # Hypothesis scale cases per variant (CAME-DEF-4), each up to 2^17 elements
    horizon_examples: int = 4  # Hypothesis sessions opened at a large step counter per variant (CAME-STATE-6)

    def is_full_run(self) -> bool:
        return self.case_file is None and self.variants is None and set(self.sources) == set(Settings.sources)

    def to_json(self) -> dict:
        return {**self.__dict__, "full_run": self.is_full_run()}


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
        return deviations_mod.explain(self.deviations, record) is not None

    def add(self, record: dict) -> dict:
        self.records.append(record)
        with self.path.open("a") as f:
            f.write(dumps(record) + "\n")
        if self.stop_on_failure and record["outcome"] in ("fail", "error") and not self.explained(record):
            raise StopRun(record["id"])
        return record


def _run(target, case, variant) -> dict:
    record = execute.run_case(target, case, variant)
    record["requires"] = sorted(case.requires())
    return record


def _checked(check):
    """A check of its own record kind (atomic.run, returns.run), with the case's requirements recorded."""
    def run_one(target, case, variant) -> dict:
        record = check(target, case, variant)
        record["requires"] = sorted(case.requires())
        return record
    return run_one


#: ``--case-file`` replays: a saved atomic or return record's case says which check made it.
CHECKS = {"atomic": _checked(atomic.run), "return": _checked(returns.run)}


def fixture_cases(profile: str, api: str, dtypes: tuple[str, ...]):
    """The golden vectors of ``profile`` (trajectories) and of ``api`` (api and error vectors).

    Float64 trajectories run at float32 on a target without float64.
    """
    from came_conformance.fixtures.cases import load_cases  # numpy-side loader of the golden vectors

    cases = load_cases(profile, api)
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


def _property(strategy, make_case, target, variant, sink, cfg, max_examples, run_one=_run):
    """Run one Hypothesis property: record the generated cases; shrink an unexplained failure.

    While shrinking, every failing candidate Hypothesis tries is smaller than the best so far,
    so the last failure seen is the shrunk example; it is recorded once, with the seed.  After
    ``shrink_calls`` runs candidates stop failing, which ends shrinking early on slow targets;
    a count, unlike a time budget, gives the same example on every run with the same seed.
    """
    state = {"shrink_runs": None, "last_failure": None}

    @settings(max_examples=max_examples, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink), print_blob=False)
    @hypothesis_seed(cfg.seed)
    @given(drawn=strategy)
    def prop(drawn):
        if state["shrink_runs"] is not None:
            if state["shrink_runs"] >= cfg.shrink_calls:
                return  # the budget is spent: this candidate counts as passing, shrinking stops
            state["shrink_runs"] += 1
        record = run_one(target, make_case(drawn), variant)
        failed = record["outcome"] in ("fail", "error") and not sink.explained(record)
        if state["shrink_runs"] is None and not failed:
            sink.add(record)
            return
        if failed:
            state["shrink_runs"] = state["shrink_runs"] or 0
            state["last_failure"] = record
            raise AssertionError(record["reason"])

    try:
        prop()
    except Exception:  # noqa: BLE001 - AssertionError, or Hypothesis's flaky/group errors when a budget ended
        if state["last_failure"] is None:
            raise
    if state["last_failure"] is not None:
        record = state["last_failure"]
        record["hypothesis"] = {"seed": cfg.seed, "shrunk": True,
                                "shrink_budget_spent": state["shrink_runs"] >= cfg.shrink_calls}
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


def _one_per_dtype(cases: list) -> list:
    """Per dtype, the case that needs the fewest options (the plainest start for a resume check)."""
    best: dict = {}
    for c in cases:
        if c.dtype not in best or (len(c.requires()), c.id) < (len(best[c.dtype].requires()), best[c.dtype].id):
            best[c.dtype] = c
    return list(best.values())


def _resume(target, case, variant) -> dict:
    """Save mid-trajectory, restore into a fresh session, finish: the uninterrupted run's numbers exactly."""
    p = target.process
    started = time.perf_counter()
    record = execute.new_record(case, variant, execute.PASS)
    record.update(kind="resume", clauses=["CAME-STATE-5"], id="resume-" + case.id, requires=["save_restore"])
    half = len(case.grads) // 2

    def call(*args):
        reply = p.call(*args)
        if reply[0] != "ok":
            raise _Refused(reply)
        return reply[1]

    sessions: list[int] = []

    def open_session() -> int:
        sessions.append(call("open", case.hp.to_json(), case.params, case.dtype, variant))
        return sessions[-1]

    try:
        whole, first = open_session(), open_session()
        for grads in case.grads:
            call("step", whole, grads)
        for grads in case.grads[:half]:
            call("step", first, grads)
        second = open_session()
        call("restore", second, call("save", first))
        for grads in case.grads[half:]:
            call("step", second, grads)
        a, b = call("read", whole), call("read", second)
        diffs = [f"param {i}" for i, (x, y) in enumerate(zip(a.params, b.params))
                 if not np.array_equal(x, y, equal_nan=True)]
        diffs += [f"param {i} {k}" for i, (s, r) in enumerate(zip(a.state, b.state)) for k in s
                  if k not in r or not np.array_equal(s[k], r[k], equal_nan=True)]
        if diffs:
            record.update(outcome=execute.FAIL, reason="the resumed run differs from the uninterrupted run in "
                          + ", ".join(diffs[:5]), first_divergence={"clause": "CAME-STATE-5", "step": half + 1})
    except _Refused as refused:
        reply = refused.args[0]
        outcome = execute.NOT_APPLICABLE if reply[0] == "not_applicable" else execute.FAIL
        record.update(outcome=outcome, reason=f"save/resume: {reply[1]}: {reply[2] if len(reply) > 2 else ''}",
                      first_divergence={"clause": "CAME-STATE-5", "step": half})
    except execute.TargetFailure as exc:
        record.update(outcome=execute.ERROR, reason=str(exc))
        sessions.clear()  # they died with the worker
    for sid in sessions:
        try:
            p.call("close", sid)
        except execute.TargetFailure:
            break  # the verdict is measured; a dead worker restarts for the next case
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["case"] = to_json(case)
    return record


class _Refused(Exception):
    """A target request that did not answer "ok"."""


def tier0_case(info) -> TrajectoryCase:
    """The plainest case of the target's profile: defaults, one matrix and one vector, three steps."""
    dtype = "float32" if "float32" in info.dtypes else info.dtypes[0]
    shapes = [(3, 4), (4,)]
    params = [round_to(dtype, param_values(s)) for s in shapes]
    grads = [[round_to(dtype, (param_values(s) + k) / 8.0) for s in shapes] for k in range(1, 4)]
    return TrajectoryCase("tier0", info.profile, Hyperparameters.defaults(info.profile), params, grads, dtype,
                          flags=("Tier0",), clauses=("CAME-HP-1",), source="tier 0")


def _run_variant(target, variant, variants, fixtures, cfg, sink, progress) -> None:
    """Every source for one execution variant.

    Tier 0 first: a variant that cannot take one step of the plainest case (it raises, or dies)
    blocks its numeric cases, which would only repeat that failure; its error cases still run.
    """
    info = target.info
    tier0 = _run(target, tier0_case(info), variant)
    blocked = tier0["outcome"] == execute.ERROR or "raised" in (tier0.get("first_divergence") or {})
    sink.add(tier0)
    if blocked:
        sink.add({"id": f"blocked-{variant}", "kind": "blocked", "variant": variant, "source": "tier 0", "flags": [],
                  "clauses": ["CAME-HP-1"], "dtype": None, "outcome": "blocked",
                  "reason": f"tier 0 failed ({tier0['reason'][:300]}); fixture and Hypothesis trajectories and "
                            f"resume checks of this variant were not run"})
    else:
        progress(f"fixtures: {len(fixtures['trajectory'])} trajectories")
        for case in fixtures["trajectory"]:
            sink.add(_run(target, case, variant))
        for case in fixtures["trajectory"]:  # CAME-RETURN-1 on every documented-constructor vector
            if case.kwargs is not None:
                sink.add(CHECKS["return"](target, case, variant))
    # Construction is the same Python call in every execution variant: construction-phase
    # error cases run once, on the first variant; step-phase ones run on every variant.
    phases = ("construction", "step") if variant == variants[0] else ("step",)
    if "errors" in cfg.sources:
        progress(f"error vectors ({', '.join(phases)} phase)")
        for case in fixtures["error"]:
            if case.phase in phases:
                sink.add(_run(target, case, variant))
            if case.phase == "step" and "step" in phases:  # CAME-ERR-A1: the refused step changed nothing
                sink.add(CHECKS["atomic"](target, case, variant))
        if "construction" in phases:  # the other side of the contract: valid boundary values are accepted
            for case in strategies.valid_boundary_cases(info.api, VALID_KWARGS[info.api]):
                sink.add(_run(target, case, variant))
    if "hypothesis" in cfg.sources and not blocked:
        progress(f"hypothesis trajectories: {cfg.examples} examples")
        _trajectory_property(target, variant, sink, cfg)
        _property(strategies.nonfinite_param_cases(info.profile, info.dtypes, info.options), lambda c: c, target,
                  variant, sink, cfg, max(1, cfg.examples // 5))  # CAME-NONFINITE-2
    if "hypothesis-errors" in cfg.sources:
        progress("hypothesis invalid arguments")
        for clause in contract.clauses_for(info.api):
            for argument in clause.arguments if clause.phase in phases else ():
                _error_property(target, variant, sink, cfg, clause, argument)
        step_errors = strategies.step_error_cases(info.api, VALID_KWARGS[info.api])  # CAME-ERR-S1 … S5, CAME-ERR-A1
        _property(step_errors, lambda c: c, target, variant, sink, cfg, cfg.error_examples)
        _property(step_errors, lambda c: c, target, variant, sink, cfg, cfg.error_examples, CHECKS["atomic"])
        _property(strategies.return_cases(info.api), lambda c: c, target, variant, sink, cfg, cfg.error_examples,
                  CHECKS["return"])
    if "resume" in cfg.sources and "save_restore" in info.options and not blocked:
        resumable = [c for c in fixtures["trajectory"] if c.kwargs is None and c.profile == info.profile
                     and c.dtype in info.dtypes and not c.requires() - set(info.options)]
        for case in _one_per_dtype(resumable):
            sink.add(_resume(target, case, variant))
    for tier in ("scale", "horizon"):  # the slow tiers, last (conformance.tiers)
        if tier in cfg.sources and not blocked:
            tiers.run(tier, target, variant, fixtures.get(tier, []), cfg, sink, progress,
                      lambda strategy, examples: _property(strategy, lambda c: c, target, variant, sink, cfg, examples),
                      lambda case: _run(target, case, variant))


def run(target_name: str, out: Path, cfg: Settings, progress=print) -> dict:
    strategies.load_project_modules()  # before any draw: the same cases from every entry point
    spec = resolve(target_name)
    declared = deviations_mod.load(spec.deviations)
    sink = Sink(out, declared, cfg.stop_on_failure)
    process = TargetProcess(spec.factory, spec.python, cfg.timeout, out / "target-stderr.log", dict(spec.env))
    started, info = time.time(), None
    try:
        target = execute.Target(spec.name, process)
        info = target.info
        variants = cfg.variants or info.variants
        if set(variants) - set(info.variants):
            raise SystemExit(f"--variant: {sorted(set(variants) - set(info.variants))} not among the target's "
                             f"variants {list(info.variants)}")
        if cfg.case_file:
            obj = json.loads(Path(cfg.case_file).read_text())
            check = CHECKS.get(obj.pop("check", None), _run)
            case = from_json(obj)
            for variant in variants:
                sink.add(check(target, case, variant))
        else:
            fixtures = fixture_cases(info.profile, info.api, info.dtypes) \
                if {"fixtures", "scale", "horizon"} & set(cfg.sources) else {"trajectory": [], "error": []}
            if "fixtures" not in cfg.sources:  # the recipe tiers load the same files
                fixtures = {**fixtures, "trajectory": [], "error": []}
            for variant in variants:
                _run_variant(target, variant, variants, fixtures, cfg, sink,
                             lambda m, v=variant: progress(f"[{spec.name}/{v}] {m}"))
    except StopRun:
        pass
    except execute.TargetFailure as exc:  # the target could not even describe itself
        sink.stop_on_failure = False
        sink.add({"id": "load", "kind": "load", "variant": "-", "source": "", "flags": [], "clauses": [],
                  "dtype": None, "outcome": execute.ERROR, "reason": str(exc)})
    finally:
        process.close()
    unobserved = deviations_mod.apply(declared, sink.records)
    if not cfg.is_full_run():  # a replay or a subset cannot show every deviation
        unobserved = []
    return {"target": spec.name, "info": dict(info.__dict__) if info else None, "settings": cfg.to_json(),
            "started": started, "seconds": round(time.time() - started, 2), "records": sink.records,
            "unobserved_deviations": unobserved, "declared_deviations": declared}
