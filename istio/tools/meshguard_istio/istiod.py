"""What istiod (and istio-agent) make of a WasmPlugin, reproduced exactly.

istiod stores `spec.pluginConfig` as a google.protobuf.Struct and hands it to the filter
as `protomarshal.ToJSON(pluginConfig)` wrapped in a StringValue. That function is Go's
github.com/golang/protobuf jsonpb Marshaler, which writes:

- compact JSON (no whitespace at all), object keys sorted (Go string order = UTF-8 byte
  order = code point order) at every level;
- every number as a float64 through encoding/json: integral values without a decimal
  point (`60`), the shortest digits that round-trip, exponent form only below 1e-6 or
  from 1e21 up (`1e+21`, `1e-7`); integers beyond 2**53 lose precision, as in Go;
- strings through encoding/json: `<`, `>`, `&`, U+2028 and U+2029 escaped as \\u003c,
  \\u003e, \\u0026, \\u2028, \\u2029; other non-ASCII kept as UTF-8; `\\b`, `\\f`, `\\n`,
  `\\r`, `\\t` short forms, other control characters as \\u00XX.

The Envoy Wasm filter istiod generates (pilot/pkg/model/extensions.go) is named
`<namespace>.<name>`, has root_id = pluginName, the V8 runtime, the module as a remote
source that istio-agent downloads, checks against `sha256` and rewrites to a local file,
and a few ISTIO_META_* environment variables. `wasm_filter` builds that final form.

Istio names the Envoy clusters of a sidecar `outbound|<port>|<subset>|<host FQDN>` (and
`inbound|<port>||` for the local workload): `cluster_name` spells them.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"
WASM_FILTER = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RUNTIME = "envoy.wasm.runtime.v8"

_GO_HTML_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def cluster_name(port: int, host: str, subset: str = "", direction: str = "outbound") -> str:
    """Istio's Envoy cluster name, e.g. outbound|4317||collector.ns.svc.cluster.local."""
    return f"{direction}|{port}|{subset}|{host}"


def go_float64(value: float) -> str:
    """A float64 as Go's encoding/json prints it."""
    if not math.isfinite(value):
        raise ValueError(f"{value} cannot be a protobuf Struct number in JSON")
    exponent_form = value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21)
    digits = Decimal(repr(float(value))).normalize()
    if not exponent_form:
        return format(digits, "f")
    sign, mantissa, exp = digits.as_tuple()
    scientific_exp = exp + len(mantissa) - 1
    text = "".join(map(str, mantissa))
    head = text[0] + ("." + text[1:] if len(text) > 1 else "")
    exp_text = f"{'-' if scientific_exp < 0 else '+'}{abs(scientific_exp):02d}"
    if exp_text.startswith("-0"):
        exp_text = "-" + exp_text[2:]  # Go trims e-09 to e-9 (not e+09: never produced)
    return f"{'-' if sign else ''}{head}e{exp_text}"


def go_string(value: str) -> str:
    """A string as Go's encoding/json prints it (HTML-safe escaping)."""
    text = json.dumps(value, ensure_ascii=False)
    for raw, escaped in _GO_HTML_ESCAPES.items():
        text = text.replace(raw, escaped)
    return text


def plugin_config_json(value: Any) -> str:
    """`value` (the pluginConfig as parsed YAML/JSON) exactly as istiod renders it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return go_float64(float(value))
    if isinstance(value, str):
        return go_string(value)
    if isinstance(value, list):
        return "[" + ",".join(plugin_config_json(v) for v in value) + "]"
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"pluginConfig key {key!r} is not a string")
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-8"))
        return "{" + ",".join(f"{go_string(k)}:{plugin_config_json(v)}" for k, v in items) + "}"
    raise TypeError(f"{type(value).__name__} cannot be in a protobuf Struct")


def wasm_filter(wasm_plugin: dict, module_path: str, resource_version: str = "1") -> dict:
    """The Envoy Wasm HTTP filter config (envoy.extensions.filters.http.wasm.v3.Wasm, as
    JSON) that a sidecar runs for this WasmPlugin once istio-agent has fetched the module
    to `module_path`."""
    meta, spec = wasm_plugin["metadata"], wasm_plugin["spec"]
    env = {"ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": resource_version}
    if spec.get("imagePullPolicy", "UNSPECIFIED_POLICY") != "UNSPECIFIED_POLICY":
        env["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = spec["imagePullPolicy"]
    host_env_keys = []
    for var in (spec.get("vmConfig") or {}).get("env") or []:
        if var.get("valueFrom", "INLINE") == "INLINE":
            env[var["name"]] = var.get("value", "")
        else:
            host_env_keys.append(var["name"])
    vm_config: dict[str, Any] = {
        "runtime": RUNTIME,
        "code": {"local": {"filename": module_path}},
        "environment_variables": {"key_values": env, **({"host_env_keys": host_env_keys} if host_env_keys else {})},
    }
    config: dict[str, Any] = {
        "name": f"{meta.get('namespace', 'default')}.{meta['name']}",
        "root_id": spec.get("pluginName", ""),
        "vm_config": vm_config,
        "fail_open": spec.get("failStrategy") == "FAIL_OPEN",
    }
    if spec.get("pluginConfig"):
        config["configuration"] = {"@type": STRING_VALUE, "value": plugin_config_json(spec["pluginConfig"])}
    return {"@type": WASM_FILTER, "config": config}


def referenced_clusters(plugin_config: dict) -> list[str]:
    """The Envoy clusters a MeshGuard plugin configuration calls out to (audit collector,
    bundle server, remote JWKS), in a stable order without duplicates."""
    names = [(plugin_config.get("audit") or {}).get("cluster"),
             (plugin_config.get("bundle") or {}).get("cluster")]
    for issuer in (plugin_config.get("identity") or {}).get("issuers") or []:
        names.append(issuer.get("jwks_cluster"))
    return list(dict.fromkeys(n for n in names if n))
