//! The engine as an HTTP stream drives it: [`Engine`] itself in Envoy, a scripted
//! stand-in in the host tests (the body phase's engine side is not the host's to fake).

use crate::engine::body::{PendingBody, ResponsePlan, Step, TooLarge};
use crate::engine::request::Request;
use crate::engine::{Engine, Outcome};
use crate::identity::TokenCache;

/// The four calls of the request path (see [`crate::engine::body`]).
pub(crate) trait Decider {
    /// See [`Engine::start`].
    fn start(&self, req: &Request, now: u64, cache: &mut TokenCache) -> Step;
    /// See [`Engine::handle_body`].
    fn handle_body(
        &self,
        pending: PendingBody,
        req: &Request,
        body: Result<&[u8], TooLarge>,
        now: u64,
        cache: &mut TokenCache,
    ) -> Outcome;
    /// See [`ResponsePlan::max_body_bytes`].
    fn response_cap(
        &self,
        plan: &ResponsePlan,
        status: u16,
        content_type: Option<&str>,
    ) -> Option<usize>;
    /// See [`Engine::rewrite_response`].
    fn rewrite_response(
        &self,
        plan: &ResponsePlan,
        content_type: Option<&str>,
        body: Result<&[u8], TooLarge>,
    ) -> Option<Vec<u8>>;
}

impl Decider for Engine {
    fn start(&self, req: &Request, now: u64, cache: &mut TokenCache) -> Step {
        Engine::start(self, req, now, cache)
    }
    fn handle_body(
        &self,
        pending: PendingBody,
        req: &Request,
        body: Result<&[u8], TooLarge>,
        now: u64,
        cache: &mut TokenCache,
    ) -> Outcome {
        Engine::handle_body(self, pending, req, body, now, cache)
    }
    fn response_cap(
        &self,
        plan: &ResponsePlan,
        status: u16,
        content_type: Option<&str>,
    ) -> Option<usize> {
        plan.max_body_bytes(status, content_type)
    }
    fn rewrite_response(
        &self,
        plan: &ResponsePlan,
        content_type: Option<&str>,
        body: Result<&[u8], TooLarge>,
    ) -> Option<Vec<u8>> {
        Engine::rewrite_response(self, plan, content_type, body)
    }
}
