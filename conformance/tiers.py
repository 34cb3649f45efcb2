"""The slow tiers of a run, after everything else: scale (CAME-DEF-4) and long horizons (CAME-STATE-6).

``scale``: the recipe vectors of fixtures/data/*_scale_test.json (reduced axes around tile
widths, 3-D batched weights, a 4096 × 4096 layer), then Hypothesis cases of tile-width shapes.
``horizon``: the recipe vectors of *_horizon_test.json (10 050 steps, across CAME-LR-5's
crossover at t = 10^4 and the float16 counter's 2048), then Hypothesis sessions opened at a
large step counter (option ``open_at``; the golden mid-run vectors run with the fixtures).
Each case is an ordinary trajectory record, judged step by step like every other.
"""
from __future__ import annotations

from came_conformance import strategies


def run(tier: str, target, variant: str, cases: list, cfg, sink, progress, hypothesis, run_case) -> None:
    """``hypothesis(strategy, examples)`` runs a property; ``run_case(case)`` one case's record."""
    info = target.info
    progress(f"{tier}: {len(cases)} recipe vectors")
    for case in cases:
        sink.add(run_case(case))
    if tier == "scale":
        progress(f"scale: {cfg.scale_examples} Hypothesis cases")
        hypothesis(strategies.scale_cases(info.profile, info.dtypes, info.options), cfg.scale_examples)
    else:
        progress(f"horizon: {cfg.horizon_examples} Hypothesis sessions opened at a large step counter")
        hypothesis(strategies.midrun_cases(info.profile, info.dtypes, info.options), cfg.horizon_examples)
