"""Kubernetes structural-schema validation: what the API server checks when a custom
resource is created with strict field validation (`kubectl apply --validate=strict`,
the default since Kubernetes 1.27).

Why not a JSON Schema library: a CRD schema is OpenAPI v3 with Kubernetes semantics that
JSON Schema does not have: a field the schema does not declare is an error (unless
x-kubernetes-preserve-unknown-fields), `nullable`, x-kubernetes-int-or-string, list types
`map`/`set` with their uniqueness, CEL rules (x-kubernetes-validations) on any node, and
Go RE2 patterns. The messages follow the API server's wording ("spec.url in body should
be at least 1 chars long", "Required value", "Duplicate value", `Invalid value:
"object": <rule message>`), so Istio's own invalid examples can be matched against their
expected errors.

A schema keyword this module does not know is reported, never ignored: an unknown
keyword would otherwise silently weaken the check.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Callable

from . import cel

try:  # Go's regexp is RE2; google-re2 (a cel-python dependency) has the same semantics.
    import re2 as _regex
except ImportError:  # pragma: no cover - fallback when google-re2 is missing
    _regex = re

# Keywords that only describe (no constraint), and the ones validated below.
_DESCRIPTIVE = {"description", "title", "example", "default", "externalDocs", "x-kubernetes-map-type"}
_CONSTRAINTS = {
    "type", "properties", "required", "items", "additionalProperties", "enum", "nullable",
    "format", "pattern", "minLength", "maxLength", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "minProperties",
    "maxProperties", "allOf", "anyOf", "oneOf", "not", "x-kubernetes-validations",
    "x-kubernetes-int-or-string", "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-list-type", "x-kubernetes-list-map-keys",
}

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _quote(value: Any) -> str:
    """Go's %q-like rendering the API server uses for offending values."""
    return json.dumps(value, sort_keys=True, default=str)


def type_name(value: Any) -> str:
    """The JSON type name of a value, as the API server prints it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _is_integral(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": _is_integral,
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
}


class SchemaValidator:
    """Validates values against one structural schema. `structural=False` is used inside
    allOf/anyOf/oneOf/not, where Kubernetes only allows value constraints (no field
    pruning, no CEL)."""

    def validate(self, schema: dict, value: Any, path: str = "", *, structural: bool = True) -> list[str]:
        errors: list[str] = []
        self._node(schema, value, path, structural, errors)
        return errors

    # -- one node -------------------------------------------------------------------------

    def _node(self, schema: dict, value: Any, path: str, structural: bool, errors: list[str]) -> None:
        unknown = set(schema) - _CONSTRAINTS - _DESCRIPTIVE
        if unknown:
            errors.append(f"{path or '<root>'}: schema keyword(s) not supported by this checker: "
                          f"{', '.join(sorted(unknown))}")
            return
        if value is None:
            if not schema.get("nullable") and "type" in schema:
                errors.append(f'{path}: Invalid value: "null": {path or "body"} in body must be of type '
                              f'{schema["type"]}: "null"')
            return
        if not self._type_ok(schema, value, path, errors):
            return
        if "enum" in schema and value not in schema["enum"]:
            allowed = ", ".join(_quote(v) for v in schema["enum"])
            errors.append(f"{path}: Unsupported value: {_quote(value)}: supported values: {allowed}")
        if isinstance(value, str):
            self._string(schema, value, path, errors)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            self._number(schema, value, path, errors)
        elif isinstance(value, list):
            self._array(schema, value, path, structural, errors)
        elif isinstance(value, dict):
            self._object(schema, value, path, structural, errors)
        self._combinators(schema, value, path, errors)
        if structural:
            self._cel(schema, value, path, errors)

    def _type_ok(self, schema: dict, value: Any, path: str, errors: list[str]) -> bool:
        if schema.get("x-kubernetes-int-or-string"):
            ok = isinstance(value, str) or _is_integral(value)
            expected = "integer or string"
        elif "type" in schema:
            ok = _TYPE_CHECKS[schema["type"]](value)
            expected = schema["type"]
        else:
            return True
        if not ok:
            errors.append(f'{path}: Invalid value: "{type_name(value)}": {path or "body"} in body must be '
                          f'of type {expected}: "{type_name(value)}"')
        return ok

    # -- scalars --------------------------------------------------------------------------

    def _string(self, schema: dict, value: str, path: str, errors: list[str]) -> None:
        where = f"{path} in body"
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: Invalid value: {_quote(value)}: {where} should be at least "
                          f"{schema['minLength']} chars long")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: Too long: may not be more than {schema['maxLength']} bytes")
        if "pattern" in schema and not _regex.search(schema["pattern"], value):
            errors.append(f"{path}: Invalid value: {_quote(value)}: {where} should match "
                          f"'{schema['pattern']}'")
        problem = _format_problem(schema.get("format"), value)
        if problem:
            errors.append(f"{path}: Invalid value: {_quote(value)}: {where} must be of type "
                          f"{schema['format']}: {problem}")

    def _number(self, schema: dict, value: float, path: str, errors: list[str]) -> None:
        where = f"{path} in body"
        if "minimum" in schema:
            low, exclusive = schema["minimum"], schema.get("exclusiveMinimum") is True
            if value < low or (exclusive and value == low):
                errors.append(f"{path}: Invalid value: {_quote(value)}: {where} should be greater than "
                              f"{'' if exclusive else 'or equal to '}{low}")
        if "maximum" in schema:
            high, exclusive = schema["maximum"], schema.get("exclusiveMaximum") is True
            if value > high or (exclusive and value == high):
                errors.append(f"{path}: Invalid value: {_quote(value)}: {where} should be less than "
                              f"{'' if exclusive else 'or equal to '}{high}")
        if "multipleOf" in schema and (value / schema["multipleOf"]) % 1:
            errors.append(f"{path}: Invalid value: {_quote(value)}: {where} should be a multiple of "
                          f"{schema['multipleOf']}")

    # -- collections ------------------------------------------------------------------------

    def _array(self, schema: dict, value: list, path: str, structural: bool, errors: list[str]) -> None:
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: Invalid value: {len(value)}: {path} in body should have at least "
                          f"{schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: Too many: {len(value)}: must have at most {schema['maxItems']} items")
        list_type = schema.get("x-kubernetes-list-type")
        if list_type == "map":
            keys = schema.get("x-kubernetes-list-map-keys", [])
            identity = [tuple(json.dumps(item.get(k), sort_keys=True) for k in keys)
                        if isinstance(item, dict) else None for item in value]
            self._duplicates(value, identity, path, errors)
        elif list_type == "set" or schema.get("uniqueItems"):
            self._duplicates(value, [json.dumps(v, sort_keys=True) for v in value], path, errors)
        if "items" in schema:
            for i, item in enumerate(value):
                self._node(schema["items"], item, f"{path}[{i}]", structural, errors)

    @staticmethod
    def _duplicates(value: list, identity: list, path: str, errors: list[str]) -> None:
        seen: set = set()
        for i, key in enumerate(identity):
            if key is None:
                continue
            if key in seen:
                errors.append(f"{path}[{i}]: Duplicate value: {_quote(value[i])}")
            seen.add(key)

    def _object(self, schema: dict, value: dict, path: str, structural: bool, errors: list[str]) -> None:
        for name in schema.get("required", []):
            if name not in value:
                errors.append(f"{_join(path, name)}: Required value")
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            errors.append(f"{path}: Invalid value: {len(value)}: {path} in body should have at least "
                          f"{schema['minProperties']} properties")
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(f"{path}: Too many: {len(value)}: must have at most "
                          f"{schema['maxProperties']} items")
        properties = schema.get("properties", {})
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for key, item in value.items():
            if key in properties:
                self._node(properties[key], item, _join(path, key), structural, errors)
            elif isinstance(additional, dict):
                self._node(additional, item, f"{path}[{key}]", structural, errors)
            elif structural and not preserve and additional is not True:
                errors.append(f'unknown field "{_join(path, key)}"')

    # -- combinators and CEL ------------------------------------------------------------------

    def _passes(self, schema: dict, value: Any, path: str) -> bool:
        return not self.validate(schema, value, path, structural=False)

    def _combinators(self, schema: dict, value: Any, path: str, errors: list[str]) -> None:
        where = f"{path or 'body'} in body"
        for sub in schema.get("allOf", []):
            if not self._passes(sub, value, path):
                errors.append(f"{path}: Invalid value: {_quote(value)}: {where} must validate all the "
                              "schemas (allOf)")
                break
        if "anyOf" in schema and not any(self._passes(s, value, path) for s in schema["anyOf"]):
            errors.append(f"{path}: Invalid value: {_quote(value)}: {where} must validate at least one "
                          "schema (anyOf)")
        if "oneOf" in schema:
            matching = sum(self._passes(s, value, path) for s in schema["oneOf"])
            if matching != 1:
                errors.append(f"{path}: Invalid value: {_quote(value)}: {where} must validate one and only "
                              f"one schema (oneOf); it validates {matching}")
        if "not" in schema and self._passes(schema["not"], value, path):
            errors.append(f"{path}: Invalid value: {_quote(value)}: {where} must not validate the schema "
                          "(not)")

    def _cel(self, schema: dict, value: Any, path: str, errors: list[str]) -> None:
        for validation in schema.get("x-kubernetes-validations", []):
            if cel.is_transition_rule(validation["rule"]):
                continue  # needs oldSelf: only evaluated on update
            result = cel.check(validation, value)
            if result.ok:
                continue
            where = path + validation.get("fieldPath", "")
            reason = validation.get("reason", "FieldValueInvalid")
            if reason == "FieldValueForbidden":
                errors.append(f"{where}: Forbidden: {result.message}")
            elif reason == "FieldValueRequired":
                errors.append(f"{where}: Required value: {result.message}")
            elif reason == "FieldValueDuplicate":
                errors.append(f"{where}: Duplicate value: {result.message}")
            else:
                shown = schema.get("type", type_name(value))
                errors.append(f'{where}: Invalid value: "{shown}": {result.message}')


def _format_problem(fmt: str | None, value: str) -> str:
    """Why `value` is not of string format `fmt` ("" when it is, or when the format is
    not one the API server checks)."""
    if fmt == "date-time" and not _RFC3339.match(value):
        return "not an RFC 3339 date-time"
    if fmt == "byte":
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return "not base64"
    return ""
