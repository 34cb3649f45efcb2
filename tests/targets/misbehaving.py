"""Targets that misbehave on purpose, to test the runner's robustness (not CAME ports).

``crashing``: the process dies in the middle of the third step of every case.
``hanging``: the second step of every case never returns.
Both wrap the reference adapter so everything else about them is correct.
"""
import os
import time

from came_conformance.adapters.reference import ReferenceAdapter


class _Misbehaving(ReferenceAdapter):
    def __init__(self, fail_at: int, action):
        super().__init__("mindformers")
        self.fail_at, self.action = fail_at, action

    def open(self, hp, params, dtype, variant):
        session = super().open(hp, params, dtype, variant)
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
