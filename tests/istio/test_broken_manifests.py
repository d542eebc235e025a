"""istio-check fails on broken manifests, for the right reason: schema errors (unknown
fields, enums, types), CEL rule violations, Envoy fields that do not exist in Envoy's
protos, and plugin configurations the real filter rejects. The last tests run the
`istio_check.py` command itself on broken copies of istio/ and expect exit status 1."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys

import pytest

from manifests import REPO, only
from meshguard_istio import check

CLI = REPO / "istio" / "tools" / "istio_check.py"


def _errors(obj: dict) -> str:
    errors = check.object_errors(obj)
    assert errors, "the broken object passed"
    return "\n".join(errors)


@pytest.fixture
def wasm_plugin(rendered) -> dict:
    return copy.deepcopy(only(rendered["istio"], "WasmPlugin"))


@pytest.fixture
def envoy_filter(rendered) -> dict:
    return copy.deepcopy(only(rendered["istio/envoyfilter"], "EnvoyFilter"))


def _wasm_config(envoy_filter: dict) -> dict:
    return envoy_filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]


# -- WasmPlugin ----------------------------------------------------------------------------------

def test_wasm_plugin_unknown_field(wasm_plugin):
    wasm_plugin["spec"]["phaze"] = "AUTHN"
    assert 'unknown field "spec.phaze"' in _errors(wasm_plugin)


def test_wasm_plugin_unknown_nested_field(wasm_plugin):
    wasm_plugin["spec"]["selector"]["matchLabel"] = {"app": "tools"}
    assert 'unknown field "spec.selector.matchLabel"' in _errors(wasm_plugin)


def test_wasm_plugin_bad_phase(wasm_plugin):
    wasm_plugin["spec"]["phase"] = "AUTHENTICATE"
    assert 'spec.phase: Unsupported value: "AUTHENTICATE"' in _errors(wasm_plugin)


def test_wasm_plugin_bad_fail_strategy_type(wasm_plugin):
    wasm_plugin["spec"]["failStrategy"] = False
    assert "spec.failStrategy in body must be of type string" in _errors(wasm_plugin)


def test_wasm_plugin_selector_and_target_refs_violate_cel(wasm_plugin):
    wasm_plugin["spec"]["targetRefs"] = [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]
    assert 'spec: Invalid value: "object": only one of targetRefs or selector can be set' in _errors(wasm_plugin)


def test_wasm_plugin_cross_namespace_target_violates_cel(wasm_plugin):
    del wasm_plugin["spec"]["selector"]
    wasm_plugin["spec"]["targetRefs"] = [{"kind": "Gateway", "name": "gw", "namespace": "other"}]
    assert "cross namespace referencing is not currently supported" in _errors(wasm_plugin)


def test_wasm_plugin_url_scheme_violates_cel(wasm_plugin):
    wasm_plugin["spec"]["url"] = "docker://ghcr.io/meshguard/meshguard-filter:0.1.0"
    assert "url must have schema one of" in _errors(wasm_plugin)


def test_wasm_plugin_wildcard_label_violates_cel(wasm_plugin):
    wasm_plugin["spec"]["selector"]["matchLabels"] = {"meshguard.io/guarded": "tr*e"}
    assert "wildcard not allowed in label value match" in _errors(wasm_plugin)


def test_wasm_plugin_bad_sha256(wasm_plugin):
    wasm_plugin["spec"]["sha256"] = "sha256:" + "a" * 64
    assert "spec.sha256 in body should match" in _errors(wasm_plugin)


def test_wasm_plugin_unserved_version(wasm_plugin):
    wasm_plugin["apiVersion"] = "extensions.istio.io/v1"
    assert 'no served CRD for apiVersion "extensions.istio.io/v1"' in _errors(wasm_plugin)


def test_wasm_plugin_bad_metadata(wasm_plugin):
    wasm_plugin["metadata"]["labelz"] = {}
    wasm_plugin["metadata"]["name"] = "MeshGuard"
    errors = _errors(wasm_plugin)
    assert "labelz" in errors and "RFC 1123 subdomain" in errors


# -- EnvoyFilter ---------------------------------------------------------------------------------

def test_envoy_filter_unknown_envoy_field(envoy_filter):
    _wasm_config(envoy_filter)["vm_config"]["vm_identifier"] = "meshguard"
    errors = _errors(envoy_filter)
    assert 'spec.configPatches[0].patch.value' in errors
    assert 'has no field named "vm_identifier"' in errors


def test_envoy_filter_unknown_typed_config_type(envoy_filter):
    envoy_filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["@type"] = \
        "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.WasmFilter"
    assert "Can not find message descriptor" in _errors(envoy_filter)


def test_envoy_filter_bad_cluster_value(envoy_filter):
    envoy_filter["spec"]["configPatches"][1]["patch"]["value"]["connect_timeout"] = "one second"
    errors = _errors(envoy_filter)
    assert "spec.configPatches[1].patch.value: envoy.config.cluster.v3.Cluster" in errors


def test_envoy_filter_bad_apply_to(envoy_filter):
    envoy_filter["spec"]["configPatches"][0]["applyTo"] = "HTTP_FILTERS"
    assert 'spec.configPatches[0].applyTo: Unsupported value: "HTTP_FILTERS"' in _errors(envoy_filter)


def test_envoy_filter_waypoint_match_violates_cel(envoy_filter):
    envoy_filter["spec"]["configPatches"][0]["match"]["waypoint"] = {}
    errors = _errors(envoy_filter)
    assert "only support waypointMatch when context is WAYPOINT" in errors
    assert "must validate one and only one schema (oneOf)" in errors  # listener and waypoint both set


def test_envoy_filter_unknown_spec_field(envoy_filter):
    envoy_filter["spec"]["workloadSelectors"] = envoy_filter["spec"].pop("workloadSelector")
    assert 'unknown field "spec.workloadSelectors"' in _errors(envoy_filter)


# -- core kinds ----------------------------------------------------------------------------------

def test_deployment_unknown_field(rendered):
    deployment = copy.deepcopy(only(rendered["istio/collector"], "Deployment"))
    deployment["spec"]["replica"] = 1
    assert "replica" in _errors(deployment)


def test_service_port_type(rendered):
    service = copy.deepcopy(only(rendered["istio/collector"], "Service"))
    service["spec"]["ports"][0]["port"] = "grpc"
    assert "'grpc' is not of type" in _errors(service)


# -- the istio-check command on broken copies ----------------------------------------------------
#
# Each case edits one file of a private copy of istio/ and runs the command on the
# kustomization holding it. The runs start together (each spends seconds in Envoy, on two
# cores). That the unbroken manifests pass is `make istio-check` itself.

CLI_CASES = {
    "wasm-plugin-phase": ("wasmplugin", "wasmplugin.yaml", "phase: AUTHN", "phase: AUTHENTICATE"),
    "envoy-filter-field": ("envoyfilter", "envoyfilter.yaml", "fail_open: false", "fail_closed: true"),
    # flow (a) safety net: a bad edit of policy.yaml is caught before `kubectl apply -k`
    "policy-rejected-by-filter": ("wasmplugin", "policy.yaml", "effect: deny", "effect: dney"),
}


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, module) -> dict[str, subprocess.CompletedProcess]:
    running = {}
    for case, (directory, file_name, old, new) in CLI_CASES.items():
        root = tmp_path_factory.mktemp(case)
        copy_dir = root / "istio"
        shutil.copytree(REPO / "istio", copy_dir, ignore=shutil.ignore_patterns("tools", "__pycache__"))
        target = copy_dir / directory / file_name
        text = target.read_text()
        assert old in text
        target.write_text(text.replace(old, new, 1))
        running[case] = subprocess.Popen(
            [sys.executable, str(CLI), str(copy_dir / directory), "--no-sync-check",
             "--oci-layout", str(root / "no-image")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    results = {}
    for case, proc in running.items():
        out, _ = proc.communicate(timeout=180)
        results[case] = subprocess.CompletedProcess(proc.args, proc.returncode, out)
    return results


def test_istio_check_fails_on_broken_wasm_plugin(cli_runs):
    proc = cli_runs["wasm-plugin-phase"]
    assert proc.returncode == 1, proc.stdout
    assert 'spec.phase: Unsupported value: "AUTHENTICATE"' in proc.stdout
    assert "istio-check FAILED" in proc.stdout


def test_istio_check_fails_on_broken_envoy_filter(cli_runs):
    proc = cli_runs["envoy-filter-field"]
    assert proc.returncode == 1, proc.stdout
    assert 'has no field named "fail_closed"' in proc.stdout


def test_istio_check_fails_on_a_policy_the_filter_rejects(cli_runs):
    proc = cli_runs["policy-rejected-by-filter"]
    assert proc.returncode == 1, proc.stdout
    assert "rejected by envoy --mode validate" in proc.stdout
    assert "dney" in proc.stdout
