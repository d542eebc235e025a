//! The proxy-wasm binding: [`Host`] over proxy-wasm's host calls, and the root and HTTP
//! contexts Envoy calls, each forwarding to the host-independent logic.
//!
//! Host calls go through `proxy_wasm::hostcalls` and their errors are handled here
//! (the SDK's `Context` methods unwrap them). Audit exports call
//! `hostcalls::dispatch_grpc_call` directly, as before: Envoy answers an unknown cluster
//! with `ParseFailure`, which it returns as an error rather than panicking.

use super::http::Http;
use super::pairs;
use super::root::Root;
use super::shared::EnvoyShared;
use super::{Flow, Host, MetricKind};
use crate::shared::SharedData;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
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
        let mut out = Vec::new();
        if let Some(buf) = header_map(MapType::HttpCallResponseHeaders) {
            pairs::for_each(&buf, &mut |k, v| out.push((k.to_owned(), v.to_owned())));
        }
        out
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
    fn request_headers(&self, each: &mut dyn FnMut(&str, &str)) {
        if let Some(buf) = header_map(MapType::HttpRequestHeaders) {
            pairs::for_each(&buf, each);
        }
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

#[link(wasm_import_module = "env")]
extern "C" {
    // The same import the SDK declares (same types), called directly so that the map
    // arrives as the host's one buffer rather than as a String and a Vec per header.
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// A header map as Envoy serialises it (see `pairs`); `None` when the host has none.
fn header_map(map_type: MapType) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on `Ok` the host has written a pointer to `size` bytes it allocated through
    // the SDK's `proxy_on_memory_allocate` (a boxed slice of exactly `size` bytes, the
    // same ownership transfer the SDK's `get_map_bytes` relies on).
    unsafe {
        match proxy_get_header_map_pairs(map_type, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Some(Vec::from_raw_parts(data, size, size)),
            _ => None,
        }
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
