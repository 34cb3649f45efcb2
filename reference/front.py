"""The documented constructors, with the spec's validation (spec/came.md §6).

``MindformersCame`` mirrors ``mindformers.core.Came``'s signature and ``PaperCame`` the
official ``came_pytorch.CAME``'s.  Both validate every argument by the error contract in
``reference.contract`` (messages name the argument, the rule and the clause), build the
canonical ``Hyperparameters`` and then step with ``reference.optimizer``.  This module is the
oracle for error behaviour, as ``reference.step`` is for numbers.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from came_conformance.reference import optimizer
from came_conformance.reference.hyperparams import SCHEDULE_PARAMS, SCHEDULES, Group, Hyperparameters, LearningRate


@dataclass
class Parameter:
    """A named parameter; the reference's counterpart of a framework's Parameter."""

    value: np.ndarray
    name: str = ""


def _fail(exc: type, argument: str, rule: str, value: Any, clause: str) -> None:
    raise exc(f"{argument}: {rule}, got {value!r} [{clause}]")


def check_float(argument: str, value: Any, clause: str) -> float:
    """A Python float (numpy.float64 is one); int and bool are not (CAME-ERRATUM-3)."""
    if not isinstance(value, float):
        _fail(TypeError, argument, "must be a float", value, clause)
    return float(value)


def check_number(argument: str, value: Any, clause: str, value_clause: str) -> float:
    """An int or a float, not bool; an int too large for a float is a bad value (``value_clause``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(TypeError, argument, "must be an int or a float", value, clause)
    return to_float(argument, value, value_clause)


def to_float(argument: str, value: Any, clause: str) -> float:
    """float(value), where an int beyond float's range (10**400) is a ValueError, not an OverflowError."""
    try:
        return float(value)
    except OverflowError:
        _fail(ValueError, argument, "must be finite (this int is too large for a float)", value, clause)


#: CAME-ERR-25: the longest learning-rate sequence an iterable may give; an endless iterator is refused
#: after this many values instead of filling memory.
MAX_SEQUENCE_VALUES = 2 ** 20


def check_unit_interval(argument: str, value: float, clause: str) -> float:
    if not 0.0 <= value <= 1.0:  # NaN fails too
        _fail(ValueError, argument, "must be in [0.0, 1.0]", value, clause)
    return value


def check_positive_finite(argument: str, value: float, clause: str) -> float:
    if not (value > 0.0 and math.isfinite(value)):
        _fail(ValueError, argument, "must be finite and > 0", value, clause)
    return value


def check_nonnegative_finite(argument: str, value: float, clause: str) -> float:
    if not (value >= 0.0 and math.isfinite(value)):
        _fail(ValueError, argument, "must be finite and >= 0", value, clause)
    return value


def check_bool(argument: str, value: Any, clause: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        _fail(TypeError, argument, "must be a bool", value, clause)
    return bool(value)


def check_eps(value: Any, length: int) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)):
        _fail(TypeError, "eps", "must be a list or tuple of floats", value, "CAME-ERR-4")
    if len(value) != length:
        _fail(ValueError, "eps", f"must have {length} values", value, "CAME-ERR-9")
    out = tuple(check_float(f"eps[{i}]", e, "CAME-ERR-4") for i, e in enumerate(value))
    for i, e in enumerate(out):
        check_positive_finite(f"eps[{i}]", e, "CAME-ERR-8")
    return out


def _is_number(v) -> bool:
    return not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float, np.integer, np.floating))


def check_learning_rate(argument: str, value: Any, value_clause: str = "CAME-ERR-14") -> LearningRate:
    """CAME-LR-1: a number, a 0-D or 1-D array, a non-empty iterable of numbers, or a schedule.

    The type rules: CAME-ERR-1 (documented: not a number, tensor, iterable or schedule) and
    CAME-ERR-24 (what is iterable or a number but not a learning rate); the shape rules: CAME-ERR-25;
    the values: ``value_clause`` (CAME-ERR-14).
    """
    kinds, shapes = "CAME-ERR-24", "CAME-ERR-25"
    numbers = "must be a number or an ordered collection of numbers"
    if isinstance(value, LearningRate):
        lr = value
        if lr.kind not in ("constant", "sequence", "schedule") or lr.kind == "schedule" and (
                lr.schedule not in SCHEDULES or sorted(dict(lr.params)) != sorted(SCHEDULE_PARAMS[lr.schedule])):
            _fail(TypeError, argument, f"a schedule must be one of {sorted(SCHEDULE_PARAMS)} with exactly "
                  f"its parameters {SCHEDULE_PARAMS}", value, kinds)
        if lr.kind == "sequence" and not 0 < len(lr.values) <= MAX_SEQUENCE_VALUES:
            _fail(ValueError, argument, f"a sequence holds 1 to {MAX_SEQUENCE_VALUES} values", value, shapes)
    elif isinstance(value, (bool, np.bool_, str, bytes, dict, set, frozenset, np.ma.MaskedArray)):
        _fail(TypeError, argument, numbers, value, kinds)
    elif _is_number(value):
        lr = LearningRate.constant(to_float(argument, value, value_clause))
    elif isinstance(value, np.ndarray):
        if value.dtype.kind not in "iuf":
            _fail(TypeError, argument, f"a tensor of {value.dtype} is not one of numbers", value, kinds)
        if value.ndim > 1 or value.size == 0:
            _fail(ValueError, argument, f"a tensor must have rank 0 or 1 and at least one value, got shape "
                  f"{value.shape}", value, shapes)
        lr = LearningRate.constant(float(value)) if value.ndim == 0 else LearningRate.sequence(
            float(v) for v in value)
    elif isinstance(value, Iterable):  # an ordered iterable: one value per step, read once
        items = list(itertools.islice(value, MAX_SEQUENCE_VALUES + 1))
        if not 0 < len(items) <= MAX_SEQUENCE_VALUES:
            _fail(ValueError, argument, f"an iterable must give 1 to {MAX_SEQUENCE_VALUES} values, got "
                  f"{'none' if not items else 'more'}", type(value).__name__, shapes)
        if not all(_is_number(v) for v in items):
            _fail(TypeError, argument, numbers, value, kinds)
        lr = LearningRate.sequence(to_float(argument, v, value_clause) for v in items)
    else:
        _fail(TypeError, argument, "must be an int, a float, a tensor, an iterable of numbers or a schedule",
              value, "CAME-ERR-1")
    values = {"constant": (lr.value,), "sequence": lr.values}.get(lr.kind, tuple(v for _, v in lr.params))
    for v in values:
        check_nonnegative_finite(argument, v, value_clause)
    params = dict(lr.params)
    if lr.kind == "schedule" and params.get("warmup_steps", 1.0) < 1.0:
        _fail(ValueError, argument, "warmup_steps must be >= 1", params["warmup_steps"], value_clause)
    if lr.kind == "schedule" and params.get("gamma", 0.0) > 1.0:  # a growing rate overflows
        _fail(ValueError, argument, "gamma must be <= 1", params["gamma"], value_clause)
    return lr


#: What an iterable of parameters is not: one parameter, one array, text, one group dict (CAME-ERR-28).
_NOT_A_COLLECTION = (Parameter, np.ndarray, str, bytes, dict)


def _iterable(value: Any, where: str) -> list:
    """CAME-ERR-28: any iterable (list, tuple, generator ...), read once, in order."""
    if isinstance(value, _NOT_A_COLLECTION) or not isinstance(value, Iterable):
        _fail(TypeError, "params", f"{where}must be an iterable of parameters or of group dicts", value,
              "CAME-ERR-28")
    return list(value)


def check_parameter_values(p: Parameter) -> np.ndarray:
    """CAME-ERR-26: a parameter holds real floating-point values of at most 64 bits, unmasked."""
    value = p.value
    if isinstance(value, np.ma.MaskedArray) or value is None or isinstance(value, (str, bytes, bool, np.bool_)):
        _fail(TypeError, "params", "a parameter must hold real floating-point values (a masked array's mask "
              "would be ignored)" if isinstance(value, np.ma.MaskedArray) else
              "a parameter must hold real floating-point values", type(value).__name__, "CAME-ERR-26")
    array = np.asarray(value)
    if array.dtype.kind != "f" or array.dtype.itemsize > 8:  # float16/32/64 are exact in float64
        _fail(TypeError, "params", f"a parameter must hold real floating-point values of at most 64 bits, "
              f"{p.name or 'one'} holds {array.dtype}", array.dtype.name, "CAME-ERR-26")
    return np.array(array, dtype=np.float64)


def _collect(params: Any, paper: bool) -> tuple[list[Parameter], list[dict]]:
    """CAME-ERR-2, CAME-ERR-17, CAME-ERR-26 … CAME-ERR-28 and CAME-GROUP-1: flatten params and groups."""
    items = _iterable(params, "")
    for item in items:
        if not isinstance(item, (Parameter, dict)):
            _fail(TypeError, "params", "every element must be a parameter or a group dict", item, "CAME-ERR-2")
    if any(isinstance(i, Parameter) for i in items) and any(isinstance(i, dict) for i in items):
        _fail(TypeError, "params", "must hold parameters or group dicts, not both", [type(i).__name__ for i in items],
              "CAME-ERR-27")
    flat: list[Parameter] = []
    groups: list[dict] = []
    for item in items:
        if isinstance(item, Parameter):
            flat.append(item)
            continue
        if "order_params" in item and not paper:
            continue  # CAME-GROUP-2: order only
        members = item.get("params")
        if isinstance(members, Iterable) and not isinstance(members, _NOT_A_COLLECTION):
            members = list(members)
        if not isinstance(members, list) or not all(isinstance(p, Parameter) for p in members):
            _fail(TypeError, "params", "a group's 'params' must be an iterable of parameters", members, "CAME-ERR-2")
        if not members:
            _fail(ValueError, "params", "a group must hold at least one parameter", item, "CAME-ERR-17")
        groups.append({**item, "params": members})
        flat.extend(members)
    if not flat:
        _fail(ValueError, "params", "must hold at least one parameter", params, "CAME-ERR-17")
    for p in flat:
        check_parameter_values(p)
    return flat, groups


class _Front:
    """Shared stepping and read-back of the two fronts (CAME-STATE-5)."""

    params: list[Parameter]
    hp: Hyperparameters
    keep_traces = True  # ``last_traces`` of the last step; the reference adapter turns it off (memory at scale)

    def _start(self, params: list[Parameter]) -> None:
        self.params = params
        self._values = tuple(check_parameter_values(p) for p in params)
        self.state = optimizer.init(self._values, self.hp)

    def step(self, gradients):
        """One step of every parameter, all or nothing (CAME-ERR-A1); returns what the API returns (CAME-RETURN-1)."""
        result = optimizer.update(gradients, self.state, self._values, self.hp, trace=self.keep_traces)
        self._values, self.state = result.params, result.state
        for p, v in zip(self.params, self._values):
            p.value = v.copy()
        self.last_traces = result.traces
        return self.returned()

    @staticmethod
    def returned():
        return None

    __call__ = step

    def parameters(self) -> tuple[np.ndarray, ...]:
        return self._values


class MindformersCame(_Front):
    """``mindformers.core.Came``'s documented constructor (CAME-HP-3, CAME-ERR-*)."""

    @staticmethod
    def returned():
        """CAME-RETURN-1: "Tensor[bool], True" (S3), as a 0-D boolean array."""
        return np.array(True)

    def __init__(self, params, learning_rate=None, eps=(1e-30, 1e-3, 1e-16), clip_threshold=1.0,
                 decay_rate=0.8, beta1=0.9, beta3=0.99, weight_decay=0.0, scale_parameter=False,
                 relative_step=False, warmup_init=False, compression=False, loss_scale=1):
        flat, groups = _collect(params, paper=False)
        eps1, eps_scale, eps_insta = check_eps(eps, 3)
        clip = check_positive_finite("clip_threshold", check_float("clip_threshold", clip_threshold, "CAME-ERR-11"),
                                     "CAME-ERR-12")
        unit = {}
        for name, value in (("decay_rate", decay_rate), ("beta1", beta1), ("beta3", beta3),
                            ("weight_decay", weight_decay)):
            unit[name] = check_unit_interval(name, check_float(name, value, "CAME-ERR-3"), "CAME-ERR-10")
        flags = {name: check_bool(name, value, "CAME-ERR-13") for name, value in (
            ("scale_parameter", scale_parameter), ("relative_step", relative_step),
            ("warmup_init", warmup_init), ("compression", compression))}
        scale = check_positive_finite("loss_scale", check_number("loss_scale", loss_scale, "CAME-ERR-5", "CAME-ERR-7"),
                                      "CAME-ERR-7")
        if flags["relative_step"]:
            if learning_rate is not None:
                _fail(ValueError, "learning_rate", "must be None when relative_step is True", learning_rate,
                      "CAME-ERR-15")
            lr = None
        else:
            if learning_rate is None:
                _fail(ValueError, "learning_rate", "is required unless relative_step is True", None, "CAME-ERR-15")
            lr = check_learning_rate("learning_rate", learning_rate)
        if flags["warmup_init"] and not flags["relative_step"]:
            _fail(ValueError, "warmup_init", "requires relative_step=True", warmup_init, "CAME-ERR-16")
        index = {id(p): i for i, p in enumerate(flat)}
        hp_groups = []
        for g in groups:
            if "lr" in g and flags["relative_step"]:
                _fail(ValueError, "lr", "a group's lr must be absent when relative_step is True", g["lr"],
                      "CAME-ERR-15")
            g_lr = check_learning_rate("lr", g["lr"]) if "lr" in g else None
            g_wd = check_unit_interval("weight_decay", check_float("weight_decay", g["weight_decay"], "CAME-ERR-3"),
                                       "CAME-ERR-10") if "weight_decay" in g else None
            hp_groups.append(Group(tuple(index[id(p)] for p in g["params"]), g_lr, g_wd))
        self.hp = Hyperparameters.defaults(
            "mindformers", learning_rate=lr, eps1=eps1, eps_scale=eps_scale, eps_insta=eps_insta,
            clip_threshold=clip, loss_scale=scale, groups=tuple(hp_groups), **unit, **flags)
        self._start(flat)


class PaperCame(_Front):
    """The official ``came_pytorch.CAME`` constructor (CAME-HP-2, CAME-ERR-*)."""

    def __init__(self, params, lr=None, eps=(1e-30, 1e-16), clip_threshold=1.0, betas=(0.9, 0.999, 0.9999),
                 weight_decay=0.0):
        flat, groups = _collect(params, paper=True)
        eps1, eps_insta = check_eps(eps, 2)
        clip = check_positive_finite("clip_threshold", check_float("clip_threshold", clip_threshold, "CAME-ERR-11"),
                                     "CAME-ERR-12")
        if not isinstance(betas, (list, tuple)):
            _fail(TypeError, "betas", "must be a tuple of 3 floats", betas, "CAME-ERR-20")
        if len(betas) != 3:
            _fail(ValueError, "betas", "must have 3 values", betas, "CAME-ERR-21")
        b1, b2, b3 = (check_unit_interval(f"betas[{i}]", check_float(f"betas[{i}]", b, "CAME-ERR-20"),
                                          "CAME-ERR-21") for i, b in enumerate(betas))
        lr = self._lr(lr)
        wd = self._weight_decay(weight_decay)
        index = {id(p): i for i, p in enumerate(flat)}
        hp_groups = tuple(Group(tuple(index[id(p)] for p in g["params"]),
                                LearningRate.constant(self._lr(g["lr"])) if "lr" in g else None,
                                self._weight_decay(g["weight_decay"]) if "weight_decay" in g else None)
                          for g in groups)
        self.hp = Hyperparameters.defaults("paper", learning_rate=LearningRate.constant(lr), eps1=eps1,
                                           eps_insta=eps_insta, clip_threshold=clip, beta1=b1, beta2=b2, beta3=b3,
                                           weight_decay=wd, groups=hp_groups)
        self._start(flat)

    @staticmethod
    def _lr(value) -> float:
        return check_nonnegative_finite("lr", check_number("lr", value, "CAME-ERR-18", "CAME-ERR-19"), "CAME-ERR-19")

    @staticmethod
    def _weight_decay(value) -> float:
        return check_nonnegative_finite("weight_decay", check_float("weight_decay", value, "CAME-ERR-22"),
                                        "CAME-ERR-23")
