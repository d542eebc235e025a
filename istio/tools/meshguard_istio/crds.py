"""Istio's CRDs (from the shared crds.gen.yaml) and validating custom resources with them.

A custom resource is checked as the API server checks it on create: its apiVersion must
be a served version of a CRD for its kind; apiVersion, kind and metadata are the only
fields outside the CRD's schema (metadata is validated as ObjectMeta, since CRD schemas
leave it out); everything else goes through the structural schema (`structural`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import corekinds, paths
from .structural import SchemaValidator

_IMPLICIT_FIELDS = {"apiVersion", "kind", "metadata"}
# crds.gen.yaml is 19,000 lines: libyaml parses it ten times faster than pure Python.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class CrdVersion:
    """One served version of one CRD."""

    group: str
    version: str
    kind: str
    schema: dict


def load(crds_file: Path | None = None) -> dict[tuple[str, str, str], CrdVersion]:
    """Served versions by (group, version, kind), from `crds_file` (default: the shared
    crds.gen.yaml, wherever ISTIO_SHARED_DIR points now)."""
    return _load((crds_file or paths.crds_file()).resolve())


@functools.lru_cache(maxsize=None)
def _load(source: Path) -> dict[tuple[str, str, str], CrdVersion]:
    index: dict[tuple[str, str, str], CrdVersion] = {}
    with open(source) as f:
        for doc in yaml.load_all(f, Loader=_LOADER):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for v in spec["versions"]:
                if v.get("served"):
                    key = (spec["group"], v["name"], spec["names"]["kind"])
                    index[key] = CrdVersion(*key, v["schema"]["openAPIV3Schema"])
    return index


def groups(crds_file: Path | None = None) -> set[str]:
    return {group for group, _, _ in load(crds_file)}


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def is_custom_resource(obj: dict, crds_file: Path | None = None) -> bool:
    """True for kinds whose group is one of the CRDs' groups (Istio's)."""
    group, _ = split_api_version(str(obj.get("apiVersion", "")))
    return group in groups(crds_file)


def validate(obj: dict, crds_file: Path | None = None) -> list[str]:
    """Every error the API server would report for this custom resource."""
    group, version = split_api_version(str(obj.get("apiVersion", "")))
    kind = obj.get("kind")
    crd = load(crds_file).get((group, version, kind))
    if crd is None:
        served = sorted(f"{g}/{v}" for g, v, k in load(crds_file) if k == kind)
        hint = f" (served: {', '.join(served)})" if served else ""
        return [f'no served CRD for apiVersion "{obj.get("apiVersion")}" kind "{kind}"{hint}']
    errors = corekinds.object_meta_errors(obj.get("metadata"))
    errors += corekinds.name_errors(obj)
    body = {k: v for k, v in obj.items() if k not in _IMPLICIT_FIELDS}
    schema_fields = set(crd.schema.get("properties", {}))
    errors += [f'unknown field "{k}"' for k in body if k not in schema_fields]
    errors += SchemaValidator().validate(crd.schema, {k: v for k, v in body.items() if k in schema_fields})
    return errors
