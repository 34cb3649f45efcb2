"""Target ``came-pytorch``: the official ``came_pytorch.CAME`` (yangluo7/CAME) on torch, CPU.

Profile and API ``paper`` (CAME-HP-2, CAME-BETA2-1): constant β2 from ``betas``, decoupled weight
decay multiplied by lr (CAME-STEP-11).  Half-precision parameters (float16, bfloat16) get their
gradients upcast to float32 and float32 state; the parameter itself is updated in place in its own
dtype (CAME-DTYPE-2, CAME-DTYPE-3).  Learning-rate sequences and schedules (CAME-LR-3, CAME-LR-4)
are run the way torch users run them, by writing ``group['lr']`` before each step as
``torch.optim.lr_scheduler`` does.  Findings: targets/came-pytorch/investigation.md.
"""
from __future__ import annotations

import importlib.metadata

import torch

from came_conformance.adapters import torch_base
from came_conformance.protocol import NotApplicable, TargetInfo
from came_conformance.reference.hyperparams import Hyperparameters


class Session(torch_base.TorchSession):
    def target_step(self) -> int | None:
        """came-pytorch counts steps per parameter (``state['step']``); all of ours step together."""
        steps = [self.optim.state[p]["step"] for p in self.tensors if "step" in self.optim.state.get(p, {})]
        return int(steps[0]) if steps else 0


class CamePytorchAdapter(torch_base.TorchAdapter):
    Session = Session

    def describe(self) -> TargetInfo:
        return TargetInfo(
            name="came-pytorch", profile="paper", api="paper",
            versions={"torch": torch.__version__, "came-pytorch": importlib.metadata.version("came-pytorch")},
            dtypes=("float64", "float32", "float16", "bfloat16"), variants=("default",),
            options=torch_base.OPTIONS,
            precision=torch_base.precision(("float64", "float32", "float16", "bfloat16"),
                                           {"float16": "float32", "bfloat16": "float32"}))

    def build(self, groups, hp: Hyperparameters, variant: str):
        """``CAME`` from canonical hyperparameters (CAME-HP-1, CAME-GROUP-1)."""
        from came_pytorch import CAME

        if variant != "default":
            raise NotApplicable(f"variant {variant!r}")
        return CAME(groups, lr=torch_base.initial_lr(hp), eps=(hp.eps1, hp.eps_insta),
                    clip_threshold=hp.clip_threshold, betas=(hp.beta1, hp.beta2, hp.beta3),
                    weight_decay=hp.weight_decay)

    def open_at(self, hp: Hyperparameters, params, state, step, dtype, variant):
        """CAME-STATE-6: state['step'] is a per-parameter Python int; half-precision parameters keep float32 state."""
        session = self.open(hp, params, dtype, variant)
        session.load(state, step, lambda p: torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype,
                     {"step": int(step), "RMS": 0})
        return session

    def construct_optimizer(self, kwargs, variant):
        """The documented constructor, called as given: its ``assert``s are its error behaviour.

        Judged by the paper rows of the error contract (CAME-ERR-2 … CAME-ERR-23).
        """
        from came_pytorch import CAME

        return CAME(**kwargs)


def factory() -> CamePytorchAdapter:
    return CamePytorchAdapter()
