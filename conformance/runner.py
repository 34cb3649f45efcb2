"""The conformance run: every case source, every execution variant, one stream of outcomes.

Per variant, in this order (fast and fixed first): tier 0, the golden fixtures of the target's
profile (and the step's return value on the api vectors), the error vectors and valid boundaries
(and the atomicity of every step error), Hypothesis trajectories, Hypothesis invalid arguments,
sharded cases (sharded targets: their variants are layouts and their ranks run under
``conformance.distributed.harness``, spec §9), save-and-resume, then the slow tiers: scale and
long horizons (conformance.tiers).  Each outcome is appended to ``records.jsonl`` as soon as it
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

from came_conformance import atomic, returns, rundir, tiers
from came_conformance import deviations as deviations_mod
from came_conformance import execute, strategies
from came_conformance.arguments import param_values
from came_conformance.cases import ErrorCase, TrajectoryCase, content_id, load_case_file, to_json
from came_conformance.report import dumps
from came_conformance.targets import TARGETS_DIR, resolve
from came_conformance.distributed.harness import DistributedTargetProcess
from came_conformance.inprocess import InProcessTarget
from came_conformance.progress import Progress
from came_conformance.worker import TargetProcess
from came_conformance.reference import contract
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Hyperparameters


@dataclass
class Settings:
    seed: int = 0
    examples: int = 25  # Hypothesis trajectory examples per variant
    sharding_examples: int = 25  # Hypothesis sharded cases per variant of a sharded target (spec §9)
    error_examples: int = 3  # Hypothesis examples per (error clause, argument)
    timeout: float = 120.0  # per request to the target, seconds
    shrink_calls: int = 40  # target runs Hypothesis may spend shrinking one failure (a count: reproducible)
    signatures: int = 6  # shrunk failures (each with a new signature) one Hypothesis property reports at most
    variants: tuple[str, ...] | None = None
    case_file: str | None = None
    sources: tuple[str, ...] = ("fixtures", "errors", "hypothesis", "hypothesis-errors", "resume", "sharding", "scale",
                                "horizon")
    stop_on_failure: bool = False  # mutation runs: the first unexplained failure ends the run
    deviations: str | None = None  # a deviations file for any target (--deviations; else CAME_DEVIATIONS)
    in_process: bool = False  # mutation runs of the suite's own port: no worker process (conformance.inprocess)
    scale_examples: int = 3  # Hypothesis scale cases per variant (CAME-DEF-4), each up to 2^17 elements
    horizon_examples: int = 4  # Hypothesis sessions opened at a large step counter per variant (CAME-STATE-6)
    slow_tiers: str = "first"  # SLOW_TIER_POLICIES: the variants the scale and horizon tiers run on

    def is_full_run(self) -> bool:
        return self.case_file is None and self.variants is None and set(self.sources) == set(Settings.sources)

    def to_json(self) -> dict:
        return {**self.__dict__, "full_run": self.is_full_run()}


#: "first": the scale and horizon tiers run on the first variant the run covers (what they probe,
#: reductions over long axes and counters over long runs, is the same code in every execution mode
#: of a port, and they cost minutes per variant); "all": on every variant.
SLOW_TIER_POLICIES = ("first", "all")


class StopRun(Exception):
    """Raised by the sink after the first unexplained failure when ``stop_on_failure`` is set."""


class Sink:
    """Appends each outcome to records.jsonl at once (nothing is lost when a run dies), bounded (rundir)."""

    def __init__(self, directory: rundir.RunDirectory, deviations: list[dict], stop_on_failure: bool = False):
        self.directory, self.path = directory, directory.path / rundir.RECORDS
        self.deviations, self.records, self.stop_on_failure = deviations, [], stop_on_failure
        self.exploration: dict = {}  # (variant, family) -> what its Hypothesis properties reported (_property)

    def explained(self, record: dict) -> bool:
        return deviations_mod.explain(self.deviations, record) is not None

    def add(self, record: dict) -> dict:
        self.records.append(record)
        self.directory.append_record(record, dumps)
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


def for_dtypes(cases: dict, dtypes: tuple[str, ...]) -> dict:
    """``cases`` for a variant of these dtypes: without float64, float64 trajectories run at float32."""
    if "float64" not in dtypes and "float32" in dtypes:
        return {**cases, "trajectory": [at_dtype(c, "float32") if c.dtype == "float64" else c
                                        for c in cases["trajectory"]]}
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


def _property(strategy, make_case, target, variant, sink, cfg, max_examples, run_one=_run, family=None):
    """Run one Hypothesis property past its first failure: each failure signature once, shrunk.

    ``run_one(target, case, variant)`` makes a case's record: ``_run``, or a check of its own kind
    (``CHECKS``).  Properties of one ``family`` in a variant (the trajectory properties: ordinary,
    non-finite, sharded, scale, horizon) share what they reported and the ``cfg.signatures`` limit,
    so a bug two of them reach is shrunk and reported once; ``family`` None: a property of its own.

    A signature (``deviations.signature_key``) is where a failure point is: clause, tensor, factored or
    not, dtype, variant, divergence, layout.  The property is explored in rounds with the same seed.  A round
    draws until a case fails with a signature not yet reported, shrinks it towards a smaller case
    with that same signature (within ``shrink_calls`` target runs; a count, unlike a time budget,
    gives the same example on every run with the same seed) and records the shrunk case.  The next
    round draws the same cases again (answered from a cache, the target does not run them twice),
    now passing over the signatures already reported, and goes on further.  Exploration ends when
    a round draws ``max_examples`` cases without a new signature, or after ``cfg.signatures`` shrunk
    failures (each brings at least one new signature; a failure names every failing tensor of a
    parameter, so one bug can bring several).  Every drawn case is recorded once: passes, explained failures and failures whose
    signatures were all reported already (``hypothesis.shrunk`` false); cases tried while shrinking
    are not.
    """
    shared = sink.exploration.setdefault((variant, family), {"seen": set(), "shrunk": 0}) if family else \
        {"seen": set(), "shrunk": 0}
    seen = shared["seen"]
    ran: dict[str, dict] = {}  # case id -> record: what the target already answered
    recorded: set[str] = set()
    while shared["shrunk"] < max(cfg.signatures, 1):
        best, budget_spent = _explore_round(strategy, make_case, target, variant, sink, cfg, max_examples, seen, ran,
                                            recorded, run_one)
        if best is None:
            return
        shared["shrunk"] += 1
        seen.update(_new_signatures(sink, best, set()))
        best["hypothesis"] = {"seed": cfg.seed, "shrunk": True, "shrink_budget_spent": budget_spent}
        recorded.add(best["id"])
        sink.add(best)


def _new_signatures(sink, record: dict, seen: set) -> list:
    """Signatures of the record's unexplained failure points that are not in ``seen``, in point order."""
    if record["outcome"] not in ("fail", "error"):
        return []
    found = [deviations_mod.signature_key(record, point) for point in deviations_mod.unexplained(sink.deviations, record)]
    return [sig for k, sig in enumerate(found) if sig not in seen and sig not in found[:k]]


def _explore_round(strategy, make_case, target, variant, sink, cfg, max_examples, seen, ran, recorded, run_one):
    """One round of ``_property``: the shrunk case of the first new signature (or None), and whether
    shrinking spent its budget."""
    state = {"shrink_runs": None, "signature": None, "best": None}

    def outcome_of(case):
        if case.id not in ran:
            ran[case.id] = run_one(target, case, variant)
        return ran[case.id]

    @settings(max_examples=max_examples, database=None, deadline=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=(Phase.generate, Phase.shrink), print_blob=False,
              report_multiple_bugs=False)
    @hypothesis_seed(cfg.seed)
    @given(drawn=strategy)
    def prop(drawn):
        case = make_case(drawn)
        if state["signature"] is None:  # drawing
            record = outcome_of(case)
            new = _new_signatures(sink, record, seen)
            if new:
                state.update(signature=new[0], shrink_runs=0)
            elif case.id not in recorded:
                recorded.add(case.id)
                if record["outcome"] in ("fail", "error") and not sink.explained(record):
                    record["hypothesis"] = {"seed": cfg.seed, "shrunk": False}  # its signatures are reported already
                sink.add(record)
        elif case.id not in ran:  # shrinking: only cases the target already ran are free
            if state["shrink_runs"] >= cfg.shrink_calls:
                return  # the budget is spent: this candidate counts as passing, shrinking stops
            state["shrink_runs"] += 1
        if state["signature"] is not None and state["signature"] in _new_signatures(sink, outcome_of(case), seen):
            state["best"] = outcome_of(case)
            raise AssertionError(state["best"]["reason"])  # one line: Hypothesis sees one failure throughout

    try:
        prop()
    except Exception:  # noqa: BLE001 - AssertionError, or Hypothesis's flaky/group errors when a budget ended
        if state["best"] is None:
            raise
    if state["best"] is None:
        return None, False
    return state["best"], state["shrink_runs"] >= cfg.shrink_calls


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


def _same(case):
    return case


def _trajectory_property(target, variant, sink, cfg):
    info = target.info
    strategy = strategies.trajectory_cases(info.profile, info.dtypes_for(variant), info.options_for(variant),
                                           grad_dtypes=getattr(info, "grad_dtypes", None))
    _property(strategy, lambda case: case, target, variant, sink, cfg, cfg.examples, family="trajectory")


def _sharding_property(target, variant, sink, cfg):
    """Sharded cases (spec §9): layouts and uneven shapes drawn for this variant's mode and world size."""
    from came_conformance.distributed.strategies import sharded_cases

    info = target.info
    strategy = sharded_cases(info.profile, info.dtypes, info.options, variant)
    _property(strategy, lambda case: case, target, variant, sink, cfg, cfg.sharding_examples, family="trajectory")


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
        sessions.append(call("open", case.hp.to_json(), list(case.params), case.dtype, variant))
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
        diffs = resume_differences(a, b, case.params, len(case.grads))
        if diffs:
            record.update(outcome=execute.FAIL, reason="the resumed run differs from the uninterrupted run: "
                          + "; ".join(diffs[:6]) + (f" (and {len(diffs) - 6} more)" if len(diffs) > 6 else ""),
                          first_divergence={"clause": "CAME-STATE-5", "step": half + 1, "tensor": None,
                                            "factored": None, "divergence": "value"})
            record["failures"] = [record["first_divergence"]]
    except _Refused as refused:
        reply = refused.args[0]
        reason = f"save/resume: {reply[1]}: {reply[2] if len(reply) > 2 else ''}"
        if reply[0] == "not_applicable":  # it declared save_restore: declining is an evidence gap
            record.update(outcome=execute.NOT_APPLICABLE, reason=reason, na_source="target")
        else:
            point = {"clause": "CAME-STATE-5", "step": half, "tensor": None, "factored": None, "divergence": "raised"}
            record.update(outcome=execute.FAIL, reason=reason, first_divergence=point, failures=[point])
    except execute.TargetFailure as exc:
        record.update(outcome=execute.ERROR, reason=str(exc), failures=[execute.crash_point(half, "CAME-STATE-5")])
        sessions.clear()  # they died with the worker
    for sid in sessions:
        try:
            p.call("close", sid)
        except execute.TargetFailure:
            break  # the verdict is measured; a dead worker restarts for the next case
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["case"] = to_json(case)
    return record


def resume_differences(whole, resumed, params, steps: int) -> list[str]:
    """Every way the resumed read-back differs from the uninterrupted one (CAME-STATE-5).

    Counts of parameters and states, shapes, the state's tensor names (CAME-STATE-2/3), the step
    counter (both must be ``steps`` when exposed) and every tensor, bit for bit: a restore that loses
    anything, or a read-back that returns nothing, fails.
    """
    out = []
    n = len(params)
    for label, snap in (("uninterrupted", whole), ("resumed", resumed)):
        if len(snap.params) != n or len(snap.state) != n:
            out.append(f"the {label} read-back has {len(snap.params)} parameters and {len(snap.state)} states "
                       f"for {n} parameters")
        if snap.step is not None and snap.step != steps:
            out.append(f"the {label} step counter is {snap.step}, not {steps}")
    if out:
        return out
    if (whole.step is None) != (resumed.step is None):
        out.append(f"one read-back exposes a step counter and the other does not ({whole.step} / {resumed.step})")
    for i in range(n):
        x, y = np.asarray(whole.params[i]), np.asarray(resumed.params[i])
        if x.shape != y.shape or x.shape != np.shape(params[i]):
            out.append(f"param {i}: shapes {x.shape} and {y.shape}, the parameter's is {np.shape(params[i])}")
        elif not np.array_equal(x, y, equal_nan=True):
            out.append(f"param {i}: values differ")
        s, r = whole.state[i], resumed.state[i]
        if set(s) != set(r):
            out.append(f"param {i}: state tensors {sorted(s)} and {sorted(r)}")
        for k in sorted(set(s) & set(r)):
            a, b = np.asarray(s[k]), np.asarray(r[k])
            if a.shape != b.shape:
                out.append(f"param {i} {k}: shapes {a.shape} and {b.shape}")
            elif not np.array_equal(a, b, equal_nan=True):
                out.append(f"param {i} {k}: values differ")
    return out


class _Refused(Exception):
    """A target request that did not answer "ok"."""


def tier0_case(info, variant: str | None = None) -> TrajectoryCase:
    """The plainest case of the target's profile: defaults, one matrix and one vector, three steps."""
    dtypes = info.dtypes_for(variant) if variant else info.dtypes
    dtype = "float32" if "float32" in dtypes else dtypes[0]
    shapes = [(3, 4), (4,)]
    params = [round_to(dtype, param_values(s)) for s in shapes]
    grads = [[round_to(dtype, (param_values(s) + k) / 8.0) for s in shapes] for k in range(1, 4)]
    return TrajectoryCase("tier0", info.profile, Hyperparameters.defaults(info.profile), params, grads, dtype,
                          flags=("Tier0",), clauses=("CAME-HP-1",), source="tier 0")


@dataclass
class Unit:
    """One step of a run: ``run(sink)`` adds its records.  The pytest plugin makes each a test item.

    ``numeric`` units (fixture trajectories, Hypothesis trajectories, resume checks) do not run
    when their variant's tier 0 failed; ``slow`` ones (the scale and horizon tiers) run on one
    variant unless ``Settings.slow_tiers`` is "all"; ``announce`` is the progress line printed before it.
    """

    variant: str
    name: str
    run: object  # (sink) -> None
    numeric: bool = False
    announce: str = ""
    slow: bool = False


class Plan:
    """Every unit of a run, in the order they run (README "What the suite checks").

    Per variant: tier 0, the golden trajectories, the error vectors (construction-phase ones on
    the first variant only: construction is the same Python call in every variant) and valid
    boundaries, Hypothesis trajectories, Hypothesis invalid arguments, save-and-resume.  A variant
    that cannot take one step of tier 0 (it raises, or dies) is ``blocked``: its numeric units
    would only repeat that failure and do not run; its error units still do.
    """

    def __init__(self, target, variants, fixtures: dict, cfg: Settings):
        self.target, self.variants, self.cfg = target, tuple(variants), cfg
        self.blocked: dict[str, bool] = {}
        self.slow_variant: str | None = None  # the variant the slow tiers ran on (slow_tiers "first")
        self.units: list[Unit] = []
        for variant in self.variants:
            self.units += self._variant_units(variant, for_dtypes(fixtures, target.info.dtypes_for(variant)))

    def warnings(self, fixtures: dict) -> list[str]:
        """What a target's declaration silently costs (printed, and written in the report)."""
        out = []
        api = sum(1 for c in fixtures["trajectory"] if c.kwargs is not None)
        for variant in self.variants:
            if api and "float32" not in self.target.info.dtypes_for(variant):
                out.append(f"variant {variant}: none of the {api} api vectors can run: they are float32 "
                           f"(constructor-made parameters are, adapter protocol) and the target declares "
                           f"dtypes {list(self.target.info.dtypes_for(variant))}")
        return out

    def skips(self, unit: Unit) -> bool:
        """Does ``unit`` not run: its variant is blocked, or it is a slow-tier unit and (``slow_tiers`` "first")
        another variant, the first one not blocked, runs the slow tiers?"""
        if unit.numeric and self.blocked.get(unit.variant):
            return True
        return unit.slow and self.cfg.slow_tiers == "first" and self.slow_variant not in (None, unit.variant)

    def run_unit(self, unit: Unit, sink: Sink) -> bool:
        """Run one unit; False (nothing run) when it ``skips``."""
        if self.skips(unit):
            return False
        if unit.slow:
            self.slow_variant = unit.variant
        unit.run(sink)
        return True

    def _tier0(self, variant: str, sink: Sink) -> None:
        tier0 = sink.add(_run(self.target, tier0_case(self.target.info, variant), variant))
        blocked = tier0["outcome"] == execute.ERROR or "raised" in (tier0.get("first_divergence") or {})
        self.blocked[variant] = blocked
        if blocked:
            sink.add({"id": f"blocked-{variant}", "kind": "blocked", "variant": variant, "source": "tier 0",
                      "flags": [], "clauses": ["CAME-HP-1"], "dtype": None, "outcome": "blocked",
                      "reason": f"tier 0 failed ({tier0['reason'][:300]}); fixture and Hypothesis trajectories "
                                f"and resume checks of this variant were not run"})

    def _variant_units(self, variant: str, fixtures: dict) -> list[Unit]:
        target, cfg, info = self.target, self.cfg, self.target.info
        options, dtypes = info.options_for(variant), info.dtypes_for(variant)

        def one(case, resume=False):
            return lambda sink: sink.add((_resume if resume else _run)(target, case, variant))

        units = [Unit(variant, "tier0", lambda sink: self._tier0(variant, sink))]
        if "fixtures" in cfg.sources:
            units += [Unit(variant, f"fixture:{c.id}", one(c), numeric=True,
                           announce="" if k else f"fixtures: {len(fixtures['trajectory'])} trajectories")
                      for k, c in enumerate(fixtures["trajectory"])]
            units += [Unit(variant, f"return:{c.id}", lambda sink, c=c: sink.add(CHECKS["return"](target, c, variant)),
                           numeric=True, announce="" if k else "step return values (CAME-RETURN-1) of the api vectors")
                      for k, c in enumerate(c for c in fixtures["trajectory"] if c.kwargs is not None)]
        phases = ("construction", "step") if variant == self.variants[0] else ("step",)
        if "errors" in cfg.sources:
            errors = [c for c in fixtures["error"] if c.phase in phases]
            if "construction" in phases:  # the other side of the contract: valid boundary values are accepted
                errors += strategies.valid_boundary_cases(info.api, VALID_KWARGS[info.api])
            units += [Unit(variant, f"error:{c.id}", one(c),
                           announce="" if k else f"error vectors ({', '.join(phases)} phase)")
                      for k, c in enumerate(errors)]
            units += [Unit(variant, f"atomic:{c.id}", lambda sink, c=c: sink.add(CHECKS["atomic"](target, c, variant)),
                           announce="" if k else "atomicity of refused steps (CAME-ERR-A1)")
                      for k, c in enumerate(c for c in fixtures["error"] if c.phase == "step")]
        if "hypothesis" in cfg.sources:
            units.append(Unit(variant, "hypothesis", lambda sink: _trajectory_property(target, variant, sink, cfg),
                              numeric=True, announce=f"hypothesis trajectories: {cfg.examples} examples"))
            nonfinite = strategies.nonfinite_param_cases(info.profile, dtypes, options)  # CAME-NONFINITE-2
            units.append(Unit(variant, "hypothesis-nonfinite",
                              lambda sink: _property(nonfinite, _same, target, variant, sink, cfg,
                                                     max(1, cfg.examples // 5), family="trajectory"), numeric=True))
        if "hypothesis-errors" in cfg.sources:
            drawn = [(c, a) for c in contract.clauses_for(info.api) if c.phase in phases for a in c.arguments
                     if strategies.invalid_argument(c.id, a) is not None]
            units += [Unit(variant, f"hypothesis-error:{c.id}:{a}",
                           lambda sink, c=c, a=a: _error_property(target, variant, sink, cfg, c, a),
                           announce="" if k else "hypothesis invalid arguments")
                      for k, (c, a) in enumerate(drawn)]
            step_errors = strategies.step_error_cases(info.api, VALID_KWARGS[info.api])  # CAME-ERR-S1 … S5, -A1
            units += [Unit(variant, "hypothesis-step-errors", lambda sink: _property(
                          step_errors, _same, target, variant, sink, cfg, cfg.error_examples)),
                      Unit(variant, "hypothesis-atomic", lambda sink: _property(
                          step_errors, _same, target, variant, sink, cfg, cfg.error_examples, CHECKS["atomic"])),
                      Unit(variant, "hypothesis-return", lambda sink: _property(
                          strategies.return_cases(info.api), _same, target, variant, sink, cfg, cfg.error_examples,
                          CHECKS["return"]))]
        if "sharding" in cfg.sources and info.world_sizes:
            units.append(Unit(variant, "sharding", lambda sink: _sharding_property(target, variant, sink, cfg),
                              numeric=True, announce=f"sharded cases: {cfg.sharding_examples} examples"))
        if "resume" in cfg.sources and "save_restore" in options:
            resumable = [c for c in fixtures["trajectory"] if c.kwargs is None and c.profile == info.profile
                         and c.dtype in dtypes and not c.requires() - set(options)]
            units += [Unit(variant, f"resume:{c.id}", one(c, resume=True), numeric=True)
                      for c in _one_per_dtype(resumable)]
        for tier in ("scale", "horizon"):  # the slow tiers, last (conformance.tiers)
            if tier in cfg.sources:
                recipes = fixtures.get(tier, [])
                units += [Unit(variant, f"{tier}:{c.id}", one(c), numeric=True, slow=True,
                               announce="" if k else f"{tier}: {len(recipes)} recipe vectors")
                          for k, c in enumerate(recipes)]
                strategy, examples = tiers.hypothesis(tier, info.profile, dtypes, options, cfg)
                units.append(Unit(variant, f"hypothesis-{tier}", lambda sink, s=strategy, n=examples: _property(
                    s, _same, target, variant, sink, cfg, n, family="trajectory"), numeric=True, slow=True,
                    announce=f"{tier}: {examples} Hypothesis cases"))
        return units


def start(target_name: str, out: Path | rundir.RunDirectory, cfg: Settings):
    """The run's deviations, sink and target worker (the caller closes ``process``).

    ``out`` is a report directory, or a claim on one (conform.py); a plain path is claimed here, and
    report.write_all releases the claim.
    """
    strategies.load_project_modules()  # before any draw: the same cases from every entry point
    spec = resolve(target_name, cfg.deviations)
    declared = deviations_mod.load(spec.deviations, must_exist=spec.deviations_named)
    directory = out if isinstance(out, rundir.RunDirectory) else rundir.claim(out, target_name, cfg.to_json())
    sink = Sink(directory, declared, cfg.stop_on_failure)
    process = InProcessTarget(spec.factory) if cfg.in_process else \
        TargetProcess(spec.factory, spec.python, cfg.timeout, directory.path / rundir.LOG, dict(spec.env))
    return spec, declared, sink, process


def load_fixtures(info, cfg: Settings) -> dict:
    """The golden vectors a run uses: trajectories (the fixtures source, and resume's starting
    points) and the error vectors (the errors source)."""
    from came_conformance.fixtures.cases import load_cases  # numpy-side loader of the golden vectors
    from came_conformance.fixtures.manifest import verify

    if not {"fixtures", "errors", "resume", "scale", "horizon"} & set(cfg.sources):
        return {"trajectory": [], "error": [], "scale": [], "horizon": []}
    verify()  # SHA-256 manifest and schemas: a tampered or malformed vector file stops the run
    return load_cases(info.profile, info.api)


def check_variants(info, cfg: Settings) -> tuple[str, ...]:
    variants = cfg.variants or info.variants
    if set(variants) - set(info.variants):
        raise SystemExit(f"--variant: {sorted(set(variants) - set(info.variants))} not among the target's "
                         f"variants {list(info.variants)}")
    return tuple(variants)


def finish(spec, cfg: Settings, declared: list[dict], sink: Sink, info, started: float, warnings: list[str],
           stopped: str | None = None, aborted: str | None = None, target_argument: str | None = None,
           rank_starts: dict | None = None) -> dict:
    """The run's result from its records; ``stopped`` or ``aborted`` say why it ended before its
    last unit (the first: by design, as a mutation run stops; the second: a signal)."""
    ending = rundir.ABORTED if aborted else rundir.STOPPED if stopped else rundir.COMPLETE
    status = deviations_mod.apply(declared, sink.records)
    return {"target": spec.name, "info": dict(info.__dict__) if info else None, "settings": cfg.to_json(),
            "started": started, "seconds": round(time.time() - started, 2), "records": sink.records,
            "deviation_status": status, "declared_deviations": declared,
            "deviations_file": deviations_mod.file_identity(spec.deviations, TARGETS_DIR.parent),
            "warnings": warnings, "stopped": stopped, "aborted": aborted,
            "target_argument": target_argument or spec.name, "run": sink.directory.run_fields(ending, aborted or ""),
            **({"rank_starts": rank_starts} if rank_starts is not None else {})}  # spec §9: cost of the ranks


def load_failure(sink: Sink, exc: Exception) -> None:
    """The target could not even describe itself: one ``load`` error record."""
    sink.stop_on_failure = False
    sink.add({"id": "load", "kind": "load", "variant": "-", "source": "", "flags": [], "clauses": [],
              "dtype": None, "outcome": execute.ERROR, "reason": str(exc), "failures": [execute.crash_point(0)]})


def run(target_name: str, out: Path, cfg: Settings, progress=print) -> dict:
    replay, check = load_case_file(cfg.case_file) if cfg.case_file else (None, None)  # before anything is written
    spec, declared, sink, process = start(target_name, out, cfg)
    started, info, warnings, stopped, aborted = time.time(), None, [], None, None
    try:
        target = execute.Target(spec.name, process)
        info = target.info
        sink.directory.write_run({"info": json.loads(dumps(dict(info.__dict__)))})  # what `report --out` rebuilds with
        if info.world_sizes:  # a sharded target: its ranks run under the suite's harness (spec §9)
            process.close()
            process = target.process = DistributedTargetProcess(spec.factory, spec.python, cfg.timeout,
                                                                sink.directory.path / rundir.LOG, dict(spec.env),
                                                                describe_world=min(info.world_sizes))
        variants = check_variants(info, cfg)
        if replay is not None:
            for variant in variants:
                sink.add(CHECKS.get(check, _run)(target, replay, variant))
        else:
            fixtures = load_fixtures(info, cfg)
            plan = Plan(target, variants, fixtures, cfg)
            warnings = plan.warnings(fixtures)
            for warning in warnings:
                progress(f"[{spec.name}] warning: {warning}")
            display = Progress(spec.name, len(plan.units), progress)
            try:
                for done, unit in enumerate(plan.units):
                    if unit.announce and not plan.skips(unit):
                        display.message(f"[{spec.name}/{unit.variant}] {unit.announce}")
                    display.update(done, unit.variant, len(sink.records))
                    plan.run_unit(unit, sink)
            finally:
                display.close()
    except StopRun as stop:
        stopped = f"stopped at the first unexplained failure ({stop.args[0]})"
    except rundir.RunInterrupted as exc:  # SIGINT or SIGTERM (conform.py): report what was measured
        aborted = f"{exc.signal_name} after {len(sink.records)} outcomes"
        process.kill()
    except execute.TargetFailure as exc:  # the target could not even describe itself
        load_failure(sink, exc)
    finally:
        process.close()
    return finish(spec, cfg, declared, sink, info, started, warnings, stopped, aborted, target_name,
                  getattr(process, "starts", None))
