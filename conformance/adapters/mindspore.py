"""Target ``mindspore``: the real ``mindformers.core.optim.Came`` (MindFormers 1.9.0, MindSpore 2.9.0, CPU).

Runs in ``.venvs/mindspore`` (numpy 1.26).  The evidence behind every choice is in
targets/mindspore/investigation.md.  Variants are ``<mode>-<path>``:

- mode ``graph``: ``GRAPH_MODE``, the optimizer cell compiled whole; ``pynative``: ``PYNATIVE_MODE``, where
  ``Came.construct`` is still compiled by its ``@jit``; ``eager``: ``PYNATIVE_MODE`` with ``MS_JIT=0``, op by op.
- path ``came``: ``_run_opt_with_one_number``, what a standalone ``Came`` runs (MindFormers' context reports
  device_target 'Ascend' unless ``build_context`` set 'CPU'); ``fused``: ``P.FusedAdaFactor``, what Came picks
  when MindFormers' context says CPU, reached here with Came's own switch ``optim.target = 'CPU'``.

Mode and ``MS_JIT`` are set before every call, so one worker process runs every variant.  The
generic MindSpore plumbing (modes, schedules, gradients, state by name, checkpoints) is the public
``adapters/mindspore_base.py``; this module adds what is particular to MindFormers' ``Came``.
"""
from __future__ import annotations

import numpy as np

from came_conformance.adapters import mindspore_base as base
from came_conformance.adapters.mindspore_base import mstype
from came_conformance.protocol import NotApplicable, TargetInfo
from came_conformance.reference.hyperparams import Hyperparameters

import mindformers  # noqa: E402
import mindspore as ms  # noqa: E402
from mindformers.core.optim import Came  # noqa: E402

VARIANTS = tuple(f"{m}-{p}" for p in ("came", "fused") for m in base.MODES)
# CAME-DTYPE-2: bfloat16 parameters construct but every step fails on CPU (no bf16 Pow/TensorMove kernel).
# float64 parameters run, but with float32 hyperparameters (eps, betas, lr, β2_t): float32 accuracy, so float64
# is not declared; the runner runs the float64 fixtures at float32 instead (investigation.md, "float64").
MS_DTYPES = {"float32": mstype.float32, "float16": mstype.float16}
#: CAME-DTYPE-4: float16 gradients of float32 parameters run (and round the float32 state through float16,
#: MS-MIXED-STATE-FLOAT16); bfloat16 gradients fail kernel selection on CPU (investigation.md "Mixed precision").
GRAD_DTYPES = {"float32": ("float16",), "float16": ("float32",)}
OPTIONS = frozenset({"weight_decay", "scale_parameter", "relative_step", "warmup_init", "compression", "loss_scale",
                     "groups", "lr_sequence", "lr_schedule", "rank0", "zero_size", "save_restore", "open_at",
                     "step_return"})


class Session(base.MindsporeSession):
    def __init__(self, optim: Came, variant: str, grad_dtype: str | None = None):
        if variant.endswith("-fused"):
            optim.target = "CPU"  # Came's own switch: use_fused_ada_factor = True
        super().__init__(optim, variant, grad_dtype)

    def state_tensor(self, name: str, index: int, shape: tuple) -> np.ndarray:
        """CAME-STATE-2/3 by spec name; MindFormers' (1,)-shaped placeholders for unused tensors are left out.

        With beta1 = 0 MindFormers keeps one shared 0-D zero instead of exp_avg: it is broadcast to the
        parameter's shape (it never changes).  Any other shape is reported as it is (CAME-STATE-2).
        """
        value = super().state_tensor(name, index, shape)
        if name == "exp_avg" and value.shape != shape and value.size == 1 and not self.optim.use_first_moment:
            value = np.broadcast_to(value.reshape(()), shape).copy()  # the beta1 = 0 placeholder only
        return value

    def load(self, state, step: int) -> None:
        """CAME-STATE-6; with beta1 = 0 the shared exp_avg placeholder is no state and is left alone."""
        if not self.optim.use_first_moment:
            state = [{k: v for k, v in tensors.items() if k != "exp_avg"} for tensors in state]
        super().load(state, step)

    def target_step(self) -> int:
        """CAME-STATE-5: Came's float32 ``step`` counter."""
        return int(self.optim.step.asnumpy()[0])


class MindsporeAdapter(base.MindsporeAdapter):
    Session = Session

    def describe(self) -> TargetInfo:
        # float16 parameters: state kept in float16; G², the EMAs' sums and θ's update in float32, but
        # F(r, c), F(R, C) and the direction in float16 (ops on float16 state and a float32 0-D tensor
        # stay float16): compute float16 (investigation.md "Dtypes"); hyperparameters are float32 Tensors.
        # Reductions: summation "pairwise" is a cover of what the CPU ReduceSum/ReduceMean do, not their
        # algorithm: no term is ever lost to a large partial sum and 2^22-term sums are within 1 ulp
        # (investigation.md "Reductions at scale"); without it a 2^24-term mean has no float32 bound.
        return TargetInfo(name="mindspore", profile="mindformers", api="mindformers",
                          versions={"mindspore": ms.__version__, "mindformers": mindformers.__version__,
                                    "numpy": np.__version__},
                          dtypes=tuple(MS_DTYPES), variants=VARIANTS, options=OPTIONS,
                          precision={"float32": {"summation": "pairwise"},
                                     "float16": {"compute": "float16", "summation": "pairwise"}},
                          grad_dtypes=GRAD_DTYPES)

    def open(self, hp: Hyperparameters, params, dtype, variant, grad_dtype=None) -> Session:
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
        return super().open(hp, params, dtype, variant, grad_dtype)

    def build(self, params, hp: Hyperparameters, variant: str) -> Came:
        return Came(params, learning_rate=None if hp.relative_step else base.learning_rate(hp.learning_rate),
                    eps=(float(hp.eps1), float(hp.eps_scale), float(hp.eps_insta)),
                    clip_threshold=float(hp.clip_threshold), decay_rate=float(hp.decay_rate),
                    beta1=float(hp.beta1), beta3=float(hp.beta3), weight_decay=float(hp.weight_decay),
                    scale_parameter=hp.scale_parameter, relative_step=hp.relative_step,
                    warmup_init=hp.warmup_init, compression=hp.compression, loss_scale=int(hp.loss_scale))

    def open_at(self, hp: Hyperparameters, params, state, step, dtype, variant) -> Session:
        """CAME-STATE-6: a session whose state and both step counters are set before its first step."""
        session = self.open(hp, params, dtype, variant)
        session.load(state, step)
        return session

    def construct_optimizer(self, kwargs, variant) -> Came:
        return Came(**kwargs)


def factory() -> MindsporeAdapter:
    return MindsporeAdapter()
