"""Run one case against a target and produce its outcome record (the suite's one data flow).

case -> target (in its worker) and reference in lock-step -> comparison -> ``Outcome``.
Outcomes are plain dicts ready for the reports; nothing here decides about deviations.
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager

import numpy as np

from came_conformance import compare
from came_conformance.cases import ErrorCase, TrajectoryCase, to_json
from came_conformance.distributed import checks as sharded_checks
from came_conformance.distributed.harness import ShardedSnapshot
from came_conformance.precision import of_target as precision_of
from came_conformance.protocol import Snapshot
from came_conformance.worker import TargetFailure, TargetProcess
from came_conformance.reference import optimizer
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.step import init_state

PASS, FAIL, NOT_APPLICABLE, ERROR = "pass", "fail", "not_applicable", "error"


class Target:
    """A target as the runner sees it: its declaration and its worker process."""

    def __init__(self, name: str, process: TargetProcess):
        self.name, self.process = name, process
        reply = process.call("describe")
        if reply[0] != "ok":
            raise TargetFailure(f"describe() failed: {reply}")
        self.info = reply[1]
        problems = self.info.problems() if hasattr(self.info, "problems") else ["describe() must return a TargetInfo"]
        if problems:
            raise TargetFailure("describe() returned an invalid TargetInfo: " + "; ".join(problems))

    def precision(self, dtype: str, grad_dtype: str | None = None):
        """How the target computes ``dtype`` parameters, as it declares it (conformance.precision)."""
        return precision_of(self.info, dtype, grad_dtype)


def new_record(case, variant: str, outcome: str, reason: str = "", **extra) -> dict:
    record = {"id": case.id, "kind": case.kind, "variant": variant, "source": case.source, "flags": list(case.flags),
              "clauses": list(getattr(case, "clauses", ()) or [getattr(case, "clause", "")]),
              "dtype": getattr(case, "dtype", None), "outcome": outcome, "reason": reason}
    if case.kind == "error":
        record["argument"] = case.argument  # every error record names its contract row (clause, argument)
    record.update(extra)
    return record


def _applicable(target: Target, case, variant: str) -> str:
    info = target.info
    if case.kind == "trajectory" and case.kwargs is not None and case.profile != info.api:
        return f"the target's constructor follows the {info.api} API, the case is {case.profile}"
    if case.kind == "trajectory" and case.kwargs is None and case.profile != info.profile:
        return f"the target implements the {info.profile} profile, the case is {case.profile}"
    if case.kind == "error" and case.profile != info.api:
        return f"the target's constructor follows the {info.api} API, the case is {case.profile}"
    if getattr(case, "dtype", None) and case.dtype not in info.dtypes_for(variant):
        return f"dtype {case.dtype} is not supported by the target" + (
            "; api vectors are float32 because constructor-made parameters are (adapter protocol)"
            if getattr(case, "kwargs", None) is not None else "")
    grad_dtype = getattr(case, "grad_dtype", None)
    if grad_dtype and grad_dtype not in getattr(info, "grad_dtypes", {}).get(case.dtype, ()):
        return f"{grad_dtype} gradients for {case.dtype} parameters are not accepted by the target [CAME-DTYPE-4]"
    missing = sorted(case.requires() - set(info.options_for(variant)))
    return f"the target cannot express: {', '.join(missing)}" if missing else ""


def run_case(target: Target, case, variant: str) -> dict:
    why = _applicable(target, case, variant)
    if why:  # outside what the target declares: not run, and not a gap in its evidence
        return new_record(case, variant, NOT_APPLICABLE, why, na_source="declaration")
    started = time.perf_counter()
    try:
        record = run_error(target, case, variant) if case.kind == "error" else \
            run_trajectory(target, case, variant)
    except TargetFailure as exc:
        record = new_record(case, variant, ERROR, str(exc), failures=[crash_point(0)])
    except Exception as exc:  # noqa: BLE001 - a reply outside the protocol must not end the run
        record = new_record(case, variant, ERROR, f"the target's reply broke the protocol: "
                         f"{type(exc).__name__}: {exc}", failures=[crash_point(0)])
    if record["outcome"] == NOT_APPLICABLE:
        record.setdefault("na_source", "target")  # the target declined a case it declared: an evidence gap
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["case"] = to_json(case)
    return record


@contextmanager
def closing(p: TargetProcess, sid):
    """``sid``, closed afterwards, unless the worker died (a TargetFailure) and took the session with it;
    a close that fails changes nothing measured (a dead worker restarts for the next case)."""
    alive = True
    try:
        yield sid
    except TargetFailure:
        alive = False
        raise
    finally:
        if alive:
            try:
                p.call("close", sid)
            except TargetFailure:
                pass


def guarded_check(name: str, case, started: float, check, failed) -> dict:
    """The record of a check of its own kind (conformance.atomic, conformance.returns): ``check()``, or
    ``failed(reason)`` when the worker died or its reply broke the protocol; its time, and its case
    saved with ``check`` = ``name`` so that ``--case-file`` replays the same check."""
    try:
        record = check()
    except TargetFailure as exc:
        record = failed(str(exc))
    except Exception as exc:  # noqa: BLE001 - a reply outside the protocol must not end the run
        record = failed(f"the target's reply broke the protocol: {type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - started, 4)
    record["case"] = {**to_json(case), "check": name}
    return record


def crash_point(step: int, clause: str = "CAME-STEP-1") -> dict:
    """The failure point of a target that died, hung or broke the protocol at ``step`` (0: before stepping)."""
    return {"step": step, "clause": clause, "tensor": None, "factored": None, "divergence": "crash"}


def divergence_kind(check) -> str:
    """What kind of difference a failing tensor check is (deviations.DIVERGENCES)."""
    if check.clause == "CAME-STATE-2":
        return "missing" if "exposes no state tensor" in check.note else "shape"
    t, r = check.target_value, check.reference_value
    if t is None or r is None:
        return "value"
    if np.isnan(t) and not np.isnan(r):
        return "nan"
    if np.isinf(t) and not np.isinf(r):
        return "inf"
    if not np.isfinite(r) and np.isfinite(t):
        return "finite"
    if t == 0.0 and r != 0.0:  # underflow, or a quantity that never moved
        return "zero"
    return "value"


def failure_points(checks, params) -> list[dict]:
    """Every failing tensor check of one step as a failure point, with its parameter's factored-ness."""
    out = []
    for c in checks:
        if not c.ok:
            point = c.to_json()
            point.update(factored=bool(np.ndim(params[c.param]) >= 2), divergence=divergence_kind(c))
            out.append(point)
    return out


def run_trajectory(target: Target, case: TrajectoryCase, variant: str) -> dict:
    p = target.process
    if case.kwargs is not None:  # an api case: the documented constructor
        reply = p.call("construct", case.kwargs, variant)
    elif case.starts_mid_run():  # CAME-STATE-6: opened at a step counter with a state
        reply = p.call("open_at", case.hp.to_json(), list(case.params), case.start_state, case.start_step, case.dtype,
                       variant)
    else:
        extras = {}  # only what applies: a sharded case's layouts (spec §9), a mixed-precision case's gradient dtype
        if getattr(case, "layouts", None):
            extras["layouts"] = list(case.layouts)
        if case.grad_dtype:  # CAME-DTYPE-4
            extras["grad_dtype"] = case.grad_dtype
        reply = p.call("open", case.hp.to_json(), list(case.params), case.dtype, variant,
                            *([extras] if extras else []))
    if reply[0] == "not_applicable":
        return new_record(case, variant, NOT_APPLICABLE, reply[1])
    if reply[0] == "raised":
        first = {"step": 0, "clause": "CAME-HP-1", "raised": reply[1], "note": f"construction raised {reply[1]}",
                 "tensor": None, "factored": None, "divergence": "raised"}
        return new_record(case, variant, FAIL, f"opening raised {reply[1]}: {reply[2]}", traceback=reply[3],
                       first_divergence=first, failures=[first])
    sid, steps, failures, regimes, crash, failed = reply[1], [], [], set(), None, set()
    try:
        reference = reference_trajectory(case)
        t0 = case.start_step
        prev = Snapshot([np.asarray(x, np.float64) for x in case.params],
                        case.start_state or [init_state(np.shape(x)) for x in case.params], t0)
        precision = target.precision(case.dtype, case.grad_dtype)
        judged = judged_steps(t0, len(case.grads))
        for t, grads in enumerate(case.grads, start=t0 + 1):
            judge = judged is None or t in judged
            read = judge or t + 1 in judged  # the state a judged step starts from is read too
            try:
                reply = p.call("step", sid, grads)
                if reply[0] == "ok":
                    reply = p.call("read", sid) if read else reply
                    if reply[0] != "ok":
                        failures.append({"step": t, "clause": "CAME-STATE-2", "note": f"read-back failed: {reply[1:3]}",
                                         "tensor": None, "factored": None, "divergence": "raised"})
                        break
                elif reply[0] == "not_applicable":
                    if not failures:  # declining half-way: nothing judged, an evidence gap
                        return new_record(case, variant, NOT_APPLICABLE, f"at step {t}: {reply[1]}")
                    break  # what failed before is evidence; declining now does not undo it
                else:
                    failures.append({"step": t, "clause": "CAME-STEP-1", "raised": reply[1],
                                     "note": f"step raised {reply[1]}: {reply[2]}", "tensor": None,
                                     "factored": None, "divergence": "raised"})
                    break
            except TargetFailure as exc:  # keep every step measured so far
                crash = f"at step {t}: {exc}"
                failures.append(crash_point(t))
                break
            if not read:
                next(reference)  # in lock-step all the same
                continue
            snap = reply[1]
            if len(snap.params) != len(case.params) or len(snap.state) != len(case.params):
                failures.append({"step": t, "clause": "CAME-STATE-2", "note": f"read-back has {len(snap.params)} "
                                 f"parameters and {len(snap.state)} states for {len(case.params)} parameters",
                                 "tensor": None, "factored": None, "divergence": "count"})
                break
            if snap.step is not None and snap.step != t and "step" not in failed:  # CAME-STATE-5: t after step t
                failed.add("step")
                failures.append({"step": t, "clause": "CAME-STATE-5", "tensor": "step", "factored": None,
                                 "divergence": "counter", "note": f"the target's step counter is {snap.step}, not {t}"})
            if not judge:  # read only as the start of the next, judged, step
                next(reference)
                prev = Snapshot([np.asarray(x, np.float64) for x in snap.params],
                                [{k: np.asarray(v, np.float64) for k, v in s.items()} for s in snap.state], snap.step)
                continue
            checks = compare.check_step(t, lambda i: case.hp.step_hyper(t, i), prev.params, prev.state, grads,
                                        snap, case.dtype, precision, regimes)
            sharded = isinstance(snap, ShardedSnapshot)
            if sharded:  # CAME-SHARD-2, CAME-SHARD-3: the ranks agree, each holds its layout's piece
                checks += sharded_checks.check_ranks(t, snap)
            # Every failing tensor of a parameter at the step where it first fails (issue: name every
            # failing clause, not only the first equation that differs); later steps add nothing for it.
            fresh = [p for p in failure_points(checks, case.params) if p["param"] not in failed]
            if sharded:  # the ranks and the layout of each point
                fresh = [sharded_checks.locate(p, snap) for p in fresh]
            failures += fresh
            failed.update(p["param"] for p in fresh)
            if any(c.clause == "CAME-STATE-2" for c in checks if not c.ok):
                break  # state of other shapes or names: the reference cannot restart from it
            steps.append({"step": t, "per_step": {f"{c.param}.{c.tensor}": {"ulps": c.max_ulps,
                                                                            "bound_ratio": c.worst_bound_ratio,
                                                                            "rel_bound": c.rel_bound}
                                                  for c in checks},
                          "accumulated_ulps": compare.accumulated_ulps(t, snap, *next(reference), case.dtype)})
            prev = Snapshot([np.asarray(x, np.float64) for x in snap.params],
                            [{k: np.asarray(v, np.float64) for k, v in s.items()} for s in snap.state], snap.step)
            if len(case.grads) > MAX_STEPS_KEPT and len(failed - {"step"}) == len(case.params) and t < t0 + len(case.grads):
                failures[0]["note"] = (failures[0].get("note", "") + f" (stepping stopped after step {t}: every "
                                       f"parameter had failed)").strip()
                break  # a long case: the verdict cannot change any more, later steps only cost time
    finally:
        if crash is None:
            try:
                p.call("close", sid)
            except TargetFailure:
                pass  # the verdict is already measured
    steps = thin_steps(steps)
    sampled = {} if judged is None else {"judged_steps": len(judged)}  # of len(case.grads) steps
    first = failures[0] if failures else None
    located = {"first_divergence": first, "failures": failures} if first else {}
    if crash is not None:
        return new_record(case, variant, ERROR, f"the target failed {crash}", steps=steps, regimes=sorted(regimes),
                          **sampled, **located)
    if first is None:
        return new_record(case, variant, PASS, steps=steps, regimes=sorted(regimes), **sampled)
    return new_record(case, variant, FAIL, f"first divergence at {describe_divergence(first)}", steps=steps,
                      regimes=sorted(regimes), **sampled, **located)


#: Trajectories up to this many steps are judged at every step; longer ones (the horizon tier's
#: 10 050 steps) at ``judged_steps``: every step costs the target its step either way, but the
#: clause-local judgement costs milliseconds per step, which for 10^4 steps is minutes per variant.
DENSE_STEPS = 200
#: Step counters where a rule changes: a float16 counter's last exact integer (2^11), relative_step's
#: crossover (CAME-LR-5, t = 10^4), a float32 counter's (2^24, CAME-STATE-6), int32's end.
CROSSOVERS = (2 ** 11, 10 ** 4, 2 ** 24, 2 ** 31 - 1)
JUDGE_EVERY = 25


def judged_steps(t0: int, n: int) -> frozenset[int] | None:
    """The steps t0 + 1 … t0 + n judged (None: all): the first and last 50, every ``JUDGE_EVERY``-th, and
    16 around every crossover in the range.  The others run and are not read back."""
    if n <= DENSE_STEPS:
        return None
    first, last = t0 + 1, t0 + n
    judged = set(range(first, first + 50)) | set(range(last - 49, last + 1)) | set(range(first, last + 1, JUDGE_EVERY))
    for c in CROSSOVERS:
        judged |= set(range(max(first, c - 8), min(last, c + 8) + 1))
    return frozenset(judged)


def reference_trajectory(case: TrajectoryCase):
    """The uninterrupted reference run of a case, one step at a time and without traces (a 4096 × 4096 case or
    a 10^4-step one costs one step's memory): yields (parameters, state) after each step, parameters rounded to
    the case's dtype (CAME-DTYPE-2)."""
    current = tuple(np.asarray(x, np.float64) for x in case.params)
    state = optimizer.init(current, case.hp) if not case.starts_mid_run() else optimizer.CameState(
        case.start_step, tuple({k: np.asarray(v, np.float64) for k, v in s.items()} for s in case.start_state))
    for grads in case.grads:
        result = optimizer.update(grads, state, current, case.hp, trace=False)
        current, state = tuple(round_to(case.dtype, x) for x in result.params), result.state
        yield current, state.tensors


#: Per-step figures kept in a record: a 10^4-step trajectory keeps its first, last and worst steps.
MAX_STEPS_KEPT = 200


def thin_steps(steps: list[dict]) -> list[dict]:
    """At most ``MAX_STEPS_KEPT`` entries: the first and last 50 steps and the 100 with the largest bound ratio."""
    if len(steps) <= MAX_STEPS_KEPT:
        return steps

    def worst(entry):
        return max((v["bound_ratio"] for v in entry["per_step"].values()), default=0.0)

    middle = sorted(steps[50:-50], key=worst, reverse=True)[:MAX_STEPS_KEPT - 100]
    return sorted(steps[:50] + middle + steps[-50:], key=lambda e: e["step"])


def describe_divergence(first: dict) -> str:
    """'step 3, exp_avg[1, 0] (param 0): target …, reference …, 12 ulps, tolerance … [CAME-STEP-6]'."""
    where = f"step {first['step']}"
    if first.get("tensor"):
        where += f", {first['tensor']}"
    if first.get("index") is not None:
        ranks = first.get("rank")  # a sharded target (spec §9): who holds the element, in which layout
        held = "" if ranks is None else f", rank {ranks}" if isinstance(ranks, int) else \
            f", rank {ranks[0]}" if len(ranks) == 1 else f", ranks {ranks[0]}-{ranks[-1]}"
        held += f", {first['layout']}" if first.get("layout") else ""
        where += f"[{', '.join(map(str, first['index']))}] (param {first['param']}{held}): target " \
                 f"{first['target_value']!r}, reference {first['reference_value']!r}, " \
                 f"{first.get('element_ulps', first['max_ulps']):.3g} ulps, tolerance {first['tolerance']:.3g}"
    note = f" {first['note']}" if first.get("note") else ""
    return f"{where} [{first['clause']}]{note}"


def run_error(target: Target, case: ErrorCase, variant: str) -> dict:
    p = target.process
    if case.phase == "construction":
        reply = p.call("construct", case.kwargs, variant)
    else:
        opened = p.call("construct", case.kwargs, variant)
        if opened[0] != "ok":
            return new_record(case, variant, FAIL if opened[0] == "raised" else NOT_APPLICABLE,
                           f"valid construction failed: {opened[1:3]}", category="setup failed", argument=case.argument)
        for k, valid in enumerate(case.grads_before or (), start=1):  # CAME-ERR-A1, CAME-ERR-S5: valid steps first
            done = p.call("step", opened[1], {"encoded": valid})
            if done[0] != "ok":
                p.call("close", opened[1])
                return new_record(case, variant, FAIL if done[0] == "raised" else NOT_APPLICABLE,
                                  f"valid step {k} before the failing one failed: {done[1:3]}", category="setup failed",
                                  argument=case.argument)
        reply = p.call("step", opened[1], {"encoded": case.grads})
        p.call("close", opened[1])
    if reply[0] == "not_applicable":
        return new_record(case, variant, NOT_APPLICABLE, reply[1])
    if case.exception is None:  # a value on the closed side of a documented range: must be accepted
        if reply[0] == "ok":
            if case.phase == "construction":
                p.call("close", reply[1])
            return new_record(case, variant, PASS, category="accepted a valid value", argument=case.argument)
        return new_record(case, variant, FAIL, f"raised {reply[1]} ({reply[2][:200]!r}) for a value the contract "
                       f"allows [{case.clause}]", category="rejected a valid value", raised=reply[1],
                       argument=case.argument)
    if reply[0] == "ok":
        if case.phase == "construction":
            p.call("close", reply[1])
        return new_record(case, variant, FAIL, f"did not raise; the contract requires {case.exception} "
                       f"[{case.clause}]", category="did not raise", argument=case.argument)
    raised, message = reply[1], reply[2]
    if case.exception not in reply[4]:  # a subclass of the required exception conforms (spec §6)
        return new_record(case, variant, FAIL, f"raised {raised} ({message[:200]!r}); the contract requires "
                       f"{case.exception} [{case.clause}]", category="raised another type", raised=raised,
                       argument=case.argument)
    if not re.search(case.match, message, re.IGNORECASE):  # 'Weight_decay' names weight_decay too
        return new_record(case, variant, FAIL, f"raised {raised}, but the message {message[:200]!r} does not name "
                       f"the argument (expected /{case.match}/) [{case.clause}]",
                       category="raised, but the message does not name the argument", raised=raised,
                       argument=case.argument)
    return new_record(case, variant, PASS, category="raised the documented type", raised=raised,
                   argument=case.argument)
