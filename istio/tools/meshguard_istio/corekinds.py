"""Core Kubernetes kinds (Namespace, Deployment, Service, ConfigMap, PVC, ...) validated
offline with the JSON schemas PyPI's kubernetes-validate ships (generated from the
Kubernetes OpenAPI document, "strict" variant: undeclared fields are errors).

Every manifest is checked against the oldest and the newest Kubernetes minor this
project supports, so a field that only exists in new clusters (or was removed) shows.
The same schemas provide ObjectMeta, used for the metadata of Istio's custom resources.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils as kv_utils

# The Kubernetes minors the manifests must be valid for.
KUBERNETES_VERSIONS = ("1.30", "1.35")

# RFC 1123 subdomain: what the API server requires of most object names.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _format(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where or '<root>'}: {error.message}"


def validate(obj: dict) -> list[str]:
    """Schema errors of a core object, for every version in KUBERNETES_VERSIONS."""
    errors: list[str] = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"[kubernetes {version}] {_format(e)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errors.append(f"[kubernetes {version}] {e.message}")
    errors.extend(name_errors(obj))
    return errors


@functools.lru_cache(maxsize=1)
def _object_meta_validator() -> jsonschema.protocols.Validator:
    version = KUBERNETES_VERSIONS[-1]
    definitions = kv_utils.schema_contents(
        f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version)
    schema = {**definitions, "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
    return jsonschema.Draft202012Validator(schema)


def object_meta_errors(metadata: Any) -> list[str]:
    """ObjectMeta errors (for custom resources, whose CRD schema leaves metadata out)."""
    if not isinstance(metadata, dict):
        return ['metadata: Invalid value: metadata must be an object']
    errors = [f"metadata.{'.'.join(map(str, e.absolute_path))}: {e.message}".replace("metadata.:", "metadata:")
              for e in _object_meta_validator().iter_errors(metadata)]
    return errors


def name_errors(obj: dict) -> list[str]:
    """The API server's name rule (RFC 1123 subdomain, at most 253 characters)."""
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        return ["metadata.name: Required value: name is required"]
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        return [f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of '
                "lower case alphanumeric characters, '-' or '.'"]
    return []
