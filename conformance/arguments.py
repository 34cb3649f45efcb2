"""The argument encoding of error cases: constructor calls as plain JSON (fixtures/README.md).

Error vectors must be readable without Python, yet name things JSON cannot hold: a framework's
Parameter, a tensor, a schedule, a tuple, NaN.  They are written as one-key objects whose key
starts with ``$``; everything else is literal JSON (``1`` is an int, ``1.0`` a float):

- ``{"$param": [2, 3]}``: a parameter of that shape (values from ``param_values``);
- ``{"$tensor": [0.1, 0.2]}``: a float32 tensor of those values;
- ``{"$schedule": {...}}``: a learning-rate schedule (``LearningRate.to_json``);
- ``{"$tuple": [...]}``: a tuple;  ``{"$float": "nan" | "inf" | "-inf"}``: a non-finite float;
- ``{"$array": {"shape": [...], "dtype": "int32"}}``: a gradient array of that dtype (step phase).
"""
from __future__ import annotations

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
            return np.zeros(body["shape"], dtype=body["dtype"])
    return {k: decode(v, hooks, counter) for k, v in value.items()}


def encode_float(x: float) -> Any:
    return x if math.isfinite(x) else {"$float": repr(x)}


def params_of(kwargs: dict) -> list[tuple[int, ...]]:
    """Shapes of the parameters an encoded ``params`` argument makes, in order."""
    shapes: list[tuple[int, ...]] = []

    def walk(v):
        if isinstance(v, dict) and set(v) == {"$param"}:
            shapes.append(tuple(v["$param"]))
        elif isinstance(v, dict) and "order_params" not in v:
            for item in v.values():
                walk(item)
        elif isinstance(v, list):
            for item in v:
                walk(item)

    walk(kwargs.get("params", []))
    return shapes
