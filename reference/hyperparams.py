"""Canonical hyperparameters, the two profiles, and the per-step rules (spec/came.md §2, §5).

``Hyperparameters`` is the one description of a CAME run that every part of the suite
shares: the reference, the fixtures and every target adapter are given it.  The rules that
turn it into the ``StepHyper`` of step t (β2_t, η_t) live here too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

from came_conformance.reference.step import StepHyper

PROFILES = ("paper", "mindformers")


@dataclass(frozen=True)
class LearningRate:
    """CAME-LR-1: a learning rate is a constant, a per-step sequence, or a named schedule.

    ``kind`` is ``"constant"`` (``value``), ``"sequence"`` (``values[k]`` at 0-based step k)
    or ``"schedule"`` with ``schedule`` one of ``SCHEDULES`` and its ``params``.
    """

    kind: str
    value: float = 0.0
    values: tuple[float, ...] = ()
    schedule: str = ""
    params: tuple[tuple[str, float], ...] = ()

    @staticmethod
    def constant(value: float) -> "LearningRate":
        return LearningRate("constant", value=float(value))

    @staticmethod
    def sequence(values) -> "LearningRate":
        return LearningRate("sequence", values=tuple(float(v) for v in values))

    @staticmethod
    def exponential(base: float, gamma: float) -> "LearningRate":
        return LearningRate("schedule", schedule="exponential", params=(("base", float(base)), ("gamma", float(gamma))))

    @staticmethod
    def warmup_linear(base: float, warmup_steps: int) -> "LearningRate":
        return LearningRate("schedule", schedule="warmup_linear",
                            params=(("base", float(base)), ("warmup_steps", float(warmup_steps))))

    def at(self, k: int, argument: str = "learning_rate") -> float:
        """η at 0-based step index k = t − 1 (CAME-LR-2, CAME-LR-3, CAME-LR-4); ``argument`` names it in errors."""
        if self.kind == "constant":
            return self.value
        if self.kind == "sequence":
            if k >= len(self.values):
                raise ValueError(f"{argument}: the sequence has {len(self.values)} values but step {k + 1} "
                                 f"was taken; a sequence must cover every step (CAME-LR-3) [CAME-ERR-S5]")
            return self.values[k]
        p = dict(self.params)
        return SCHEDULES[self.schedule](p, k)

    def to_json(self) -> dict[str, Any]:
        if self.kind == "constant":
            return {"kind": "constant", "value": self.value}
        if self.kind == "sequence":
            return {"kind": "sequence", "values": list(self.values)}
        return {"kind": "schedule", "schedule": self.schedule, "params": dict(self.params)}

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "LearningRate":
        if obj["kind"] == "constant":
            return LearningRate.constant(obj["value"])
        if obj["kind"] == "sequence":
            return LearningRate.sequence(obj["values"])
        return LearningRate("schedule", schedule=obj["schedule"],
                            params=tuple(sorted((k, float(v)) for k, v in obj["params"].items())))


#: CAME-LR-4: the named schedules, as functions of the 0-based step index k, and their parameters.
SCHEDULES = {
    "exponential": lambda p, k: p["base"] * p["gamma"] ** k,
    "warmup_linear": lambda p, k: p["base"] * min(1.0, (k + 1) / p["warmup_steps"]),
}
SCHEDULE_PARAMS = {"exponential": ("base", "gamma"), "warmup_linear": ("base", "warmup_steps")}


@dataclass(frozen=True)
class Group:
    """CAME-GROUP-1: a parameter group: indices into the parameter list, and overrides."""

    params: tuple[int, ...]
    learning_rate: LearningRate | None = None
    weight_decay: float | None = None


@dataclass(frozen=True)
class Hyperparameters:
    """The canonical description of a CAME configuration (CAME-HP-1 … CAME-HP-4)."""

    profile: str
    learning_rate: LearningRate | None
    eps1: float
    eps_insta: float
    clip_threshold: float
    beta1: float
    beta3: float
    weight_decay: float = 0.0
    beta2: float | None = None  # paper profile: constant β2 (CAME-BETA2-1)
    decay_rate: float | None = None  # mindformers profile: β2_t = 1 − t^(−decay_rate) (CAME-BETA2-2)
    eps_scale: float = 1e-3
    scale_parameter: bool = False
    relative_step: bool = False
    warmup_init: bool = False
    compression: bool = False
    loss_scale: float = 1.0
    groups: tuple[Group, ...] = field(default=())

    def __post_init__(self):
        """CAME-HP-1: the fields that only make sense together (ranges are the fronts' job)."""
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if (self.beta2 is None) != (self.profile == "mindformers") or \
                (self.decay_rate is None) != (self.profile == "paper"):
            raise ValueError("the paper profile takes beta2 and no decay_rate; mindformers takes decay_rate "
                             f"and no beta2 (got beta2={self.beta2!r}, decay_rate={self.decay_rate!r})")
        if (self.learning_rate is None) != self.relative_step:
            raise ValueError("learning_rate must be None exactly when relative_step is True [CAME-ERR-15]")
        if self.profile == "paper" and (self.scale_parameter or self.relative_step or self.warmup_init
                                        or self.compression or self.loss_scale != 1.0):
            raise ValueError("the paper profile has no scale_parameter, relative_step, warmup_init, "
                             "compression or loss_scale [CAME-HP-2]")

    @staticmethod
    def defaults(profile: str, **overrides) -> "Hyperparameters":
        """CAME-HP-2 (paper) / CAME-HP-3 (mindformers): each profile's defaults."""
        if profile == "paper":
            base = Hyperparameters("paper", LearningRate.constant(1e-3), eps1=1e-30, eps_insta=1e-16,
                                   clip_threshold=1.0, beta1=0.9, beta2=0.999, beta3=0.9999)
        elif profile == "mindformers":
            base = Hyperparameters("mindformers", LearningRate.constant(1e-3), eps1=1e-30, eps_insta=1e-16,
                                   eps_scale=1e-3, clip_threshold=1.0, beta1=0.9, decay_rate=0.8, beta3=0.99)
        else:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        return replace(base, **overrides)

    def beta2_at(self, t: int) -> float:
        """β2_t (CAME-BETA2-1, CAME-BETA2-2)."""
        if self.profile == "paper":
            return self.beta2
        return 1.0 - t ** (-self.decay_rate)

    def group_of(self, index: int) -> Group | None:
        for group in self.groups:
            if index in group.params:
                return group
        return None

    def lr_at(self, t: int, group: Group | None = None) -> float:
        """η_t before scale_parameter (CAME-LR-2 … CAME-LR-5)."""
        if self.relative_step:  # CAME-LR-5: Adafactor's relative step size
            ceiling = 1e-6 * t if self.warmup_init else 1e-2
            return min(ceiling, 1.0 / math.sqrt(t))
        if group and group.learning_rate is not None:
            return group.learning_rate.at(t - 1, "lr")  # a group's own rate is its 'lr' (CAME-GROUP-1)
        return self.learning_rate.at(t - 1)

    def step_hyper(self, t: int, index: int) -> StepHyper:
        """Resolve the hyperparameters of parameter ``index`` at step t (1-based)."""
        group = self.group_of(index)
        weight_decay = group.weight_decay if group and group.weight_decay is not None else self.weight_decay
        lr = group.learning_rate if group and group.learning_rate is not None else self.learning_rate
        return StepHyper(lr=self.lr_at(t, group), beta1=self.beta1, beta2=self.beta2_at(t), beta3=self.beta3,
                         eps1=self.eps1, eps_insta=self.eps_insta, clip_threshold=self.clip_threshold,
                         weight_decay=weight_decay, eps_scale=self.eps_scale if self.scale_parameter else None,
                         loss_scale=self.loss_scale, compression=self.compression,
                         beta2_computed=self.profile == "mindformers",
                         lr_computed=self.relative_step or (lr is not None and lr.kind == "schedule"))

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("learning_rate", "groups")}
        out["learning_rate"] = self.learning_rate.to_json() if self.learning_rate else None
        out["groups"] = [{"params": list(g.params),
                          "learning_rate": g.learning_rate.to_json() if g.learning_rate else None,
                          "weight_decay": g.weight_decay} for g in self.groups]
        return out

    @staticmethod
    def from_json(obj: dict[str, Any]) -> "Hyperparameters":
        fields = dict(obj)
        lr = fields.pop("learning_rate")
        groups = fields.pop("groups", [])
        return Hyperparameters(
            learning_rate=LearningRate.from_json(lr) if lr else None,
            groups=tuple(Group(tuple(g["params"]),
                               LearningRate.from_json(g["learning_rate"]) if g["learning_rate"] else None,
                               g["weight_decay"]) for g in groups),
            **fields)


def check_ranges(hp: Hyperparameters, n_params: int) -> None:
    """CAME-HP-1 … CAME-HP-3: every value in its valid range, for a case built from canonical values.

    The documented constructors validate their arguments (reference.front, spec §6); a case that
    arrives as canonical hyperparameters (a case file, a fixture) is checked here, so a NaN beta or an
    empty group cannot make a case that proves nothing.  ValueError names the field and the rule.
    """
    def bad(field: str, rule: str, value) -> None:
        raise ValueError(f"hyperparameters.{field}: {rule}, got {value!r}")

    def unit(field: str, value) -> None:
        if not (isinstance(value, float) and 0.0 <= value <= 1.0):
            bad(field, "must be a float in [0, 1]", value)

    def positive(field: str, value) -> None:
        if not (isinstance(value, float) and math.isfinite(value) and value > 0.0):
            bad(field, "must be a finite float > 0", value)

    def rate(field: str, lr: LearningRate) -> None:
        values = {"constant": (lr.value,), "sequence": lr.values}.get(lr.kind, tuple(v for _, v in lr.params))
        if lr.kind not in ("constant", "sequence", "schedule") or (lr.kind == "sequence" and not lr.values):
            bad(field, "must be a constant, a non-empty sequence or a schedule", lr.kind)
        if lr.kind == "schedule" and (lr.schedule not in SCHEDULES
                                      or sorted(dict(lr.params)) != sorted(SCHEDULE_PARAMS[lr.schedule])):
            bad(field, f"a schedule must be one of {sorted(SCHEDULES)} with exactly its parameters", lr.schedule)
        for v in values:
            if not (math.isfinite(v) and v >= 0.0):
                bad(field, "every learning-rate value must be finite and >= 0", v)
        params = dict(lr.params)
        if params.get("warmup_steps", 1.0) < 1.0 or params.get("gamma", 0.0) > 1.0:
            bad(field, "a schedule needs warmup_steps >= 1 and gamma <= 1", params)

    for field in ("eps1", "eps_insta", "eps_scale", "clip_threshold", "loss_scale"):
        positive(field, getattr(hp, field))
    for field in ("beta1", "beta3") + (("beta2",) if hp.profile == "paper" else ("decay_rate",)):
        unit(field, getattr(hp, field))
    decays = [("weight_decay", hp.weight_decay)] + [(f"groups[{k}].weight_decay", g.weight_decay)
                                                     for k, g in enumerate(hp.groups) if g.weight_decay is not None]
    for field, value in decays:
        top = 1.0 if hp.profile == "mindformers" else math.inf
        if not (isinstance(value, float) and 0.0 <= value <= top and math.isfinite(value)):
            bad(field, f"must be a finite float in [0, {top}]", value)
    if hp.learning_rate is not None:
        rate("learning_rate", hp.learning_rate)
    seen: set[int] = set()
    for k, g in enumerate(hp.groups):
        if not g.params or any(not isinstance(i, int) or not 0 <= i < n_params or i in seen for i in g.params):
            bad(f"groups[{k}].params", f"must name parameters 0..{n_params - 1}, each in at most one group", g.params)
        seen.update(g.params)
        if g.learning_rate is not None:
            rate(f"groups[{k}].learning_rate", g.learning_rate)
