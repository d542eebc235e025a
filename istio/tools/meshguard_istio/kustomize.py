"""Rendering kustomizations exactly as `kubectl apply -k` would build them (offline)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml


class KustomizeError(RuntimeError):
    """kubectl kustomize failed; the message carries its stderr."""


def kubectl() -> str:
    found = shutil.which("kubectl")
    if not found:
        raise KustomizeError("kubectl not found on PATH (needed for `kubectl kustomize`)")
    return found


def render(directory: Path) -> list[dict]:
    """The objects `kubectl kustomize DIR` produces, parsed (empty documents dropped)."""
    proc = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {directory}: {proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


def find(objects: list[dict], kind: str, name: str | None = None) -> list[dict]:
    """Objects of `kind` (and `name`, when given)."""
    return [o for o in objects if o.get("kind") == kind
            and (name is None or o.get("metadata", {}).get("name") == name)]
