"""Target ``mindspore``: the real ``mindformers.core.optim.Came`` (MindFormers 1.9.0, MindSpore 2.9.0, CPU).

Runs in the ``.venvs/mindspore`` environment (numpy 1.26).  Findings behind every choice here are in
targets/mindspore/investigation.md.  Variants are ``<mode>-<path>``:

- mode ``graph``: ``GRAPH_MODE``, the whole optimizer cell compiled; ``pynative``: ``PYNATIVE_MODE``, where
  ``Came.construct`` is still compiled by its ``@jit``; ``eager``: ``PYNATIVE_MODE`` with ``MS_JIT=0``, op by op.
- path ``came``: ``_run_opt_with_one_number``, what a standalone ``Came`` runs (MindFormers' context reports
  device_target 'Ascend' unless ``build_context`` set 'CPU'); ``fused``: ``P.FusedAdaFactor``, what Came selects
  when MindFormers' context says CPU, reached here by ``optim.target = 'CPU'`` (the same switch).

The mode is set on every call, so one worker process can run every variant.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from conformance.protocol import NotApplicable, Snapshot, TargetInfo
from reference.hyperparams import Hyperparameters, LearningRate
from reference.step import state_shapes

import mindspore as ms  # noqa: E402  (after reference imports: numpy 1.26 here)
from mindspore import Parameter, Tensor
from mindspore import dtype as mstype
from mindspore.graph.api import _pynative_executor
from mindspore.nn.learning_rate_schedule import LearningRateSchedule
from mindspore.ops import operations as P

import mindformers
from mindformers.core.optim import Came

ms.set_context(device_target="CPU")

MODES = {"graph": (ms.GRAPH_MODE, "1"), "pynative": (ms.PYNATIVE_MODE, "1"), "eager": (ms.PYNATIVE_MODE, "0")}
VARIANTS = tuple(f"{m}-{p}" for p in ("came", "fused") for m in MODES)
MS_DTYPES = {"float32": mstype.float32, "float16": mstype.float16, "bfloat16": mstype.bfloat16}
OPTIONS = frozenset({"weight_decay", "scale_parameter", "relative_step", "warmup_init", "compression", "loss_scale",
                     "groups", "lr_sequence", "lr_schedule", "rank0", "zero_size", "save_restore"})


class _Exponential(LearningRateSchedule):
    """CAME-LR-4 'exponential': base · gamma^k, k = global_step (0 at the first step), in float32."""

    def __init__(self, base: float, gamma: float):
        super().__init__()
        self.base, self.gamma, self.cast, self.pow = base, gamma, P.Cast(), P.Pow()

    def construct(self, global_step):
        return self.base * self.pow(Tensor(self.gamma, mstype.float32), self.cast(global_step, mstype.float32))


class _WarmupLinear(LearningRateSchedule):
    """CAME-LR-4 'warmup_linear': base · min(1, (k + 1) / warmup_steps), in float32."""

    def __init__(self, base: float, warmup_steps: float):
        super().__init__()
        self.base, self.warmup, self.cast, self.min = base, warmup_steps, P.Cast(), P.Minimum()

    def construct(self, global_step):
        k = self.cast(global_step, mstype.float32)
        return self.base * self.min(Tensor(1.0, mstype.float32), (k + 1.0) / self.warmup)


class _Hooks:
    def parameter(self, value, name):
        return Parameter(Tensor(np.asarray(value, np.float32)), name=name)

    def tensor(self, value):
        return Tensor(np.asarray(value))

    def schedule(self, lr: LearningRate):
        p = dict(lr.params)
        if lr.schedule == "exponential":
            return _Exponential(p["base"], p["gamma"])
        if lr.schedule == "warmup_linear":
            return _WarmupLinear(p["base"], p["warmup_steps"])
        raise NotApplicable(f"no MindSpore LearningRateSchedule for schedule {lr.schedule!r}")


def _lr(lr: LearningRate | None):
    """CAME-LR-1: constant -> float, sequence -> list (Optimizer makes a float32 1-D Tensor), schedule -> Cell."""
    if lr is None:
        return None
    if lr.kind == "constant":
        return float(lr.value)
    if lr.kind == "sequence":
        return [float(v) for v in lr.values]
    return _Hooks().schedule(lr)


def _to_numpy(t) -> np.ndarray:
    if t.dtype == mstype.bfloat16:  # numpy has no bfloat16: widen exactly first
        t = P.Cast()(t, mstype.float32)
    return np.array(t.asnumpy(), dtype=np.float64)


class Session:
    def __init__(self, optim: Came, variant: str):
        self.optim, self.variant = optim, variant
        mode, self.path = variant.rsplit("-", 1)
        self.mode, self.jit = MODES[mode]
        if self.path == "fused":
            optim.target = "CPU"  # Came's own switch to P.FusedAdaFactor (what CPU context selects)
        self.params = list(optim._parameters)

    def _enter(self):
        ms.set_context(mode=self.mode)
        os.environ["MS_JIT"] = self.jit

    def step(self, grads):
        self._enter()
        tensors = []
        for g, p in zip(grads, self.params + [None] * len(grads)):
            g = np.asarray(g)
            if g.dtype.kind == "f" and p is not None and g.shape == tuple(p.shape):
                tensors.append(Tensor(g.astype(np.float32)).astype(p.dtype) if p.dtype == mstype.bfloat16
                               else Tensor(g.astype(mstype.dtype_to_nptype(p.dtype))))
            else:  # step-phase error cases: keep what was given
                tensors.append(Tensor(g))
        self.optim(tuple(tensors))
        _pynative_executor.sync()  # PyNative runs asynchronously: surface kernel errors at this step

    def read(self) -> Snapshot:
        """CAME-STATE-2/3: MindFormers keeps (1,)-shaped dummies for the unused tensors; they are left out."""
        o, state = self.optim, []
        for i, p in enumerate(self.params):
            shapes = state_shapes(tuple(p.shape))
            s = {}
            for name in shapes:
                value = _to_numpy(getattr(o, name)[i])
                # beta1 = 0: MindFormers keeps one shared 0-D zero instead of a first moment
                s[name] = np.broadcast_to(value, shapes[name]).copy() if value.shape != shapes[name] else value
            state.append(s)
        return Snapshot([_to_numpy(p) for p in self.params], state, int(_to_numpy(o.step)[0]))

    def save(self) -> bytes:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "came.ckpt")
            ms.save_checkpoint(self.optim, path)
            with open(path, "rb") as f:
                return f.read()

    def restore(self, blob: bytes) -> None:
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "came.ckpt")
            with open(path, "wb") as f:
                f.write(blob)
            not_loaded = ms.load_param_into_net(self.optim, ms.load_checkpoint(path), strict_load=True)
        if any(not_loaded):
            raise RuntimeError(f"checkpoint did not restore {not_loaded}")


class MindsporeAdapter:
    def describe(self) -> TargetInfo:
        return TargetInfo(name="mindspore", profile="mindformers", api="mindformers",
                          versions={"mindspore": ms.__version__, "mindformers": mindformers.__version__,
                                    "numpy": np.__version__},
                          dtypes=tuple(MS_DTYPES), variants=VARIANTS, options=OPTIONS)

    def native(self):
        return _Hooks()

    def open(self, hp: Hyperparameters, params, dtype, variant) -> Session:
        if hp.profile != "mindformers":
            raise NotApplicable("mindformers.core.optim.Came implements the mindformers profile only [CAME-HP-3]")
        if dtype not in MS_DTYPES:
            raise NotApplicable(f"dtype {dtype}: see investigation.md (Came on CPU)")
        if variant not in VARIANTS:
            raise NotApplicable(f"unknown variant {variant!r}; this target has {VARIANTS}")
        if hp.loss_scale != int(hp.loss_scale):
            raise NotApplicable(f"loss_scale {hp.loss_scale}: Came accepts an int loss_scale only")
        ps = [Parameter(Tensor(np.asarray(p, np.float32)).astype(MS_DTYPES[dtype]), name=f"p{i}")
              for i, p in enumerate(params)]
        if hp.groups:  # CAME-GROUP-1
            grouped = {i for g in hp.groups for i in g.params}
            items = []
            for g in hp.groups:
                item = {"params": [ps[i] for i in g.params]}
                if g.learning_rate is not None:
                    item["lr"] = _lr(g.learning_rate)
                if g.weight_decay is not None:
                    item["weight_decay"] = float(g.weight_decay)
                items.append(item)
            rest = [ps[i] for i in range(len(ps)) if i not in grouped]
            items += [{"params": rest}] if rest else []
            items.append({"order_params": ps})  # CAME-GROUP-2: keep the suite's parameter order
            arg = items
        else:
            arg = ps
        self._enter(variant)
        optim = Came(arg, learning_rate=None if hp.relative_step else _lr(hp.learning_rate),
                     eps=(float(hp.eps1), float(hp.eps_scale), float(hp.eps_insta)),
                     clip_threshold=float(hp.clip_threshold), decay_rate=float(hp.decay_rate),
                     beta1=float(hp.beta1), beta3=float(hp.beta3), weight_decay=float(hp.weight_decay),
                     scale_parameter=hp.scale_parameter, relative_step=hp.relative_step,
                     warmup_init=hp.warmup_init, compression=hp.compression, loss_scale=int(hp.loss_scale))
        return Session(optim, variant)

    @staticmethod
    def _enter(variant):
        mode, jit = MODES[variant.rsplit("-", 1)[0]]
        ms.set_context(mode=mode)
        os.environ["MS_JIT"] = jit

    def construct(self, kwargs, variant) -> Session:
        self._enter(variant)
        return Session(Came(**kwargs), variant)


def factory() -> MindsporeAdapter:
    return MindsporeAdapter()
