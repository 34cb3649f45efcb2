"""The mutant catalogue: realistic CAME porting mistakes the suite must catch (docs/mutation.md).

Each ``Mutant`` turns on one or more bug switches of ``conformance.mutants.port`` and runs in the
profile where its bug is reachable (``profile``); ``clauses`` are the spec clauses it violates.
``CONTROLS`` are the correct port (no switch) in both profiles: they must pass the whole suite.
"""
from __future__ import annotations

from dataclasses import dataclass

from came_conformance.mutants.port import SWITCHES


@dataclass(frozen=True)
class Mutant:
    name: str  # kebab-case; the target is ``mutant:NAME``
    family: str
    description: str
    switches: frozenset[str]
    profile: str = "mindformers"  # "mindformers" | "paper": where the bug is reachable
    clauses: tuple[str, ...] = ()
    # Declared deviations of built-in targets that describe exactly this bug: stacking one of them on the
    # mutant may absorb it (conformance/stacking.py); any other absorbing deviation is too wide.
    same_as: tuple[str, ...] = ()


#: The families the catalogue must cover (tests/test_mutants.py checks every one has mutants).
FAMILIES = (
    "state shapes and axes", "epsilon placement", "beta2 schedule", "clipping", "first moment", "instability",
    "instability statistics", "confidence-scaled update", "1-D path", "higher-rank tensors", "weight decay",
    "learning rate", "options", "state precision", "step counter", "documented defaults", "error contract",
    "mixed precision", "reductions at scale", "long horizons", "non-finite parameters", "atomic step errors",
    "return value",
)


def _m(name, family, description, switches=None, profile="mindformers", clauses=(), same_as=()):
    return Mutant(name, family, description, frozenset(switches or {name}), profile, tuple(clauses), tuple(same_as))


MUTANTS: tuple[Mutant, ...] = (
    # --- state shapes and axes ---
    _m("row-col-axes-swapped", "state shapes and axes",
       "row statistic averaged over axis -2 and column statistic over axis -1 (state shapes follow)",
       clauses=("CAME-DEF-2", "CAME-STATE-2")),
    _m("factored-only-2d", "state shapes and axes",
       "factored statistics only when ndim == 2; 3-D and 4-D parameters take the vector path",
       clauses=("CAME-STATE-1",)),
    _m("factored-ndim-gt-2", "state shapes and axes",
       "factored threshold written ndim > 2: matrices take the vector path", clauses=("CAME-STATE-1",)),
    # --- higher-rank tensors ---
    _m("batch-axes-merged", "higher-rank tensors",
       "leading axes merged into the rows: the column statistic is averaged over every batch slice",
       clauses=("CAME-STATE-2", "CAME-DEF-2")),
    _m("factor-global-row-mean", "higher-rank tensors",
       "F normalises the row statistic by its mean over all batch slices, not per trailing 2-D slice",
       clauses=("CAME-DEF-3",)),
    # --- epsilon placement ---
    _m("eps1-after-ema", "epsilon placement",
       "eps1 added to the running second-moment statistics after their EMA update, not to G² before it",
       clauses=("CAME-STEP-2", "CAME-STEP-3")),
    _m("eps1-after-sqrt", "epsilon placement",
       "eps1 added after the square root (G / (sqrt(v̂) + eps1)), statistics built from G² alone",
       clauses=("CAME-STEP-2", "CAME-STEP-4")),
    _m("eps1-outside-square", "epsilon placement", "eps1 added to G before squaring: (G + eps1)²",
       clauses=("CAME-STEP-2",)),
    _m("eps-insta-missing", "epsilon placement", "instability D = (Û − m)² without eps_insta",
       clauses=("CAME-STEP-7",)),
    # --- beta2 schedule ---
    _m("beta2-t-from-zero", "beta2 schedule", "β2_t computed from the 0-based step: 1 − (t−1)^(−decay_rate)",
       clauses=("CAME-BETA2-2",)),
    _m("beta2-t-plus-one", "beta2 schedule", "β2_t computed one step ahead: 1 − (t+1)^(−decay_rate)",
       clauses=("CAME-BETA2-2",)),
    _m("decay-rate-sign", "beta2 schedule", "sign of the exponent lost: β2_t = 1 − t^decay_rate",
       clauses=("CAME-BETA2-2",)),
    _m("constant-beta2-mindformers", "beta2 schedule",
       "the mindformers profile uses the paper's constant β2 = 0.999 instead of 1 − t^(−decay_rate)",
       clauses=("CAME-BETA2-2",)),
    _m("paper-betas-order", "beta2 schedule", "betas unpacked as (β1, β3, β2): β2 and β3 exchanged",
       profile="paper", clauses=("CAME-BETA2-1", "CAME-STEP-8")),
    # --- clipping ---
    _m("clip-min", "clipping", "clip divisor min(1, RMS(U)/d) instead of max", clauses=("CAME-STEP-5",)),
    _m("clip-rms-last-axis", "clipping", "RMS(U) taken per row (over the last axis) instead of over the tensor",
       clauses=("CAME-STEP-5", "CAME-DEF-1")),
    _m("clip-threshold-multiplied", "clipping", "clip divisor max(1, RMS(U)·d): threshold multiplied",
       clauses=("CAME-STEP-5",)),
    # --- first moment ---
    _m("beta1-swapped", "first moment", "m = (1−β1)·m + β1·Û: β1 and 1−β1 exchanged",
       clauses=("CAME-STEP-6",)),
    # --- instability ---
    _m("insta-old-m", "instability", "instability measured against the previous m, not the new one",
       clauses=("CAME-STEP-7",)),
    _m("insta-uses-unclipped", "instability", "instability uses the unclipped U instead of Û",
       clauses=("CAME-STEP-7",)),
    # --- instability statistics ---
    _m("insta-beta2", "instability statistics", "instability statistics R, C averaged with β2_t instead of β3",
       clauses=("CAME-STEP-8",)),
    # --- confidence-scaled update ---
    _m("no-confidence", "confidence-scaled update",
       "confidence factor dropped: Adafactor with momentum presented as CAME", clauses=("CAME-STEP-9",)),
    _m("plain-adafactor", "confidence-scaled update",
       "plain Adafactor presented as CAME: the clipped update itself, no first moment, no confidence",
       clauses=("CAME-STEP-6", "CAME-STEP-9")),
    _m("confidence-inverted", "confidence-scaled update", "m divided by F(R, C) instead of multiplied",
       clauses=("CAME-STEP-9",)),
    # --- 1-D path ---
    _m("vector-confidence", "1-D path",
       "parameters with ndim <= 1 also get a (full) confidence factor m / sqrt(R)", clauses=("CAME-STEP-9V",)),
    _m("vector-eps-outside-sqrt", "1-D path",
       "1-D path keeps v from G² and divides by sqrt(v + eps1)", clauses=("CAME-STEP-3V", "CAME-STEP-4V")),
    # --- weight decay ---
    _m("wd-after-update", "weight decay", "decoupled decay applied to the updated parameter",
       clauses=("CAME-STEP-11",)),
    _m("wd-coupled", "weight decay", "weight decay added to the gradient (L2, Adam style) instead of decoupled",
       clauses=("CAME-STEP-11",)),
    _m("wd-not-times-lr", "weight decay", "decoupled decay θ − λθ, not multiplied by the learning rate",
       clauses=("CAME-STEP-11",)),
    _m("wd-group-ignored", "weight decay", "a group's weight_decay ignored: the optimizer-wide value is used",
       clauses=("CAME-GROUP-1", "CAME-STEP-11")),
    # --- learning rate ---
    _m("lr-sequence-index-t", "learning rate", "a learning-rate sequence indexed by t instead of t − 1",
       clauses=("CAME-LR-3",)),
    _m("group-lr-ignored", "learning rate", "a group's lr ignored: the optimizer-wide learning rate is used",
       clauses=("CAME-GROUP-1", "CAME-LR-2")),
    _m("schedule-called-with-t", "learning rate", "the schedule called with t instead of the 0-based global step",
       clauses=("CAME-LR-4",)),
    # --- documented options ---
    _m("scale-parameter-grad-rms", "options", "scale_parameter scales by RMS of the gradient, not of θ",
       clauses=("CAME-OPT-1", "CAME-STEP-10")),
    _m("scale-parameter-new-theta", "options", "scale_parameter uses RMS of the updated θ instead of θ_{t−1}",
       clauses=("CAME-OPT-1", "CAME-STEP-10")),
    _m("relative-step-no-cap", "options", "relative_step without the min(1e-2, ·) cap: η_t = 1/sqrt(t)",
       clauses=("CAME-OPT-2", "CAME-LR-5")),
    _m("warmup-init-1e-5", "options", "warmup_init ramps with 1e-5·t instead of 1e-6·t",
       clauses=("CAME-OPT-3", "CAME-LR-5")),
    _m("compression-wrong-state", "options", "compression stores exp_avg in float16 instead of exp_avg_sq",
       clauses=("CAME-OPT-5",)),
    _m("loss-scale-ignored", "options", "gradients not divided by loss_scale (as MindFormers does)",
       clauses=("CAME-OPT-4", "CAME-STEP-1")),
    _m("loss-scale-multiplied", "options", "gradients multiplied by loss_scale instead of divided",
       clauses=("CAME-OPT-4", "CAME-STEP-1")),
    # --- state precision ---
    _m("state-float32", "state precision", "state kept in float32 for float64 parameters",
       clauses=("CAME-DTYPE-3",)),
    # --- mixed precision (CAME-DTYPE-4): gradients in another dtype than the parameter's ---
    _m("state-follows-grad-dtype", "mixed precision",
       "the stored statistics are cast to the gradient's dtype before their update (float16 for float32 "
       "parameters under AMP), as MindFormers' cast(state, grad_dtype) does", clauses=("CAME-DTYPE-4",)),
    _m("square-in-grad-dtype", "mixed precision",
       "G² + ε1 formed in the gradient's half dtype before the upcast: it overflows above |G| = 256",
       clauses=("CAME-DTYPE-4", "CAME-STEP-2")),
    _m("grad-rounded-to-param-dtype", "mixed precision",
       "float32 gradients of bfloat16 parameters rounded to bfloat16 before a float32 computation",
       clauses=("CAME-DTYPE-4",)),
    # --- low-precision steps: visible only where a step is above θ's resolution ---
    _m("scale-parameter-after-decay", "options",
       "scale_parameter takes RMS(θ) after the weight decay (with η_t) instead of before",
       clauses=("CAME-STEP-10", "CAME-OPT-1")),
    _m("vector-momentum-aliased", "1-D path",
       "the 1-D first moment ends up 100 times too small (a buffer aliased with a scaled temporary, as in "
       "pytorch-optimizer 3.11.0)", clauses=("CAME-STEP-6",)),
    # --- step counter ---
    _m("step-counter-frozen", "step counter",
       "the global step is incremented on a copy and never written back: t = 1 at every step",
       clauses=("CAME-STATE-5", "CAME-BETA2-2")),
    _m("step-from-first-param", "step counter",
       "per-parameter step counters that skip zero-size parameters; t read from the first parameter's",
       clauses=("CAME-STATE-5", "CAME-ZERO-1")),
    _m("checkpoint-drops-step", "step counter", "the checkpoint omits the global step: a resumed run restarts at t = 1",
       clauses=("CAME-STATE-5",)),
    # --- more shapes, options and degenerate cases ---
    _m("rank0-skipped", "1-D path", "0-D parameters skipped like empty ones (\"nothing to factor\")",
       clauses=("CAME-STATE-3",)),
    _m("vector-no-clip", "1-D path", "update clipping applied on the factored path only", clauses=("CAME-STEP-5",)),
    _m("zero-size-not-skipped", "state shapes and axes",
       "zero-size parameters go through the step: empty means become NaN statistics", clauses=("CAME-ZERO-1",),
       same_as=("CP-ZERO-SIZE", "CA-ZERO-SIZE", "DC-ZERO-SIZE", "PO-ZERO-SIZE")),
    _m("compression-uses-unrounded", "options",
       "compression stores exp_avg_sq in float16 but the step uses the unrounded value", clauses=("CAME-OPT-5",)),
    _m("wd-unscaled-lr", "weight decay", "weight decay multiplied by η_t, not by the parameter-scaled η_eff",
       clauses=("CAME-STEP-11", "CAME-OPT-1")),
    _m("scale-parameter-eps1", "options", "scale_parameter floors RMS(θ) with eps1 instead of eps[1]",
       clauses=("CAME-OPT-1", "CAME-STEP-10")),
    _m("factor-nan-guarded", "confidence-scaled update",
       "statistics clamped to 1e-30 before rsqrt, hiding the documented 0/0 = NaN of β = 1",
       clauses=("CAME-DEF-3", "CAME-NONFINITE-1")),
    # --- documented defaults ---
    _m("default-beta3-paper-value", "documented defaults", "Came's default beta3 = 0.9999 (came-pytorch's) "
       "instead of 0.99", clauses=("CAME-HP-3",)),
    _m("paper-default-eps-swapped", "documented defaults", "CAME's default eps written (1e-16, 1e-30)",
       profile="paper", clauses=("CAME-HP-2",)),
    # --- error contract ---
    _m("gradient-shape-unchecked", "error contract",
       "a gradient with the parameter's element count but another shape is silently reshaped",
       clauses=("CAME-ERR-S2",)),
    _m("beta3-unchecked", "error contract", "beta3's range is never checked", clauses=("CAME-ERR-10",)),
    _m("range-error-typeerror", "error contract", "range errors of [0, 1] arguments raise TypeError, not ValueError",
       clauses=("CAME-ERR-10",)),
    _m("beta1-rejects-one", "error contract", "beta1 checked as 0 <= beta1 < 1: the documented 1.0 is rejected",
       clauses=("CAME-ERR-10",)),
    _m("beta1-accepts-above-one", "error contract", "beta1 checked against 1.0000001: slightly above 1 accepted",
       clauses=("CAME-ERR-10",)),
    _m("eps-zero-allowed", "error contract", "eps elements checked >= 0: zero accepted", clauses=("CAME-ERR-8",),
       same_as=("CP-ERR-EPS", "CA-ERR-EPS", "DC-ERR-UNVALIDATED", "MS-ERR-EPS", "PO-ERR-EPS")),
    _m("message-without-name", "error contract", "error messages say 'value' and do not name the argument",
       clauses=("CAME-ERR-10", "CAME-ERR-12")),
    _m("loss-scale-float-rejected", "error contract", "loss_scale must be an int (as documented): floats rejected",
       clauses=("CAME-ERR-5", "CAME-ERRATUM-2")),
    _m("int-accepted-as-float", "error contract", "ints accepted where the contract requires a Python float",
       clauses=("CAME-ERR-3", "CAME-ERRATUM-3")),
    _m("flag-int-accepted", "error contract", "0 and 1 accepted for the bool options", clauses=("CAME-ERR-13",)),
    _m("clip-threshold-unchecked", "error contract", "clip_threshold's sign is never checked",
       profile="paper", clauses=("CAME-ERR-12",), same_as=("CP-ERR-CLIP", "CA-ERR-CLIP", "DC-ERR-UNVALIDATED",
                                                          "PO-ERR-CLIP")),
    _m("paper-lr-negative-accepted", "error contract", "a negative lr is accepted by the paper constructor",
       profile="paper", clauses=("CAME-ERR-19",), same_as=("DC-ERR-UNVALIDATED",)),
    _m("params-list-only", "error contract", "params must be a list or tuple: a generator of parameters (the "
       "official README's `CAME(model.parameters(), ...)`) is refused", profile="paper", clauses=("CAME-ERR-28",)),
    # --- reductions at scale (the cases: fixtures/data/*_scale_test.json) ---
    _m("row-mean-tile-tail", "reductions at scale", "the row mean is summed in tiles of 128 and the partial last "
       "tile is read from the start of the row (rows longer than 128, not a multiple of it)",
       clauses=("CAME-DEF-4", "CAME-DEF-2")),
    _m("col-mean-tile-tail", "reductions at scale", "the column mean is summed in tiles of 32 rows and the partial "
       "last tile is read from the first rows (columns longer than 32, not a multiple of it)",
       profile="paper", clauses=("CAME-DEF-4", "CAME-DEF-2")),
    _m("rms-tile-tail", "reductions at scale", "RMS (clipping, scale_parameter) summed in tiles of 1024 elements, the "
       "partial last tile read from the start (more than 1024 elements, not a multiple of it)",
       clauses=("CAME-DEF-4", "CAME-DEF-1", "CAME-STEP-5")),
    # --- long horizons (fixtures/data/*_horizon_test.json, the open-at cases) ---
    _m("relative-step-no-decay", "long horizons", "relative_step's η_t = 1e-2 at every step: the 1/sqrt(t) branch "
       "past t = 10^4 is missing", clauses=("CAME-LR-5", "CAME-OPT-2")),
    _m("warmup-init-no-decay", "long horizons", "warmup_init's η_t = min(1e-6·t, 1e-2): the ramp is capped at 1e-2 "
       "instead of 1/sqrt(t), wrong past t = 10^4", clauses=("CAME-LR-5", "CAME-OPT-3")),
    _m("beta2-capped", "long horizons", "β2_t = min(0.999, 1 − t^(−decay_rate)): capped, as some Adafactor ports do "
       "(different from t ≈ 5624 on at decay_rate 0.8)", clauses=("CAME-BETA2-2",)),
    _m("step-counter-float32", "long horizons", "the step counter kept in float32 (MindFormers' afactor_step): it "
       "stops at 2^24 = 16 777 216", clauses=("CAME-STATE-6", "CAME-STATE-5")),
    _m("step-counter-float16", "long horizons", "the step counter kept in float16: it stops at 2048",
       profile="paper", clauses=("CAME-STATE-6", "CAME-STATE-5")),
    # --- non-finite parameters (fixtures/data/*_nonfinite_test.json) ---
    _m("wd-no-zero-guard", "non-finite parameters", "θ − η·λ·θ applied even when λ = 0: an infinite θ becomes "
       "inf − 0·inf = NaN", clauses=("CAME-STEP-11", "CAME-NONFINITE-2")),
    _m("scale-parameter-python-max", "non-finite parameters", "scale_parameter's max(ε_scale, RMS(θ)) written with "
       "Python's max, which returns ε_scale for a NaN RMS", clauses=("CAME-STEP-10", "CAME-NONFINITE-2")),
    # --- atomic step errors (CAME-ERR-A1) and the exhausted sequence (CAME-ERR-S5) ---
    _m("counter-advances-on-error", "atomic step errors", "the step counter is incremented before the gradients "
       "are checked, so a refused step still counts (MindSpore's order)", clauses=("CAME-ERR-A1", "CAME-STATE-5"),
       same_as=("MS-STEP-ERRORS-NOT-ATOMIC",)),
    _m("partial-update-before-error", "atomic step errors", "each gradient is checked just before its parameter is "
       "updated: the parameters before a bad gradient are already stepped when it raises",
       clauses=("CAME-ERR-A1",), same_as=("MS-STEP-ERRORS-NOT-ATOMIC",)),
    _m("lr-sequence-repeats-last", "learning rate", "a learning-rate sequence shorter than the run holds its last "
       "value instead of raising", clauses=("CAME-LR-3", "CAME-ERR-S5")),
    # --- the step's return value ---
    _m("step-returns-tuple", "return value", "the step returns one True per parameter (a tuple), as MindFormers "
       "1.9.0 does, not Tensor[bool] True", clauses=("CAME-RETURN-1",), same_as=("MS-STEP-RETURNS-TUPLE",)),
)

#: The correct port, in each profile: the false-alarm control.
CONTROLS: tuple[Mutant, ...] = (
    Mutant("none", "control", "the correct port, mindformers profile", frozenset(), "mindformers"),
    Mutant("none-paper", "control", "the correct port, paper profile", frozenset(), "paper"),
)

BY_NAME = {m.name: m for m in MUTANTS + CONTROLS}

assert len(BY_NAME) == len(MUTANTS) + len(CONTROLS), "duplicate mutant names"
assert all(s in SWITCHES for m in MUTANTS for s in m.switches), "unknown switch in the catalogue"


def lookup(name: str) -> Mutant:
    """A catalogue entry by name; ``NAME--paper`` / ``NAME--mindformers`` forces the profile."""
    base, _, profile = name.partition("--")
    mutant = BY_NAME[base]
    if profile:
        if profile not in ("paper", "mindformers"):
            raise KeyError(name)
        mutant = Mutant(name, mutant.family, mutant.description, mutant.switches, profile, mutant.clauses,
                        mutant.same_as)
    return mutant
