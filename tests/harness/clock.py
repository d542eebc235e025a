"""The UTC hour, for tests whose expected outcome depends on it.

The filter reads the clock when it decides; the test reads it before and after the call.
If the hour changed in between, the expectation may be wrong through no fault of the
filter, so `at_stable_hour` runs the check again (an hour boundary cannot be crossed
twice in a few seconds).
"""

from __future__ import annotations

import datetime as _dt
from typing import Callable, TypeVar

T = TypeVar("T")


def utc_hour() -> int:
    return _dt.datetime.now(_dt.timezone.utc).hour


def at_stable_hour(check: Callable[[int], T], attempts: int = 3) -> T:
    """Calls ``check(hour)``; returns its result if the UTC hour was the same before and
    after, else tries again. Assertion failures inside a stable hour propagate."""
    for _ in range(attempts):
        before = utc_hour()
        try:
            result = check(before)
        except AssertionError:
            if utc_hour() == before:
                raise
            continue
        if utc_hour() == before:
            return result
    raise AssertionError(f"the UTC hour kept changing over {attempts} attempts")
