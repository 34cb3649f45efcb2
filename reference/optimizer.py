"""CAME over a list of parameters as a pure ``init``/``update`` pair (spec/came.md §3, §5).

``init(params, hp)`` gives the named state; ``update(grads, state, params, hp)`` takes one
step of every parameter at the shared step counter and returns new parameters, new state and
one trace per parameter.  Nothing is global and nothing the caller passed is modified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from came_conformance.reference import step as came_step
from came_conformance.reference.hyperparams import Hyperparameters


@dataclass(frozen=True)
class CameState:
    """CAME-STATE-5: one step counter t for all parameters, and each parameter's tensors."""

    step: int
    tensors: tuple[dict[str, np.ndarray], ...]


@dataclass(frozen=True)
class Update:
    params: tuple[np.ndarray, ...]
    state: CameState
    traces: tuple[dict[str, np.ndarray], ...]


def init(params: Sequence[np.ndarray], hp: Hyperparameters | None = None) -> CameState:
    """CAME-STATE-4: zero state for every parameter, step counter 0 (``hp`` is accepted for the
    optax-like signature; the layout depends on shapes only, CAME-STATE-1)."""
    return CameState(0, tuple(came_step.init_state(np.shape(p)) for p in params))


def check_gradients(grads: Sequence, params: Sequence) -> list[np.ndarray]:
    """CAME-ERR-S1 … CAME-ERR-S4: a list or tuple of one real floating gradient per parameter, of its shape."""
    if not isinstance(grads, (list, tuple)):
        raise TypeError(f"gradients: must be a list or tuple of arrays, one per parameter, got "
                        f"{type(grads).__name__} [CAME-ERR-S4]")
    grads = list(grads)
    if len(grads) != len(params):
        raise ValueError(f"gradients: expected {len(params)} gradients, one per parameter, "
                         f"got {len(grads)} [CAME-ERR-S1]")
    out = []
    for i, (g, p) in enumerate(zip(grads, params)):
        if isinstance(g, np.ma.MaskedArray):  # its mask would be ignored
            raise TypeError(f"gradients[{i}]: a masked array is not a gradient [CAME-ERR-S3]")
        g = np.asarray(g)
        if g.dtype.kind != "f" or g.dtype.itemsize > 8:  # read exactly as float64
            raise TypeError(f"gradients[{i}]: must have a real floating dtype, got {g.dtype} [CAME-ERR-S3]")
        if g.shape != np.shape(p):
            raise ValueError(f"gradients[{i}]: shape {g.shape} does not match its parameter's shape "
                             f"{np.shape(p)} [CAME-ERR-S2]")
        out.append(g)
    return out


def check_state(state: CameState, params: Sequence) -> None:
    """CAME-STATE-2/3: the state holds, for every parameter, exactly the tensors of its shape."""
    if len(state.tensors) != len(params):
        raise ValueError(f"state: holds {len(state.tensors)} parameters' tensors for {len(params)} parameters")
    for i, (tensors, p) in enumerate(zip(state.tensors, params)):
        want = came_step.state_shapes(np.shape(p))
        got = {k: np.shape(v) for k, v in tensors.items()}
        if got != want:
            raise ValueError(f"state[{i}]: tensors {got} do not match the layout {want} of shape {np.shape(p)}")


def update(grads: Sequence[np.ndarray], state: CameState, params: Sequence[np.ndarray],
           hp: Hyperparameters, trace: bool = True) -> Update:
    """One optimizer step at t = state.step + 1 (CAME-STATE-5, CAME-STEP-*).

    Pure: a step error (CAME-ERR-S1 … CAME-ERR-S5) leaves nothing changed (CAME-ERR-A1).  ``trace=False``
    returns empty traces and the same values in about a third of the memory (``reference.step.step``).
    """
    grads = check_gradients(grads, params)
    check_state(state, params)
    t = state.step + 1
    hypers = [hp.step_hyper(t, i) for i in range(len(params))]  # an exhausted sequence raises before any step
    results = [came_step.step(p, g, s, h, trace=trace) for p, g, s, h in zip(params, grads, state.tensors, hypers)]
    return Update(tuple(r.theta for r in results), CameState(t, tuple(r.state for r in results)),
                  tuple(r.trace for r in results))


def trajectory(params: Sequence[np.ndarray], grads_per_step: Sequence[Sequence[np.ndarray]],
               hp: Hyperparameters) -> list[Update]:
    """Run several steps from the zero state; element k is the result of step k + 1."""
    state, current, out = init(params, hp), tuple(np.asarray(p, np.float64) for p in params), []
    for grads in grads_per_step:
        result = update(grads, state, current, hp)
        out.append(result)
        state, current = result.state, result.params
    return out
