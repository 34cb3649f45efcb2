"""The public base of PyTorch adapters (README "Adapter protocol"; built-ins: came_pytorch, pytorch_optimizer).

A torch target is a subclass of ``TorchAdapter`` with three methods: ``describe()`` (its
``TargetInfo``), ``build(groups, hp, variant)`` (the optimizer over torch parameter groups, from
canonical hyperparameters) and ``construct_optimizer(kwargs, variant)`` (its documented
constructor, called as given).  ``python -m came_conformance new-adapter --framework torch NAME``
writes one.  What the base does for it:

- canonical ``Hyperparameters`` become torch parameter groups (CAME-GROUP-1), parameters are
  made in the case's dtype (``make_tensors``);
- the learning rate is driven from outside, as torch users do with ``torch.optim.lr_scheduler``:
  before step t the session writes η_t = ``hp.lr_at(t, group)`` into every ``group['lr']``
  (CAME-LR-2, CAME-LR-3, CAME-LR-4);
- gradients arrive as a list in canonical order (the case's parameter order for ``open``, the
  order of the constructor's ``params`` for ``construct``) and become each parameter's ``.grad``;
- state is read back under the spec's names (CAME-STATE-2, CAME-STATE-3) as exact float64
  copies (``STATE_NAMES`` maps the official code's names); ``save``/``restore`` go through
  ``torch.save`` of ``optimizer.state_dict()`` (CAME-STATE-5).
"""
from __future__ import annotations

import io

import numpy as np
import torch

from came_conformance.protocol import NotApplicable, Snapshot, TargetInfo, describe_return
from came_conformance.reference.hyperparams import Hyperparameters
from came_conformance.reference.step import init_state

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                "bfloat16": torch.bfloat16}
#: The packages' state names -> the spec's (CAME-STATE-2); other entries (step, RMS) are not state.
STATE_NAMES = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "exp_avg_sq_row": "exp_avg_sq_row",
               "exp_avg_sq_col": "exp_avg_sq_col", "exp_avg_res_row": "exp_avg_insta_row",
               "exp_avg_res_col": "exp_avg_insta_col"}
SPEC_TO_TORCH = {spec: torch_name for torch_name, spec in STATE_NAMES.items()}
#: CAME-DEF-1's RMS is ``x.norm(2) / sqrt(numel)`` in these ports, and torch's CPU norm of a float32
#: tensor adds each of 8 vector lanes in turn: of 1 followed by 2^24 − 1 terms of 2^-24 it loses the
#: eighth that shares the 1's lane (1.875 for 2.0), and 2^24-term norms are off by up to 1e-3 relative
#: (targets/came-pytorch/investigation.md "Reductions at scale").  "lanes:8" is that order; it also
#: covers the cascade sums of ``mean``.  Without it a 2^24-term RMS has no float32 bound.
SUMMATION = "lanes:8"


def precision(dtypes, state_dtype: dict | None = None) -> dict:
    """TargetInfo.precision of a torch port: its reductions' order (``SUMMATION``), its state's dtype."""
    return {d: {"summation": SUMMATION, **({"state": state_dtype[d]} if state_dtype and d in state_dtype else {})}
            for d in dtypes}


#: What a paper-profile torch target can express: not CAME-OPT-1 … CAME-OPT-5 (MindFormers options).
OPTIONS = frozenset({"weight_decay", "groups", "lr_sequence", "lr_schedule", "rank0", "zero_size", "save_restore",
                     "open_at", "step_return"})


class Hooks:
    """Native objects for decoded constructor arguments (conformance.arguments)."""

    def parameter(self, value, name):
        value = np.asarray(value)
        if value.dtype.kind == "c":  # torch has complex Parameters: the optimizer decides (CAME-ERR-26)
            return torch.nn.Parameter(torch.tensor(value))
        if value.dtype.kind != "f":
            raise NotApplicable(f"torch cannot make a {value.dtype} Parameter: only floating and complex tensors "
                                f"can require gradients")
        return torch.nn.Parameter(torch.tensor(value, dtype=torch.float32))

    def tensor(self, value):
        return torch.tensor(np.asarray(value))

    def schedule(self, lr):
        raise NotApplicable("lr schedules are not constructor arguments in torch (torch.optim.lr_scheduler "
                            "objects wrap the optimizer after construction)")


def check_paper(hp: Hyperparameters) -> None:
    """Only the paper profile (CAME-HP-2, CAME-BETA2-1) without MindFormers' options (CAME-OPT-1..5)."""
    if hp.profile != "paper":
        raise NotApplicable(f"profile {hp.profile!r}: this target implements the paper profile only")
    for name in ("scale_parameter", "relative_step", "warmup_init", "compression"):
        if getattr(hp, name):
            raise NotApplicable(f"{name}: not an option of this target")
    if hp.loss_scale != 1.0:
        raise NotApplicable("loss_scale: not an option of this target")


def make_tensors(params, dtype: str) -> list[torch.Tensor]:
    if dtype not in TORCH_DTYPES:
        raise NotApplicable(f"dtype {dtype!r}")
    return [torch.tensor(np.asarray(p, dtype=np.float64)).to(TORCH_DTYPES[dtype]).requires_grad_(True)
            for p in params]


def param_groups(hp: Hyperparameters, tensors: list[torch.Tensor]):
    """Torch groups for the canonical groups (CAME-GROUP-1), and each group's canonical ``Group``."""
    groups, owners, grouped = [], [], set()
    for g in hp.groups:
        entry = {"params": [tensors[i] for i in g.params]}
        if g.weight_decay is not None:
            entry["weight_decay"] = g.weight_decay
        groups.append(entry)
        owners.append(g)
        grouped.update(g.params)
    rest = [t for i, t in enumerate(tensors) if i not in grouped]
    if rest:
        groups.insert(0, {"params": rest})
        owners.insert(0, None)
    return groups, owners


def initial_lr(hp: Hyperparameters) -> float:
    """The constructor's lr: η_1 when valid, else a placeholder overwritten before the first step."""
    try:
        lr = hp.lr_at(1)
    except ValueError:
        return 1.0
    return lr if lr > 0 else 1.0


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


class TorchSession:
    """One optimizer over ``tensors``; ``hp``/``owners`` set means the session drives η_t."""

    def __init__(self, optim, tensors, hp=None, owners=None):
        self.optim, self.tensors, self.hp, self.owners, self.t = optim, tensors, hp, owners, 0

    def step(self, grads) -> dict:
        if not isinstance(grads, (list, tuple)):
            raise NotApplicable("torch optimizers take no gradients argument: there is no container to get wrong "
                                "(CAME-ERR-S4)")
        grads = list(grads)
        if len(grads) != len(self.tensors):
            raise NotApplicable("torch optimizers take no gradient list: each parameter carries its own .grad, "
                                "so a gradient count cannot mismatch (CAME-ERR-S1)")
        for p, g in zip(self.tensors, grads):
            g = np.asarray(g)
            grad = torch.from_numpy(g.copy())
            # Float gradients arrive in float64 and are made the parameter's dtype; others pass as they
            # are, and torch's own p.grad assignment checks shape and dtype (CAME-ERR-S2, CAME-ERR-S3).
            p.grad = grad.to(p.dtype) if g.dtype.kind == "f" else grad
        if self.hp is not None:
            for group, owner in zip(self.optim.param_groups, self.owners):
                try:
                    group["lr"] = self.hp.lr_at(self.t + 1, owner)
                except ValueError as exc:  # CAME-LR-3: an adapter-driven sequence cannot run out in torch
                    raise NotApplicable(f"learning-rate sequence exhausted ({exc}); torch has no sequence") from exc
        returned = self.optim.step()  # CAME-RETURN-1: the closure's loss, None without one
        self.t += 1
        return describe_return(returned)

    def load(self, state, step: int, state_dtype, extra: dict) -> None:
        """CAME-STATE-6: the spec's state tensors under the package's names (in ``state_dtype(p)``), ``extra``
        entries per parameter (its counter, RMS), and the session's own step count for the learning rate."""
        for p, tensors in zip(self.tensors, state):
            dtype = state_dtype(p)
            self.optim.state[p] = {**{SPEC_TO_TORCH[k]: torch.tensor(np.asarray(v, np.float64)).to(dtype)
                                      for k, v in tensors.items()}, **extra}
        self.t = step

    def target_step(self) -> int | None:
        return None

    def read(self) -> Snapshot:
        states = []
        for p in self.tensors:
            raw = self.optim.state.get(p, {})
            state = {STATE_NAMES[k]: _f64(v) for k, v in raw.items() if k in STATE_NAMES}
            states.append(state or init_state(tuple(p.shape)))
        return Snapshot([_f64(p) for p in self.tensors], states, self.target_step())

    def save(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"params": [p.detach().clone() for p in self.tensors], "optimizer": self.optim.state_dict(),
                    "scheduler": {"t": self.t}}, buf)
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        data = torch.load(io.BytesIO(blob), weights_only=True)
        with torch.no_grad():
            for p, v in zip(self.tensors, data["params"]):
                p.copy_(v)
        self.optim.load_state_dict(data["optimizer"])
        self.t = data["scheduler"]["t"]


def constructed_tensors(optim) -> list[torch.Tensor]:
    """The parameters of an optimizer built by its documented constructor, in canonical order."""
    return [p for group in optim.param_groups for p in group["params"]]


class TorchAdapter:
    """An adapter (conformance.protocol.Adapter) for a torch optimizer of the paper API.

    Subclasses implement ``describe``, ``build`` and ``construct_optimizer``; ``Session`` may be a
    ``TorchSession`` subclass whose ``target_step`` reads the optimizer's step counter.
    """

    Session = TorchSession

    def describe(self) -> TargetInfo:
        raise NotImplementedError

    def build(self, groups: list[dict], hp: Hyperparameters, variant: str):
        """The optimizer over torch ``groups`` (from ``param_groups``) for canonical ``hp``.

        ``lr`` given to the constructor is a placeholder (``initial_lr(hp)``): the session writes
        η_t before every step.  Raise ``NotApplicable`` for what the optimizer cannot express.
        """
        raise NotImplementedError

    def construct_optimizer(self, kwargs: dict, variant: str):
        """The documented constructor with these decoded keyword arguments; let it raise."""
        raise NotImplementedError

    def check(self, hp: Hyperparameters) -> None:
        """Refuse what the optimizer cannot express; default: the paper profile only (``check_paper``)."""
        check_paper(hp)

    def native(self) -> Hooks:
        return Hooks()

    def open(self, hp: Hyperparameters, params, dtype: str, variant: str) -> TorchSession:
        self.check(hp)
        tensors = make_tensors(params, dtype)
        groups, owners = param_groups(hp, tensors)
        return self.Session(self.build(groups, hp, variant), tensors, hp, owners)

    def construct(self, kwargs: dict, variant: str) -> TorchSession:
        optim = self.construct_optimizer(kwargs, variant)
        return self.Session(optim, constructed_tensors(optim))
