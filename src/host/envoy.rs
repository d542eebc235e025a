//! The proxy-wasm binding: [`Host`] over proxy-wasm's host calls, and the root and HTTP
//! contexts Envoy calls, each forwarding to the host-independent logic.
//!
//! Host calls go through `proxy_wasm::hostcalls` and their errors are handled here
//! (the SDK's `Context` methods unwrap them). Audit exports call
//! `hostcalls::dispatch_grpc_call` directly, as before: Envoy answers an unknown cluster
//! with `ParseFailure`, which it returns as an error rather than panicking.

use super::http::Http;
use super::root::Root;
use super::shared::EnvoyShared;
use super::{Flow, Host, MetricKind};
use crate::shared::SharedData;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(EnvoyRoot(Root::new(Rc::new(Envoy))))
    });
}}

/// Envoy, as seen from inside the VM.
struct Envoy;

fn lossy(pairs: Vec<(String, Vec<u8>)>) -> Vec<(String, String)> {
    pairs
        .into_iter()
        // Valid UTF-8 (nearly always) is moved, not copied.
        .map(|(k, v)| {
            let v = String::from_utf8(v)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
            (k, v)
        })
        .collect()
}

impl Host for Envoy {
    fn now_nanos(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
    fn random(&self) -> u64 {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }
    fn shared(&self) -> Rc<dyn SharedData> {
        Rc::new(EnvoyShared)
    }
    fn plugin_configuration(&self) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default()
    }
    fn set_tick_period(&self, period: Duration) {
        let _ = hostcalls::set_tick_period(period);
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(t, name).ok()
    }
    fn increment_metric(&self, id: u32, by: i64) {
        let _ = hostcalls::increment_metric(id, by);
    }
    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        timeout: Duration,
    ) -> Result<u32, String> {
        hostcalls::dispatch_http_call(cluster, headers, None, Vec::new(), timeout)
            .map_err(|s| format!("{s:?}"))
    }
    fn http_call_response_headers(&self) -> Vec<(String, String)> {
        lossy(hostcalls::get_map_bytes(MapType::HttpCallResponseHeaders).unwrap_or_default())
    }
    fn http_call_response_body(&self, max: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, max)
            .ok()
            .flatten()
    }
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        timeout: Duration,
    ) -> Result<u32, String> {
        hostcalls::dispatch_grpc_call(cluster, service, method, Vec::new(), Some(message), timeout)
            .map_err(|s| format!("{s:?}"))
    }
    fn grpc_status_message(&self) -> Option<String> {
        hostcalls::get_grpc_status().ok().and_then(|(_, m)| m)
    }
    fn request_headers(&self) -> Vec<(String, String)> {
        lossy(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default())
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
            .ok()
            .flatten()
    }
    fn set_request_body(&self, size: usize, body: &[u8]) {
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, size, body);
    }
    fn response_header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name)
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, value);
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
            .ok()
            .flatten()
    }
    fn set_response_body(&self, size: usize, body: &[u8]) {
        let _ = hostcalls::set_buffer(BufferType::HttpResponseBody, 0, size, body);
    }
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        let _ = hostcalls::send_http_response(u32::from(status), headers.to_vec(), Some(body));
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

/// The root context Envoy calls.
struct EnvoyRoot(Root);

impl Context for EnvoyRoot {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        self.0.on_http_call_response(token, body_size);
    }

    fn on_grpc_call_response(&mut self, token: u32, status: u32, _response_size: usize) {
        self.0.on_grpc_call_response(token, status);
    }
}

impl RootContext for EnvoyRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.0.on_configure()
    }

    fn on_tick(&mut self) {
        self.0.on_tick();
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(EnvoyHttp(self.0.new_http())))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// An HTTP context Envoy calls.
struct EnvoyHttp(Http);

impl Context for EnvoyHttp {}

impl HttpContext for EnvoyHttp {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_headers(end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_request_body(body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        action(self.0.on_request_trailers())
    }

    fn on_http_response_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_headers(end_of_stream))
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_response_body(body_size, end_of_stream))
    }

    fn on_http_response_trailers(&mut self, _trailers: usize) -> Action {
        action(self.0.on_response_trailers())
    }
}
