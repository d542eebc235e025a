"""Small helpers for reading rendered manifests in the Istio tests (imported by test
modules; conftest.py only holds fixtures)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "istio" / "tools") not in sys.path:
    sys.path.insert(0, str(REPO / "istio" / "tools"))

from meshguard_istio import kustomize  # noqa: E402


def only(objects: list[dict], kind: str, name: str | None = None) -> dict:
    """The one object of `kind` (and `name`)."""
    found = kustomize.find(objects, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
