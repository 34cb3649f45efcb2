"""The suite's one import namespace, in a source checkout.

An installed distribution (``pip install .``) has ``came_conformance`` (the runner, from
``conformance/``) with ``came_conformance.reference`` and ``came_conformance.fixtures`` inside it,
so nothing generic lands in site-packages.  In a checkout those folders stay at the repository's
top level; this file makes the same names resolve to them, so code and tests import one way only:
``came_conformance.X`` is ``conformance/X`` and, failing that, ``<repository>/X``.
"""
import os as _os

_ROOT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
__path__ = [_os.path.join(_ROOT, "conformance"), _ROOT]
