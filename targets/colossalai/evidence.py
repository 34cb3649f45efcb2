"""Evidence for targets/colossalai/deviations.json: ColossalAI 0.5.0's CAME against the reference.

Run from the repository root:  PYTHONPATH=. .venvs/colossalai/bin/python targets/colossalai/evidence.py
Each section prints what ColossalAI does and what the reference (came_conformance.reference) says.
"""
import numpy as np
import torch
from colossalai.nn.optimizer import CAME

from came_conformance.reference.hyperparams import Hyperparameters, LearningRate
from came_conformance.reference.optimizer import trajectory


def run(shape, grad, dtype, steps=1, **kw):
    p = torch.nn.Parameter(torch.ones(shape, dtype=dtype))
    opt = CAME([p], lr=0.01, **kw)
    for _ in range(steps):
        p.grad = torch.full(shape, grad, dtype=dtype)
        opt.step()
    return p, opt.state[p]


def reference(shape, grad, steps=1):
    hp = Hyperparameters.defaults("paper", learning_rate=LearningRate.constant(0.01))
    return trajectory([np.ones(shape)], [[np.full(shape, grad)]] * steps, hp)[-1]


print("## CA-ZERO-SIZE: shape (0, 3), float64")
p, state = run((0, 3), 1.0, torch.float64)
ref = reference((0, 3), 1.0)
print("  colossalai exp_avg_sq_col:", state["exp_avg_sq_col"].tolist(), " reference:",
      ref.state.tensors[0]["exp_avg_sq_col"].tolist())

print("## CA-FP16-STATE: float16, state kept in float16 (eps 1e-30 and 1e-16 round to 0)")
print("  state dtype:", run((3, 4), 1.0, torch.float16)[1]["exp_avg_sq_row"].dtype)
p, state = run((3, 4), 0.0, torch.float16)
print("  zero gradient: exp_avg[0,0] =", float(state["exp_avg"][0, 0]), " theta[0,0] =", float(p[0, 0]),
      " reference exp_avg[0,0] =", float(reference((3, 4), 0.0).state.tensors[0]["exp_avg"][0, 0]))
p, state = run((3, 4), 300.0, torch.float16)
print("  gradient 300: exp_avg_sq_row[0] =", float(state["exp_avg_sq_row"][0]),
      " reference:", float(reference((3, 4), 300.0).state.tensors[0]["exp_avg_sq_row"][0]))
p, state = run((), 0.0, torch.float16)
print("  0-D, zero gradient: exp_avg =", float(state["exp_avg"]), " reference:",
      float(reference((), 0.0).state.tensors[0]["exp_avg"]))

print("## CA-ERR-*: the constructor's validation (two asserts, as in the official code)")
w = [torch.nn.Parameter(torch.ones(2, 3))]
for label, kwargs in [("lr=-1.0", dict(lr=-1.0)), ("lr=0.0 (valid)", dict(lr=0.0)), ("lr missing", {}),
                      ("betas=(1.5, 0.9, 0.9)", dict(lr=0.1, betas=(1.5, 0.9, 0.9))),
                      ("betas=(0.9, 0.9)", dict(lr=0.1, betas=(0.9, 0.9))),
                      ("eps=(0.0, -1.0)", dict(lr=0.1, eps=(0.0, -1.0))), ("eps=(1e-30,)", dict(lr=0.1, eps=(1e-30,))),
                      ("clip_threshold=-1.0", dict(lr=0.1, clip_threshold=-1.0)),
                      ("weight_decay=-1.0", dict(lr=0.1, weight_decay=-1.0)), ("params=[]", dict(params=[], lr=0.1))]:
    try:
        CAME(kwargs.pop("params", w), **kwargs)
        print(f"  {label}: accepted")
    except Exception as exc:  # noqa: BLE001 - what it raises is the evidence
        print(f"  {label}: {type(exc).__name__}({str(exc)!r})")
p = torch.nn.Parameter(torch.ones(3, 4))
for label, grad in [("gradient of shape (4, 3)", torch.ones(4, 3)), ("int32 gradient", torch.ones(3, 4, dtype=torch.int32))]:
    try:
        p.grad = grad
        print(f"  {label}: accepted")
    except Exception as exc:  # noqa: BLE001
        print(f"  {label}: {type(exc).__name__}({str(exc)[:90]!r})")
