"""Adapters that try to get a verdict without earning it (issue 9), to test the evidence rules.

Each wraps the reference; what they change is what they let the suite see.

``declines_numbers``: a wrong optimizer (its learning rate is doubled) that answers NotApplicable to
every numeric case, tier 0 included; its constructor is the reference's, so error cases pass.
``only_tier0``: takes the tier-0 case (the profile's defaults on a 3x4 matrix and a 4-vector) and
declines everything else, the error contract included.
``forgetful_resume``: ``restore`` does nothing and a restored session reads back no parameters.
``small_vector_momentum``: the paper profile with the first moment of every parameter of ndim <= 1
kept 100 times too small (the aliasing bug of pytorch-optimizer 3.11.0), in every dtype.
"""
from dataclasses import replace

import numpy as np

from came_conformance.adapters.reference import ReferenceAdapter
from came_conformance.protocol import NotApplicable, Snapshot
from came_conformance.reference.hyperparams import Hyperparameters


class _DeclinesNumbers(ReferenceAdapter):
    def open(self, hp, params, dtype, variant, **extras):
        if hp.learning_rate is not None and hp.learning_rate.kind == "constant":
            hp = replace(hp, learning_rate=replace(hp.learning_rate, value=2 * hp.learning_rate.value))
        super().open(hp, params, dtype, variant, **extras)  # it could run: it chooses not to show it
        raise NotApplicable("this port prefers not to be measured")


class _OnlyTier0(ReferenceAdapter):
    def open(self, hp, params, dtype, variant, **extras):
        tier0 = hp == Hyperparameters.defaults(self.profile) and [np.shape(p) for p in params] == [(3, 4), (4,)]
        if not tier0:
            raise NotApplicable("only the plainest case")
        return super().open(hp, params, dtype, variant, **extras)

    def construct(self, kwargs, variant):
        raise NotApplicable("the constructor is not exposed")


class _ForgetfulSession:
    def __init__(self, inner):
        self.inner, self.restored = inner, False

    @property
    def optim(self):  # ReferenceAdapter.open_at sets the mid-run state through it
        return self.inner.optim

    def step(self, grads):
        self.inner.step(grads)

    def read(self):
        snap = self.inner.read()
        return Snapshot([], [], snap.step) if self.restored else snap

    def save(self):
        return self.inner.save()

    def restore(self, blob):
        self.restored = True  # and nothing is loaded


class _ForgetfulResume(ReferenceAdapter):
    def open(self, hp, params, dtype, variant, **extras):
        return _ForgetfulSession(super().open(hp, params, dtype, variant, **extras))


def declines_numbers():
    return _DeclinesNumbers("mindformers")


def only_tier0():
    return _OnlyTier0("mindformers")


def forgetful_resume():
    return _ForgetfulResume("mindformers")


class _SmallMomentumSession:
    def __init__(self, inner):
        self.inner = inner

    @property
    def optim(self):  # ReferenceAdapter.open_at sets the mid-run state through it
        return self.inner.optim

    def step(self, grads):
        self.inner.step(grads)
        for value, tensors in zip(self.inner.optim._values, self.inner.optim.state.tensors):
            if np.ndim(value) <= 1:
                tensors["exp_avg"] = tensors["exp_avg"] * 0.01

    def read(self):
        return self.inner.read()


class _SmallVectorMomentum(ReferenceAdapter):
    def open(self, hp, params, dtype, variant, **extras):
        return _SmallMomentumSession(super().open(hp, params, dtype, variant, **extras))


def small_vector_momentum():
    return _SmallVectorMomentum("paper")
