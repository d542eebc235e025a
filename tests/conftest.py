"""Pytest glue shared by everything under tests/: makes `harness` importable and, when a
test fails, attaches the log tail of every Envoy that is running (the first thing one
needs to understand a failure in the filter)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.envoy import Envoy  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for envoy in list(Envoy.running):
            state = "running" if envoy.alive() else f"EXITED with {envoy.proc.returncode}"
            report.sections.append((f"envoy {envoy.name} ({state})", envoy.log_tail(60)))
