//! An in-memory [`Host`] for `cargo test`: records what the logic did (headers set,
//! responses sent, calls dispatched, stats) and plays what Envoy would hand back.

use super::{Host, MetricKind};
use crate::shared::{MemoryStore, SharedData};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

/// An HTTP call the logic started.
#[derive(Debug, Clone)]
pub(crate) struct HttpCall {
    pub(crate) token: u32,
    pub(crate) cluster: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) timeout: Duration,
}

impl HttpCall {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A gRPC call the logic started.
#[derive(Debug, Clone)]
pub(crate) struct GrpcCall {
    pub(crate) token: u32,
    pub(crate) cluster: String,
    pub(crate) service: String,
    pub(crate) method: String,
    pub(crate) message: Vec<u8>,
}

/// A local response the logic sent.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Sent {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// Everything the fake knows; tests read and set it through [`FakeHost::state`].
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) now_nanos: u64,
    pub(crate) random: u64,
    pub(crate) config: Vec<u8>,
    pub(crate) properties: HashMap<String, Vec<u8>>,
    pub(crate) tick_period: Option<Duration>,
    metrics: Vec<(MetricKind, String, i64)>,
    next_token: u32,
    /// When set, calls cannot start and the host says this.
    pub(crate) refuse_calls: Option<String>,
    pub(crate) http_calls: Vec<HttpCall>,
    pub(crate) grpc_calls: Vec<GrpcCall>,
    /// The call answer being delivered.
    pub(crate) call_headers: Vec<(String, String)>,
    pub(crate) call_body: Vec<u8>,
    pub(crate) grpc_message: Option<String>,
    /// The current stream.
    pub(crate) request_headers: Vec<(String, String)>,
    pub(crate) request_body: Vec<u8>,
    pub(crate) response_headers: Vec<(String, String)>,
    pub(crate) response_body: Vec<u8>,
    pub(crate) sent: Option<Sent>,
}

/// The fake host. Workers of one Envoy share a store ([`FakeHost::worker_of`]).
#[derive(Debug, Default)]
pub(crate) struct FakeHost {
    pub(crate) state: RefCell<State>,
    pub(crate) store: MemoryStore,
}

/// Sets (or removes) a header in a header list, replacing every value.
fn set_header(headers: &mut Vec<(String, String)>, name: &str, value: Option<&str>) {
    headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    if let Some(v) = value {
        headers.push((name.to_string(), v.to_string()));
    }
}

fn replace_prefix(buffer: &mut Vec<u8>, size: usize, with: &[u8]) {
    let size = size.min(buffer.len());
    buffer.splice(..size, with.iter().copied());
}

impl FakeHost {
    /// A host at `now_secs`.
    pub(crate) fn at(now_secs: u64) -> Rc<FakeHost> {
        let h = FakeHost::default();
        h.state.borrow_mut().now_nanos = now_secs * 1_000_000_000;
        h.state.borrow_mut().random = 0x5eed;
        Rc::new(h)
    }

    /// Another worker VM of the same Envoy (same shared data and clock).
    pub(crate) fn worker_of(other: &FakeHost) -> Rc<FakeHost> {
        let h = FakeHost {
            store: other.store.clone(),
            ..FakeHost::default()
        };
        h.state.borrow_mut().now_nanos = other.state.borrow().now_nanos;
        h.state.borrow_mut().random = other.state.borrow().random.wrapping_add(1);
        Rc::new(h)
    }

    pub(crate) fn advance_ms(&self, ms: u64) {
        self.state.borrow_mut().now_nanos += ms * 1_000_000;
    }

    /// A stat's value (0 when never updated).
    pub(crate) fn metric(&self, name: &str) -> i64 {
        self.state
            .borrow()
            .metrics
            .iter()
            .find(|(_, n, _)| n == name)
            .map_or(0, |(_, _, v)| *v)
    }

    /// Starts a new stream with these request headers.
    pub(crate) fn new_request(&self, headers: &[(&str, &str)]) {
        let mut s = self.state.borrow_mut();
        s.request_headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.request_body.clear();
        s.response_headers.clear();
        s.response_body.clear();
        s.sent = None;
    }

    pub(crate) fn request_header(&self, name: &str) -> Option<String> {
        let s = self.state.borrow();
        s.request_headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn take_sent(&self) -> Option<Sent> {
        self.state.borrow_mut().sent.take()
    }

    /// Sets the answer the next `on_http_call_response` delivers.
    pub(crate) fn answer_call(&self, headers: &[(&str, &str)], body: &[u8]) {
        let mut s = self.state.borrow_mut();
        s.call_headers = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.call_body = body.to_vec();
    }

    pub(crate) fn http_calls(&self) -> Vec<HttpCall> {
        std::mem::take(&mut self.state.borrow_mut().http_calls)
    }

    pub(crate) fn grpc_calls(&self) -> Vec<GrpcCall> {
        std::mem::take(&mut self.state.borrow_mut().grpc_calls)
    }

    fn token(&self) -> Result<u32, String> {
        let mut s = self.state.borrow_mut();
        if let Some(why) = &s.refuse_calls {
            return Err(why.clone());
        }
        s.next_token += 1;
        Ok(s.next_token)
    }
}

impl Host for FakeHost {
    fn now_nanos(&self) -> u64 {
        self.state.borrow().now_nanos
    }
    fn random(&self) -> u64 {
        self.state.borrow().random
    }
    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.state.borrow().properties.get(&path.join(".")).cloned()
    }
    fn shared(&self) -> Rc<dyn SharedData> {
        Rc::new(self.store.clone())
    }
    fn plugin_configuration(&self) -> Vec<u8> {
        self.state.borrow().config.clone()
    }
    fn set_tick_period(&self, period: Duration) {
        self.state.borrow_mut().tick_period = Some(period);
    }
    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let mut s = self.state.borrow_mut();
        s.metrics.push((kind, name.to_string(), 0));
        u32::try_from(s.metrics.len()).ok()
    }
    fn increment_metric(&self, id: u32, by: i64) {
        let mut s = self.state.borrow_mut();
        if let Some(m) = s.metrics.get_mut(id as usize - 1) {
            assert_eq!(m.0, MetricKind::Counter, "{} is not a counter", m.1);
            m.2 += by;
        }
    }
    fn record_metric(&self, id: u32, value: u64) {
        let mut s = self.state.borrow_mut();
        if let Some(m) = s.metrics.get_mut(id as usize - 1) {
            assert_eq!(m.0, MetricKind::Gauge, "{} is not a gauge", m.1);
            m.2 = i64::try_from(value).unwrap_or(i64::MAX);
        }
    }
    fn dispatch_http_call(
        &self,
        cluster: &str,
        headers: Vec<(&str, &str)>,
        timeout: Duration,
    ) -> Result<u32, String> {
        let token = self.token()?;
        self.state.borrow_mut().http_calls.push(HttpCall {
            token,
            cluster: cluster.to_string(),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            timeout,
        });
        Ok(token)
    }
    fn http_call_response_headers(&self) -> Vec<(String, String)> {
        self.state.borrow().call_headers.clone()
    }
    fn http_call_response_body(&self, max: usize) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        (!s.call_body.is_empty()).then(|| s.call_body[..max.min(s.call_body.len())].to_vec())
    }
    fn dispatch_grpc_call(
        &self,
        cluster: &str,
        service: &str,
        method: &str,
        message: &[u8],
        _timeout: Duration,
    ) -> Result<u32, String> {
        let token = self.token()?;
        self.state.borrow_mut().grpc_calls.push(GrpcCall {
            token,
            cluster: cluster.to_string(),
            service: service.to_string(),
            method: method.to_string(),
            message: message.to_vec(),
        });
        Ok(token)
    }
    fn grpc_status_message(&self) -> Option<String> {
        self.state.borrow().grpc_message.clone()
    }
    fn request_headers(&self, each: &mut dyn FnMut(&str, &str)) {
        for (name, value) in &self.state.borrow().request_headers {
            each(name, value);
        }
    }
    fn set_request_header(&self, name: &str, value: Option<&str>) {
        set_header(&mut self.state.borrow_mut().request_headers, name, value);
    }
    fn request_body(&self, size: usize) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        Some(s.request_body[..size.min(s.request_body.len())].to_vec())
    }
    fn set_request_body(&self, size: usize, body: &[u8]) {
        replace_prefix(&mut self.state.borrow_mut().request_body, size, body);
    }
    fn response_header(&self, name: &str) -> Option<String> {
        let s = self.state.borrow();
        s.response_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
    fn set_response_header(&self, name: &str, value: Option<&str>) {
        set_header(&mut self.state.borrow_mut().response_headers, name, value);
    }
    fn response_body(&self, size: usize) -> Option<Vec<u8>> {
        let s = self.state.borrow();
        Some(s.response_body[..size.min(s.response_body.len())].to_vec())
    }
    fn set_response_body(&self, size: usize, body: &[u8]) {
        replace_prefix(&mut self.state.borrow_mut().response_body, size, body);
    }
    fn send_response(&self, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        self.state.borrow_mut().sent = Some(Sent {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        });
    }
}
