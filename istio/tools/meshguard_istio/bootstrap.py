"""An Envoy bootstrap shaped like an Istio sidecar's inbound side, for running MeshGuard's
Istio configurations in the real Envoy (`envoy --mode validate` in istio-check, a live
Envoy in the end-to-end test).

What is Istio-like: the node id (`sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local`),
an inbound listener routing to `inbound|<port>||`, and every cluster the plugin
configuration calls out to under its Istio name (`outbound|4317||meshguard-collector...`)
pointing at a local port; gRPC clusters get HTTP/2 as Istio gives them for
`appProtocol: grpc`. What is not: no mTLS, no xDS, filters inline instead of through ECDS
(the filter cannot tell the difference).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
HTTP2_OPTIONS = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": {}},
    }
}


@dataclass
class Sidecar:
    """The ports and identity of one simulated sidecar."""

    listener_port: int = 15006
    admin_port: int = 15000
    app_port: int = 8080                 # the workload's port (inbound|8080||)
    upstream_port: int = 8080            # where the "workload" really listens (local)
    namespace: str = "agents"
    pod: str = "tools-0"
    # Istio cluster name -> (local port, speaks HTTP/2)
    callouts: dict[str, tuple[int, bool]] = field(default_factory=dict)

    @property
    def inbound_cluster(self) -> str:
        return f"inbound|{self.app_port}||"


def static_cluster(name: str, port: int, *, http2: bool = False, host: str = "127.0.0.1") -> dict:
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": host, "port_value": port}}}}]}],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = copy.deepcopy(HTTP2_OPTIONS)
    return cluster


def render(sidecar: Sidecar, http_filters: list[dict], extra_clusters: list[dict] = ()) -> dict:
    """The bootstrap: `http_filters` (router appended) on the inbound listener."""
    route_name = sidecar.inbound_cluster
    hcm = {
        "@type": HCM,
        "stat_prefix": f"inbound_0.0.0.0_{sidecar.app_port}",
        "generate_request_id": True,
        "route_config": {
            "name": route_name,
            "virtual_hosts": [{"name": f"inbound|http|{sidecar.app_port}", "domains": ["*"],
                               "routes": [{"match": {"prefix": "/"}, "route": {"cluster": route_name}}]}],
        },
        "http_filters": [*copy.deepcopy(http_filters), copy.deepcopy(ROUTER)],
    }
    clusters = [static_cluster(route_name, sidecar.upstream_port)]
    clusters += [static_cluster(name, port, http2=h2) for name, (port, h2) in sidecar.callouts.items()]
    clusters += copy.deepcopy(list(extra_clusters))
    return {
        "node": {"id": f"sidecar~127.0.0.1~{sidecar.pod}.{sidecar.namespace}~{sidecar.namespace}.svc.cluster.local",
                 "cluster": f"{sidecar.pod.rsplit('-', 1)[0]}.{sidecar.namespace}",
                 # a few of the metadata keys istio-agent sets (the filter reads NAME/NAMESPACE)
                 "metadata": {"NAME": sidecar.pod, "NAMESPACE": sidecar.namespace, "CLUSTER_ID": "Kubernetes"}},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": sidecar.admin_port}}},
        "static_resources": {
            "listeners": [{
                "name": "virtualInbound",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": sidecar.listener_port}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}],
            }],
            "clusters": clusters,
        },
    }
