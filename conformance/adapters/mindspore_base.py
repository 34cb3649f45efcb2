"""The public base of MindSpore adapters (README "Adapter protocol"; built-in: adapters/mindspore.py).

A MindSpore target is a subclass of ``MindsporeAdapter`` with ``describe()``, ``build(params,
hp, variant)`` (the optimizer Cell from canonical hyperparameters over ``make_parameters``'
Parameters, grouped by ``param_groups``) and ``construct_optimizer(kwargs, variant)`` (its
documented constructor, called as given).  ``python -m came_conformance new-adapter --framework
mindspore NAME`` writes one.  What the base does for it:

- execution variants ``graph`` (``GRAPH_MODE``), ``pynative`` (``PYNATIVE_MODE``, ``@jit`` still
  compiles) and ``eager`` (``PYNATIVE_MODE`` with ``MS_JIT=0``, op by op), entered before every
  call (``enter``); a variant may carry a suffix (``graph-came``): the mode is its first part;
- learning rates (CAME-LR-1): a constant is a float, a sequence a list (MindSpore's Optimizer
  indexes it by global_step, CAME-LR-3), a schedule a ``LearningRateSchedule`` of CAME-LR-4's
  formulas in float32, k = global_step = 0 at the first step (``learning_rate``, ``Hooks.schedule``);
- gradients arrive as a list in canonical order and become one tuple of Tensors of each
  parameter's dtype (CAME-ERR-S1 … S3 inputs keep their count, shape and dtype);
- ``read`` returns every state tensor under the spec's names (CAME-STATE-2, CAME-STATE-3): the
  optimizer's ``ParameterTuple`` attribute named in ``STATE_ATTRIBUTES``, by parameter index;
- ``save``/``restore`` use MindSpore's own checkpoint of the optimizer Cell (CAME-STATE-5).
"""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np

from came_conformance.protocol import NotApplicable, Snapshot, TargetInfo, describe_return
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate
from came_conformance.reference.step import state_shapes

# MindFormers logs to ./output/log and MindSpore writes ./rank_0/om/analyze_fail.ir on compile errors.
SCRATCH = tempfile.mkdtemp(prefix="came-mindspore-")
atexit.register(shutil.rmtree, SCRATCH, ignore_errors=True)
os.environ.setdefault("LOCAL_DEFAULT_PATH", SCRATCH)
os.environ.setdefault("MS_OM_PATH", SCRATCH)
os.environ.setdefault("GLOG_v", "3")  # errors only

import mindspore as ms  # noqa: E402
from mindspore import Parameter, Tensor  # noqa: E402
from mindspore import dtype as mstype  # noqa: E402
from mindspore.graph.api import _pynative_executor  # noqa: E402
from mindspore.nn.learning_rate_schedule import LearningRateSchedule  # noqa: E402
from mindspore.ops import operations as P  # noqa: E402

ms.set_context(device_target="CPU")

MODES = {"graph": (ms.GRAPH_MODE, "1"), "pynative": (ms.PYNATIVE_MODE, "1"), "eager": (ms.PYNATIVE_MODE, "0")}
MS_DTYPES = {"float64": mstype.float64, "float32": mstype.float32, "float16": mstype.float16,
             "bfloat16": mstype.bfloat16}


class Exponential(LearningRateSchedule):
    """CAME-LR-4 'exponential': base · gamma^k with k = global_step (0 at the first step), in float32."""

    def __init__(self, base: float, gamma: float):
        super().__init__()
        self.base, self.gamma, self.cast, self.pow = base, Tensor(gamma, mstype.float32), P.Cast(), P.Pow()

    def construct(self, global_step):
        return self.base * self.pow(self.gamma, self.cast(global_step, mstype.float32))


class WarmupLinear(LearningRateSchedule):
    """CAME-LR-4 'warmup_linear': base · min(1, (k + 1) / warmup_steps), in float32."""

    def __init__(self, base: float, warmup_steps: float):
        super().__init__()
        self.base, self.warmup, self.one = base, warmup_steps, Tensor(1.0, mstype.float32)
        self.cast, self.min = P.Cast(), P.Minimum()

    def construct(self, global_step):
        return self.base * self.min(self.one, (self.cast(global_step, mstype.float32) + 1.0) / self.warmup)


class Hooks:
    """Native objects for decoded constructor arguments (conformance.arguments); parameters float32."""

    def parameter(self, value, name):
        value = np.asarray(value)  # another dtype as it is: the optimizer decides (CAME-ERR-26)
        return Parameter(Tensor(value if value.dtype.kind != "f" else value.astype(np.float32)), name=name)

    def tensor(self, value):
        return Tensor(np.asarray(value))

    def schedule(self, lr: LearningRate):
        p = dict(lr.params)
        if lr.schedule == "exponential":
            return Exponential(p["base"], p["gamma"])
        if lr.schedule == "warmup_linear":
            return WarmupLinear(p["base"], p["warmup_steps"])
        raise NotApplicable(f"no MindSpore LearningRateSchedule for schedule {lr.schedule!r}")


def learning_rate(lr: LearningRate):
    """CAME-LR-1: constant -> float; sequence -> list (CAME-LR-3); schedule -> LearningRateSchedule (CAME-LR-4)."""
    if lr.kind == "constant":
        return float(lr.value)
    if lr.kind == "sequence":
        return [float(v) for v in lr.values]
    return Hooks().schedule(lr)


def enter(variant: str) -> None:
    """Set the execution mode of ``variant`` (its part before the first '-') before a call."""
    mode, jit = MODES[variant.split("-", 1)[0]]
    ms.set_context(mode=mode)
    os.environ["MS_JIT"] = jit  # read by @jit and Cell.__call__ at every call


def make_parameters(params, dtype: str) -> list[Parameter]:
    if dtype not in MS_DTYPES:
        raise NotApplicable(f"dtype {dtype!r}")
    nptype = mstype.dtype_to_nptype(MS_DTYPES[dtype])
    return [Parameter(Tensor(np.asarray(p).astype(nptype)), name=f"p{i}") for i, p in enumerate(params)]


def param_groups(hp: Hyperparameters, ps: list[Parameter]):
    """``ps`` as MindSpore's group list for canonical groups (CAME-GROUP-1), ordered by
    CAME-GROUP-2's ``order_params``; the bare list when there are no groups."""
    if not hp.groups:
        return ps
    arg, grouped = [], set()
    for g in hp.groups:
        item = {"params": [ps[i] for i in g.params]}
        if g.learning_rate is not None:
            item["lr"] = learning_rate(g.learning_rate)
        if g.weight_decay is not None:
            item["weight_decay"] = float(g.weight_decay)
        arg.append(item)
        grouped.update(g.params)
    rest = [p for i, p in enumerate(ps) if i not in grouped]
    return arg + ([{"params": rest}] if rest else []) + [{"order_params": ps}]


class MindsporeSession:
    """One optimizer Cell; ``STATE_ATTRIBUTES`` maps the spec's state names to its ParameterTuples."""

    STATE_ATTRIBUTES = {name: name for name in ("exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col",
                                                "exp_avg_insta_row", "exp_avg_insta_col")}

    def __init__(self, optim, variant: str, grad_dtype: str | None = None):
        self.optim, self.variant, self.grad_dtype = optim, variant, grad_dtype  # grad_dtype: CAME-DTYPE-4
        self.params = list(optim._parameters)

    def step(self, grads) -> dict:
        enter(self.variant)
        if not isinstance(grads, (list, tuple)):  # CAME-ERR-S4: what the Cell gets instead of a tuple of tensors
            returned = self.optim(grads if grads is None else Tensor(np.asarray(grads)))
            _pynative_executor.sync()
            return describe_return(returned)
        tensors = []
        for i, g in enumerate(grads):
            g, p = np.asarray(g), self.params[i] if i < len(self.params) else None
            if g.dtype.kind == "f" and p is not None and g.shape == tuple(p.shape):
                # exact: the values are representable (protocol); a mixed-precision case's gradient dtype
                to = MS_DTYPES[self.grad_dtype] if self.grad_dtype else p.dtype
                g = g.astype(mstype.dtype_to_nptype(to))
            tensors.append(Tensor(g))  # step-phase error cases keep their count, shape and dtype
        returned = self.optim(tuple(tensors))
        _pynative_executor.sync()  # PyNative launches asynchronously: raise kernel errors at this step
        return describe_return(returned)  # CAME-RETURN-1

    def load(self, state, step: int) -> None:
        """CAME-STATE-6: every state Parameter set by spec name, in its own dtype; both counters set to ``step``:
        ``step`` (float32, drives β2_t in MindFormers' Came) rounds it as float32 does, ``global_step`` (int32)
        drives the learning rate."""
        o = self.optim
        for i, tensors in enumerate(state):
            for name, value in tensors.items():
                target = getattr(o, self.STATE_ATTRIBUTES[name])[i]
                if tuple(target.shape) != np.shape(value):
                    continue  # a placeholder (MindFormers' shared beta1 = 0 exp_avg) is no state
                target.set_data(Tensor(np.asarray(value).astype(mstype.dtype_to_nptype(target.dtype))))
        if hasattr(o, "step"):
            o.step.set_data(Tensor(np.array([step], dtype=np.float32)))
        o.global_step.set_data(Tensor(np.array([step], dtype=np.int32)))

    def state_tensor(self, name: str, index: int, shape: tuple) -> np.ndarray:
        """State ``name`` of parameter ``index`` as float64 (the spec's ``shape``, for subclasses' fix-ups)."""
        return getattr(self.optim, self.STATE_ATTRIBUTES[name])[index].asnumpy().astype(np.float64)

    def target_step(self) -> int | None:
        return None

    def read(self) -> Snapshot:
        state = [{name: self.state_tensor(name, i, shape) for name, shape in state_shapes(tuple(p.shape)).items()}
                 for i, p in enumerate(self.params)]
        return Snapshot([p.asnumpy().astype(np.float64) for p in self.params], state, self.target_step())

    def save(self) -> bytes:
        path = os.path.join(tempfile.mkdtemp(dir=SCRATCH), "optimizer.ckpt")
        ms.save_checkpoint(self.optim, path)
        with open(path, "rb") as f:
            return f.read()

    def restore(self, blob: bytes) -> None:
        path = os.path.join(tempfile.mkdtemp(dir=SCRATCH), "optimizer.ckpt")
        with open(path, "wb") as f:
            f.write(blob)
        not_loaded = ms.load_param_into_net(self.optim, ms.load_checkpoint(path), strict_load=True)
        if any(not_loaded):
            raise RuntimeError(f"checkpoint did not restore {not_loaded}")


class MindsporeAdapter:
    """An adapter (conformance.protocol.Adapter) for a MindSpore optimizer Cell.

    Subclasses implement ``describe``, ``build`` and ``construct_optimizer``; ``Session`` may be a
    ``MindsporeSession`` subclass (state attribute names, a step counter, fix-ups).
    """

    Session = MindsporeSession

    def describe(self) -> TargetInfo:
        raise NotImplementedError

    def build(self, params, hp: Hyperparameters, variant: str):
        """The optimizer over ``params`` (``param_groups`` of the Parameters) for canonical ``hp``."""
        raise NotImplementedError

    def construct_optimizer(self, kwargs: dict, variant: str):
        """The documented constructor with these decoded keyword arguments; let it raise."""
        raise NotImplementedError

    def native(self) -> Hooks:
        return Hooks()

    def open(self, hp: Hyperparameters, params, dtype: str, variant: str, grad_dtype: str | None = None) -> MindsporeSession:
        """``grad_dtype``: a mixed-precision case (CAME-DTYPE-4), for a target declaring ``grad_dtypes``."""
        ps = make_parameters(params, dtype)
        enter(variant)
        return self.Session(self.build(param_groups(hp, ps), hp, variant), variant, grad_dtype)

    def construct(self, kwargs: dict, variant: str) -> MindsporeSession:
        enter(variant)
        return self.Session(self.construct_optimizer(kwargs, variant), variant)
