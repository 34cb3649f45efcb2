"""The `paper` profile of the reference against the official came-pytorch package, in float64.

`came_pytorch.CAME` (PyPI 0.1.3, the official code, spec source S2) and `reference.front.PaperCame`
run 20 steps side by side on CPU in float64 from the same parameters and gradients, for 1-D, 2-D
and 3-D parameters (unfactored, factored, factored with a batch axis), with and without weight
decay, with update clipping active.  After every step the parameter and every state tensor must
agree to 1e-12, relative, element by element.

Why relative, and why max(|ref|, tiny): the compared tensors span tens of orders of magnitude
(exp_avg_sq ~ g², the instability statistics ~ 1e-4 … 1e-16, θ ~ 1), so one absolute tolerance
would be meaningless for some of them; an error relative to the element's own value is
scale-free.  ``tiny`` (the smallest normal float64) only keeps the quotient defined where the
reference value is 0, where it then demands (nearly) exact 0.  Relative error is only
meaningful away from cancellation, so the data are chosen to avoid it: each gradient element
keeps the sign of its parameter element over the 20 steps (so exp_avg never passes through 0,
and the decay −η·λ·θ and the step −η·Δ have the same sign), |θ| ≥ 1 while the total movement
stays below 0.5, and the compared state is otherwise positive.  Besides θ itself, the step
θ_t − θ_{t−1} is compared, so that the error of η·Δ is not diluted by |θ| ≫ |η·Δ|.

Why 1e-12 (about 4500 float64 ulps): the two implementations evaluate the same formulas in a
different order in a few places (torch's vectorised reductions against NumPy's pairwise
sums; RMS as ‖x‖₂/sqrt(N) against sqrt(mean(x²)); θ·(−λη) added against θ − (ηλ)·θ).  Each
computes each quantity within its first-order rounding bound.  For quantities that cannot
cancel (the statistics, U, Û, RMS) tests/test_oracle.py measures ≤ 5 ulps against bounds of at
most ~100; the cancelling ones (m, D, Δ, θ') reach hundreds of ulps only where their terms
cancel, which the data here rule out (signs kept, |θ| ≥ 1, as above), so one step's
disagreement is at most about 2 × 100 ulps.  The state is a convex combination (EMA) of positive terms, so
its relative disagreement stays at the per-step level instead of growing; θ accumulates the
per-step disagreement of η·Δ additively, 20 × 200 ulps of a term that is itself ≪ |θ|; the
step θ_t − θ_{t−1} carries one step's disagreement, about 200 ulps.
1e-12 leaves a margin over that estimate and is still 10^4 times tighter than any real
difference of formula (a different ε placement, an old m, or a missing clip changes values at
the 1e-8 level or above).  Clause coverage: CAME-STEP-1 … CAME-STEP-12, CAME-STEP-3V,
CAME-STEP-4V, CAME-STEP-9V, CAME-BETA2-1, CAME-HP-2, CAME-HP-4, CAME-STATE-2, CAME-STATE-3.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: the official came-pytorch needs it")
import came_pytorch  # noqa: E402  (a missing came_pytorch with torch present is an error, not a skip)

from came_conformance.reference.dtypes import ulp  # noqa: E402
from came_conformance.reference.front import PaperCame, Parameter  # noqa: E402

STEPS = 20
REL_TOL = 1e-12
TINY = np.finfo(np.float64).tiny
#: came-pytorch state names -> spec names (spec §3)
NAMES = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "exp_avg_sq_row": "exp_avg_sq_row",
         "exp_avg_sq_col": "exp_avg_sq_col", "exp_avg_res_row": "exp_avg_insta_row",
         "exp_avg_res_col": "exp_avg_insta_col"}


def relative_error(value: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(value - ref) / np.maximum(np.abs(ref), TINY), initial=0.0))


def data(shape, seed):
    rng = np.random.default_rng(seed)
    sign = np.where(rng.uniform(size=shape) < 0.5, -1.0, 1.0)
    theta = sign * (1.0 + rng.uniform(size=shape))  # |θ| in [1, 2]
    gsign = sign  # m and θ share a sign, so −η·λ·θ and −η·Δ add up without cancelling
    # large gradients whose scale grows over the run (1e2 … 1e4): U = F·g stays large against the
    # slowly adapting second moment (β2 = 0.999), so RMS(U)/d > 1 and clipping is active
    grads = [gsign * rng.uniform(0.5, 2.0, size=shape) * 10.0 ** (2 + 2 * t / STEPS) for t in range(STEPS)]
    return theta, grads


@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("shape", [(7,), (5, 6), (2, 3, 4)], ids=["1-D", "2-D", "3-D"])
def test_paper_profile_agrees_with_came_pytorch(shape, weight_decay):
    """CAME-STEP-1 … CAME-STEP-12, CAME-BETA2-1, CAME-HP-2, CAME-HP-4: 20 float64 steps, relative error ≤ 1e-12."""
    theta0, grads = data(shape, seed=len(shape) * 10 + int(weight_decay > 0))
    kwargs = dict(lr=1e-4, eps=(1e-30, 1e-16), clip_threshold=1.0, betas=(0.9, 0.999, 0.9999),
                  weight_decay=weight_decay)
    ref = PaperCame([Parameter(theta0.copy())], **kwargs)
    p = torch.nn.Parameter(torch.tensor(theta0, dtype=torch.float64))
    official = came_pytorch.CAME([p], **kwargs)

    worst: dict[str, float] = {}
    for t, g in enumerate(grads, start=1):
        before_ref, before_theirs = ref.parameters()[0], p.detach().numpy().copy()
        ref.step([g])
        p.grad = torch.tensor(g, dtype=torch.float64)
        official.step()
        trace = ref.last_traces[0]
        assert trace["clip_divisor"] > 1.0, (t, float(trace["update_rms"]))  # clipping is active (CAME-STEP-5)
        state = official.state[p]
        theirs = {NAMES[k]: v.detach().numpy() for k, v in state.items() if k in NAMES}
        ours = ref.state.tensors[0]
        assert set(theirs) == set(ours), (sorted(theirs), sorted(ours))  # CAME-STATE-2 / CAME-STATE-3
        pairs = {"theta": (p.detach().numpy(), ref.parameters()[0]), **{k: (theirs[k], ours[k]) for k in ours}}
        for name, (a, b) in pairs.items():
            assert a.shape == b.shape, name
            worst[name] = max(worst.get(name, 0.0), relative_error(a, b))
            assert worst[name] <= REL_TOL, (t, name, worst[name])
        # The step itself, θ_t − θ_{t−1} (an exact subtraction, Sterbenz), which |θ| ≫ |η·Δ| would
        # otherwise dilute.  Each side rounded θ_t once (≤ ½ ulp(θ_t) each), so the steps may also
        # differ by ulp(θ_t) on top of the relative tolerance.
        ours_step, theirs_step = ref.parameters()[0] - before_ref, p.detach().numpy() - before_theirs
        excess = np.maximum(np.abs(theirs_step - ours_step) - ulp("float64", ref.parameters()[0]), 0.0)
        step_error = float(np.max(excess / np.maximum(np.abs(ours_step), TINY)))
        worst["theta_step"] = max(worst.get("theta_step", 0.0), step_error)
        assert worst["theta_step"] <= REL_TOL, (t, worst["theta_step"])
    # the data kept θ away from 0, as the relative measure requires
    assert np.min(np.abs(ref.parameters()[0])) > 0.5
    print(f"{shape} wd={weight_decay}: worst relative error", {k: f"{v:.2e}" for k, v in worst.items()})


def test_the_comparison_would_see_a_real_difference():
    """CAME-STEP-7: the tolerance is far below a real change of formula: the instability computed with
    the OLD first moment moves the state by much more than 1e-12."""
    theta0, grads = data((5, 6), seed=3)
    ref = PaperCame([Parameter(theta0.copy())], lr=1e-3)
    ref.step([grads[0]])
    ref.step([grads[1]])
    trace = ref.last_traces[0]
    u_hat, m_new = trace["update_clipped"], trace["exp_avg"]
    m_old = (m_new - 0.1 * u_hat) / 0.9  # invert CAME-STEP-6 (β1 = 0.9)
    d_old = (u_hat - m_old) ** 2 + 1e-16
    assert relative_error(np.mean(d_old, axis=-1), np.mean(trace["instability"], axis=-1)) > 1e-3
