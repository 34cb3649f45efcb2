"""An independent NumPy port of CAME, with bug switches (docs/mutation.md).

This is CAME as a framework engineer ports it: an optimizer class holding ``param_groups`` and a
torch-like per-parameter ``state`` dict created at construction (as MindSpore clones its moment
parameters), tensors updated in place, float64 arithmetic.  ``Came`` is MindFormers' documented
constructor (mindformers profile: β2_t = 1 − t^(−decay_rate), CAME-BETA2-2; scale_parameter,
relative_step, warmup_init, compression, loss_scale, CAME-OPT-1 … CAME-OPT-5) and ``CAME`` the
official paper constructor (paper profile: constant β2, CAME-BETA2-1).  Both validate their
arguments by the error contract (CAME-ERR-*) in their own words.

It is written from the spec, not from ``reference.step``: only the canonical
``reference.hyperparams`` and ``reference.dtypes`` are shared, so a mutation of this file tests
the suite and not the reference against itself.  ``bugs`` is a frozenset of switch names
(``SWITCHES``); each switch is one realistic porting mistake and ``conformance.mutants.catalogue``
names them.  With no switch on, this port must pass the whole suite (the correct-port control).
"""
from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterable

import numpy as np

from came_conformance.reference.dtypes import round_to

#: Every bug switch the port knows; the catalogue (conformance.mutants.catalogue) describes each.
SWITCHES = frozenset({
    # state shapes and axes (CAME-STATE-1, CAME-STATE-2, CAME-DEF-2)
    "row-col-axes-swapped", "factored-only-2d", "factored-ndim-gt-2", "batch-axes-merged",
    # higher-rank tensors (CAME-DEF-3)
    "factor-global-row-mean",
    # where each ε enters (CAME-STEP-2, CAME-STEP-7)
    "eps1-after-ema", "eps1-after-sqrt", "eps-insta-missing", "eps1-outside-square",
    # β2 schedule (CAME-BETA2-1, CAME-BETA2-2)
    "beta2-t-from-zero", "beta2-t-plus-one", "decay-rate-sign", "constant-beta2-mindformers",
    "paper-betas-order",
    # clipping (CAME-STEP-5, CAME-DEF-1)
    "clip-min", "clip-rms-last-axis", "clip-threshold-multiplied",
    # first moment (CAME-STEP-6)
    "beta1-swapped",
    # instability and its statistics (CAME-STEP-7, CAME-STEP-8)
    "insta-old-m", "insta-uses-unclipped", "insta-beta2",
    # confidence-scaled update (CAME-STEP-9)
    "no-confidence", "plain-adafactor", "confidence-inverted",
    # the 1-D path (CAME-STEP-3V, CAME-STEP-4V, CAME-STEP-9V)
    "vector-confidence", "vector-eps-outside-sqrt",
    # weight decay (CAME-STEP-11)
    "wd-after-update", "wd-coupled", "wd-not-times-lr", "wd-group-ignored",
    # learning rate (CAME-LR-2 … CAME-LR-5, CAME-GROUP-1)
    "lr-sequence-index-t", "group-lr-ignored", "schedule-called-with-t",
    # documented options (CAME-OPT-1 … CAME-OPT-5)
    "scale-parameter-grad-rms", "scale-parameter-new-theta", "relative-step-no-cap", "warmup-init-1e-5",
    "compression-wrong-state", "loss-scale-ignored", "loss-scale-multiplied",
    # state precision (CAME-DTYPE-3)
    "state-float32",
    # mixed precision: gradients in another dtype than the parameter's (CAME-DTYPE-4)
    "state-follows-grad-dtype", "square-in-grad-dtype", "grad-rounded-to-param-dtype",
    # low-precision steps (CAME-DTYPE-2, CAME-STEP-10)
    "scale-parameter-after-decay", "vector-momentum-aliased",
    # the step counter (CAME-STATE-5) and checkpoints
    "step-counter-frozen", "step-from-first-param", "checkpoint-drops-step",
    # more shapes: 0-D and zero-size parameters (CAME-STATE-3, CAME-ZERO-1)
    "rank0-skipped", "zero-size-not-skipped", "vector-no-clip",
    # more options and degenerate cases
    "compression-uses-unrounded", "wd-unscaled-lr", "scale-parameter-eps1", "factor-nan-guarded",
    # documented defaults (CAME-HP-2, CAME-HP-3)
    "default-beta3-paper-value", "paper-default-eps-swapped",
    # the error contract (CAME-ERR-*)
    "gradient-shape-unchecked", "beta3-unchecked", "range-error-typeerror", "beta1-rejects-one",
    "beta1-accepts-above-one", "eps-zero-allowed", "message-without-name", "loss-scale-float-rejected",
    "int-accepted-as-float",
    "paper-lr-negative-accepted", "clip-threshold-unchecked", "flag-int-accepted",
    # reductions over long axes, done in tiles (CAME-DEF-4)
    "row-mean-tile-tail", "col-mean-tile-tail", "rms-tile-tail",
    # long horizons: the learning-rate rules past their crossovers, β2_t at large t, the counter (CAME-STATE-6)
    "relative-step-no-decay", "warmup-init-no-decay", "beta2-capped", "step-counter-float32",
    "step-counter-float16",
    # non-finite parameters (CAME-NONFINITE-2)
    "wd-no-zero-guard", "scale-parameter-python-max",
    # step errors change nothing (CAME-ERR-A1), an exhausted sequence (CAME-ERR-S5)
    "counter-advances-on-error", "partial-update-before-error", "lr-sequence-repeats-last",
    # the step's return value (CAME-RETURN-1) and the params argument (CAME-ERR-28)
    "step-returns-tuple", "params-list-only",
})

F64 = np.float64


# --------------------------------------------------------------------------------------------
# Framework objects: parameters and learning-rate schedules
# --------------------------------------------------------------------------------------------

class Parameter:
    """A named parameter: float64 storage holding values of its ``dtype`` (CAME-DTYPE-2).

    Values that are not real floating-point are kept as given, for the optimizer to refuse
    (CAME-ERR-26), as a framework's Parameter of an integer dtype reaches its optimizer.
    """

    def __init__(self, data, name: str = "", dtype: str = "float64", grad_dtype: str | None = None):
        array = np.asarray(data)
        self.value_dtype = array.dtype
        self.data = np.array(array, dtype=F64) if array.dtype.kind == "f" else array
        self.name, self.dtype = name, dtype
        self.grad_dtype = grad_dtype or dtype  # the dtype its gradients arrive in (CAME-DTYPE-4)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(name={self.name!r}, shape={self.shape}, dtype={self.dtype})"


class LearningRateSchedule:
    """A schedule object called with MindSpore's 0-based ``global_step`` (CAME-LR-4)."""

    def __call__(self, global_step: int) -> float:
        raise NotImplementedError

    def hyper_values(self) -> tuple[float, ...]:
        raise NotImplementedError


class ExponentialDecayLR(LearningRateSchedule):
    def __init__(self, learning_rate: float, decay_rate: float):
        self.learning_rate, self.decay_rate = learning_rate, decay_rate

    def __call__(self, global_step: int) -> float:
        return self.learning_rate * self.decay_rate ** global_step

    def hyper_values(self):
        return (self.learning_rate, self.decay_rate)


class WarmUpLR(LearningRateSchedule):
    def __init__(self, learning_rate: float, warmup_steps: float):
        self.learning_rate, self.warmup_steps = learning_rate, warmup_steps

    def __call__(self, global_step: int) -> float:
        return self.learning_rate * min(1.0, (global_step + 1) / self.warmup_steps)

    def hyper_values(self):
        return (self.learning_rate, self.warmup_steps)


# --------------------------------------------------------------------------------------------
# Argument validation (CAME-ERR-*): MindSpore-style messages that name the argument
# --------------------------------------------------------------------------------------------

class _Checks:
    """Validators; ``cls`` is the optimizer's name for messages, ``bugs`` the port's switches."""

    def __init__(self, cls: str, bugs: frozenset[str]):
        self.cls, self.bugs = cls, bugs

    def _name(self, name: str) -> str:
        return "value" if "message-without-name" in self.bugs else f"'{name}'"

    def type_error(self, name: str, expected: str, value) -> None:
        raise TypeError(f"For '{self.cls}', the type of {self._name(name)} should be {expected}, "
                        f"but got {type(value).__name__} ({value!r}).")

    def value_error(self, name: str, rule: str, value, exc: type = ValueError) -> None:
        raise exc(f"For '{self.cls}', the {self._name(name)} should be {rule}, but got {value!r}.")

    def float_(self, name: str, value) -> float:
        ok = isinstance(value, float) or ("int-accepted-as-float" in self.bugs and isinstance(value, int)
                                          and not isinstance(value, bool))
        if not ok:
            self.type_error(name, "float", value)
        return float(value)

    def number(self, name: str, value) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.type_error(name, "int or float", value)
        return self.as_float(name, value)

    def as_float(self, name: str, value) -> float:
        """float(value); an int beyond float's range is a bad value, not an OverflowError (CAME-ERR-7, -14, -19)."""
        try:
            return float(value)
        except OverflowError:
            self.value_error(name, "a finite number", value)

    def unit(self, name: str, value: float) -> float:
        low, high = 0.0, 1.0
        inside = low <= value <= high
        if name == "beta1" and "beta1-rejects-one" in self.bugs:
            inside = low <= value < high
        if name == "beta1" and "beta1-accepts-above-one" in self.bugs:
            inside = low <= value <= 1.0000001
        if not inside:
            exc = TypeError if "range-error-typeerror" in self.bugs else ValueError
            self.value_error(name, "in range [0.0, 1.0]", value, exc)
        return value

    def positive(self, name: str, value: float) -> float:
        if not (value > 0.0 and math.isfinite(value)):
            self.value_error(name, "a finite number greater than 0", value)
        return value

    def nonnegative(self, name: str, value: float) -> float:
        if not (value >= 0.0 and math.isfinite(value)):
            self.value_error(name, "a finite number greater than or equal to 0", value)
        return value

    def bool_(self, name: str, value) -> bool:
        ok = isinstance(value, (bool, np.bool_)) or ("flag-int-accepted" in self.bugs and isinstance(value, int))
        if not ok:
            self.type_error(name, "bool", value)
        return bool(value)

    def eps(self, value, length: int) -> tuple[float, ...]:
        if not isinstance(value, (list, tuple)):
            self.type_error("eps", "list or tuple of floats", value)
        if len(value) != length:
            self.value_error("eps", f"a sequence of {length} floats", value)
        out = []
        for e in value:
            if not isinstance(e, float):
                self.type_error("eps", "list or tuple of floats", value)
            out.append(float(e))
        for e in out:
            ok = (e >= 0.0 if "eps-zero-allowed" in self.bugs else e > 0.0) and math.isfinite(e)
            if not ok:
                self.value_error("eps", "finite floats greater than 0", value)
        return tuple(out)

    #: CAME-ERR-25: the longest sequence an iterable may give (an endless one is refused, not read forever)
    MAX_SEQUENCE = 2 ** 20

    def learning_rate(self, name: str, value):
        """A number, a 0-D/1-D array, an iterable of numbers, or a schedule (CAME-LR-1, CAME-ERR-24, CAME-ERR-25)."""
        expected = "int, float, Tensor, Iterable or LearningRateSchedule"
        if isinstance(value, LearningRateSchedule):
            values, lr = value.hyper_values(), value
        elif isinstance(value, (bool, np.bool_)) or value is None or isinstance(value, (str, bytes, dict, set,
                                                                                        frozenset)):
            self.type_error(name, expected, value)
        elif isinstance(value, (int, float)):
            lr = self.as_float(name, value)
            values = (lr,)
        elif isinstance(value, np.ndarray):
            if value.dtype.kind not in "iuf":
                self.type_error(name, "a Tensor of numbers", value)
            if value.ndim > 1 or value.size == 0:
                self.value_error(name, "a Tensor of rank 0 or 1 with at least one value", value)
            lr = float(value) if value.ndim == 0 else [float(v) for v in value]
            values = (lr,) if value.ndim == 0 else tuple(lr)
        elif isinstance(value, Iterable):
            items = list(itertools.islice(value, self.MAX_SEQUENCE + 1))
            if not 0 < len(items) <= self.MAX_SEQUENCE:
                self.value_error(name, f"an Iterable of 1 to {self.MAX_SEQUENCE} values", type(value).__name__)
            if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.floating)) for v in items):
                self.type_error(name, expected, value)
            lr = [self.as_float(name, v) for v in items]
            values = tuple(lr)
        else:
            self.type_error(name, expected, value)
        for v in values:
            self.nonnegative(name, v)
        return lr


# --------------------------------------------------------------------------------------------
# Precision: float64 by default; a port may compute, store and hold its scalars coarser
# --------------------------------------------------------------------------------------------

class Rounding:
    """Where this port rounds (CAME-DTYPE-3): every elementwise result to ``compute``, the state to
    ``state``, the hyperparameters to ``scalars``.  Reductions add in float64 (NumPy), then round."""

    def __init__(self, compute: str = "float64", state: str = "float64", scalars: str = "float64"):
        self.compute, self.state, self.scalars = compute, state, scalars

    def c(self, x):
        return x if self.compute == "float64" else round_to(self.compute, x)

    def s(self, x: float) -> float:
        return x if self.scalars == "float64" else float(round_to(self.scalars, x))

    def store(self, x):
        return x if self.state == "float64" else round_to(self.state, x)


def _coarser(a: str, b: str) -> bool:
    """Does ``a`` have fewer significand bits than ``b``?"""
    bits = {"float64": 53, "float32": 24, "float16": 11, "bfloat16": 8}
    return bits[a] < bits[b]


# --------------------------------------------------------------------------------------------
# The optimizer
# --------------------------------------------------------------------------------------------

class _CameBase:
    """Shared machinery: groups, eager state, the step.  Subclasses validate and set ``defaults``."""

    profile = ""
    name = ""

    def _setup(self, params, defaults: dict, bugs: frozenset[str]) -> None:
        unknown = set(bugs) - SWITCHES
        if unknown:
            raise KeyError(f"unknown bug switches {sorted(unknown)}")
        self.bugs, self.defaults = frozenset(bugs), defaults
        if not hasattr(self, "rounding"):
            self.rounding = Rounding()
        self.param_groups = self._groups(params)
        self.state: dict[int, dict[str, np.ndarray]] = {}
        for p in self.parameters():  # MindSpore clones its moments at construction: zero state (CAME-STATE-4)
            self.state[id(p)] = self._init_state(p)
        self.global_step = 0

    # ---- parameters and groups (CAME-GROUP-1, CAME-GROUP-2, CAME-ERR-2, CAME-ERR-17) ----
    def _members(self, value, where: str) -> list:
        """An iterable of parameters or group dicts, read once, in order (CAME-ERR-28)."""
        single = (Parameter, str, bytes, dict, np.ndarray)
        if isinstance(value, single) or not isinstance(value, Iterable) or (
                "params-list-only" in self.bugs and not isinstance(value, (list, tuple))):
            self.checks.type_error("params", f"{where}an iterable of Parameter or of group dicts", value)
        return list(value)

    def _groups(self, params) -> list[dict]:
        params = self._members(params, "")
        for item in params:  # CAME-ERR-2 first, then CAME-ERR-27 (a mix)
            if not isinstance(item, (Parameter, dict)):
                self.checks.type_error("params", "Parameter or group dict", item)
        if any(isinstance(i, Parameter) for i in params) and any(isinstance(i, dict) for i in params):
            self.checks.type_error("params", "only Parameters or only group dicts, not both", params)
        groups: list[dict] = []
        for item in params:
            if isinstance(item, Parameter):
                if not groups or groups[-1].get("_implicit") is not True:
                    groups.append({"params": [], "_implicit": True})
                groups[-1]["params"].append(item)
            elif isinstance(item, dict):
                if "order_params" in item and self.profile == "mindformers":
                    continue  # CAME-GROUP-2: only orders the parameters
                members = item.get("params")
                members = self._members(members, "a group's 'params': ") if isinstance(members, Iterable) \
                    and not isinstance(members, (Parameter, str, bytes, dict, np.ndarray)) else members
                if not isinstance(members, list) or not all(isinstance(p, Parameter) for p in members):
                    self.checks.type_error("params", "list of Parameter inside a group", members)
                if not members:
                    self.checks.value_error("params", "a group with at least one parameter", item)
                group = {"params": list(members), "own_lr": "lr" in item}  # errors name a group's rate 'lr'
                if "lr" in item:
                    group["lr"] = self._group_lr(item["lr"])
                if "weight_decay" in item:
                    group["weight_decay"] = self._weight_decay(item["weight_decay"])
                groups.append(group)
            else:
                self.checks.type_error("params", "Parameter or group dict", item)
        if not any(g["params"] for g in groups):
            self.checks.value_error("params", "a non-empty list of parameters", params)
        for p in (p for g in groups for p in g["params"]):  # CAME-ERR-26
            if p.value_dtype.kind != "f" or p.value_dtype.itemsize > 8:
                self.checks.type_error("params", "Parameters of a real floating dtype", p.value_dtype)
        for g in groups:
            g.pop("_implicit", None)
            for key, value in self.defaults.items():
                g.setdefault(key, value)
        return groups

    def parameters(self) -> list[Parameter]:
        return [p for g in self.param_groups for p in g["params"]]

    # ---- state layout (CAME-STATE-1 … CAME-STATE-4) ----
    def _factored(self, shape: tuple[int, ...]) -> bool:
        if "factored-only-2d" in self.bugs:
            return len(shape) == 2
        if "factored-ndim-gt-2" in self.bugs:
            return len(shape) > 2
        return len(shape) >= 2

    def _stat_shapes(self, shape):
        if "row-col-axes-swapped" in self.bugs:
            return shape[:-2] + shape[-1:], shape[:-1]
        if "batch-axes-merged" in self.bugs and len(shape) > 2:
            return shape[:-1], shape[-1:]
        return shape[:-1], shape[:-2] + shape[-1:]

    def _init_state(self, p: Parameter) -> dict[str, np.ndarray]:
        shape = p.shape
        state = {"exp_avg": np.zeros(shape)}
        if self._factored(shape):
            rows, cols = self._stat_shapes(shape)
            state.update(exp_avg_sq_row=np.zeros(rows), exp_avg_sq_col=np.zeros(cols),
                         exp_avg_insta_row=np.zeros(rows), exp_avg_insta_col=np.zeros(cols))
        else:
            state["exp_avg_sq"] = np.zeros(shape)
            if "vector-confidence" in self.bugs:
                state["exp_avg_insta"] = np.zeros(shape)
        if "step-from-first-param" in self.bugs:
            state["step"] = np.zeros(())
        return state

    # ---- reductions ----
    @staticmethod
    def _tiled_sum(x, axis: int, width: int):
        """A sum in tiles of ``width`` whose partial last tile is read from the start of the axis.

        The bug of a blocked kernel that reuses the tile's base offset for its remainder loop:
        exact when the length is at most one tile or a multiple of it (CAME-DEF-4).
        """
        n = x.shape[axis]
        if n <= width or n % width == 0:
            return x.sum(axis=axis)
        full = n - n % width
        return np.take(x, np.arange(full), axis=axis).sum(axis=axis) + \
            np.take(x, np.arange(n % width), axis=axis).sum(axis=axis)

    def _row_mean(self, x):
        if "row-col-axes-swapped" in self.bugs:
            return self.rounding.c(x.mean(axis=-2))
        if "row-mean-tile-tail" in self.bugs:
            return self.rounding.c(self._tiled_sum(x, -1, 128) / x.shape[-1])
        return self.rounding.c(x.mean(axis=-1))

    def _col_mean(self, x):
        if "row-col-axes-swapped" in self.bugs:
            return self.rounding.c(x.mean(axis=-1))
        if "batch-axes-merged" in self.bugs and x.ndim > 2:
            return self.rounding.c(x.reshape(-1, x.shape[-1]).mean(axis=0))
        if "col-mean-tile-tail" in self.bugs:
            return self.rounding.c(self._tiled_sum(x, -2, 32) / x.shape[-2])
        return self.rounding.c(x.mean(axis=-2))

    def _expand(self, row, col, shape):
        """Broadcast row/column factors to the parameter's shape."""
        if "row-col-axes-swapped" in self.bugs:
            return row[..., None, :], col[..., :, None]
        if "batch-axes-merged" in self.bugs and len(shape) > 2:
            return row[..., :, None], col
        return row[..., :, None], col[..., None, :]

    def _approx(self, row, col, shape, eps_after_sqrt: float = 0.0):
        """F(r, c): (r_i / mean(r))^(-1/2) · c_j^(-1/2), per trailing 2-D slice (CAME-DEF-3)."""
        if "factor-global-row-mean" in self.bugs:
            scale = row.mean()
        else:
            scale = row.mean(axis=-1, keepdims=True)
        if "factor-nan-guarded" in self.bugs:  # "avoid NaN": statistics clamped before rsqrt
            tiny = 1e-30
            row, col = np.maximum(row, tiny), np.maximum(col, tiny)
            scale = np.maximum(scale, tiny)
        rd = self.rounding.c
        r, c = self._expand(rd(row / rd(scale)), col, shape)
        if eps_after_sqrt:
            return rd(1.0 / rd(rd(np.sqrt(rd(r * c))) + eps_after_sqrt))
        return rd(rd(r ** -0.5) * rd(c ** -0.5))

    def _rms(self, x) -> float:
        """CAME-DEF-1, as torch ports write it: ‖x‖₂ / sqrt(numel) (a float64 sum, then one rounding)."""
        if "rms-tile-tail" in self.bugs:
            flat = np.ravel(x)
            return float(self.rounding.c(np.sqrt(self._tiled_sum(flat * flat, 0, 1024) / flat.size)))
        return float(self.rounding.c(np.linalg.norm(x.ravel()) / math.sqrt(x.size)))

    # ---- per-step hyperparameters ----
    def _beta2(self, t: int) -> float:
        raise NotImplementedError

    def _lr(self, group: dict, t: int) -> float:
        raise NotImplementedError

    def _next_counter(self):
        """The counter after this step, as this port stores it; not yet written (CAME-STATE-5, CAME-STATE-6)."""
        if "step-counter-float32" in self.bugs:  # exact only up to 2^24: then t + 1 rounds back to t
            return np.float32(self.global_step) + np.float32(1)
        if "step-counter-float16" in self.bugs:  # exact only up to 2048
            return np.float16(self.global_step) + np.float16(1)
        return int(self.global_step) + 1

    def _math_step(self, counter) -> int:
        """The t the equations use."""
        if "step-from-first-param" in self.bugs:
            first = self.parameters()[0]
            return int(self.state[id(first)]["step"]) + (first.data.size > 0)
        return int(counter)

    def _as_counter(self, value):
        """A counter value as this port stores it (an int, or a float32/float16 that rounds)."""
        if "step-counter-float32" in self.bugs:
            return np.float32(value)
        if "step-counter-float16" in self.bugs:
            with np.errstate(over="ignore"):  # beyond 65504 it is inf, as float16 is
                return np.float16(value)
        return int(value)

    def _store_counter(self, counter) -> None:
        if "step-counter-frozen" not in self.bugs:  # frozen: incremented on a copy, never written back
            self.global_step = counter

    def _check_gradients(self, grads, lazy: bool = False) -> list:
        """CAME-ERR-S1 … CAME-ERR-S4; ``lazy`` leaves each gradient to ``_check_gradient`` in the update loop."""
        params = self.parameters()
        if not isinstance(grads, (list, tuple)):
            raise TypeError(f"For '{self.name}', the gradients must be a tuple of tensors, got "
                            f"{type(grads).__name__}.")
        grads = list(grads)
        if len(grads) != len(params):
            raise ValueError(f"For '{self.name}', the number of gradients ({len(grads)}) must equal the number "
                             f"of parameters ({len(params)}).")
        return grads if lazy else [self._check_gradient(i, g, p) for i, (g, p) in enumerate(zip(grads, params))]

    def _check_gradient(self, i: int, g, p: Parameter) -> np.ndarray:
        g = np.asarray(g)
        if g.dtype.kind != "f" or g.dtype.itemsize > 8:
            raise TypeError(f"For '{self.name}', gradients[{i}] must be a floating-point tensor, got {g.dtype}.")
        if g.shape != p.shape and "gradient-shape-unchecked" in self.bugs and g.size == p.data.size:
            g = g.reshape(p.shape)  # "same number of elements": silently reshaped
        if g.shape != p.shape:
            raise ValueError(f"For '{self.name}', gradients[{i}] has shape {g.shape}, but its parameter "
                             f"{p.name!r} has shape {p.shape}.")
        return g.astype(F64)

    def step(self, gradients):
        """One step of every parameter; nothing changes before it is known to succeed (CAME-ERR-A1)."""
        bugs = self.bugs
        early = "counter-advances-on-error" in bugs
        if early:  # MindSpore's order: the counters advance before anything is checked
            self._store_counter(self._next_counter())
        lazy = "partial-update-before-error" in bugs  # each gradient checked just before its update
        grads = self._check_gradients(gradients, lazy)
        counter = self.global_step if early else self._next_counter()
        t = self._math_step(counter)
        beta2 = self._beta2(t)
        index = 0
        # CAME-NONFINITE-1: IEEE propagation, no checks, no warnings (means of empty axes included)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            rates = [self._lr(group, t) for group in self.param_groups]  # an exhausted sequence raises first
            if not early:
                self._store_counter(counter)
            for group, lr in zip(self.param_groups, rates):
                for p in group["params"]:
                    grad = self._check_gradient(index, grads[index], p) if lazy else grads[index]
                    self._update(p, grad, self.state[id(p)], group, lr, beta2)
                    index += 1
        return self._returned()

    def _returned(self):
        """CAME-RETURN-1: what the step call returns in this API."""
        return None

    __call__ = step

    # ---- one parameter (CAME-STEP-1 … CAME-STEP-12) ----
    def _update(self, p: Parameter, grad: np.ndarray, state: dict, group: dict, lr: float, beta2: float) -> None:
        """One parameter's step.  Every result goes through ``rd`` (the compute precision), every stored
        state tensor through ``keep`` (the state dtype), every hyperparameter through ``sc``; in float64,
        all three are the identity and this is plain float64 arithmetic."""
        bugs = self.bugs
        rd, sc, keep = self.rounding.c, self.rounding.s, self.rounding.store
        if p.data.size == 0 and "zero-size-not-skipped" not in bugs:
            return  # CAME-ZERO-1
        if p.data.ndim == 0 and "rank0-skipped" in bugs:
            return  # "scalars have nothing to factor": skipped like empty tensors
        if "step-from-first-param" in bugs:
            state["step"] += 1
        eps1, eps_insta = sc(self.eps1), sc(self.eps_insta)
        beta1, beta3, beta2 = sc(group["beta1"]), sc(group["beta3"]), sc(beta2)
        weight_decay = self.defaults["weight_decay"] if "wd-group-ignored" in bugs else group["weight_decay"]
        weight_decay = sc(weight_decay)
        # CAME-DTYPE-4: a gradient coarser than the compute precision is exact in it; a finer one rounds once
        narrow = _coarser(p.grad_dtype, self.rounding.compute) and p.grad_dtype != p.dtype
        if "grad-rounded-to-param-dtype" in bugs and p.grad_dtype != p.dtype:
            grad = round_to(p.dtype, grad)  # "p.grad.to(p.dtype)" before an upcast computation
        grad = rd(grad)

        if "loss-scale-multiplied" in bugs:
            grad = rd(grad * sc(self.loss_scale))
        elif "loss-scale-ignored" not in bugs:
            grad = rd(grad / sc(self.loss_scale))  # CAME-STEP-1, CAME-OPT-4
        if "wd-coupled" in bugs and weight_decay != 0.0:
            grad = rd(grad + rd(weight_decay * p.data))  # L2 folded into the gradient (Adam style)

        factored = self._factored(p.shape)
        moved_eps = any(b in bugs for b in ("eps1-after-ema", "eps1-after-sqrt")) or \
            ("vector-eps-outside-sqrt" in bugs and not factored)
        if "eps1-outside-square" in bugs:
            update = rd(rd(grad + eps1) ** 2)
        elif "square-in-grad-dtype" in bugs and narrow:  # G² formed in the (half) gradient's dtype
            gd = p.grad_dtype
            update = round_to(gd, round_to(gd, grad * grad) + eps1)
        else:
            update = rd(grad ** 2) if moved_eps else rd(rd(grad ** 2) + eps1)  # CAME-STEP-2

        def old(name):  # the stored state as this step reads it
            value = state[name]
            if "state-follows-grad-dtype" in bugs and narrow:  # cast(state, grad_dtype), MindFormers-style
                return round_to(p.grad_dtype, value)
            return value

        if factored:
            row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
            row[...] = keep(rd(rd(beta2 * old("exp_avg_sq_row")) + rd(sc(1.0 - beta2) * self._row_mean(update))))
            col[...] = keep(rd(rd(beta2 * old("exp_avg_sq_col")) + rd(sc(1.0 - beta2) * self._col_mean(update))))
            if "eps1-after-ema" in bugs:  # CAME-STEP-3
                row[...] = keep(rd(row + eps1))
                col[...] = keep(rd(col + eps1))
            u = rd(self._approx(row, col, p.shape, eps1 if "eps1-after-sqrt" in bugs else 0.0) * grad)  # CAME-STEP-4
        else:
            v = state["exp_avg_sq"]
            v[...] = keep(rd(rd(beta2 * old("exp_avg_sq")) + rd(sc(1.0 - beta2) * update)))  # CAME-STEP-3V
            if "eps1-after-ema" in bugs:
                v[...] = keep(rd(v + eps1))
            v_used = v.copy() if "compression-uses-unrounded" in bugs else v
            if self.compression and "compression-wrong-state" not in bugs:
                v[...] = v.astype(np.float16)  # CAME-OPT-5: stored in float16, used as stored
            v = v_used
            if "eps1-after-sqrt" in bugs:
                u = rd(grad / rd(rd(np.sqrt(v)) + eps1))
            elif "vector-eps-outside-sqrt" in bugs:
                u = rd(grad / rd(np.sqrt(rd(v + eps1))))
            else:
                u = rd(grad / rd(np.sqrt(v)))  # CAME-STEP-4V
        unclipped = u
        if "vector-no-clip" in bugs and not factored:
            rms = 0.0
        elif "clip-rms-last-axis" in bugs and u.ndim >= 1:
            rms = rd(np.sqrt(np.mean(u * u, axis=-1, keepdims=True)))
        else:
            rms = self._rms(u)  # CAME-STEP-5
        if "clip-threshold-multiplied" in bugs:
            ratio = rd(rms * sc(self.clip_threshold))
        else:
            ratio = rd(rms / sc(self.clip_threshold))
        divisor = np.minimum(1.0, ratio) if "clip-min" in bugs else np.maximum(1.0, ratio)
        u = rd(u / divisor)

        m = state["exp_avg"]
        m_old = m.copy()
        if "plain-adafactor" not in bugs:
            if "beta1-swapped" in bugs:
                m[...] = keep(rd(rd(sc(1.0 - beta1) * m) + rd(beta1 * u)))
            else:
                m[...] = keep(rd(rd(beta1 * m) + rd(sc(1.0 - beta1) * u)))  # CAME-STEP-6
            if "vector-momentum-aliased" in bugs and not factored:
                m[...] = keep(rd(m * 0.01))  # a buffer aliased with a scaled temporary: 100 times too small
            if self.compression and "compression-wrong-state" in bugs:
                m[...] = m.astype(np.float16)

        beta_insta = beta2 if "insta-beta2" in bugs else beta3
        if "plain-adafactor" in bugs:
            direction = u  # Adafactor: the clipped update itself, no momentum, no confidence
        elif factored:
            base = unclipped if "insta-uses-unclipped" in bugs else u
            res = rd(rd(base - (m_old if "insta-old-m" in bugs else m)) ** 2)  # CAME-STEP-7
            if "eps-insta-missing" not in bugs:
                res = rd(res + eps_insta)
            big_r, big_c = state["exp_avg_insta_row"], state["exp_avg_insta_col"]
            big_r[...] = keep(rd(rd(beta_insta * old("exp_avg_insta_row"))  # CAME-STEP-8
                                 + rd(sc(1.0 - beta_insta) * self._row_mean(res))))
            big_c[...] = keep(rd(rd(beta_insta * old("exp_avg_insta_col"))
                                 + rd(sc(1.0 - beta_insta) * self._col_mean(res))))
            if "no-confidence" in bugs:
                direction = m
            elif "confidence-inverted" in bugs:
                direction = rd(m / self._approx(big_r, big_c, p.shape))
            else:
                direction = rd(self._approx(big_r, big_c, p.shape) * m)  # CAME-STEP-9
        elif "vector-confidence" in bugs:
            res = rd(rd(rd(u - m) ** 2) + eps_insta)
            ins = state["exp_avg_insta"]
            ins[...] = keep(rd(rd(beta_insta * ins) + rd(sc(1.0 - beta_insta) * res)))
            direction = rd(m / rd(np.sqrt(ins)))
        else:
            direction = m  # CAME-STEP-9V

        theta = rd(p.data)
        lr = sc(lr)
        lr_decay = lr
        if self.scale_parameter:  # CAME-STEP-10, CAME-OPT-1
            source = grad if "scale-parameter-grad-rms" in bugs else theta
            if "scale-parameter-new-theta" in bugs:
                source = rd(theta - rd(lr * direction))
            if "scale-parameter-after-decay" in bugs and weight_decay != 0.0:
                source = rd(theta - rd(rd(lr * weight_decay) * theta))  # θ decayed (with η_t) before its RMS
            floor = self.eps1 if "scale-parameter-eps1" in bugs else self.eps_scale
            if "scale-parameter-python-max" in bugs:  # max(a, NaN) is a: a NaN RMS is dropped
                lr = rd(lr * max(sc(floor), self._rms(source)))
            else:
                lr = rd(lr * float(np.maximum(sc(floor), self._rms(source))))  # NaN propagates (§1.2)
            lr_decay = lr_decay if "wd-unscaled-lr" in bugs else lr
        decoupled = (weight_decay != 0.0 or "wd-no-zero-guard" in bugs) and "wd-coupled" not in bugs
        decay = weight_decay if "wd-not-times-lr" in bugs else rd(lr_decay * weight_decay)
        if decoupled and "wd-after-update" not in bugs:
            theta = rd(theta - rd(decay * theta))  # CAME-STEP-11
        theta = rd(theta - rd(lr * direction))  # CAME-STEP-12
        if decoupled and "wd-after-update" in bugs:
            theta = rd(theta - rd(decay * theta))
        p.data = round_to(p.dtype, theta)  # CAME-DTYPE-2: stored in the parameter's dtype

        if "state-float32" in bugs and p.dtype == "float64":
            for name, value in state.items():
                if name != "step":
                    value[...] = value.astype(np.float32)

    # ---- checkpoints ----
    def state_dict(self) -> dict:
        out = {"global_step": self.global_step,
               "state": [{k: v.copy() for k, v in self.state[id(p)].items()} for p in self.parameters()],
               "params": [p.data.copy() for p in self.parameters()]}
        if "checkpoint-drops-step" in self.bugs:
            del out["global_step"]
        return out

    def load_state_dict(self, data: dict) -> None:
        self.global_step = self._as_counter(data.get("global_step", 0))
        for p, state, value in zip(self.parameters(), data["state"], data["params"]):
            self.state[id(p)] = {k: np.array(v, dtype=F64) for k, v in state.items()}
            p.data = np.array(value, dtype=F64)


#: Bug switches that change a documented default: the keyword and the port author's value.
WRONG_DEFAULTS = {
    "default-beta3-paper-value": ("mindformers", "beta3", 0.9999),  # came-pytorch's β3 copied
    "paper-default-eps-swapped": ("paper", "eps", (1e-16, 1e-30)),  # (ε_insta, ε1) order
}


def constructor(api: str, bugs: frozenset[str] = frozenset(), rounding: "Rounding | None" = None):
    """The documented constructor of ``api`` as this port ships it (its defaults included)."""
    cls = Came if api == "mindformers" else CAME
    wrong = {key: value for bug, (where, key, value) in WRONG_DEFAULTS.items() if bug in bugs and where == api}

    def make(*args, **kwargs):
        return cls(*args, **{**wrong, **kwargs}, bugs=bugs, rounding=rounding)

    return make


class Came(_CameBase):
    """``mindformers.core.Came``'s documented constructor (mindformers profile, CAME-HP-3).

    ``learning_rate`` is a number, a 1-D sequence (one value per step), a ``LearningRateSchedule``
    called with the 0-based global step, or None with ``relative_step=True``.
    """

    profile, name = "mindformers", "Came"

    def __init__(self, params, learning_rate=None, eps=(1e-30, 1e-3, 1e-16), clip_threshold=1.0,
                 decay_rate=0.8, beta1=0.9, beta3=0.99, weight_decay=0.0, scale_parameter=False,
                 relative_step=False, warmup_init=False, compression=False, loss_scale=1, *,
                 bugs: frozenset[str] = frozenset(), rounding: Rounding | None = None):
        self.bugs = bugs = frozenset(bugs)
        self.rounding = rounding or Rounding()
        self.checks = c = _Checks("Came", bugs)
        self.eps1, self.eps_scale, self.eps_insta = c.eps(eps, 3)
        self.clip_threshold = c.float_("clip_threshold", clip_threshold)
        if "clip-threshold-unchecked" not in bugs:
            c.positive("clip_threshold", self.clip_threshold)
        self.decay_rate = c.unit("decay_rate", c.float_("decay_rate", decay_rate))
        b1 = c.unit("beta1", c.float_("beta1", beta1))
        b3 = c.float_("beta3", beta3)
        if "beta3-unchecked" not in bugs:
            c.unit("beta3", b3)
        wd = self._weight_decay(weight_decay)
        self.scale_parameter = c.bool_("scale_parameter", scale_parameter)
        self.relative_step = c.bool_("relative_step", relative_step)
        self.warmup_init = c.bool_("warmup_init", warmup_init)
        self.compression = c.bool_("compression", compression)
        if "loss-scale-float-rejected" in bugs and isinstance(loss_scale, float):
            c.type_error("loss_scale", "int", loss_scale)  # "loss_scale (int)", as the documentation types it
        self.loss_scale = c.positive("loss_scale", c.number("loss_scale", loss_scale))
        if self.relative_step:
            if learning_rate is not None:
                c.value_error("learning_rate", "None when relative_step is True", learning_rate)
            lr = None
        else:
            if learning_rate is None:
                c.value_error("learning_rate", "given unless relative_step is True", learning_rate)
            lr = c.learning_rate("learning_rate", learning_rate)
        if self.warmup_init and not self.relative_step:
            c.value_error("warmup_init", "False unless relative_step is True", warmup_init)
        self._setup(params, {"lr": lr, "weight_decay": wd, "beta1": b1, "beta3": b3}, bugs)

    def _returned(self):
        """CAME-RETURN-1: Tensor[bool], True (S3); MindFormers 1.9.0 returns one bool per parameter."""
        if "step-returns-tuple" in self.bugs:
            return tuple(True for _ in self.parameters())
        return np.array(True)

    def _group_lr(self, value):
        if self.relative_step:  # CAME-ERR-15: no learning rate at all under relative_step
            self.checks.value_error("lr", "absent from groups when relative_step is True", value)
        return self.checks.learning_rate("lr", value)

    def _weight_decay(self, value) -> float:
        return self.checks.unit("weight_decay", self.checks.float_("weight_decay", value))  # CAME-ERRATUM-4

    def _beta2(self, t: int) -> float:
        """CAME-BETA2-2: β2_t = 1 − t^(−decay_rate), t 1-based."""
        if "constant-beta2-mindformers" in self.bugs:
            return 0.999
        if "beta2-capped" in self.bugs:  # "β2 never above 0.999", as some Adafactor ports cap it
            return min(0.999, float(1.0 - F64(t) ** -self.decay_rate))
        t = F64(t)
        with np.errstate(all="ignore"):
            if "beta2-t-from-zero" in self.bugs:
                t = t - 1
            if "beta2-t-plus-one" in self.bugs:
                t = t + 1
            if "decay-rate-sign" in self.bugs:
                return float(1.0 - t ** self.decay_rate)
            return float(1.0 - t ** -self.decay_rate)

    def _lr(self, group: dict, t: int) -> float:
        """η_t (CAME-LR-2 … CAME-LR-5)."""
        if self.relative_step:  # Adafactor's relative step (CAME-OPT-2, CAME-OPT-3)
            if self.warmup_init:
                min_step = (1e-5 if "warmup-init-1e-5" in self.bugs else 1e-6) * t
                if "warmup-init-no-decay" in self.bugs:  # the ramp capped at 1e-2 instead of 1/sqrt(t)
                    return min(min_step, 1e-2)
            else:
                min_step = math.inf if "relative-step-no-cap" in self.bugs else 1e-2
                if "relative-step-no-decay" in self.bugs:  # the constant part only
                    return 1e-2
            return min(min_step, 1.0 / math.sqrt(t)) if t > 0 else math.inf
        lr = self.defaults["lr"] if "group-lr-ignored" in self.bugs else group["lr"]
        if isinstance(lr, LearningRateSchedule):
            return lr(t if "schedule-called-with-t" in self.bugs else t - 1)
        if isinstance(lr, list):
            k = t if "lr-sequence-index-t" in self.bugs else t - 1
            if k >= len(lr) and "lr-sequence-repeats-last" in self.bugs:
                k = len(lr) - 1  # "hold the last value"
            if not 0 <= k < len(lr):
                name = "lr" if group.get("own_lr") else "learning_rate"
                raise ValueError(f"For 'Came', the {name} sequence has {len(lr)} values, but step {t} "
                                 f"needs value {k}.")
            return lr[k]
        return lr


class CAME(_CameBase):
    """The official ``came_pytorch.CAME`` constructor (paper profile, CAME-HP-2)."""

    profile, name = "paper", "CAME"
    compression = scale_parameter = relative_step = warmup_init = False
    loss_scale, eps_scale = 1.0, None

    def __init__(self, params, lr=None, eps=(1e-30, 1e-16), clip_threshold=1.0, betas=(0.9, 0.999, 0.9999),
                 weight_decay=0.0, *, bugs: frozenset[str] = frozenset(), rounding: Rounding | None = None):
        self.bugs = bugs = frozenset(bugs)
        self.rounding = rounding or Rounding()
        self.checks = c = _Checks("CAME", bugs)
        lr = self._group_lr(lr)
        self.eps1, self.eps_insta = c.eps(eps, 2)
        self.clip_threshold = c.float_("clip_threshold", clip_threshold)
        if "clip-threshold-unchecked" not in bugs:
            c.positive("clip_threshold", self.clip_threshold)
        if not isinstance(betas, (list, tuple)):
            c.type_error("betas", "tuple of 3 floats", betas)
        if len(betas) != 3:
            c.value_error("betas", "a tuple of 3 floats", betas)
        b = [c.float_("betas", x) for x in betas]
        for x in b:
            c.unit("betas", x)
        b1, b2, b3 = (b[0], b[2], b[1]) if "paper-betas-order" in bugs else b
        self.beta2 = b2
        wd = self._weight_decay(weight_decay)
        self._setup(params, {"lr": lr, "weight_decay": wd, "beta1": b1, "beta3": b3}, bugs)

    def _group_lr(self, value) -> float:
        lr = self.checks.number("lr", value)
        if "paper-lr-negative-accepted" in self.bugs:
            return lr
        return self.checks.nonnegative("lr", lr)

    def _weight_decay(self, value) -> float:
        return self.checks.nonnegative("weight_decay", self.checks.float_("weight_decay", value))

    def _beta2(self, t: int) -> float:
        return self.beta2  # CAME-BETA2-1: constant

    def _lr(self, group: dict, t: int) -> float:
        lr = self.defaults["lr"] if "group-lr-ignored" in self.bugs else group["lr"]
        return lr  # torch style: a scheduler writes group['lr'] before each step (CAME-LR-2)
