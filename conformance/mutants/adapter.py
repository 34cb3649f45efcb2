"""The adapter of the mutant port (conformance.protocol), one instance per mutant and profile.

It drives ``conformance.mutants.port`` exactly as a vendor's adapter drives a framework: canonical
``Hyperparameters`` become the documented constructor's arguments (``Came`` for the mindformers
profile, ``CAME`` for the paper profile) with parameter groups for ``hp.groups`` (CAME-GROUP-1);
constructor calls of error cases go to the same constructors (CAME-ERR-*).  For the paper API,
whose ``lr`` is a number, learning-rate sequences and schedules are run torch-style: the session
writes ``group['lr']`` before each step (CAME-LR-2 … CAME-LR-4).
"""
from __future__ import annotations

import pickle

import numpy as np

from came_conformance.mutants import port
from came_conformance.protocol import NotApplicable, Snapshot, TargetInfo, describe_return
from came_conformance.reference.hyperparams import Hyperparameters, LearningRate

#: The spec's state names (CAME-STATE-2, CAME-STATE-3); anything else a port keeps is private.
SPEC_STATE = ("exp_avg", "exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_insta_row",
              "exp_avg_insta_col")
ALL_OPTIONS = frozenset({"weight_decay", "scale_parameter", "relative_step", "warmup_init", "compression",
                         "loss_scale", "groups", "lr_sequence", "lr_schedule", "rank0", "zero_size", "save_restore",
                         "open_at", "step_return"})
PAPER_OPTIONS = frozenset({"weight_decay", "groups", "lr_sequence", "lr_schedule", "rank0", "zero_size",
                           "save_restore", "open_at", "step_return"})


class Hooks:
    """Native objects for decoded constructor arguments (conformance.arguments)."""

    def parameter(self, value, name):  # constructor-made parameters are float32 (adapter protocol); another
        return port.Parameter(np.asarray(value), name, "float32")  # kind of value as given: the optimizer decides

    def tensor(self, value):
        return np.asarray(value)

    def schedule(self, lr: LearningRate):
        p = dict(lr.params)
        if lr.schedule == "exponential":
            return port.ExponentialDecayLR(p["base"], p["gamma"])
        if lr.schedule == "warmup_linear":
            return port.WarmUpLR(p["base"], p["warmup_steps"])
        raise NotApplicable(f"schedule {lr.schedule!r}")


class Session:
    """One port optimizer.  ``order[k]`` is the case index of the port's k-th parameter."""

    def __init__(self, optim, order=None, hp: Hyperparameters | None = None, owners=None):
        self.optim, self.hp, self.owners, self.t = optim, hp, owners, 0
        n = len(optim.parameters())
        self.order = list(order) if order is not None else list(range(n))

    def step(self, grads) -> dict:
        if isinstance(grads, (list, tuple)) and len(grads) == len(self.order):  # anything else goes as it is
            grads = [grads[i] for i in self.order]
        if self.hp is not None:  # paper API: the scheduler writes group['lr'] (torch style)
            for group, owner in zip(self.optim.param_groups, self.owners):
                group["lr"] = self.hp.lr_at(self.t + 1, owner)
        returned = self.optim.step(grads)
        self.t += 1
        return describe_return(returned)

    def load(self, state, step: int) -> None:
        """CAME-STATE-6: the state tensors by spec name and the counter, as if ``step`` steps had been taken."""
        params = self.optim.parameters()
        saved = self.optim.state_dict()
        for k in range(len(params)):
            saved["state"][k].update({name: np.array(v, dtype=np.float64) for name, v in state[self.order[k]].items()})
            if "step" in saved["state"][k]:  # per-parameter counters of a port that keeps them
                saved["state"][k]["step"] = np.array(float(step))
        saved["global_step"] = step
        self.optim.load_state_dict(saved)
        self.t = step

    def read(self) -> Snapshot:
        params = self.optim.parameters()
        n = len(params)
        out_params: list = [None] * n
        out_state: list = [None] * n
        for k, p in enumerate(params):
            i = self.order[k]
            out_params[i] = p.data.copy()
            out_state[i] = {name: np.array(v, dtype=np.float64) for name, v in self.optim.state[id(p)].items()
                            if name in SPEC_STATE}
        return Snapshot(out_params, out_state, int(self.optim.global_step))

    def save(self) -> bytes:
        return pickle.dumps({"optimizer": self.optim.state_dict(), "t": self.t})

    def restore(self, blob: bytes) -> None:
        data = pickle.loads(blob)
        self.optim.load_state_dict(data["optimizer"])
        self.t = data["t"]


def _lr_argument(lr: LearningRate | None, hooks: Hooks):
    if lr is None:
        return None
    if lr.kind == "constant":
        return lr.value
    if lr.kind == "sequence":
        return list(lr.values)
    return hooks.schedule(lr)


DTYPES = ("float64", "float32", "float16", "bfloat16")
#: The per-dtype designs of ``MutantAdapter(computing=dtype)`` (docs/mutation.md "Per dtype"):
#: (state, compute) for parameters of that dtype.  float16 arithmetic loses ε1 and ε_insta and float16
#: state overflows (CAME-DTYPE-3), so the float16 port is came-pytorch's design: float32 state and
#: arithmetic, float16 parameters.  bfloat16 has float32's range: state and arithmetic in bfloat16.
PER_DTYPE = {"float32": ("float32", "float32"), "float16": ("float32", "float32"),
             "bfloat16": ("bfloat16", "bfloat16")}


class MutantAdapter:
    """``computing``: None for float64 arithmetic and state for every dtype; or one dtype of ``PER_DTYPE``,
    the only parameter dtype the port then takes, computed as that entry says (scalars in float32)."""

    def __init__(self, name: str, profile: str, bugs=frozenset(), computing: str | None = None):
        if profile not in ("mindformers", "paper"):
            raise ValueError(f"profile {profile!r}")
        if computing is not None and computing not in PER_DTYPE:
            raise ValueError(f"computing {computing!r}: one of {sorted(PER_DTYPE)}")
        self.name, self.profile, self.bugs, self.computing = name, profile, frozenset(bugs), computing

    def rounding(self) -> port.Rounding:
        if self.computing is None:
            return port.Rounding()
        state, compute = PER_DTYPE[self.computing]
        return port.Rounding(compute=compute, state=state, scalars="float32")

    def describe(self) -> TargetInfo:
        if self.computing is None:
            dtypes, precision = DTYPES, {d: {"state": "float64", "compute": "float64"} for d in DTYPES}
        else:
            state, compute = PER_DTYPE[self.computing]
            dtypes = (self.computing,)
            # reductions: a float64 NumPy sum, then one rounding (any order is within that bound)
            precision = {self.computing: {"state": state, "compute": compute, "scalars": "float32",
                                          "accumulate": "float64"}}
        return TargetInfo(name=f"mutant:{self.name}", profile=self.profile, api=self.profile,
                          versions={"numpy": np.__version__, "port": "came_conformance.mutants.port",
                                    "switches": ",".join(sorted(self.bugs)) or "none",
                                    "computing": self.computing or "float64"},
                          dtypes=dtypes, options=ALL_OPTIONS if self.profile == "mindformers" else PAPER_OPTIONS,
                          precision=precision, grad_dtypes={d: tuple(g for g in DTYPES if g != d) for d in dtypes})

    def native(self) -> Hooks:
        return Hooks()

    def _params_argument(self, hp: Hyperparameters, params, dtype, hooks, grad_dtype=None):
        """The ``params`` argument: one group dict per canonical group, the rest bare (CAME-GROUP-1)."""
        tensors = [port.Parameter(np.asarray(p, np.float64), f"p{i}", dtype, grad_dtype) for i, p in enumerate(params)]
        items, order, owners, grouped = [], [], [], set()
        for g in hp.groups:
            entry = {"params": [tensors[i] for i in g.params]}
            if g.learning_rate is not None:
                entry["lr"] = _lr_argument(g.learning_rate, hooks) if self.profile == "mindformers" \
                    else hp.lr_at(1, g)
            if g.weight_decay is not None:
                entry["weight_decay"] = g.weight_decay
            items.append(entry)
            owners.append(g)
            order.extend(g.params)
            grouped.update(g.params)
        rest = [i for i in range(len(tensors)) if i not in grouped]
        if rest:  # in a group of their own: a list mixing parameters and groups is an error (CAME-ERR-27)
            if items:
                items.append({"params": [tensors[i] for i in rest]})
            else:
                items.extend(tensors[i] for i in rest)
            owners.append(None)
            order.extend(rest)
        return items, order, owners

    def open(self, hp: Hyperparameters, params, dtype, variant, grad_dtype=None) -> Session:
        if variant != "default":
            raise NotApplicable(f"variant {variant!r}")
        if hp.profile != self.profile:
            raise NotApplicable(f"profile {hp.profile!r}")
        hooks = self.native()
        items, order, owners = self._params_argument(hp, params, dtype, hooks, grad_dtype)
        if self.profile == "mindformers":
            optim = port.Came(items, learning_rate=None if hp.relative_step else _lr_argument(hp.learning_rate, hooks),
                              eps=(hp.eps1, hp.eps_scale, hp.eps_insta), clip_threshold=hp.clip_threshold,
                              decay_rate=hp.decay_rate, beta1=hp.beta1, beta3=hp.beta3, weight_decay=hp.weight_decay,
                              scale_parameter=hp.scale_parameter, relative_step=hp.relative_step,
                              warmup_init=hp.warmup_init, compression=hp.compression, loss_scale=hp.loss_scale,
                              bugs=self.bugs, rounding=self.rounding())
            return Session(optim, order)
        for option in ("scale_parameter", "relative_step", "warmup_init", "compression"):
            if getattr(hp, option):
                raise NotApplicable(f"{option}: not an option of the paper API")
        if hp.loss_scale != 1.0:
            raise NotApplicable("loss_scale: not an option of the paper API")
        try:
            lr = hp.lr_at(1)
        except ValueError:
            lr = 0.0
        optim = port.CAME(items, lr=lr, eps=(hp.eps1, hp.eps_insta), clip_threshold=hp.clip_threshold,
                          betas=(hp.beta1, hp.beta2, hp.beta3), weight_decay=hp.weight_decay, bugs=self.bugs,
                          rounding=self.rounding())
        if len(optim.param_groups) != len(owners):
            raise AssertionError("parameter groups do not line up with the canonical groups")
        return Session(optim, order, hp, owners)

    def open_at(self, hp: Hyperparameters, params, state, step, dtype, variant) -> Session:
        session = self.open(hp, params, dtype, variant)
        session.load(state, step)
        return session

    def construct(self, kwargs, variant) -> Session:
        if variant != "default":
            raise NotApplicable(f"variant {variant!r}")
        return Session(port.constructor(self.profile, self.bugs, self.rounding())(**kwargs))
