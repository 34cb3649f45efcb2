"""What a target computes in which precision, as it declares it (spec CAME-DTYPE-3 … CAME-DTYPE-5).

A port chooses, for each parameter dtype, four precisions and one summation rule; the tolerance
model (``conformance.tolerance``) charges exactly those choices and nothing else:

- ``state``: the dtype its state tensors are stored in;
- ``compute``: the precision of its elementwise arithmetic (every result rounded to it);
- ``scalars``: the precision its scalars are held in (β1, β2 or β2_t, β3, ε1, ε_insta, ε_scale,
  d, λ, η_t, the loss scale);
- ``accumulate``: the accumulator of its reductions (the means of CAME-DEF-2, the RMS of
  CAME-DEF-1);
- ``summation``: how its reductions add (``summation_depth``): ``recursive`` (any order: the worst
  case), ``pairwise``, ``pairwise:B`` (chunks of B terms added in turn, the chunk sums pairwise:
  NumPy with B = 128 along a contiguous axis, ``torch.compile``'s CPU reductions with B = 4096),
  ``blocked:B`` (chunks of B in turn, the chunk sums in turn), ``lanes:L`` (L accumulators each
  adding every L-th term, then the L partial sums in turn: MindSpore's nnacl row sums, L = 8) and
  ``cascade`` (torch's CPU sum kernel, aten/src/ATen/native/cpu/SumKernel.cpp).

``TargetInfo.precision`` maps a parameter dtype to a dict of any of these keys; a key left out
takes its default: ``state`` from the older ``TargetInfo.state_dtype`` (else the parameter's
dtype), ``compute`` = the state dtype, and ``scalars`` and ``accumulate`` the finer of the compute
dtype and float32 (float32 "opmath" for half tensors is what torch and MindSpore do), summation
``recursive``.  Gradients may arrive in another dtype (CAME-DTYPE-4): ``TargetInfo.grad_dtypes``
lists, per parameter dtype, the other gradient dtypes a target accepts.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass

from came_conformance.reference.dtypes import DTYPES, FORMATS, unit_roundoff

KEYS = ("state", "compute", "scalars", "accumulate", "summation")
SUMMATION = re.compile(r"^(recursive|pairwise|cascade|(pairwise|blocked|lanes):[1-9][0-9]*)$")
HALF = ("float16", "bfloat16")


def bits(dtype: str) -> int:
    """Significand bits, hidden bit included."""
    return FORMATS[dtype][0]


def finer(a: str, b: str) -> str:
    """The dtype with more significand bits (a on a tie)."""
    return a if bits(a) >= bits(b) else b


@functools.lru_cache(maxsize=None)
def contains(outer: str, inner: str) -> bool:
    """Is every value of ``inner`` exactly a value of ``outer``?  (float16 ⊂ float32 ⊂ float64, bfloat16 ⊂ float32)."""
    p_out, tiny_out, max_out = FORMATS[outer]
    p_in, tiny_in, max_in = FORMATS[inner]
    smallest_out = tiny_out * 2.0 ** (1 - p_out)
    smallest_in = tiny_in * 2.0 ** (1 - p_in)
    return p_out >= p_in and max_out >= max_in and smallest_out <= smallest_in and \
        math.log2(tiny_out) <= math.log2(tiny_in)


def half_spacing(dtype: str) -> float:
    """η: half the smallest subnormal spacing, the absolute error of a rounding that underflows."""
    p, tiny, _ = FORMATS[dtype]
    return tiny * 2.0 ** (1 - p) / 2


def gamma(k: float, u: float) -> float:
    """γ_k = k·u / (1 − k·u) (Higham, Accuracy and Stability of Numerical Algorithms, Lemma 3.1); inf when k·u ≥ 1."""
    ku = k * u
    return ku / (1.0 - ku) if ku < 1.0 else math.inf


@functools.lru_cache(maxsize=4096)
def summation_depth(rule: str, n: int) -> int:
    """The most roundings one term of an n-term sum can go through under ``rule`` (Higham §4.2).

    The sum's error is then at most γ_depth · Σ|xᵢ| (Higham (4.4) and its proof, for any order in
    which each term meets at most ``depth`` additions):

    - recursive: n − 1;  pairwise: ⌈log2 n⌉;
    - pairwise:B: (B − 1) + ⌈log2 ⌈n/B⌉⌉;  blocked:B: (B − 1) + (⌈n/B⌉ − 1);
    - lanes:L: (⌈n/L⌉ − 1) + L (the lanes, then the partial sums and a tail in turn);
    - cascade: torch's multi_row_sum: 4 levels of 2^p terms, p = max(4, ⌈log2 n⌉ // 4), the top level
      holding ⌈n / 2^(3p)⌉, the remainder loop 2^p, and 296 for what combines the partial sums (3
      level sums, 4 ILP partials and their tail, up to 16 vector lanes and a 15-term vector tail,
      and up to 256 per-thread partials).
    """
    if n <= 1:
        return 0
    kind, _, arg = rule.partition(":")
    if kind == "recursive":
        return n - 1
    if kind == "cascade":
        step = 2 ** max(4, math.ceil(math.log2(n)) // 4)
        return min(n - 1, 3 * (step - 1) + -(-n // step ** 3) + (step - 1) + 296)
    size = int(arg) if arg else 1
    if kind == "lanes":
        return min(n - 1, -(-n // size) - 1 + size + size)
    if n <= size:
        return n - 1
    chunks = -(-n // size)
    if kind == "pairwise":
        return (size - 1) + math.ceil(math.log2(chunks))
    return (size - 1) + (chunks - 1)


@dataclass(frozen=True)
class Precision:
    """The precisions of one parameter dtype of one target (module docstring)."""

    param: str
    state: str
    compute: str
    scalars: str
    accumulate: str
    summation: str = "recursive"
    grad: str | None = None  # the gradients' dtype, when it is not the parameter's (CAME-DTYPE-4)

    def __post_init__(self):
        for key in ("param", "state", "compute", "scalars", "accumulate") + (("grad",) if self.grad else ()):
            if getattr(self, key) not in DTYPES:
                raise ValueError(f"precision {key}: {getattr(self, key)!r} is not one of {DTYPES}")
        if not SUMMATION.match(self.summation):
            raise ValueError(f"precision summation: {self.summation!r} is not recursive, pairwise, cascade, "
                             f"pairwise:B, blocked:B or lanes:L")

    @property
    def grad_dtype(self) -> str:
        return self.grad or self.param

    def u(self, which: str) -> float:
        return unit_roundoff(getattr(self, which))

    @property
    def opmath(self) -> float:
        """Extra rounding of an operation on half tensors done in float32 and then rounded (double rounding)."""
        return unit_roundoff("float32") if self.compute in HALF else 0.0

    def reduction_gamma(self, n: int) -> float:
        return gamma(summation_depth(self.summation, n), self.u("accumulate"))

    def to_json(self) -> dict:
        return asdict(self)


def resolve(dtype: str, declared: dict | None = None, state_dtype: dict | None = None,
            grad: str | None = None) -> Precision:
    """The precision of parameter dtype ``dtype`` from a target's declarations (module docstring)."""
    declared = dict((declared or {}).get(dtype, {}))
    unknown = set(declared) - set(KEYS)
    if unknown:
        raise ValueError(f"precision[{dtype!r}]: unknown keys {sorted(unknown)}; the keys are {KEYS}")
    state = declared.get("state") or (state_dtype or {}).get(dtype, dtype)
    compute = declared.get("compute") or state
    return Precision(param=dtype, state=state, compute=compute,
                     scalars=declared.get("scalars") or finer(compute, "float32"),
                     accumulate=declared.get("accumulate") or finer(compute, "float32"),
                     summation=declared.get("summation", "recursive"),
                     grad=grad if grad and grad != dtype else None)


def of_target(info, dtype: str, grad: str | None = None) -> Precision:
    """``resolve`` for a ``TargetInfo`` (targets written before ``precision`` existed included)."""
    return resolve(dtype, getattr(info, "precision", None), getattr(info, "state_dtype", None), grad)
