"""What the step call returns (CAME-RETURN-1): the rule, and its check on a target's documented constructor.

The adapter reports the return value of every step as ``protocol.describe_return`` writes it
(option ``step_return``).  The ``mindformers`` API must return a one-element boolean tensor
holding True (S3: "Tensor[bool], the value is True"); the ``paper`` API, as torch optimizers
do without a closure, None.  A check is a record of kind ``return`` (id ``return-<case id>``)
that constructs the target with an api case's keyword arguments and takes its steps.
"""
from __future__ import annotations

import math
import time

from came_conformance.cases import TrajectoryCase
from came_conformance.execute import ERROR, FAIL, NOT_APPLICABLE, PASS, closing, guarded_check, new_record
from came_conformance.execute import _applicable  # the one applicability rule of the runner

CLAUSE = "CAME-RETURN-1"
EXPECTED = {"mindformers": "Tensor[bool] holding True", "paper": "None"}


def show(returned) -> str:
    """A described return value, briefly: ``tuple(bool True, bool True)``, ``tensor bool [1] [True]``."""
    if not isinstance(returned, dict):
        return repr(returned)[:80]
    kind = returned.get("type")
    if kind == "tuple":
        return "tuple(" + ", ".join(show(v) for v in returned.get("items", [])[:4]) + ")"
    if kind == "tensor":
        return f"tensor {returned.get('dtype')} {returned.get('shape')} {returned.get('values')}"
    if kind in ("bool", "number"):
        return f"{kind} {returned.get('value')}"
    return kind or repr(returned)[:80]


def problem(api: str, returned) -> str:
    """Why ``returned`` (the form of ``protocol.describe_return``) breaks CAME-RETURN-1 for ``api``; "" if it does not."""
    if api == "paper":
        ok = returned == {"type": "none"}
    else:
        ok = isinstance(returned, dict) and returned.get("type") == "tensor" and returned.get("dtype") == "bool" \
            and math.prod(returned.get("shape", [0])) == 1 and returned.get("values") == [True]
    return "" if ok else f"the step returned {show(returned)}; the {api} API returns {EXPECTED[api]} [{CLAUSE}]"


def _record(case: TrajectoryCase, variant: str, outcome: str, reason: str = "", **extra) -> dict:
    record = new_record(case, variant, outcome, reason, **extra)
    record.update(kind="return", id=f"return-{case.id}", clauses=[CLAUSE])
    return record


def run(target, case: TrajectoryCase, variant: str) -> dict:
    """One return-value check (kind ``return``) of an api case (``case.kwargs`` set)."""
    started = time.perf_counter()
    why = _applicable(target, case, variant)
    if why or "step_return" not in target.info.options_for(variant):
        why = why or "the adapter does not report what the step returns (option step_return)"
        check = lambda: _record(case, variant, NOT_APPLICABLE, why)  # noqa: E731
    else:
        check = lambda: _check(target.process, target.info.api, case, variant)  # noqa: E731
    return guarded_check("return", case, started, check, lambda reason: _record(case, variant, ERROR, reason))


def _check(p, api: str, case: TrajectoryCase, variant: str) -> dict:
    opened = p.call("construct", case.kwargs, variant)
    if opened[0] != "ok":
        return _record(case, variant, NOT_APPLICABLE, f"construction did not succeed: {opened[1:3]} (the api "
                       f"trajectory record judges it)")
    with closing(p, opened[1]) as sid:
        for t, grads in enumerate(case.grads, start=1):
            reply = p.call("step", sid, list(grads))
            if reply[0] != "ok":
                return _record(case, variant, NOT_APPLICABLE, f"step {t} did not complete ({reply[1:3]}): only a "
                               f"step that completes returns a value (the api trajectory record judges it)")
            wrong = problem(api, reply[1])
            if wrong:
                first = {"step": t, "clause": CLAUSE, "tensor": "returned", "note": wrong}
                return _record(case, variant, FAIL, f"step {t}: {wrong}", category="wrong return value",
                               returned=reply[1], first_divergence=first, failures=[first])
        return _record(case, variant, PASS, category="returned " + EXPECTED[api])
