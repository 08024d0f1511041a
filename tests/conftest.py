"""Fixtures for the whole suite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from helios_kit.render.netguard import ENV_VAR as NETGUARD_ENV

# No per-example deadline for the property tests: CI runs several suites at once on two cores, where one
# example can stall past Hypothesis's default 200 ms for reasons that are not the code's (a deadline miss
# fails the test as "flaky"). What the properties check is correctness; benchmarks measure time.
settings.register_profile("helios", deadline=None)
settings.load_profile("helios")


@pytest.fixture(autouse=True)
def _page_guard_stays_with_its_test() -> Iterator[None]:
    """Worker entry points (`helios worker run`, `helios worker serve`, the Lambda handler) turn the page guard
    on for their whole process (HELIOS_NETGUARD). Run in-process by a test, that setting must end with it: a
    later test's `helios` subprocess inherited it once and its pages could not load their loopback assets."""
    before = os.environ.get(NETGUARD_ENV)
    yield
    if before is None:
        os.environ.pop(NETGUARD_ENV, None)
    else:
        os.environ[NETGUARD_ENV] = before
