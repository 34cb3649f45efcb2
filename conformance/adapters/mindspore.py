"""Target ``mindspore``: the real ``mindformers.core.optim.Came`` (MindFormers 1.9.0, MindSpore 2.9.0, CPU).

Runs in ``.venvs/mindspore`` (numpy 1.26).  The evidence behind every choice is in
targets/mindspore/investigation.md.  Variants are ``<mode>-<path>``:

- mode ``graph``: ``GRAPH_MODE``, the optimizer cell compiled whole; ``pynative``: ``PYNATIVE_MODE``, where
  ``Came.construct`` is still compiled by its ``@jit``; ``eager``: ``PYNATIVE_MODE`` with ``MS_JIT=0``, op by op.
- path ``came``: ``_run_opt_with_one_number``, what a standalone ``Came`` runs (MindFormers' context reports
  device_target 'Ascend' unless ``build_context`` set 'CPU'); ``fused``: ``P.FusedAdaFactor``, what Came picks
  when MindFormers' context says CPU, reached here with Came's own switch ``optim.target = 'CPU'``.

Mode and ``MS_JIT`` are set before every call, so one worker process runs every variant.
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
_SCRATCH = tempfile.mkdtemp(prefix="came-mindspore-")
atexit.register(shutil.rmtree, _SCRATCH, ignore_errors=True)
os.environ.setdefault("LOCAL_DEFAULT_PATH", _SCRATCH)
os.environ.setdefault("MS_OM_PATH", _SCRATCH)
os.environ.setdefault("GLOG_v", "3")  # errors only

import mindspore as ms  # noqa: E402
from mindspore import Parameter, Tensor  # noqa: E402
from mindspore import dtype as mstype  # noqa: E402
from mindspore.graph.api import _pynative_executor  # noqa: E402
from mindspore.nn.learning_rate_schedule import LearningRateSchedule  # noqa: E402
from mindspore.ops import operations as P  # noqa: E402

import mindformers  # noqa: E402
from mindformers.core.optim import Came  # noqa: E402

ms.set_context(device_target="CPU")

MODES = {"graph": (ms.GRAPH_MODE, "1"), "pynative": (ms.PYNATIVE_MODE, "1"), "eager": (ms.PYNATIVE_MODE, "0")}
VARIANTS = tuple(f"{m}-{p}" for p in ("came", "fused") for m in MODES)
# CAME-DTYPE-2: bfloat16 parameters construct but every step fails on CPU (no bf16 Pow/TensorMove kernel).
# float64 parameters run, but with float32 hyperparameters (eps, betas, lr, β2_t): float32 accuracy, so float64
# is not declared; the runner runs the float64 fixtures at float32 instead (investigation.md, "float64").
MS_DTYPES = {"float32": mstype.float32, "float16": mstype.float16}
OPTIONS = frozenset({"weight_decay", "scale_parameter", "relative_step", "warmup_init", "compression", "loss_scale",
                     "groups", "lr_sequence", "lr_schedule", "rank0", "zero_size", "save_restore", "open_at",
                     "step_return"})


class _Exponential(LearningRateSchedule):
    """CAME-LR-4 'exponential': base · gamma^k with k = global_step (0 at the first step), in float32."""

    def __init__(self, base: float, gamma: float):
        super().__init__()
        self.base, self.gamma, self.cast, self.pow = base, Tensor(gamma, mstype.float32), P.Cast(), P.Pow()

    def construct(self, global_step):
        return self.base * self.pow(self.gamma, self.cast(global_step, mstype.float32))


class _WarmupLinear(LearningRateSchedule):
    """CAME-LR-4 'warmup_linear': base · min(1, (k + 1) / warmup_steps), in float32."""

    def __init__(self, base: float, warmup_steps: float):
        super().__init__()
        self.base, self.warmup, self.one = base, warmup_steps, Tensor(1.0, mstype.float32)
        self.cast, self.min = P.Cast(), P.Minimum()

    def construct(self, global_step):
        return self.base * self.min(self.one, (self.cast(global_step, mstype.float32) + 1.0) / self.warmup)


class _Hooks:
    def parameter(self, value, name):
        value = np.asarray(value)  # another dtype as it is: Came decides (CAME-ERR-26)
        return Parameter(Tensor(value if value.dtype.kind != "f" else value.astype(np.float32)), name=name)

    def tensor(self, value):
        return Tensor(np.asarray(value))

    def schedule(self, lr: LearningRate):
        p = dict(lr.params)
        if lr.schedule == "exponential":
            return _Exponential(p["base"], p["gamma"])
        if lr.schedule == "warmup_linear":
            return _WarmupLinear(p["base"], p["warmup_steps"])
        raise NotApplicable(f"no MindSpore LearningRateSchedule for schedule {lr.schedule!r}")


def _lr(lr: LearningRate):
    """CAME-LR-1: constant -> float; sequence -> list (Optimizer turns it into a float32 1-D Tensor indexed by
    global_step, CAME-LR-3); schedule -> LearningRateSchedule (CAME-LR-4)."""
    if lr.kind == "constant":
        return float(lr.value)
    if lr.kind == "sequence":
        return [float(v) for v in lr.values]
    return _Hooks().schedule(lr)


def _enter(variant: str) -> None:
    mode, jit = MODES[variant.rsplit("-", 1)[0]]
    ms.set_context(mode=mode)
    os.environ["MS_JIT"] = jit  # read by @jit and Cell.__call__ at every call


class Session:
    def __init__(self, optim: Came, variant: str):
        self.optim, self.variant = optim, variant
        if variant.endswith("-fused"):
            optim.target = "CPU"  # Came's own switch: use_fused_ada_factor = True
        self.params = list(optim._parameters)

    def step(self, grads) -> dict:
        _enter(self.variant)
        if not isinstance(grads, (list, tuple)):  # CAME-ERR-S4: what Came gets instead of a tuple of tensors
            returned = self.optim(grads if grads is None else Tensor(np.asarray(grads)))
            _pynative_executor.sync()
            return describe_return(returned)
        tensors = []
        for i, g in enumerate(grads):
            g, p = np.asarray(g), self.params[i] if i < len(self.params) else None
            if g.dtype.kind == "f" and p is not None and g.shape == tuple(p.shape):
                g = g.astype(mstype.dtype_to_nptype(p.dtype))  # exact: values are representable (protocol)
            tensors.append(Tensor(g))  # step-phase error cases keep their count, shape and dtype
        returned = self.optim(tuple(tensors))
        _pynative_executor.sync()  # PyNative launches asynchronously: raise kernel errors at this step
        return describe_return(returned)  # CAME-RETURN-1

    def load(self, state, step: int) -> None:
        """CAME-STATE-6: every state Parameter set by spec name, in its own dtype; both counters set to ``step``:
        afactor_step (float32, drives β2_t) rounds it as float32 does, global_step (int32) drives the lr."""
        o = self.optim
        for i, tensors in enumerate(state):
            for name, value in tensors.items():
                if name == "exp_avg" and not o.use_first_moment:
                    continue  # the shared beta1 = 0 placeholder is no state
                target = getattr(o, name)[i]
                target.set_data(Tensor(np.asarray(value).astype(mstype.dtype_to_nptype(target.dtype))))
        o.step.set_data(Tensor(np.array([step], dtype=np.float32)))
        o.global_step.set_data(Tensor(np.array([step], dtype=np.int32)))

    def read(self) -> Snapshot:
        """CAME-STATE-2/3 by spec name; MindFormers' (1,)-shaped placeholders for unused tensors are left out.

        With beta1 = 0 MindFormers keeps one shared 0-D zero instead of exp_avg: it is broadcast to the
        parameter's shape (it never changes).  CAME-STATE-5: the step is Came's float32 ``step`` counter.
        """
        o, state = self.optim, []
        for i, p in enumerate(self.params):
            s = {}
            for name, shape in state_shapes(tuple(p.shape)).items():
                value = getattr(o, name)[i].asnumpy().astype(np.float64)
                if name == "exp_avg" and value.shape != shape and value.size == 1 and not o.use_first_moment:
                    value = np.broadcast_to(value.reshape(()), shape).copy()  # the beta1 = 0 placeholder only
                s[name] = value  # any other shape is reported as it is (CAME-STATE-2)
            state.append(s)
        return Snapshot([p.asnumpy().astype(np.float64) for p in self.params], state, int(o.step.asnumpy()[0]))

    def save(self) -> bytes:
        """Came's own checkpoint: parameters, every state tensor, afactor_step, global_step, learning rate."""
        path = os.path.join(tempfile.mkdtemp(dir=_SCRATCH), "came.ckpt")
        ms.save_checkpoint(self.optim, path)
        with open(path, "rb") as f:
            return f.read()

    def restore(self, blob: bytes) -> None:
        path = os.path.join(tempfile.mkdtemp(dir=_SCRATCH), "came.ckpt")
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
        """Build ``Came`` from canonical hyperparameters (CAME-HP-3); eps = (ε1, ε_scale, ε_insta)."""
        if hp.profile != "mindformers":
            raise NotApplicable("mindformers Came implements the mindformers profile only (β2_t rule) [CAME-HP-3]")
        if variant not in VARIANTS:
            raise NotApplicable(f"unknown variant {variant!r}; this target runs {VARIANTS}")
        if dtype not in MS_DTYPES:
            raise NotApplicable(f"{dtype} parameters: Came constructs but every step fails on CPU "
                                f"(no {dtype} kernel for Pow/TensorMove)" if dtype == "bfloat16" else
                                f"{dtype} parameters are not supported")
        if hp.loss_scale != int(hp.loss_scale):
            raise NotApplicable(f"loss_scale={hp.loss_scale}: Came accepts an int loss_scale only")
        ps = [Parameter(Tensor(np.asarray(p).astype(mstype.dtype_to_nptype(MS_DTYPES[dtype]))), name=f"p{i}")
              for i, p in enumerate(params)]
        arg = ps
        if hp.groups:  # CAME-GROUP-1, ordered by CAME-GROUP-2's order_params
            arg, grouped = [], set()
            for g in hp.groups:
                item = {"params": [ps[i] for i in g.params]}
                if g.learning_rate is not None:
                    item["lr"] = _lr(g.learning_rate)
                if g.weight_decay is not None:
                    item["weight_decay"] = float(g.weight_decay)
                arg.append(item)
                grouped.update(g.params)
            rest = [p for i, p in enumerate(ps) if i not in grouped]
            arg += ([{"params": rest}] if rest else []) + [{"order_params": ps}]
        _enter(variant)
        optim = Came(arg, learning_rate=None if hp.relative_step else _lr(hp.learning_rate),
                     eps=(float(hp.eps1), float(hp.eps_scale), float(hp.eps_insta)),
                     clip_threshold=float(hp.clip_threshold), decay_rate=float(hp.decay_rate),
                     beta1=float(hp.beta1), beta3=float(hp.beta3), weight_decay=float(hp.weight_decay),
                     scale_parameter=hp.scale_parameter, relative_step=hp.relative_step,
                     warmup_init=hp.warmup_init, compression=hp.compression, loss_scale=int(hp.loss_scale))
        return Session(optim, variant)

    def open_at(self, hp: Hyperparameters, params, state, step, dtype, variant) -> Session:
        session = self.open(hp, params, dtype, variant)
        session.load(state, step)
        return session

    def construct(self, kwargs, variant) -> Session:
        _enter(variant)
        return Session(Came(**kwargs), variant)


def factory() -> MindsporeAdapter:
    return MindsporeAdapter()
