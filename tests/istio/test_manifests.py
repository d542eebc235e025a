"""The committed manifests: every kustomization renders and validates, and the pieces
fit together (the policy reaches the WasmPlugin, cluster names match the Services they
name, the live overlay serves the bundle the WasmPlugin polls and trusts)."""

from __future__ import annotations

import json

import pytest
import yaml

from manifests import REPO, only
from example_bundle import verify
from meshguard_istio import check, istiod, paths, variants

KUSTOMIZATIONS = [str(d.relative_to(REPO)) for d in paths.kustomizations()]


def test_every_variant_is_found():
    assert set(KUSTOMIZATIONS) == {"istio", "istio/collector", "istio/wasmplugin", "istio/gateway",
                                   "istio/envoyfilter", "istio/live", "istio/collector-replicated"}


@pytest.mark.parametrize("directory", KUSTOMIZATIONS)
def test_kustomization_is_valid(rendered, directory):
    errors = [f"{check.object_id(o)}: {e}" for o in rendered[directory] for e in check.object_errors(o)]
    assert errors == []


def test_wasm_plugin_for_sidecars(rendered):
    spec = only(rendered["istio"], "WasmPlugin")["spec"]
    assert spec["phase"] == "AUTHN" and spec["failStrategy"] == "FAIL_CLOSE"
    assert spec["url"] == "oci://ghcr.io/meshguard/meshguard-filter:0.1.0"
    assert len(spec["sha256"]) == 64
    assert spec["selector"]["matchLabels"] == {"meshguard.io/guarded": "true"}
    assert spec["match"] == [{"mode": "SERVER"}]


def test_wasm_plugin_for_a_gateway(rendered):
    plugin = only(rendered["istio/gateway"], "WasmPlugin")
    spec = plugin["spec"]
    assert "selector" not in spec and "match" not in spec
    assert spec["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "agents-gateway"}]
    assert plugin["metadata"]["namespace"] == "istio-ingress"
    assert spec["pluginConfig"] == only(rendered["istio"], "WasmPlugin")["spec"]["pluginConfig"]


def test_policy_file_reaches_the_wasm_plugin(rendered):
    """Flow (a): kustomize copies policy.yaml, verbatim, into pluginConfig.policy_yaml."""
    policy = (paths.ISTIO_DIR / "wasmplugin" / "policy.yaml").read_text()
    for directory in ("istio", "istio/wasmplugin", "istio/gateway", "istio/live"):
        objects = rendered[directory]
        assert only(objects, "WasmPlugin")["spec"]["pluginConfig"]["policy_yaml"] == policy
        assert only(objects, "ConfigMap", "meshguard-policy")["data"] == {"policy.yaml": policy}


def test_envoyfilter_carries_the_same_configuration(rendered):
    envoy_filter = only(rendered["istio/envoyfilter"], "EnvoyFilter")
    wasm = envoy_filter["spec"]["configPatches"][0]["patch"]["value"]["typed_config"]["config"]
    text = wasm["configuration"]["value"]
    assert text == variants.envoyfilter_plugin_config(only(rendered["istio/wasmplugin"], "WasmPlugin"))
    config = json.loads(text)
    assert config["audit"]["cluster"] == "meshguard-collector"
    assert config["policy_yaml"] == (paths.ISTIO_DIR / "wasmplugin" / "policy.yaml").read_text()
    added = envoy_filter["spec"]["configPatches"][1]
    assert (added["applyTo"], added["patch"]["operation"], added["patch"]["value"]["name"]) == (
        "CLUSTER", "ADD", "meshguard-collector")
    assert "http2_protocol_options" in json.dumps(added["patch"]["value"])
    assert not [o for o in rendered["istio/envoyfilter"] if o["kind"] == "ConfigMap"], \
        "the plugin-config carrier ConfigMap is local to kustomize"


def _services(objects: list[dict]) -> dict[str, dict]:
    return {f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local": s
            for s in objects if s["kind"] == "Service"}


@pytest.mark.parametrize("directory", ["istio", "istio/live"])
def test_callout_clusters_name_rendered_services(rendered, directory):
    """outbound|PORT||HOST in pluginConfig must be a Service port of the same setup, and
    the audit collector's port must be gRPC (Istio then gives its cluster HTTP/2)."""
    objects = rendered[directory]
    services = _services(objects)
    config = only(objects, "WasmPlugin")["spec"]["pluginConfig"]
    checked = 0
    for name in istiod.referenced_clusters(config):
        direction, port, subset, host = name.split("|")
        assert (direction, subset) == ("outbound", "")
        if host not in services:
            assert host.endswith(".identity.svc.cluster.local"), f"{name}: no such Service rendered"
            continue  # the example issuer of remote JWKS is the user's own service
        ports = {p["port"]: p for p in services[host]["spec"]["ports"]}
        assert int(port) in ports, f"{name}: Service has no port {port}"
        if name == config["audit"]["cluster"]:
            assert ports[int(port)]["appProtocol"] == "grpc"
        checked += 1
    assert checked >= 1


def test_live_overlay_serves_what_the_filter_polls(rendered):
    """Flow (b): ConfigMap -> mounted directory -> `meshguard bundle serve` -> Service ->
    the WasmPlugin's bundle.cluster/path, signed with a key the WasmPlugin trusts."""
    objects = rendered["istio/live"]
    bundle_cfg = only(objects, "WasmPlugin")["spec"]["pluginConfig"]["bundle"]
    config_map = only(objects, "ConfigMap", "meshguard-bundle")
    deployment = only(objects, "Deployment", "meshguard-bundles")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    assert args[:2] == ["bundle", "serve"]
    directory = args[args.index("--dir") + 1]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == directory)
    assert "subPath" not in mount, "subPath mounts never see ConfigMap updates"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == config_map["metadata"]["name"], "no hash suffix: updated in place"
    file_name = bundle_cfg["path"].removeprefix("/bundles/")
    assert file_name in config_map["data"]
    port = int(bundle_cfg["cluster"].split("|")[1])
    assert bundle_cfg["cluster"] == istiod.cluster_name(port, "meshguard-bundles.meshguard.svc.cluster.local")
    bundle = json.loads(config_map["data"][file_name])
    assert bundle["format"] == "meshguard-bundle/v1"
    assert any(verify(bundle, key) for key in bundle_cfg["public_keys"]), "bundle not signed by a trusted key"


def test_live_overlay_keeps_inline_policy_and_adds_remote_jwks(rendered):
    config = only(rendered["istio/live"], "WasmPlugin")["spec"]["pluginConfig"]
    assert config["policy_yaml"], "the inline policy applies until the first bundle is verified"
    issuer = config["identity"]["issuers"][0]
    assert issuer["jwks_cluster"].startswith("outbound|") and issuer["jwks_path"].startswith("/")
    assert issuer["jwks_refresh_seconds"] == 300


def test_no_rbac_objects(rendered):
    kinds = {o["kind"] for objects in rendered.values() for o in objects}
    assert not kinds & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount"}


def test_example_keys_are_labelled(rendered):
    """The committed JWKS key is the clearly-labelled example whose private half exists
    only as a test fixture."""
    keys = only(rendered["istio"], "WasmPlugin")["spec"]["pluginConfig"]["identity"]["issuers"][0]["jwks"]["keys"]
    assert [k["kid"] for k in keys] == ["meshguard-example-key-not-for-production"]
    private_keys = [p for p in REPO.rglob("*.pem") if ".venv" not in p.parts and "target" not in p.parts]
    assert all("fixtures" in p.parts for p in private_keys), private_keys


def test_source_manifests_avoid_yaml_1_1_booleans():
    """`kubectl apply -f` (YAML 1.1) reads unquoted y/n/yes/no/on/off as booleans, even as
    keys (a JWK's `y`!). kustomize quotes them, but a file applied on its own would not."""
    risky = {"y", "Y", "n", "N", "yes", "no", "on", "off", "Yes", "No", "On", "Off"}
    for path in paths.ISTIO_DIR.rglob("*.yaml"):
        for doc in yaml.compose_all(path.read_text()):
            for node in _scalars(doc):
                assert not (node.style is None and node.value in risky), f"{path}: unquoted {node.value!r}"


def _scalars(node):
    if node is None:
        return
    if isinstance(node, yaml.ScalarNode):
        yield node
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _scalars(item)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(key)
            yield from _scalars(value)


NORMALISATION = {"normalize_path": True, "merge_slashes": True, "path_with_escaped_slashes_action": "REJECT_REQUEST"}


def _normalisation_patch(patch: dict) -> dict:
    assert (patch["applyTo"], patch["patch"]["operation"]) == ("NETWORK_FILTER", "MERGE"), patch
    assert patch["match"]["listener"]["filterChain"]["filter"]["name"] == \
        "envoy.filters.network.http_connection_manager"
    typed = dict(patch["patch"]["value"]["typed_config"])
    assert typed.pop("@type").endswith("http_connection_manager.v3.HttpConnectionManager")
    return typed


def test_envoy_path_normalisation_matches_the_harness_config():
    """The standalone Envoy configs set the same HCM path normalisation as the manifests."""
    for name in ("envoy.yaml", "envoy-compose.yaml"):
        cfg = yaml.safe_load((REPO / "envoy" / name).read_text())
        hcm = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        assert {k: hcm.get(k) for k in NORMALISATION} == NORMALISATION, name


@pytest.mark.parametrize("directory,context,selector", [
    ("istio", "SIDECAR_INBOUND", {"meshguard.io/guarded": "true"}),
    ("istio/wasmplugin", "SIDECAR_INBOUND", {"meshguard.io/guarded": "true"}),
    ("istio/live", "SIDECAR_INBOUND", {"meshguard.io/guarded": "true"}),
    ("istio/gateway", "GATEWAY", {"gateway.networking.k8s.io/gateway-name": "agents-gateway"}),
])
def test_path_normalisation_accompanies_the_wasm_plugin(rendered, directory, context, selector):
    """Envoy's path normalisation (defence in depth, README "Request paths") on the same
    workloads as the WasmPlugin, in the same namespace."""
    ef = only(rendered[directory], "EnvoyFilter", "meshguard-path-normalisation")
    plugin = only(rendered[directory], "WasmPlugin")
    assert ef["metadata"]["namespace"] == plugin["metadata"]["namespace"]
    assert ef["spec"]["workloadSelector"]["labels"] == selector
    if "selector" in plugin["spec"]:
        assert plugin["spec"]["selector"]["matchLabels"] == selector
    (patch,) = ef["spec"]["configPatches"]
    assert patch["match"]["context"] == context
    assert _normalisation_patch(patch) == NORMALISATION


def test_envoyfilter_variant_normalises_paths(rendered):
    ef = only(rendered["istio/envoyfilter"], "EnvoyFilter")
    patch = ef["spec"]["configPatches"][2]
    assert patch["match"]["context"] == "SIDECAR_INBOUND"
    assert _normalisation_patch(patch) == NORMALISATION


def test_replicated_collector_runs_replicas_on_postgres_with_authenticated_ingest(rendered):
    objects = rendered["istio/collector-replicated"]
    deployment = only(objects, "Deployment")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    assert not [o for o in objects if o["kind"] == "PersistentVolumeClaim"], "replicas share no volume"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = container["args"]
    assert "--db" not in args and "--store" not in args, "the URL stays out of the pod spec"
    assert "--peer-from-xfcc" in args and args[args.index("--retain") + 1] == "90d"
    (env,) = [e for e in container["env"] if e["name"] == "MESHGUARD_STORE"]
    assert env["valueFrom"]["secretKeyRef"] == {"name": "meshguard-collector-postgres", "key": "url"}
    # The same Service as the single-replica collector: the WasmPlugin's audit cluster holds.
    base = only(rendered["istio/collector"], "Service")
    assert only(objects, "Service")["spec"] == base["spec"]
    peer = only(objects, "PeerAuthentication")
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    authz = only(objects, "AuthorizationPolicy")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert authz["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert peer["spec"]["selector"]["matchLabels"].items() <= labels.items()
    ingest = [r for r in authz["spec"]["rules"] if "4317" in r["to"][0]["operation"]["ports"]]
    assert ingest and ingest[0]["from"][0]["source"]["principals"] == ["*"], "only authenticated workloads"
    pdb = only(objects, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
