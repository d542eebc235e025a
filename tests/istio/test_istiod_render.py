"""The pluginConfig rendering reproduces istiod's (Go jsonpb over a protobuf Struct):
compact, keys sorted at every level, numbers as Go float64, strings with Go's HTML-safe
escaping. Expected strings are what Go's encoding/json prints for the same values."""

from __future__ import annotations

import json

import pytest

from manifests import only
from meshguard_istio import istiod


@pytest.mark.parametrize("value, go", [
    (0, "0"), (60, "60"), (60.0, "60"), (10000, "10000"), (1e6, "1000000"), (-2, "-2"),
    (0.5, "0.5"), (3.14, "3.14"), (1e20, "100000000000000000000"), (1e21, "1e+21"),
    (1.5e21, "1.5e+21"), (1e-6, "0.000001"), (1e-7, "1e-7"), (-2.5e-8, "-2.5e-8"),
    (2**53 + 1, "9007199254740992"),  # a Struct number is a float64: precision is lost, as in Go
])
def test_numbers_as_go_float64(value, go):
    assert istiod.go_float64(float(value)) == go


def test_strings_as_go_encoding_json():
    assert istiod.go_string("a <b> & c") == r'"a \u003cb\u003e \u0026 c"'
    assert istiod.go_string("line\nbreak\ttab\b\f\x01") == r'"line\nbreak\ttab\b\f\u0001"'
    assert istiod.go_string("naïve \u2028") == '"naïve \\u2028"'


def test_structure_compact_and_sorted():
    doc = {"b": {"z": 1, "a": [True, None, {"y": 2.0, "x": "s"}]}, "a": 1, "É": 0, "Z": ""}
    assert istiod.plugin_config_json(doc) == '{"Z":"","a":1,"b":{"a":[true,null,{"x":"s","y":2}],"z":1},"É":0}'


def test_rendered_wasm_plugin_config(rendered):
    """The manifests' pluginConfig as istiod hands it to the filter."""
    config = only(rendered["istio"], "WasmPlugin")["spec"]["pluginConfig"]
    text = istiod.plugin_config_json(config)
    assert json.loads(text) == config
    assert text == json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"), ensure_ascii=False) \
        .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    assert '"clock_skew_seconds":60,' in text and '"flush_interval_ms":200,' in text
    assert "time.hour \\u003e= 9" in text, "Go escapes > in strings"
    assert " " not in text.split('"policy_yaml"')[0].replace("time.hour", "")  # compact


def test_wasm_filter_as_istiod_builds_it(rendered):
    plugin = only(rendered["istio"], "WasmPlugin")
    wasm = istiod.wasm_filter(plugin, "/var/lib/istio/data/meshguard.wasm", resource_version="7")
    config = wasm["config"]
    assert wasm["@type"] == istiod.WASM_FILTER
    assert config["name"] == "agents.meshguard" and config["root_id"] == "meshguard"
    assert config["fail_open"] is False  # failStrategy FAIL_CLOSE
    assert config["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert config["vm_config"]["environment_variables"]["key_values"] == {
        "ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "7", "ISTIO_META_WASM_IMAGE_PULL_POLICY": "IfNotPresent"}
    assert config["configuration"] == {"@type": istiod.STRING_VALUE,
                                       "value": istiod.plugin_config_json(plugin["spec"]["pluginConfig"])}


def test_cluster_names():
    assert istiod.cluster_name(4317, "meshguard-collector.meshguard.svc.cluster.local") == \
        "outbound|4317||meshguard-collector.meshguard.svc.cluster.local"
    assert istiod.cluster_name(8080, "reviews.default.svc.cluster.local", "v2") == \
        "outbound|8080|v2|reviews.default.svc.cluster.local"
    assert istiod.referenced_clusters({"audit": {"cluster": "a"}, "bundle": {"cluster": "b"},
                                       "identity": {"issuers": [{"jwks_cluster": "a"}, {}]}}) == ["a", "b"]
