"""Hypothesis profiles for the property tests.

``ci`` (the default) keeps the whole property suite to about a minute on two cores
and is derandomized, so a CI run is repeatable; ``thorough`` tries many more cases:

    PARATRAIN_HYPOTHESIS_PROFILE=thorough pytest tests/property

database=None: nothing is written to a .hypothesis folder in the tree; a case that
fails once is kept as an explicit @example or test instead.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(database=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

settings.register_profile("ci", max_examples=150, derandomize=True, deadline=None, print_blob=True, **_COMMON)
settings.register_profile("thorough", max_examples=3000, deadline=None, print_blob=True, **_COMMON)
settings.load_profile(os.environ.get("PARATRAIN_HYPOTHESIS_PROFILE", "ci"))
