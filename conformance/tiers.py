"""The slow tiers of a run, after everything else: scale (CAME-DEF-4) and long horizons (CAME-STATE-6).

``scale``: the recipe vectors of fixtures/data/*_scale_test.json (reduced axes around tile
widths, 3-D batched weights, a 4096 × 4096 layer), then Hypothesis cases of tile-width shapes.
``horizon``: the recipe vectors of *_horizon_test.json (10 050 steps, across CAME-LR-5's
crossover at t = 10^4 and the float16 counter's 2048), then Hypothesis sessions opened at a
large step counter (option ``open_at``; the golden mid-run vectors run with the fixtures).
Each case is an ordinary trajectory record, judged step by step like every other; the runner's
plan (conformance.runner.Plan) makes each vector and each property a unit of its own.
"""
from __future__ import annotations

from came_conformance import strategies


def hypothesis(tier: str, profile: str, dtypes, options, cfg):
    """The tier's Hypothesis strategy for a variant of these dtypes and options, and its example count."""
    if tier == "scale":
        return strategies.scale_cases(profile, dtypes, options), cfg.scale_examples
    if tier == "horizon":
        return strategies.midrun_cases(profile, dtypes, options), cfg.horizon_examples
    raise ValueError(f"tier must be 'scale' or 'horizon', got {tier!r}")
