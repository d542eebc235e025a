"""Fixtures for the Istio suite: the istio/tools library on sys.path, Istio's shared
examples, and the rendered kustomizations (rendered once per session: kubectl kustomize
is cheap, but the objects are shared by many tests).

Tests must never modify istio/ in place: the ones that need a changed manifest render
a copy (see `istio_copy`).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from manifests import REPO  # noqa: E402  (also puts istio/tools on sys.path)
from meshguard_istio import kustomize, paths  # noqa: E402


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Every kustomization under istio/, rendered: {"istio/live": [objects], ...}."""
    return {str(d.relative_to(REPO)): kustomize.render(d) for d in paths.kustomizations()}


@pytest.fixture
def istio_copy(tmp_path: Path) -> Path:
    """A private copy of istio/ (without tools/) to break or re-pin; kustomize paths stay
    relative, so it renders like the original."""
    target = tmp_path / "istio"
    shutil.copytree(paths.ISTIO_DIR, target, ignore=shutil.ignore_patterns("tools", "__pycache__"))
    return target


@pytest.fixture(scope="session")
def module() -> Path:
    if not paths.WASM.exists():
        pytest.fail(f"{paths.WASM} is not built (make wasm)")
    return paths.WASM
