"""Hypothesis profiles of the test suite (README "Tests").

``ci``, the default (``make test``): derandomized, so the same commit gives the same verdict on
every run and every machine; no example database; 50 examples per property.  ``nightly``
(``make test-nightly``, ``CAME_HYPOTHESIS_PROFILE=nightly``): random seeds and 1000 examples per
property, a longer search whose failures print the blob that reproduces them.  The conformance
runner's own Hypothesis use is seeded separately (``--seed``, conformance/runner.py).
"""
import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None, max_examples=50, deadline=None)
settings.register_profile("nightly", derandomize=False, database=None, max_examples=1000, deadline=None,
                          print_blob=True)
settings.load_profile(os.environ.get("CAME_HYPOTHESIS_PROFILE", "ci"))
