"""Target ``pytorch-optimizer``: ``pytorch_optimizer.CAME`` (kozistr/pytorch_optimizer) on torch, CPU.

Profile and API ``paper`` (CAME-HP-2, CAME-BETA2-1).  Its constructor names differ from the paper
API's: ``construct`` maps ``eps=(ε1, ε_insta)`` onto ``eps1``/``eps2`` and passes ``lr``, ``betas``,
``clip_threshold`` and ``weight_decay`` as they are, so its errors are judged by the paper contract
(CAME-ERR-2 … CAME-ERR-23).  ``open`` keeps its extra options at the plain algorithm:
``weight_decouple=True, fixed_decay=False`` is exactly the spec's decoupled decay multiplied by lr (CAME-STEP-11), as
θ·(1 − η·λ); ``ams_bound=False``, ``maximize=False``.  State stays in the parameter's dtype.

Variants are its three execution paths: ``foreach`` (``foreach=None``, its default, which takes the
batched path on CPU too), ``eager`` (``foreach=False``, per-tensor loop) and ``compiled`` (the
batched step under ``torch.compile``, as ``create_optimizer(..., compile=True)`` sets it up; float16
batches stay uncompiled by its own rule).  Learning-rate sequences and schedules (CAME-LR-3,
CAME-LR-4) are run by writing ``group['lr']`` before each step, as ``torch.optim.lr_scheduler``
does.  Findings: targets/pytorch-optimizer/investigation.md.
"""
from __future__ import annotations

import importlib.metadata

import torch

from came_conformance.adapters import torch_base
from came_conformance.protocol import NotApplicable, TargetInfo
from came_conformance.reference.hyperparams import Hyperparameters

VARIANTS = {"foreach": None, "eager": False, "compiled": True}


class Session(torch_base.TorchSession):
    def target_step(self) -> int | None:
        """pytorch-optimizer counts steps per group (``group['step']``); every group steps every time."""
        return int(self.optim.param_groups[0].get("step", 0))


def _build(variant: str, **kwargs):
    from pytorch_optimizer import CAME

    if variant not in VARIANTS:
        raise NotApplicable(f"variant {variant!r}")
    optim = CAME(**kwargs, foreach=VARIANTS[variant])
    if variant == "compiled":
        import torch._dynamo.config as dynamo_config

        # Dynamo guards on the optimizer object, so every session recompiles; past the default limit
        # of 8 it would silently run uncompiled.  Raise the limit so each session really is compiled.
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 100_000)
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 100_000)
        optim._compile_foreach()
    return optim


class PytorchOptimizerAdapter(torch_base.TorchAdapter):
    Session = Session

    def describe(self) -> TargetInfo:
        return TargetInfo(
            name="pytorch-optimizer", profile="paper", api="paper",
            versions={"torch": torch.__version__, "pytorch-optimizer": importlib.metadata.version("pytorch-optimizer")},
            dtypes=("float64", "float32", "float16", "bfloat16"), variants=tuple(VARIANTS), options=torch_base.OPTIONS,
            precision=torch_base.precision(("float64", "float32", "float16", "bfloat16")))

    def build(self, groups, hp: Hyperparameters, variant: str):
        """``CAME`` from canonical hyperparameters (CAME-HP-1, CAME-GROUP-1, CAME-STEP-11)."""
        return _build(variant, params=groups, lr=torch_base.initial_lr(hp), betas=(hp.beta1, hp.beta2, hp.beta3),
                      weight_decay=hp.weight_decay, weight_decouple=True, fixed_decay=False,
                      clip_threshold=hp.clip_threshold, ams_bound=False, eps1=hp.eps1, eps2=hp.eps_insta,
                      maximize=False)

    def open_at(self, hp: Hyperparameters, params, state, step, dtype, variant):
        """CAME-STATE-6: group['step'] is a per-group Python int; the state is in the parameter's dtype."""
        session = self.open(hp, params, dtype, variant)
        session.load(state, step, lambda p: p.dtype, {"RMS": 0.0})
        for group in session.optim.param_groups:
            group["step"] = int(step)
        return session

    def construct_optimizer(self, kwargs, variant):
        """The paper API's arguments under this package's names; errors propagate (CAME-ERR-2 … CAME-ERR-23).

        An ``eps`` that is not a pair cannot be expressed (the package has no ``eps`` argument), so it is
        ``NotApplicable``; every other argument, including unknown ones, is passed through unchanged.
        """
        kwargs = dict(kwargs)
        if "eps" in kwargs:
            eps = kwargs.pop("eps")
            if not isinstance(eps, (list, tuple)) or len(eps) != 2:
                raise NotApplicable(f"eps={eps!r}: pytorch-optimizer has eps1 and eps2, no eps; only a pair maps")
            kwargs["eps1"], kwargs["eps2"] = eps
        return _build(variant, **kwargs)


def factory() -> PytorchOptimizerAdapter:
    return PytorchOptimizerAdapter()
