"""Targets that misbehave on purpose, to test the runner's robustness (not CAME ports).

``crashing``: the process dies in the middle of the third step of every case.
``hanging``: the second step of every case never returns.
``two_bugs``: two independent numeric bugs (Hypothesis must report both).
``narrow``, ``float64_only``, ``bad_declaration``: declarations the runner must honour or refuse.
All wrap the reference adapter so everything else about them is correct.
"""
import os
import time

import numpy as np

from came_conformance.adapters.reference import ReferenceAdapter


class _Misbehaving(ReferenceAdapter):
    def __init__(self, fail_at: int, action):
        super().__init__("mindformers")
        self.fail_at, self.action = fail_at, action

    def open(self, hp, params, dtype, variant, **extras):
        session = super().open(hp, params, dtype, variant, **extras)
        original, calls = session.step, [0]

        def step(grads):
            calls[0] += 1
            if calls[0] == self.fail_at:
                self.action()
            return original(grads)

        session.step = step
        return session


def crashing():
    return _Misbehaving(3, lambda: os._exit(17))


def hanging():
    return _Misbehaving(2, lambda: time.sleep(3600))


class _TwoBugs(ReferenceAdapter):
    """Two independent bugs: float16 parameters keep a doubled exp_avg, factored float64 ones a shifted theta."""

    def open(self, hp, params, dtype, variant, **extras):
        session = super().open(hp, params, dtype, variant, **extras)
        original = session.read

        def read():
            snap = original()
            for p, s in zip(snap.params, snap.state):
                if dtype == "float16":
                    s["exp_avg"] = np.asarray(s["exp_avg"] * 2.0 + 1.0)  # 0-D stays an array (protocol)
                if dtype == "float64" and p.ndim >= 2:
                    p += 1.0
            return snap

        session.read = read
        return session


def two_bugs():
    return _TwoBugs("mindformers")


class _Narrow(ReferenceAdapter):
    """Two execution variants; ``narrow`` runs float32 only and has no parameter groups."""

    def describe(self):
        from dataclasses import replace

        wide = super().describe()
        return replace(wide, name="narrow", variants=("wide", "narrow"), variant_dtypes={"narrow": ("float32",)},
                       variant_options={"narrow": wide.options - {"groups"}})

    def open(self, hp, params, dtype, variant, **extras):
        if variant == "narrow":
            assert dtype == "float32" and not hp.groups, (dtype, hp.groups)  # the suite must not ask for more
        return super().open(hp, params, dtype, variant, **extras)


def narrow():
    return _Narrow("mindformers")


class _Float64Only(ReferenceAdapter):
    def describe(self):
        from dataclasses import replace

        return replace(super().describe(), name="float64-only", dtypes=("float64",))


def float64_only():
    return _Float64Only("mindformers")


class _BadDeclaration(ReferenceAdapter):
    def describe(self):
        from dataclasses import replace

        return replace(super().describe(), variant_dtypes={"no-such-variant": ("float32",)})


def bad_declaration():
    return _BadDeclaration("mindformers")
