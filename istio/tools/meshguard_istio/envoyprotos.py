"""The Envoy configuration embedded in an EnvoyFilter, parsed with Envoy's real protos
(PyPI xds-protos, generated from envoyproxy/data-plane-api).

istiod turns each patch `value` into the proto message its `applyTo` names and rejects a
field the message does not have, or an Any (`typed_config`) whose type it does not know.
The same happens here with protobuf's json_format (unknown fields are errors; snake_case
and lowerCamelCase names are both accepted, as in istiod). Any types are resolved by
importing the generated modules of the type's proto package on demand, so every Envoy
extension xds-protos ships is understood. A `udpa.type.v1.TypedStruct` / `xds.type.v3.
TypedStruct` is also unpacked and its `value` parsed as its `type_url` message.

What protos cannot express (protoc-gen-validate rules such as "at least one endpoint",
cross-field rules) is left to `envoy --mode validate` (see `check`).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Iterator

from google.protobuf import json_format, symbol_database
from google.protobuf.message import Message

TYPE_URL_PREFIX = "type.googleapis.com/"

# What istiod builds from a patch value, by applyTo (istio pkg/config/xds).
MESSAGE_FOR_APPLY_TO = {
    "LISTENER": "envoy.config.listener.v3.Listener",
    "FILTER_CHAIN": "envoy.config.listener.v3.FilterChain",
    "NETWORK_FILTER": "envoy.config.listener.v3.Filter",
    "HTTP_FILTER": "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter",
    "ROUTE_CONFIGURATION": "envoy.config.route.v3.RouteConfiguration",
    "VIRTUAL_HOST": "envoy.config.route.v3.VirtualHost",
    "HTTP_ROUTE": "envoy.config.route.v3.Route",
    "CLUSTER": "envoy.config.cluster.v3.Cluster",
    "EXTENSION_CONFIG": "envoy.config.core.v3.TypedExtensionConfig",
    "BOOTSTRAP": "envoy.config.bootstrap.v3.Bootstrap",
    "LISTENER_FILTER": "envoy.config.listener.v3.ListenerFilter",
}

_TYPED_STRUCTS = {"udpa.type.v1.TypedStruct", "xds.type.v3.TypedStruct"}


class ProtoError(ValueError):
    """The value is not a valid message of its type."""


def _import_package(package: str) -> None:
    """Imports every generated module of a proto package (e.g. envoy.config.cluster.v3),
    which registers its messages in the default descriptor pool."""
    try:
        module = importlib.import_module(package)
    except ImportError:
        return  # unknown package: the lookup below reports the type
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        if info.name.endswith("_pb2"):
            importlib.import_module(f"{package}.{info.name}")


def message_class(full_name: str) -> type[Message]:
    """The generated class of a message, importing its package if needed."""
    db = symbol_database.Default()
    try:
        return db.GetSymbol(full_name)
    except KeyError:
        _import_package(full_name.rsplit(".", 1)[0])
    try:
        return db.GetSymbol(full_name)
    except KeyError:
        raise ProtoError(f"unknown message type {full_name!r} (not in xds-protos)") from None


def _type_urls(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("@type", "type_url", "typeUrl") and isinstance(item, str):
                yield item
            yield from _type_urls(item)
    elif isinstance(value, list):
        for item in value:
            yield from _type_urls(item)


def _full_name(type_url: str) -> str:
    return type_url.rsplit("/", 1)[-1]


def parse(full_name: str, value: dict) -> Message:
    """`value` (JSON-like) as the message `full_name`; ProtoError names what is wrong."""
    for url in set(_type_urls(value)):
        try:
            message_class(_full_name(url))
        except ProtoError:
            pass  # json_format reports it in context below
    message = message_class(full_name)()
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except (json_format.ParseError, TypeError, ValueError) as e:
        raise ProtoError(f"{full_name}: {e}") from None
    for typed_struct in _typed_structs(value):
        parse(_full_name(typed_struct.get("type_url", typed_struct.get("typeUrl", ""))),
              typed_struct.get("value") or {})
    return message


def _typed_structs(value: Any) -> Iterator[dict]:
    if isinstance(value, dict):
        if _full_name(str(value.get("@type", ""))) in _TYPED_STRUCTS:
            yield value
        for item in value.values():
            yield from _typed_structs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _typed_structs(item)


def patch_errors(envoy_filter: dict) -> list[str]:
    """Every configPatches[i].patch.value that does not parse as its applyTo's message."""
    errors = []
    for i, cp in enumerate((envoy_filter.get("spec") or {}).get("configPatches") or []):
        value = (cp.get("patch") or {}).get("value")
        if value is None:
            continue
        full_name = MESSAGE_FOR_APPLY_TO.get(cp.get("applyTo", ""))
        if full_name is None:
            errors.append(f"spec.configPatches[{i}]: applyTo {cp.get('applyTo')!r} carries no Envoy message")
            continue
        try:
            parse(full_name, value)
        except ProtoError as e:
            errors.append(f"spec.configPatches[{i}].patch.value: {e}")
    return errors
