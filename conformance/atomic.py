"""Step errors are atomic (CAME-ERR-A1): after a refused step, nothing has changed.

For a step-phase error case the target is built with the case's documented constructor, takes
the case's valid steps (``grads_before``), is read back, is given the failing step, and is read
back again: the parameters, every state tensor and the step counter must be exactly as before.
The outcome is a record of kind ``atomic`` (its own id, ``atomic-<case id>``), separate from the
error record that judges the exception itself.
"""
from __future__ import annotations

import time

import numpy as np

from came_conformance.cases import ErrorCase
from came_conformance.execute import ERROR, FAIL, NOT_APPLICABLE, PASS, closing, guarded_check, new_record
from came_conformance.execute import _applicable  # the one applicability rule of the runner

CLAUSE = "CAME-ERR-A1"


def differences(before, after) -> list[tuple[int | None, str]]:
    """What differs between two snapshots, bit for bit (NaN equals NaN): (param index or None, name), where the
    name is ``step`` (the counter), ``theta`` (the parameter) or a state tensor's spec name."""
    out: list[tuple[int | None, str]] = []
    if before.step != after.step:
        out.append((None, "step"))
    for i, (a, b) in enumerate(zip(before.params, after.params)):
        if np.shape(a) != np.shape(b) or not np.array_equal(a, b, equal_nan=True):
            out.append((i, "theta"))
    for i, (a, b) in enumerate(zip(before.state, after.state)):
        for name in sorted(set(a) | set(b)):
            if name not in a or name not in b or np.shape(a[name]) != np.shape(b[name]) or \
                    not np.array_equal(a[name], b[name], equal_nan=True):
                out.append((i, name))
    return out


def describe(changed, before, after) -> str:
    parts = [f"the step counter ({before.step} -> {after.step})" if i is None else f"param {i} {name}"
             for i, name in changed[:6]]
    return ", ".join(parts) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")


def _record(case: ErrorCase, variant: str, outcome: str, reason: str = "", **extra) -> dict:
    record = new_record(case, variant, outcome, reason, **extra)
    record.update(kind="atomic", id=f"atomic-{case.id}", clauses=[CLAUSE, case.clause], argument=case.argument)
    return record


def run(target, case: ErrorCase, variant: str) -> dict:
    """One atomicity check (kind ``atomic``); ``case`` is a step-phase error case."""
    p, started = target.process, time.perf_counter()
    failing_step = len(case.grads_before or ()) + 1
    why = _applicable(target, case, variant)
    return guarded_check("atomic", case, started,
                         lambda: _record(case, variant, NOT_APPLICABLE, why) if why else
                         _check(p, case, variant, failing_step),
                         lambda reason: _record(case, variant, ERROR, reason))


def _check(p, case: ErrorCase, variant: str, failing_step: int) -> dict:
    opened = p.call("construct", case.kwargs, variant)
    if opened[0] != "ok":
        return _record(case, variant, NOT_APPLICABLE, f"the valid construction did not succeed: {opened[1:3]} "
                       f"(the error record judges it)")
    with closing(p, opened[1]) as sid:
        for k, valid in enumerate(case.grads_before or (), start=1):
            done = p.call("step", sid, {"encoded": valid})
            if done[0] != "ok":
                return _record(case, variant, NOT_APPLICABLE, f"valid step {k} did not succeed: {done[1:3]}")
        before = p.call("read", sid)
        reply = p.call("step", sid, {"encoded": case.grads})
        if reply[0] == "not_applicable":
            return _record(case, variant, NOT_APPLICABLE, reply[1])
        if reply[0] == "ok":
            return _record(case, variant, NOT_APPLICABLE, "the step did not raise, so there is no refused step to "
                           "check (the error record judges that)")
        after = p.call("read", sid)
        if before[0] != "ok" or after[0] != "ok":
            return _record(case, variant, FAIL, f"read-back failed: {(before if before[0] != 'ok' else after)[1:3]}",
                           first_divergence={"step": failing_step, "clause": CLAUSE, "note": "read-back failed"})
        changed = differences(before[1], after[1])
        if changed:
            what = describe(changed, before[1], after[1])
            first = {"step": failing_step, "clause": CLAUSE, "tensor": changed[0][1],
                     "note": f"after raising {reply[1]} the target had changed {what}"}
            if changed[0][0] is not None:
                first["param"] = changed[0][0]
            return _record(case, variant, FAIL, f"the refused step {failing_step} ({reply[1]}) changed {what} "
                           f"[{CLAUSE}]", category="changed state before raising", raised=reply[1],
                           first_divergence=first, failures=[first])
        return _record(case, variant, PASS, category="nothing changed", raised=reply[1])
