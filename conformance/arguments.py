"""The argument encoding of error cases: constructor calls as plain JSON (fixtures/README.md).

Error vectors must be readable without Python, yet name things JSON cannot hold: a framework's
Parameter, a tensor, a schedule, a tuple, NaN.  They are written as one-key objects whose key
starts with ``$``; everything else is literal JSON (``1`` is an int, ``1.0`` a float):

- ``{"$param": [2, 3]}``: a parameter of that shape (values from ``param_values``);
  ``{"$param": {"shape": [2, 3], "dtype": "int32"}}``: the same values in another dtype (CAME-ERR-26);
- ``{"$tensor": [0.1, 0.2]}``: a float32 tensor of those values (nested lists for rank 2);
- ``{"$schedule": {...}}``: a learning-rate schedule (``LearningRate.to_json``);
- ``{"$tuple": [...]}``: a tuple;  ``{"$float": "nan" | "inf" | "-inf"}``: a non-finite float;
- ``{"$iter": [...]}``: a one-shot iterator over the decoded list (what a generator is);
- ``{"$repeat": [value, n]}``: an iterator that gives ``value`` n times (``itertools.repeat``);
- ``{"$object": "object"}``: a plain ``object()``, which is no number, tensor, iterable or schedule;
- ``{"$array": {"shape": [...], "dtype": "int32"}}``: a gradient array of that dtype (step phase), zeros,
  or with ``"fill": "ramp"`` the values of ``param_values`` (a step that really moves the state).
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from came_conformance.reference.hyperparams import LearningRate


def param_values(shape) -> np.ndarray:
    """Deterministic, exactly representable (in every dtype) values for a parameter."""
    n = int(np.prod(shape, dtype=np.int64))
    return ((np.arange(n, dtype=np.float64) % 7) - 3.0).reshape(shape) / 4.0


def decode(value: Any, hooks, counter: list[int] | None = None) -> Any:
    """Turn an encoded argument into native objects through the adapter's ``NativeHooks``."""
    counter = [0] if counter is None else counter
    if isinstance(value, list):
        return [decode(v, hooks, counter) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (key, body), = value.items()
        if key == "$param":
            counter[0] += 1
            if isinstance(body, dict):  # a parameter of another dtype
                return hooks.parameter(param_values(tuple(body["shape"])).astype(body["dtype"]), f"p{counter[0]}")
            return hooks.parameter(param_values(tuple(body)), f"p{counter[0]}")
        if key == "$tensor":
            return hooks.tensor(np.asarray(body, dtype=np.float32))
        if key == "$schedule":
            return hooks.schedule(LearningRate.from_json(body))
        if key == "$tuple":
            return tuple(decode(v, hooks, counter) for v in body)
        if key == "$float":
            return float(body)
        if key == "$array":
            if body.get("fill") == "ramp":
                return param_values(tuple(body["shape"])).astype(body["dtype"])
            return np.zeros(body["shape"], dtype=body["dtype"])
        if key == "$iter":  # a one-shot iterator, as a generator is (CAME-ERR-28: params may be one)
            return iter(decode(body, hooks, counter))
        if key == "$repeat":
            return itertools.repeat(decode(body[0], hooks, counter), body[1])
        if key == "$object":
            return object()
    return {k: decode(v, hooks, counter) for k, v in value.items()}


def encode_float(x: float) -> Any:
    return x if math.isfinite(x) else {"$float": repr(x)}


def params_of(kwargs: dict) -> list[tuple[int, ...]]:
    """Shapes of the parameters an encoded ``params`` argument makes, in order."""
    shapes: list[tuple[int, ...]] = []

    def walk(v):
        if isinstance(v, dict) and set(v) == {"$param"}:
            body = v["$param"]
            shapes.append(tuple(body["shape"] if isinstance(body, dict) else body))
        elif isinstance(v, dict) and set(v) == {"$iter"}:
            walk(v["$iter"])
        elif isinstance(v, dict) and "order_params" not in v:
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(kwargs.get("params", []))
    return shapes
