"""The error contract as data (spec/came.md §6): which argument, which bad value, which error.

Each ``ErrorClause`` is one row of the spec's table.  The reference front raises exactly these
errors; fixtures and the conformance runner generate their invalid inputs from the same rows.
``origin`` says where a clause comes from: ``documented`` (the seed's Raises section),
``erratum`` (the documentation contradicts itself; the spec's resolution, see CAME-ERRATUM-*),
or ``unsaid`` (the documentation is silent; a user would expect a clear error).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorClause:
    id: str
    profiles: tuple[str, ...]
    arguments: tuple[str, ...]
    bad_values: str
    exception: str  # "TypeError" or "ValueError"
    phase: str  # "construction" or "step"
    origin: str
    rule: str


BOTH = ("paper", "mindformers")
MF = ("mindformers",)
PAPER = ("paper",)

CLAUSES: tuple[ErrorClause, ...] = (
    ErrorClause("CAME-ERR-1", MF, ("learning_rate",), "not an int, float, tensor, iterable or schedule (an object, "
                "a complex number)", "TypeError", "construction", "documented",
                "learning_rate must be an int, a float, a tensor, an iterable of numbers or a schedule"),
    ErrorClause("CAME-ERR-2", BOTH, ("params",), "an element (or an entry of a group's 'params') neither a "
                "parameter nor a group dict", "TypeError", "construction", "documented",
                "params must hold parameters or group dicts"),
    ErrorClause("CAME-ERR-3", MF, ("decay_rate", "weight_decay", "beta1", "beta3"), "not a float (int, bool, str, "
                "None)", "TypeError", "construction", "documented", "must be a float"),
    ErrorClause("CAME-ERR-4", BOTH, ("eps",), "not a list or tuple, or an element not a float", "TypeError",
                "construction", "documented", "eps must be a list or tuple of floats"),
    ErrorClause("CAME-ERR-5", MF, ("loss_scale",), "not an int or float (bool, str, None)", "TypeError",
                "construction", "erratum", "loss_scale must be an int or a float (CAME-ERRATUM-2)"),
    ErrorClause("CAME-ERR-6", MF, ("use_locking", "use_nesterov"), "passed at all", "TypeError", "construction",
                "erratum", "not arguments of Came; passing one is an unexpected keyword (CAME-ERRATUM-1)"),
    ErrorClause("CAME-ERR-7", MF, ("loss_scale",), "<= 0, NaN or infinite (an int too large for a float "
                "included)", "ValueError", "construction", "documented", "loss_scale must be a finite number > 0"),
    ErrorClause("CAME-ERR-8", BOTH, ("eps",), "an element <= 0, NaN or infinite", "ValueError", "construction",
                "documented", "every eps must be a finite float > 0"),
    ErrorClause("CAME-ERR-9", BOTH, ("eps",), "wrong length (3 for mindformers, 2 for paper)", "ValueError",
                "construction", "unsaid", "eps must have 3 values (mindformers) or 2 values (paper)"),
    ErrorClause("CAME-ERR-10", MF, ("decay_rate", "weight_decay", "beta1", "beta3"), "outside [0.0, 1.0] or NaN",
                "ValueError", "construction", "documented", "must be in [0.0, 1.0]"),
    ErrorClause("CAME-ERR-11", BOTH, ("clip_threshold",), "not a float", "TypeError", "construction", "unsaid",
                "clip_threshold must be a float"),
    ErrorClause("CAME-ERR-12", BOTH, ("clip_threshold",), "<= 0, NaN or infinite", "ValueError", "construction",
                "unsaid", "clip_threshold must be a finite float > 0"),
    ErrorClause("CAME-ERR-13", MF, ("scale_parameter", "relative_step", "warmup_init", "compression"), "not a bool",
                "TypeError", "construction", "unsaid", "must be a bool"),
    ErrorClause("CAME-ERR-14", MF, ("learning_rate", "lr"), "a value < 0, NaN or infinite, an int too large for a "
                "float included (also inside a sequence, a schedule or a group's lr); a schedule's warmup_steps < 1 "
                "or gamma > 1", "ValueError",
                "construction", "unsaid", "learning rates must be finite and >= 0"),
    ErrorClause("CAME-ERR-15", MF, ("learning_rate", "lr"), "None while relative_step is False, or given (or a "
                "group's lr given) while relative_step is True", "ValueError", "construction", "unsaid",
                "exactly one of learning_rate and relative_step=True"),
    ErrorClause("CAME-ERR-16", MF, ("warmup_init",), "True while relative_step is False", "ValueError",
                "construction", "unsaid", "warmup_init requires relative_step=True"),
    ErrorClause("CAME-ERR-17", BOTH, ("params",), "empty, or a group without parameters", "ValueError",
                "construction", "unsaid", "params must hold at least one parameter"),
    ErrorClause("CAME-ERR-18", PAPER, ("lr",), "not a float or int (bool, str, None)", "TypeError", "construction",
                "unsaid", "lr must be an int or a float"),
    ErrorClause("CAME-ERR-19", PAPER, ("lr",), "< 0, NaN or infinite (an int too large for a float included)",
                "ValueError", "construction", "unsaid", "lr must be a finite float >= 0"),
    ErrorClause("CAME-ERR-20", PAPER, ("betas",), "not a list or tuple, or an element not a float", "TypeError",
                "construction", "unsaid", "betas must be a list or tuple of floats"),
    ErrorClause("CAME-ERR-21", PAPER, ("betas",), "an element outside [0.0, 1.0] or NaN, or not 3 values",
                "ValueError", "construction", "unsaid", "every beta must be in [0.0, 1.0]"),
    ErrorClause("CAME-ERR-22", PAPER, ("weight_decay",), "not a float", "TypeError", "construction", "unsaid",
                "weight_decay must be a float"),
    ErrorClause("CAME-ERR-23", PAPER, ("weight_decay",), "< 0, NaN or infinite", "ValueError", "construction",
                "unsaid", "weight_decay must be a finite float >= 0"),
    ErrorClause("CAME-ERR-24", MF, ("learning_rate", "lr"), "a bool, str, bytes, dict or set, an iterable or tensor "
                "holding anything but numbers (bools included), or an unknown schedule or one without exactly its "
                "parameters", "TypeError", "construction", "unsaid",
                "a learning rate is a number or an ordered collection of numbers"),
    ErrorClause("CAME-ERR-25", MF, ("learning_rate", "lr"), "an empty iterable or tensor, a tensor of rank > 1 (as "
                "mindspore.nn.Optimizer documents), or an iterable of more than 2^20 values (an endless iterator "
                "included)", "ValueError", "construction", "unsaid",
                "a learning-rate sequence holds 1 to 2^20 values, a tensor has rank 0 or 1"),
    ErrorClause("CAME-ERR-26", BOTH, ("params",), "a parameter whose values are not real floating-point of at most "
                "64 bits (None, str, bool, int, complex, float128) or are a masked array", "TypeError",
                "construction", "unsaid", "parameters must hold real floating-point values"),
    ErrorClause("CAME-ERR-27", BOTH, ("params",), "a list mixing parameters and group dicts (S3 types params as "
                "list[Parameter] or list[dict])", "TypeError", "construction", "unsaid",
                "params holds parameters or group dicts, not both"),
    ErrorClause("CAME-ERR-28", BOTH, ("params",), "not an iterable of parameters or group dicts: a single "
                "parameter or tensor, a str, a dict, a number, None", "TypeError", "construction", "unsaid",
                "params must be an iterable (a list, a tuple, a generator) of parameters or of group dicts"),
    ErrorClause("CAME-ERR-S1", BOTH, ("gradients",), "not one gradient per parameter", "ValueError", "step",
                "unsaid", "one gradient per parameter"),
    ErrorClause("CAME-ERR-S2", BOTH, ("gradients",), "a gradient whose shape differs from its parameter's",
                "ValueError", "step", "unsaid", "each gradient has its parameter's shape"),
    ErrorClause("CAME-ERR-S3", BOTH, ("gradients",), "a gradient that is not a real floating-point array of at "
                "most 64 bits (integer, bool, complex, float128, or a masked array)", "TypeError", "step", "unsaid",
                "gradients must be real floating-point"),
    ErrorClause("CAME-ERR-S4", BOTH, ("gradients",), "not a list or tuple (None, a single array)", "TypeError", "step",
                "unsaid", "gradients is a list or tuple with one gradient per parameter"),
    ErrorClause("CAME-ERR-S5", MF, ("learning_rate", "lr"), "a sequence with fewer values than the steps taken: "
                "step t > L of a sequence of L values (CAME-LR-3)", "ValueError", "step", "unsaid",
                "a learning-rate sequence covers every step taken"),
)

BY_ID = {c.id: c for c in CLAUSES}


def clauses_for(profile: str) -> tuple[ErrorClause, ...]:
    return tuple(c for c in CLAUSES if profile in c.profiles)
