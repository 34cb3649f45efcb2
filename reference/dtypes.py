"""The floating-point formats a target may run in, described in float64 (spec/came.md §7).

NumPy has no bfloat16, so every format is handled through float64 values that it can
represent exactly: ``round_to`` rounds to nearest, ties to even, as IEEE 754 does.
"""
from __future__ import annotations

import numpy as np

#: name -> (significand bits including the hidden bit, smallest normal, largest finite)
FORMATS = {
    "float64": (53, 2.0 ** -1022, float(np.finfo(np.float64).max)),
    "float32": (24, 2.0 ** -126, float(np.finfo(np.float32).max)),
    "float16": (11, 2.0 ** -14, 65504.0),
    "bfloat16": (8, 2.0 ** -126, float.fromhex("0x1.fep127")),
}
DTYPES = tuple(FORMATS)


def unit_roundoff(dtype: str) -> float:
    """u = 2^-p: the largest relative error of one correctly rounded operation."""
    return 2.0 ** -FORMATS[dtype][0]


def round_to(dtype: str, x) -> np.ndarray:
    """Round float64 values to the nearest value of ``dtype`` (ties to even), kept as float64."""
    x = np.asarray(x, dtype=np.float64)
    if dtype == "float64":
        return x.copy()
    if dtype in ("float32", "float16"):
        with np.errstate(over="ignore"):
            return x.astype(dtype).astype(np.float64)
    # bfloat16, rounded once from float64 (never through float32, which would round twice):
    # keep 8 significant bits with rint (ties to even), on the subnormal grid below 2^-126.
    p, tiny, largest = FORMATS[dtype]
    subnormal_spacing_exponent = int(np.log2(tiny)) - p + 1  # -133: below 2^-126 the grid is fixed
    with np.errstate(over="ignore", invalid="ignore"):
        _, e = np.frexp(x)
        quantum = np.exp2(np.maximum(e - p, subnormal_spacing_exponent).astype(np.float64))
        out = np.rint(x / quantum) * quantum
        out = np.where(np.abs(out) > largest, np.copysign(np.inf, x), out)
    return np.where(np.isfinite(x), out, x)


def ulp(dtype: str, x) -> np.ndarray:
    """The spacing of ``dtype`` at |x|: 2^(e - p + 1) for normal x, the subnormal spacing below."""
    p, tiny, _ = FORMATS[dtype]
    ax = np.abs(np.asarray(x, dtype=np.float64))
    with np.errstate(divide="ignore"):
        e = np.where(np.isfinite(ax), np.frexp(np.maximum(ax, tiny))[1] - 1.0, ax)  # exact floor(log2|x|)
    return np.exp2(e - p + 1)
