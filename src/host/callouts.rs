//! Calls the root context makes: document fetches (HTTP) and audit exports (gRPC, OTLP
//! `LogsService/Export`), and what each call token is for.

use super::root::Vm;
use super::{now_ms, Host};
use crate::audit::otlp::AnyValue;
use crate::sources::{DocId, FetchRequest};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

const LOGS_SERVICE: &str = "opentelemetry.proto.collector.logs.v1.LogsService";

/// Where this VM runs, for the audit resource attributes.
#[derive(Debug, Default)]
pub(crate) struct Node {
    id: String,
    cluster: String,
    pod: String,
    namespace: String,
}

impl Node {
    /// Envoy 1.40 exposes the bootstrap node under `xds.node`; Istio puts the pod and
    /// namespace into its metadata.
    pub(crate) fn read(host: &dyn Host) -> Node {
        let p = |path: &[&str]| {
            host.property(path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        Node {
            id: p(&["xds", "node", "id"]),
            cluster: p(&["xds", "node", "cluster"]),
            pod: p(&["xds", "node", "metadata", "NAME"]),
            namespace: p(&["xds", "node", "metadata", "NAMESPACE"]),
        }
    }
}

/// Calls in flight, by token.
#[derive(Debug, Default)]
pub(crate) struct Callouts {
    /// gRPC token -> audit batch id.
    exports: HashMap<u32, u64>,
    /// HTTP token -> the document fetched.
    fetches: HashMap<u32, DocId>,
}

impl Callouts {
    /// Starts a fetch; what the host said when it could not.
    pub(crate) fn start_fetch(
        &mut self,
        host: &dyn Host,
        req: &FetchRequest,
    ) -> Result<(), String> {
        let timeout = Duration::from_millis(req.timeout_ms);
        let token = host.dispatch_http_call(&req.cluster, req.headers(), timeout)?;
        self.fetches.insert(token, req.doc.clone());
        Ok(())
    }

    /// The document an answered fetch was for (`None`: not ours).
    pub(crate) fn take_fetch(&mut self, token: u32) -> Option<DocId> {
        self.fetches.remove(&token)
    }

    /// Sends audit batches while a call slot is free and something waits. A call that
    /// cannot start (unknown cluster, host refusing) puts its batch back for retry.
    pub(crate) fn flush(&mut self, host: &dyn Host, vm: &RefCell<Vm>, node: &Node) {
        let Some(engine) = vm.borrow().engine.clone() else {
            return;
        };
        let cfg = engine.audit_config();
        let Some(cluster) = cfg.cluster.as_deref() else {
            return;
        };
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let resource = [
            ("service.name", AnyValue::Str("meshguard")),
            (
                "meshguard.plugin.version",
                AnyValue::Str(env!("CARGO_PKG_VERSION")),
            ),
            (
                "meshguard.config.version",
                AnyValue::Str(engine.policy_version()),
            ),
            ("envoy.node.id", AnyValue::Str(&node.id)),
            ("envoy.node.cluster", AnyValue::Str(&node.cluster)),
            ("k8s.pod.name", AnyValue::Str(&node.pod)),
            ("k8s.namespace.name", AnyValue::Str(&node.namespace)),
        ];
        loop {
            let now = host.now_nanos();
            let batch = vm
                .borrow_mut()
                .audit
                .take_batch(now / 1_000_000, now, &resource);
            let Some((id, message)) = batch else { break };
            match host.dispatch_grpc_call(cluster, LOGS_SERVICE, "Export", &message, timeout) {
                Ok(token) => {
                    self.exports.insert(token, id);
                }
                Err(status) => {
                    log::warn!("meshguard: audit export to cluster {cluster:?} could not start ({status}); events kept for retry");
                    vm.borrow_mut()
                        .audit
                        .finish_batch(id, false, now / 1_000_000);
                    break;
                }
            }
        }
    }

    /// Records an export's answer; true when more full batches wait (send them now).
    pub(crate) fn export_done(
        &mut self,
        host: &dyn Host,
        vm: &RefCell<Vm>,
        token: u32,
        status: u32,
    ) -> bool {
        let Some(id) = self.exports.remove(&token) else {
            return false;
        };
        let ok = status == 0;
        if !ok {
            log::warn!(
                "meshguard: audit export failed with gRPC status {status} ({}); events kept for retry",
                host.grpc_status_message().unwrap_or_default()
            );
        }
        let mut vm = vm.borrow_mut();
        vm.audit.finish_batch(id, ok, now_ms(host));
        ok && vm.audit.batch_ready()
    }
}
