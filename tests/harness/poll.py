"""Waiting for something that happens asynchronously (exports on a timer, polls on an
interval) by polling with a deadline, never by a fixed sleep."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 8.0, what: str = "condition",
               interval: float = 0.1) -> T:
    """Calls `predicate` until it returns something truthy, and returns that."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last={last!r}")
