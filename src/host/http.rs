//! One HTTP stream. The request headers go to [`Engine::start`]; a request whose action
//! is in its body (JSON-RPC) is held while its body is buffered, up to the engine's cap,
//! and decided by [`Engine::handle_body`]. The verdict is carried out (headers set, body
//! replaced, or a local response), and the decision counted and audited. When the
//! outcome carries a [`ResponsePlan`], the upstream's response body is buffered (up to
//! its cap) and replaced by what [`Engine::rewrite_response`] returns.

use super::decider::Decider;
use super::metrics::Metrics;
use super::root::Vm;
use super::{status, Flow, Host};
use crate::engine::body::{PendingBody, ResponsePlan, Step, TooLarge};
use crate::engine::request::Request;
use crate::engine::response::is_owned_header;
use crate::engine::{Engine, Outcome, Verdict};
use crate::probe::{self, Stage};
use std::cell::RefCell;
use std::rc::Rc;

/// The engine a stream started with: it finishes with the same one, even if a new
/// engine is installed meanwhile.
#[derive(Clone)]
struct Engines {
    engine: Rc<Engine>,
    decider: Rc<dyn Decider>,
}

/// A request held while its body arrives.
struct Held {
    engines: Engines,
    pending: PendingBody,
    req: Request,
    /// Time spent deciding so far (the headers phase).
    spent_ns: u64,
    /// Body bytes buffered so far.
    buffered: usize,
}

/// A response whose body passes through the engine.
struct Rewrite {
    engines: Engines,
    plan: ResponsePlan,
    content_type: Option<String>,
    cap: usize,
    buffered: usize,
}

/// Where the stream is.
enum Phase {
    /// Nothing to do (before the decision, or the stream passes through).
    Idle,
    /// The request is held until its body is complete.
    RequestBody(Box<Held>),
    /// Forwarded with a response plan: waiting for the response headers.
    Planned(Box<(Engines, ResponsePlan)>),
    /// Buffering the response body for the engine.
    ResponseBody(Box<Rewrite>),
    /// The response body hit its cap and was replaced: the rest is dropped.
    Discard,
}

/// One HTTP stream.
pub(crate) struct Http {
    host: Rc<dyn Host>,
    vm: Rc<RefCell<Vm>>,
    metrics: Rc<Metrics>,
    phase: Phase,
}

impl Http {
    pub(crate) fn new(host: Rc<dyn Host>, vm: Rc<RefCell<Vm>>, metrics: Rc<Metrics>) -> Http {
        Http {
            host,
            vm,
            metrics,
            phase: Phase::Idle,
        }
    }

    /// Request headers: decide, or hold the request for its body.
    pub(crate) fn on_request_headers(&mut self, end_of_stream: bool) -> Flow {
        probe::begin();
        let started = self.host.now_nanos();
        let Some(engines) = self.engines() else {
            // No valid configuration was ever accepted: fail closed.
            self.host.send_response(
                503,
                &[("content-type", "application/json")],
                br#"{"decision":"deny","reason":"MeshGuard has no valid configuration"}"#,
            );
            return Flow::Pause;
        };
        let mut req = self.read_request();
        if engines.engine.controls().needs_peer_identity() {
            // Envoy's attribute: the first URI SAN of the verified mTLS peer certificate
            // (absent on plain-text connections).
            req.peer_uri_sans = self
                .host
                .property(&["connection", "uri_san_peer_certificate"])
                .and_then(|v| String::from_utf8(v).ok())
                .filter(|v| !v.is_empty())
                .into_iter()
                .collect();
        }
        probe::lap(Stage::HeaderRead);
        if status::answer(&*self.host, &self.vm, &engines.engine, &req) {
            return Flow::Pause;
        }
        let step = {
            let mut vm = self.vm.borrow_mut();
            engines.decider.start(&req, started, &mut vm.cache)
        };
        match step {
            Step::Decided(outcome) => self.finish(&engines, *outcome, &req, started, 0, None),
            Step::ReadBody(pending) => {
                let held = Held {
                    engines,
                    pending,
                    req,
                    spent_ns: self.host.now_nanos().saturating_sub(started),
                    buffered: 0,
                };
                if end_of_stream {
                    return self.decide_body(held, Ok(&[]));
                }
                self.phase = Phase::RequestBody(Box::new(held));
                Flow::Pause
            }
        }
    }

    /// Request body: buffer up to the cap, then decide.
    pub(crate) fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        let Phase::RequestBody(mut held) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Flow::Continue;
        };
        held.buffered = body_size;
        if body_size > held.pending.max_bytes() {
            return self.decide_body(*held, Err(TooLarge));
        }
        if !end_of_stream {
            self.phase = Phase::RequestBody(held);
            return Flow::Pause;
        }
        probe::begin();
        let body = self.host.request_body(body_size).unwrap_or_default();
        probe::lap(Stage::BodyRead);
        self.decide_body(*held, Ok(&body))
    }

    /// Request trailers end the body of a held request.
    pub(crate) fn on_request_trailers(&mut self) -> Flow {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::RequestBody(held) => {
                probe::begin();
                let body = self.host.request_body(held.buffered).unwrap_or_default();
                probe::lap(Stage::BodyRead);
                self.decide_body(*held, Ok(&body))
            }
            other => {
                self.phase = other;
                Flow::Continue
            }
        }
    }

    /// Response headers: buffer the body if the engine's plan asks for it.
    pub(crate) fn on_response_headers(&mut self, end_of_stream: bool) -> Flow {
        let Phase::Planned(planned) = std::mem::replace(&mut self.phase, Phase::Idle) else {
            return Flow::Continue;
        };
        let (engines, plan) = *planned;
        let status = self
            .host
            .response_header(":status")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let content_type = self.host.response_header("content-type");
        let cap = engines
            .decider
            .response_cap(&plan, status, content_type.as_deref());
        if let (Some(cap), false) = (cap, end_of_stream) {
            // The headers leave now; the body is replaced later: no length to contradict.
            self.host.set_response_header("content-length", None);
            self.phase = Phase::ResponseBody(Box::new(Rewrite {
                engines,
                plan,
                content_type,
                cap,
                buffered: 0,
            }));
        }
        Flow::Continue
    }

    /// Response body: buffer up to the cap, then let the engine rewrite it.
    pub(crate) fn on_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Flow {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            Phase::ResponseBody(mut r) => {
                r.buffered = body_size;
                if body_size > r.cap {
                    return self.rewrite(&r, Err(TooLarge));
                }
                if !end_of_stream {
                    self.phase = Phase::ResponseBody(r);
                    return Flow::Pause;
                }
                probe::begin();
                let body = self.host.response_body(body_size).unwrap_or_default();
                let flow = self.rewrite(&r, Ok(&body));
                probe::lap(Stage::Rewrite);
                self.metrics.probe(probe::take(), false);
                flow
            }
            Phase::Discard => {
                self.host.set_response_body(body_size, b"");
                self.phase = Phase::Discard;
                Flow::Continue
            }
            other => {
                self.phase = other;
                Flow::Continue
            }
        }
    }

    /// Response trailers end the body being buffered.
    pub(crate) fn on_response_trailers(&mut self) -> Flow {
        match std::mem::replace(&mut self.phase, Phase::Idle) {
            // Without a body there is no buffer to replace.
            Phase::ResponseBody(r) if r.buffered > 0 => {
                let body = self.host.response_body(r.buffered).unwrap_or_default();
                self.rewrite(&r, Ok(&body))
            }
            other => {
                self.phase = other;
                Flow::Continue
            }
        }
    }

    fn engines(&self) -> Option<Engines> {
        let vm = self.vm.borrow();
        let engine = vm.engine.clone()?;
        #[cfg(test)]
        if let Some(d) = &vm.decider {
            return Some(Engines {
                engine,
                decider: Rc::clone(d),
            });
        }
        Some(Engines {
            decider: Rc::clone(&engine) as Rc<dyn Decider>,
            engine,
        })
    }

    fn read_request(&self) -> Request {
        let mut req = Request {
            // Room for what Envoy hands a plain request (the benchmark's GET has ~8
            // headers): no regrowth of the list while it fills.
            headers: Vec::with_capacity(16),
            ..Request::default()
        };
        // Borrowed from the host's buffer, copied once here (pseudo-header names not at
        // all): one allocation per kept string. Before (the SDK's map, then moves) it
        // was two per header plus the map; bench/README.md, "Request path and the
        // proxy-wasm floor", has the measurement.
        self.host.request_headers(&mut |name, value| match name {
            ":method" => req.method = value.to_owned(),
            ":path" => req.path = value.to_owned(),
            ":authority" => req.authority = value.to_owned(),
            _ => req.headers.push((name.to_owned(), value.to_owned())),
        });
        req
    }

    fn decide_body(&mut self, held: Held, body: Result<&[u8], TooLarge>) -> Flow {
        let started = self.host.now_nanos();
        let Held {
            engines,
            pending,
            req,
            spent_ns,
            buffered,
        } = held;
        let outcome = {
            let mut vm = self.vm.borrow_mut();
            engines
                .decider
                .handle_body(pending, &req, body, started, &mut vm.cache)
        };
        self.finish(&engines, outcome, &req, started, spent_ns, Some(buffered))
    }

    /// Carries out a decision, counts and audits it. `buffered`: the request body held
    /// (`None` in the headers phase).
    fn finish(
        &mut self,
        engines: &Engines,
        mut outcome: Outcome,
        req: &Request,
        started: u64,
        spent_ns: u64,
        buffered: Option<usize>,
    ) -> Flow {
        if outcome.wants_jwks_refresh() {
            self.vm.borrow_mut().jwks_wanted = true;
        }
        probe::lap(Stage::Verdict);
        let flow = self.apply(&outcome.verdict, req, buffered);
        probe::lap(Stage::Response);
        self.metrics.decision(&outcome);
        probe::lap(Stage::Metrics);
        if let (Flow::Continue, Some(plan)) = (flow, outcome.response.take()) {
            self.phase = Phase::Planned(Box::new((engines.clone(), plan)));
        }
        let spent = spent_ns + self.host.now_nanos().saturating_sub(started);
        outcome.event.latency_us = spent / 1_000;
        for e in &mut outcome.more_events {
            e.latency_us = outcome.event.latency_us;
        }
        self.audit(&engines.engine, outcome);
        probe::lap(Stage::Audit);
        self.metrics.probe(probe::take(), true);
        flow
    }

    fn apply(&self, verdict: &Verdict, req: &Request, buffered: Option<usize>) -> Flow {
        match verdict {
            Verdict::Forward { set_headers, body } => {
                for (name, _) in &req.headers {
                    if is_owned_header(name) {
                        self.host.set_request_header(name, None);
                    }
                }
                for (name, value) in set_headers {
                    self.host.set_request_header(name, Some(value));
                }
                if let Some(body) = body {
                    self.replace_request_body(req, body, buffered);
                }
                Flow::Continue
            }
            Verdict::Respond(r) => {
                let headers: Vec<(&str, &str)> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                self.host
                    .send_response(r.status, &headers, r.body.as_bytes());
                Flow::Pause
            }
        }
    }

    fn replace_request_body(&self, req: &Request, body: &[u8], buffered: Option<usize>) {
        let Some(size) = buffered.filter(|&n| n > 0) else {
            // Envoy has no body buffer to replace (headers phase, or no body at all).
            log::warn!("meshguard: a replacement request body was decided but no body is buffered; forwarding the request as received");
            return;
        };
        self.host.set_request_body(size, body);
        if req.header("content-length").is_some() {
            self.host
                .set_request_header("content-length", Some(&body.len().to_string()));
        }
    }

    fn rewrite(&mut self, r: &Rewrite, body: Result<&[u8], TooLarge>) -> Flow {
        let too_large = body.is_err();
        let replacement =
            r.engines
                .decider
                .rewrite_response(&r.plan, r.content_type.as_deref(), body);
        if let Some(b) = replacement {
            self.host.set_response_body(r.buffered, &b);
            if too_large {
                self.phase = Phase::Discard;
            }
        }
        Flow::Continue
    }

    fn audit(&self, engine: &Engine, outcome: Outcome) {
        // Moved, not cloned: the buffer seals and encodes them later, at flush.
        let events = std::iter::once(outcome.event).chain(outcome.more_events);
        if engine.audit_config().cluster.is_some() {
            let mut vm = self.vm.borrow_mut();
            for e in events {
                vm.audit.push(e);
            }
        } else {
            for e in events {
                log::info!(
                    "meshguard: {}",
                    serde_json::to_string(&e).unwrap_or_default()
                );
            }
        }
    }
}
