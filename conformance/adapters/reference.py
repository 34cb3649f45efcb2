"""Target ``reference``: the suite's own float64 reference, through the adapter protocol.

It must pass everything; it is also the worked example of an adapter (README "Adapter protocol").
Select the profile with ``reference`` (mindformers) or ``reference-paper``.
"""
from __future__ import annotations

import numpy as np

from came_conformance.protocol import Snapshot, TargetInfo, describe_return
from came_conformance.reference import front
from came_conformance.reference.dtypes import round_to
from came_conformance.reference.hyperparams import Hyperparameters
from came_conformance.reference.optimizer import CameState

ALL_OPTIONS = frozenset({"weight_decay", "scale_parameter", "relative_step", "warmup_init", "compression",
                         "loss_scale", "groups", "lr_sequence", "lr_schedule", "rank0", "zero_size", "save_restore",
                         "open_at", "step_return"})


class _Hooks:
    def parameter(self, value, name):
        return front.Parameter(np.array(value), name)  # its dtype as given: the front validates it (CAME-ERR-26)

    def tensor(self, value):
        return np.asarray(value)

    def schedule(self, lr):
        return lr


class Session:
    """The reference keeps float64 internally; outputs are rounded to the session dtype."""

    def __init__(self, optim: front._Front, dtype: str = "float64"):
        self.optim, self.dtype = optim, dtype
        optim.keep_traces = False  # the runner computes its own; a 4096 × 4096 trace is 2 GB

    def step(self, grads) -> dict:
        returned = self.optim.step(grads)
        if self.dtype != "float64":  # CAME-DTYPE-2: parameters are stored in their own dtype
            self.optim._values = tuple(round_to(self.dtype, v) for v in self.optim._values)
        return describe_return(returned)

    def read(self) -> Snapshot:
        state = self.optim.state
        return Snapshot([v.copy() for v in self.optim._values],
                        [{k: v.copy() for k, v in s.items()} for s in state.tensors], state.step)

    def save(self) -> bytes:
        snap = self.read()
        import io
        buf = io.BytesIO()
        arrays = {f"p{i}": p for i, p in enumerate(snap.params)}
        arrays.update({f"s{i}.{k}": v for i, s in enumerate(snap.state) for k, v in s.items()})
        np.savez(buf, step=np.array(snap.step), **arrays)
        return buf.getvalue()

    def restore(self, blob: bytes) -> None:
        import io
        data = np.load(io.BytesIO(blob))
        n = len(self.optim._values)
        self.optim._values = tuple(data[f"p{i}"] for i in range(n))
        tensors = tuple({k: data[f"s{i}.{k}"] for k in self.optim.state.tensors[i]} for i in range(n))
        self.optim.state = CameState(int(data["step"]), tensors)


class ReferenceAdapter:
    def __init__(self, profile: str = "mindformers"):
        self.profile = profile

    def describe(self) -> TargetInfo:
        dtypes = ("float64", "float32", "float16", "bfloat16")
        # float64 arithmetic and state for every parameter dtype; θ' rounded once into its dtype
        # (CAME-DTYPE-1, CAME-DTYPE-2).  Gradients of any dtype are read exactly (CAME-DTYPE-4).
        return TargetInfo(name="reference" if self.profile == "mindformers" else "reference-paper",
                          profile=self.profile, api=self.profile, versions={"numpy": np.__version__},
                          dtypes=dtypes, options=ALL_OPTIONS,
                          precision={d: {"state": "float64", "compute": "float64"} for d in dtypes},
                          grad_dtypes={d: tuple(g for g in dtypes if g != d) for d in dtypes})

    def native(self):
        return _Hooks()

    def open(self, hp: Hyperparameters, params, dtype, variant, grad_dtype=None) -> Session:
        optim = front.MindformersCame.__new__(front.MindformersCame)
        optim.hp = hp
        optim._start([front.Parameter(np.array(p, dtype=np.float64)) for p in params])
        return Session(optim, dtype)

    def open_at(self, hp: Hyperparameters, params, state, step, dtype, variant) -> Session:
        """CAME-STATE-6: the reference's counter is a Python int, exact at any t."""
        session = self.open(hp, params, dtype, variant)
        session.optim.state = CameState(int(step), tuple({k: np.array(v, dtype=np.float64) for k, v in s.items()}
                                                         for s in state))
        return session

    def construct(self, kwargs, variant) -> Session:
        cls = front.MindformersCame if self.profile == "mindformers" else front.PaperCame
        return Session(cls(**kwargs), "float32")  # constructor-made parameters are float32 (protocol)


def factory() -> ReferenceAdapter:
    return ReferenceAdapter("mindformers")


def paper_factory() -> ReferenceAdapter:
    return ReferenceAdapter("paper")
