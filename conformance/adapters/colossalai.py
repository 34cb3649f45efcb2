"""Target ``colossalai``: ColossalAI 0.5.0's ``colossalai.nn.optimizer.CAME``, single process, CPU.

ColossalAI's file says it is copied from the official ``came_pytorch/CAME.py``; it is run here as
the official one is (``came_pytorch.py``): profile and API ``paper`` (CAME-HP-2, CAME-BETA2-1),
torch parameter groups (CAME-GROUP-1), ``group['lr']`` written before each step for sequences and
schedules (CAME-LR-3, CAME-LR-4).  Unlike the official code it does not upcast half-precision
gradients: its state is kept in the parameter's dtype (CAME-DTYPE-3).  Its environment is
``.venvs/colossalai`` (``make setup-colossalai``).  Findings: targets/colossalai/investigation.md.
"""
from __future__ import annotations

import importlib.metadata

import torch

from came_conformance.adapters import torch_base as common
from came_conformance.protocol import NotApplicable, TargetInfo
from came_conformance.reference.hyperparams import Hyperparameters


class Session(common.TorchSession):
    def target_step(self) -> int | None:
        """ColossalAI's CAME counts steps per parameter (``state['step']``), as the official code does."""
        steps = [self.optim.state[p]["step"] for p in self.tensors if "step" in self.optim.state.get(p, {})]
        return int(steps[0]) if steps else 0


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "colossalai": importlib.metadata.version("colossalai")}


class ColossalAIAdapter:
    def describe(self) -> TargetInfo:
        return TargetInfo(name="colossalai", profile="paper", api="paper", versions=versions(),
                          dtypes=("float64", "float32", "float16", "bfloat16"), variants=("default",),
                          options=common.OPTIONS,
                          precision=common.precision(("float64", "float32", "float16", "bfloat16")))

    def native(self):
        return common.Hooks()

    def open(self, hp: Hyperparameters, params, dtype, variant) -> Session:
        from colossalai.nn.optimizer import CAME

        if variant != "default":
            raise NotApplicable(f"variant {variant!r}")
        common.check_paper(hp)
        tensors = common.make_tensors(params, dtype)
        groups, owners = common.param_groups(hp, tensors)
        optim = CAME(groups, lr=common.initial_lr(hp), eps=(hp.eps1, hp.eps_insta), clip_threshold=hp.clip_threshold,
                     betas=(hp.beta1, hp.beta2, hp.beta3), weight_decay=hp.weight_decay)
        return Session(optim, tensors, hp, owners)

    def open_at(self, hp: Hyperparameters, params, state, step, dtype, variant) -> Session:
        """CAME-STATE-6: ``state['step']`` is a per-parameter Python int; the state is in the parameter's dtype
        (ColossalAI's CAME does not upcast half precision)."""
        session = self.open(hp, params, dtype, variant)
        session.load(state, step, lambda p: p.dtype, {"step": int(step), "RMS": 0})
        return session

    def construct(self, kwargs, variant) -> Session:
        """The documented constructor as given (its ``assert``s are its error behaviour, CAME-ERR-2 … CAME-ERR-23)."""
        from colossalai.nn.optimizer import CAME

        optim = CAME(**kwargs)
        return Session(optim, common.constructed_tensors(optim))


def factory() -> ColossalAIAdapter:
    return ColossalAIAdapter()
