"""The adapter protocol: what the suite needs from a target optimizer (README "Adapter protocol").

A target is a module attribute ``factory`` (or any ``module:callable``) that returns an
``Adapter``.  The adapter runs in a worker process of its own (``conformance.worker``), so it may
live in another Python environment, crash or hang without taking the run down.

Everything crosses the process boundary as plain data: NumPy float64 arrays, ``Hyperparameters``
JSON, and the argument encoding of ``conformance.arguments``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from came_conformance.reference.hyperparams import Hyperparameters

#: Options a case may require; a target lists the ones it can express (CAME-OPT-*).
OPTIONS = (
    "weight_decay",      # CAME-STEP-11
    "scale_parameter",   # CAME-OPT-1
    "relative_step",     # CAME-OPT-2
    "warmup_init",       # CAME-OPT-3
    "compression",       # CAME-OPT-5
    "loss_scale",        # CAME-OPT-4
    "groups",            # CAME-GROUP-1
    "lr_sequence",       # CAME-LR-3
    "lr_schedule",       # CAME-LR-4
    "rank0",             # CAME-STATE-3, 0-D parameters
    "zero_size",         # CAME-ZERO-1
    "save_restore",      # save and resume mid-trajectory
    "open_at",           # CAME-STATE-6: open a session at step counter t0 with given state (Adapter.open_at)
    "step_return",       # CAME-RETURN-1: Session.step returns describe_return(what the target's step returned)
)


@dataclass(frozen=True)
class TargetInfo:
    """What a target declares about itself; the report prints it."""

    name: str
    profile: str  # "paper" or "mindformers": which canonical defaults and β2 rule it implements
    api: str  # "paper" or "mindformers": whose documented constructor it exposes (error contract)
    versions: dict[str, str]
    dtypes: tuple[str, ...]  # parameter dtypes it supports, from reference.dtypes.DTYPES
    variants: tuple[str, ...] = ("default",)  # execution paths, each run as its own column
    options: frozenset[str] = field(default_factory=frozenset)
    # State tensors the target keeps at a dtype other than the parameter's, by dtype; "float32"
    # means "float32 whatever the parameter dtype" (e.g. upcast state for half parameters).
    state_dtype: dict[str, str] = field(default_factory=dict)
    # A sharded target (spec §9) lists its world sizes; its variants are then <layout mode>-w<world
    # size> (conformance.distributed.layout) and it runs under the rank harness.
    world_sizes: tuple[int, ...] = ()
    # Per execution variant, where it differs from the target-wide declaration: that variant's
    # options and dtypes (e.g. variant_dtypes={"compiled": ("float32",)}); a variant named in
    # neither has ``options`` and ``dtypes``.
    variant_options: dict[str, frozenset[str]] = field(default_factory=dict)
    variant_dtypes: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def options_for(self, variant: str) -> frozenset[str]:
        return frozenset(self.variant_options.get(variant, self.options))

    def dtypes_for(self, variant: str) -> tuple[str, ...]:
        return tuple(self.variant_dtypes.get(variant, self.dtypes))

    def problems(self) -> list[str]:
        """What is wrong with this declaration (the runner refuses a target with any)."""
        from came_conformance.reference.dtypes import DTYPES

        out = [f"variants: {v!r} in {name} is not one of variants {list(self.variants)}"
               for name in ("variant_options", "variant_dtypes") for v in getattr(self, name) if v not in self.variants]
        for where, options in [("options", self.options), *((f"variant_options[{v!r}]", o)
                                                            for v, o in self.variant_options.items())]:
            out += [f"{where}: unknown option {o!r} (conformance.protocol.OPTIONS)" for o in sorted(set(options) - set(OPTIONS))]
        for where, dtypes in [("dtypes", self.dtypes), *((f"variant_dtypes[{v!r}]", d)
                                                          for v, d in self.variant_dtypes.items())]:
            if isinstance(dtypes, str) or not dtypes:
                out.append(f"{where}: a non-empty tuple of dtypes, got {dtypes!r}")
            else:
                out += [f"{where}: unknown dtype {d!r} (one of {list(DTYPES)})" for d in dtypes if d not in DTYPES]
        return out
    # How it computes each parameter dtype (CAME-DTYPE-3, CAME-DTYPE-5; conformance.precision): any of
    # "state", "compute", "scalars", "accumulate" (dtype names) and "summation" ("recursive", "pairwise",
    # "pairwise:B", "blocked:B").  Left out: state from state_dtype, compute = state, scalars and
    # accumulate the finer of compute and float32, summation "recursive".
    precision: dict[str, dict[str, str]] = field(default_factory=dict)
    # Gradient dtypes it accepts besides the parameter's own, by parameter dtype (CAME-DTYPE-4), e.g.
    # {"float32": ("float16", "bfloat16")} for automatic mixed precision.
    grad_dtypes: dict[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass
class Snapshot:
    """Parameters and every state tensor, by spec names, as exact float64 copies."""

    params: list[np.ndarray]
    state: list[dict[str, np.ndarray]]
    step: int | None = None  # the target's step counter, if it exposes one


class Session(Protocol):
    def step(self, grads: list[np.ndarray]) -> dict | None:
        """One optimizer step with these gradients (float64 values exact in the session's dtype).

        For step-phase error cases the gradients may be wrong on purpose (count, shape, dtype, or
        not a list at all); convert them faithfully and let the target raise.  With option
        ``step_return``, return ``describe_return(what the target's step call returned)``.
        """

    def read(self) -> Snapshot:
        """Parameters and state after the last step, by the spec's state names (CAME-STATE-2/3)."""

    def save(self) -> bytes:  # optional, with option "save_restore"
        """The target's own serialised state (its checkpoint format)."""

    def restore(self, blob: bytes) -> None:  # optional, with option "save_restore"
        """Load what ``save`` returned into this freshly opened session."""

    def shards(self) -> list[dict[str, np.ndarray]]:  # sharded targets (spec §9)
        """This rank's own pieces: per parameter, ``{"theta": ..., state name: ...}`` (CAME-SHARD-3)."""


class Adapter(Protocol):
    def describe(self) -> TargetInfo: ...

    def open(self, hp: Hyperparameters, params: list[np.ndarray], dtype: str, variant: str,
             sharding: dict | None = None, grad_dtype: str | None = None) -> Session:
        """Build the optimizer from canonical hyperparameters, for numerical cases.

        ``params`` are float64 arrays whose values are exact in ``dtype``; the target makes its
        parameters of that dtype.  Raise ``NotApplicable`` for what it cannot express.  The keyword
        arguments are passed only when they apply, so an adapter that has neither needs neither:
        ``grad_dtype`` for a mixed-precision case (CAME-DTYPE-4), to a target that declares it in
        ``grad_dtypes``: the gradients are then exact in that dtype, and the session hands them to
        the target in it; ``sharding`` = {"rank", "world_size", "layouts", "shapes"} to each rank of
        a sharded target (``world_sizes``, conformance.distributed), whose steps then get this rank's
        pieces of the gradients.        """

    def open_at(self, hp: Hyperparameters, params: list[np.ndarray], state: list[dict[str, np.ndarray]], step: int,
                dtype: str, variant: str) -> Session:  # optional, with option "open_at"
        """As ``open``, then set every state tensor (spec names, float64 values exact in the state's dtype)
        and the step counter to ``step``, as if ``step`` steps had been taken (CAME-STATE-6).  Store the
        counter the way the target stores it: a counter that cannot hold ``step`` shows it on read-back."""

    def construct(self, kwargs: dict, variant: str) -> Session:
        """Call the target's documented constructor with these decoded keyword arguments.

        ``kwargs`` come from ``conformance.arguments.decode`` with this adapter's ``native``
        hooks, in the documented argument names of ``describe().api``.  Errors propagate.
        """

    def native(self) -> "NativeHooks": ...


class NativeHooks(Protocol):
    """How the argument decoder makes the target's own objects."""

    def parameter(self, value: np.ndarray, name: str): ...

    def tensor(self, value: np.ndarray): ...

    def schedule(self, lr) -> object:
        """A schedule object of the target for a ``LearningRate`` of kind ``schedule``."""


def describe_return(value) -> dict:
    """What a step call returned, as plain data (CAME-RETURN-1): the adapters' one conversion.

    ``{"type": "none"}``, ``{"type": "bool", "value": b}``, ``{"type": "number", "value": x}``,
    ``{"type": "tuple", "items": [...]}``, ``{"type": "tensor", "dtype": name, "shape": [...],
    "values": [first 16 values]}`` for anything array-like (``asnumpy()``, ``numpy()`` or a NumPy
    array), else ``{"type": "other", "repr": ...}``.  Duck-typed, so it needs no framework import.
    """
    if value is None:
        return {"type": "none"}
    if isinstance(value, (bool, np.bool_)):
        return {"type": "bool", "value": bool(value)}
    if isinstance(value, (int, float, np.integer, np.floating)):
        return {"type": "number", "value": float(value)}
    if isinstance(value, (tuple, list)):
        return {"type": "tuple", "items": [describe_return(v) for v in value]}
    for convert in ("asnumpy", "numpy"):
        if hasattr(value, convert) and not isinstance(value, np.ndarray):
            try:
                value = np.asarray(getattr(value, convert)())
            except Exception:  # noqa: BLE001 - not array-like after all
                break
            break
    if isinstance(value, np.ndarray):
        dtype = "bool" if value.dtype == np.bool_ else str(value.dtype)
        flat = value.ravel()[:16]
        return {"type": "tensor", "dtype": dtype, "shape": list(value.shape),
                "values": [bool(v) if dtype == "bool" else float(v) if value.dtype.kind in "fiu" else repr(v)
                           for v in flat]}
    return {"type": "other", "repr": repr(value)[:200]}


class NotApplicable(Exception):
    """The target cannot express this case (an option, a dtype, a variant): reported as N/A."""
