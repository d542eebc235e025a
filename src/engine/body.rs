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
//! Plain HTTP requests never leave the headers phase. The semantics (which errors, which
//! statuses, what a batch with denied elements becomes) are documented in the README,
//! "MCP and A2A".

use super::request::Request;
use super::response;
use super::{
    forward_headers, record_identity, BodyFacts, DecisionKind, Disposition, Engine, Evaluation,
    Outcome, Verdict,
};
use crate::actions::jsonrpc::{self, Kind, Message};
use crate::actions::{a2a, sse, ActionMatch};
use crate::audit::{trace_ids, AuditEvent};
use crate::config::{Effect, Mode};
use crate::identity::{Identity, IdentityError, TokenCache};
use crate::policy::Decision;
use crate::probe::{self, Stage};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::rc::Rc;

/// What the host does after the request headers.
#[derive(Debug)]
pub enum Step {
    /// Decided on the headers alone: apply the outcome.
    Decided(Box<Outcome>),
    /// Hold the request, buffer its whole body (at most `max_bytes()`), then call
    /// [`Engine::handle_body`] with this value.
    ReadBody(PendingBody),
}

/// Which body a pending request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    /// MCP JSON-RPC on `actions.mcp.paths`.
    Mcp,
    /// A2A JSON-RPC on `actions.a2a.paths`.
    A2a,
    /// `POST /enforce`.
    Enforce,
    /// `POST /enforce/batch`.
    EnforceBatch,
}

/// A request waiting for its body: what the headers phase already established (the
/// verified identity, trace ids), opaque to the host.
#[derive(Debug)]
pub struct PendingBody {
    pub(crate) max_bytes: usize,
    pub(crate) kind: BodyKind,
    pub(crate) identity: Rc<Identity>,
    pub(crate) event: Box<AuditEvent>,
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
        PendingBody {
            max_bytes,
            kind: BodyKind::Mcp,
            identity: Rc::new(Identity {
                agent_id: "test-agent".into(),
                tier: crate::tier::TrustTier::Verified,
                issuer: String::new(),
                chain: Vec::new(),
                claims: Value::Null,
                expires_at: 0,
            }),
            event: Box::default(),
        }
    }
}

/// The request body exceeded [`PendingBody::max_bytes`]; the host stopped buffering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge;

/// Who asked for a `tools/list`, kept for deciding on each listed tool.
#[derive(Debug)]
pub(crate) struct Lister {
    identity: Rc<Identity>,
    req: Request,
    now_secs: u64,
    /// The negotiated revision has `cacheScope` (2026-07-28 and later).
    cache_scope: bool,
}

/// What the response phase must do for one request, opaque to the host.
#[derive(Debug, Clone)]
pub struct ResponsePlan {
    pub(crate) max_bytes: usize,
    /// Ids of the `tools/list` requests whose results are filtered.
    pub(crate) tools_list: Vec<Box<RawValue>>,
    /// Error responses of denied batch elements, merged into the answer.
    pub(crate) inject: Vec<String>,
    pub(crate) lister: Option<Rc<Lister>>,
}

/// The media type without parameters, lowercase.
fn mime(content_type: Option<&str>) -> String {
    content_type
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

impl ResponsePlan {
    /// Whether the upstream's response must be buffered and passed to
    /// [`Engine::rewrite_response`], and the most bytes to buffer; `None` lets it stream
    /// through untouched. Only 2xx `application/json` and `text/event-stream` answers
    /// carry JSON-RPC responses.
    pub fn max_body_bytes(&self, status: u16, content_type: Option<&str>) -> Option<usize> {
        let m = mime(content_type);
        ((200..300).contains(&status)
            && (m == "application/json" || m == "text/event-stream")
            && self.max_bytes > 0)
            .then_some(self.max_bytes)
    }
}

/// One message of a JSON-RPC body after deciding.
struct Judged {
    msg: Message,
    event: AuditEvent,
    decision: Decision,
    /// Not forwarded (denied, invalid).
    refused: bool,
    /// The error response for the sender, when it expects one.
    error: Option<String>,
    /// An allowed `tools/list` whose answer is filtered.
    tools_list: bool,
    /// A malformed message (400 when it is the whole body).
    invalid: bool,
}

#[cfg(test)]
impl ResponsePlan {
    /// A plan as a decision would carry it (host tests).
    pub(crate) fn for_test(max_bytes: usize) -> ResponsePlan {
        ResponsePlan {
            max_bytes,
            tools_list: Vec::new(),
            inject: Vec::new(),
            lister: None,
        }
    }
}

impl Engine {
    /// The headers phase: decides now, or asks for the body.
    pub fn start(&self, req: &Request, now_unix_nanos: u64, cache: &mut TokenCache) -> Step {
        // Body endpoints are matched on a path that is already normal; anything else goes
        // the plain HTTP way, which normalises it (or refuses it with 400) and maps it by
        // route, so a dotted spelling of an MCP path can never skip the body phase and
        // still be forwarded as MCP.
        let normal = crate::actions::path::is_plainly_normal(&req.path)
            || crate::actions::path::normalise(&req.path).is_ok_and(|n| n.target() == req.path);
        probe::lap(Stage::Path);
        if !normal {
            return Step::Decided(Box::new(self.handle(req, now_unix_nanos, cache)));
        }
        let path = req.path_only();
        if let Some(ep) = self.decision_api_endpoint(path) {
            return self.start_decision_api(ep, req, now_unix_nanos, cache);
        }
        if let Some(m) = &self.mcp {
            if let Some(doc) = m.protected_resource_for(path) {
                return Step::Decided(Box::new(self.protected_resource(req, now_unix_nanos, doc)));
            }
            if m.is_mcp_path(path) {
                let identity = self.authenticate(req, now_unix_nanos / 1_000_000_000, cache);
                return self.start_rpc(
                    BodyKind::Mcp,
                    m.max_body_bytes(),
                    req,
                    now_unix_nanos,
                    identity,
                );
            }
        }
        if let Some(a) = &self.a2a {
            if a.is_a2a_path(path) {
                let identity = self.authenticate(req, now_unix_nanos / 1_000_000_000, cache);
                return self.start_rpc(
                    BodyKind::A2a,
                    a.max_body_bytes(),
                    req,
                    now_unix_nanos,
                    identity,
                );
            }
        }
        Step::Decided(Box::new(self.handle(req, now_unix_nanos, cache)))
    }

    /// [`Engine::start`] with an identity the caller established (`meshguard test` and
    /// `explain` with unsigned claims): MCP and A2A requests go to the body phase as in
    /// the filter, anything else through [`Engine::handle_authenticated`]. The decision
    /// API answers only verified tokens, so it is not reachable this way.
    pub fn start_authenticated(
        &self,
        req: &Request,
        now_unix_nanos: u64,
        identity: Result<Rc<Identity>, IdentityError>,
        counters: crate::controls::Counters<'_>,
    ) -> Step {
        let normal =
            crate::actions::path::normalise(&req.path).is_ok_and(|n| n.target() == req.path);
        let path = req.path_only();
        let rpc = match (&self.mcp, &self.a2a) {
            _ if !normal => None,
            (Some(m), _) if m.is_mcp_path(path) => Some((BodyKind::Mcp, m.max_body_bytes())),
            (_, Some(a)) if a.is_a2a_path(path) => Some((BodyKind::A2a, a.max_body_bytes())),
            _ => None,
        };
        match rpc {
            Some((kind, max)) => {
                let identity = identity.and_then(|id| {
                    self.controls
                        .check_identity(&id, &req.peer_uri_sans)
                        .map(|()| id)
                });
                self.start_rpc(kind, max, req, now_unix_nanos, identity)
            }
            None => Step::Decided(Box::new(self.handle_authenticated(
                req,
                now_unix_nanos,
                identity,
                counters,
            ))),
        }
    }

    /// The body phase: decides on the JSON-RPC body (or answers a decision-API call).
    pub fn handle_body(
        &self,
        pending: PendingBody,
        req: &Request,
        body: Result<&[u8], TooLarge>,
        now_unix_nanos: u64,
        cache: &mut TokenCache,
    ) -> Outcome {
        let _ = cache;
        match pending.kind {
            BodyKind::Enforce | BodyKind::EnforceBatch => {
                self.handle_decision_api(pending, req, body, now_unix_nanos)
            }
            BodyKind::Mcp | BodyKind::A2a => self.handle_rpc(pending, req, body, now_unix_nanos),
        }
    }

    /// The RFC 9728 document at `/.well-known/oauth-protected-resource`: public, since a
    /// client reads it to learn how to get a token.
    fn protected_resource(&self, req: &Request, now_unix_nanos: u64, doc: &str) -> Outcome {
        let mut event = self.base_event(req, now_unix_nanos);
        let decision = Decision::allow("protected-resource metadata (RFC 9728) is public");
        event.decision = "allow".into();
        event.effect = "allow".into();
        event.enforced = true;
        event.reason.clone_from(&decision.reason);
        event.status = 200;
        Outcome {
            verdict: Verdict::Respond(response::json(200, doc.to_string())),
            kind: DecisionKind::Allow,
            identity_error: None,
            decision,
            event,
            more_events: Vec::new(),
            response: None,
        }
    }

    fn start_rpc(
        &self,
        kind: BodyKind,
        max_bytes: usize,
        req: &Request,
        now_unix_nanos: u64,
        identity: Result<Rc<Identity>, IdentityError>,
    ) -> Step {
        let mut event = self.base_event(req, now_unix_nanos);
        if kind == BodyKind::Mcp {
            event.rpc.session_id = req.header("mcp-session-id").unwrap_or_default().into();
            event.rpc.protocol_version = req
                .header("mcp-protocol-version")
                .unwrap_or_default()
                .into();
        }
        let trace_hex = event.trace_id_hex();
        probe::lap(Stage::Event);
        let identity = match identity {
            Ok(id) => id,
            Err(e) => {
                let mut o = self.identity_failure(&e, event, &trace_hex);
                let meta = self.mcp.as_ref().and_then(|m| m.resource_metadata());
                if let (Verdict::Respond(r), Some(url), BodyKind::Mcp) =
                    (&mut o.verdict, meta, kind)
                {
                    for (k, v) in &mut r.headers {
                        if k == "www-authenticate" {
                            v.push_str(&format!(", resource_metadata=\"{url}\""));
                        }
                    }
                }
                return Step::Decided(Box::new(o));
            }
        };
        record_identity(&mut event, &identity);
        if !req.method.eq_ignore_ascii_case("POST") {
            // GET opens a server-to-client stream, DELETE ends a session: no call to govern.
            let decision = Decision::allow(format!(
                "{} on a JSON-RPC endpoint carries no call; allowed for any authenticated agent",
                req.method
            ));
            let eval = Evaluation {
                decision,
                shadow: None,
                used_context: false,
                inputs: String::new(),
            };
            self.record(&eval, &mut event);
            let verdict = Verdict::Forward {
                body: None,
                set_headers: forward_headers(&identity, "allow", "", &event),
            };
            return Step::Decided(Box::new(Outcome {
                verdict,
                kind: DecisionKind::Allow,
                identity_error: None,
                decision: eval.decision,
                event,
                more_events: Vec::new(),
                response: None,
            }));
        }
        Step::ReadBody(PendingBody {
            max_bytes,
            kind,
            identity,
            event: Box::new(event),
        })
    }

    /// A refusal of the whole body before any call is decided (too large, not JSON-RPC,
    /// header mismatch): a JSON-RPC error with an HTTP error status; forwarded as
    /// `would_deny` in audit mode.
    fn reject_body(
        &self,
        identity: &Identity,
        mut event: AuditEvent,
        status: u16,
        body: String,
        reason: String,
    ) -> Outcome {
        let decision = Decision::deny(reason);
        event.effect = "deny".into();
        event.reason.clone_from(&decision.reason);
        let verdict = match self.mode {
            Mode::Enforce => {
                event.decision = "deny".into();
                event.enforced = true;
                event.status = status;
                Verdict::Respond(response::json(status, body))
            }
            Mode::Audit => {
                event.decision = "would_deny".into();
                event.enforced = false;
                Verdict::Forward {
                    body: None,
                    set_headers: forward_headers(identity, "would_deny", "", &event),
                }
            }
        };
        let kind = match verdict {
            Verdict::Respond(_) => DecisionKind::Deny,
            Verdict::Forward { .. } => DecisionKind::WouldDeny,
        };
        Outcome {
            verdict,
            kind,
            identity_error: None,
            decision,
            event,
            more_events: Vec::new(),
            response: None,
        }
    }

    fn handle_rpc(
        &self,
        pending: PendingBody,
        req: &Request,
        body: Result<&[u8], TooLarge>,
        now_unix_nanos: u64,
    ) -> Outcome {
        let PendingBody {
            max_bytes,
            kind,
            identity,
            event: base,
        } = pending;
        let section = if kind == BodyKind::Mcp { "mcp" } else { "a2a" };
        let Ok(body) = body else {
            let reason = format!(
                "request body exceeds actions.{section}.max_body_bytes ({max_bytes} bytes)"
            );
            let err = jsonrpc::error_response(None, jsonrpc::INVALID_REQUEST, &reason, None);
            return self.reject_body(&identity, *base, 413, err, reason);
        };
        let parsed = match jsonrpc::parse(body) {
            Ok(p) => p,
            Err(e) => {
                let reason = e.to_string();
                let err = jsonrpc::error_response(None, e.code(), &reason, None);
                return self.reject_body(&identity, *base, 400, err, reason);
            }
        };
        if kind == BodyKind::Mcp {
            if let Some((id, reason)) = header_mismatch(req, &parsed.messages) {
                let err = jsonrpc::error_response(id, jsonrpc::HEADER_MISMATCH, &reason, None);
                return self.reject_body(&identity, *base, 400, err, reason);
            }
        }
        let now_secs = now_unix_nanos / 1_000_000_000;
        probe::lap(Stage::BodyParse);
        let judged: Vec<Judged> = parsed
            .messages
            .into_iter()
            .map(|m| self.judge(kind, m, &identity, req, now_secs, &base))
            .collect();
        self.combine(parsed.batch, judged, &identity, req, now_secs)
    }

    /// Decides one message.
    fn judge(
        &self,
        kind: BodyKind,
        msg: Message,
        identity: &Identity,
        req: &Request,
        now_secs: u64,
        base: &AuditEvent,
    ) -> Judged {
        let mut event = base.clone();
        event.rpc.request_id = msg.id_text();
        let allow = |reason: String| Evaluation {
            decision: Decision::allow(reason),
            shadow: None,
            used_context: false,
            inputs: String::new(),
        };
        let (method, params) = match &msg.kind {
            Kind::Invalid(r) => {
                let reason = format!("invalid JSON-RPC message: {r}");
                return self.refuse_invalid(msg, event, jsonrpc::INVALID_REQUEST, reason);
            }
            Kind::Reply => {
                let eval = allow("a client's reply to a server request needs no rule".into());
                return self.judged(msg, event, eval, false);
            }
            Kind::Call { method, params } => (method.clone(), params.clone()),
        };
        if req.header("traceparent").is_none() {
            let meta_tp = params
                .as_ref()
                .and_then(|p| p.get("_meta"))
                .and_then(|m| m.get("traceparent"))
                .and_then(Value::as_str);
            if meta_tp.is_some() {
                let (t, s) = trace_ids(meta_tp, None);
                if !t.is_empty() {
                    event.trace_id = t;
                    event.span_id = s;
                }
            }
        }
        if kind == BodyKind::A2a {
            let action = ActionMatch {
                action: a2a::action(&method),
                resource: self.a2a.as_ref().map(|a| a.resource(&req.authority)),
                source: format!("a2a:{method}"),
            };
            event.rpc.a2a_method.clone_from(&method);
            event.action.clone_from(&action.action);
            event.resource = action.resource.clone().unwrap_or_default();
            let facts = BodyFacts {
                context: params.as_ref(),
                a2a_method: Some(&method),
                ..BodyFacts::default()
            };
            let eval = self.decide_full(identity, &action, req, now_secs, facts);
            let eval = self.controlled(eval, identity, &action, params.as_ref(), now_secs);
            return self.judged(msg, event, eval, false);
        }
        let Some(mcp) = &self.mcp else {
            return self.judged(msg, event, allow(String::new()), false);
        };
        let call = mcp.map(&method, params.as_ref());
        probe::lap(Stage::Actions);
        event.rpc.mcp_method.clone_from(&method);
        if method == "tools/call" || method == "prompts/get" {
            event.rpc.tool_name = call.name.clone().unwrap_or_default();
        }
        event.rpc.resource_uri = call.uri.clone().unwrap_or_default();
        if let Some(Value::Object(args)) = &call.arguments {
            event.rpc.argument_keys = args.keys().cloned().collect();
            if mcp.record_arguments() {
                event.rpc.arguments = serde_json::to_string(args).unwrap_or_default();
            }
        }
        if let Some(why) = call.invalid {
            return self.refuse_invalid(msg, event, jsonrpc::INVALID_PARAMS, why);
        }
        let Some(action) = call.action else {
            event.action = format!("mcp:{method}");
            let eval = allow(format!(
                "MCP method {method:?} is allowed for any authenticated agent (not in actions.mcp.governed_methods)"
            ));
            let tools_list = method == "tools/list";
            return self.judged(msg, event, eval, tools_list);
        };
        event.action.clone_from(&action.action);
        event.resource = action.resource.clone().unwrap_or_default();
        let tool = (method == "tools/call")
            .then_some(call.name.as_deref())
            .flatten();
        let facts = BodyFacts {
            context: call.arguments.as_ref(),
            mcp_method: Some(&method),
            mcp_tool: tool,
            a2a_method: None,
        };
        let eval = self.decide_full(identity, &action, req, now_secs, facts);
        probe::lap(Stage::Policy);
        let eval = self.controlled(eval, identity, &action, call.arguments.as_ref(), now_secs);
        probe::lap(Stage::Controls);
        let tools_list = method == "tools/list";
        self.judged(msg, event, eval, tools_list)
    }

    /// The agent controls after a body decision: approval ids, and loop detection and rate
    /// limits counted with the call's arguments (in this worker's counters; see
    /// [`Engine::handle_with`] for counters shared by every worker).
    fn controlled(
        &self,
        mut eval: Evaluation,
        identity: &Identity,
        action: &ActionMatch,
        arguments: Option<&Value>,
        now_secs: u64,
    ) -> Evaluation {
        let args = arguments
            .filter(|_| self.controls.counts())
            .map(|a| serde_json::to_vec(a).unwrap_or_default())
            .unwrap_or_default();
        eval.decision = self.apply_controls(
            identity,
            Some(action),
            eval.decision,
            &args,
            crate::controls::Counters {
                store: &*self.counters,
                writer: self.writer,
            },
            now_secs.saturating_mul(1_000_000_000),
        );
        eval
    }

    fn refuse_invalid(
        &self,
        msg: Message,
        mut event: AuditEvent,
        code: i64,
        reason: String,
    ) -> Judged {
        let decision = Decision::deny(reason);
        event.effect = "deny".into();
        event.reason.clone_from(&decision.reason);
        let enforce = self.mode == Mode::Enforce;
        event.decision = if enforce { "deny" } else { "would_deny" }.into();
        event.enforced = enforce;
        let error = (enforce && msg.expects_response())
            .then(|| jsonrpc::error_response(msg.id.as_deref(), code, &decision.reason, None));
        Judged {
            msg,
            event,
            decision,
            refused: enforce,
            error,
            tools_list: false,
            invalid: true,
        }
    }

    fn judged(
        &self,
        msg: Message,
        mut event: AuditEvent,
        eval: Evaluation,
        tools_list: bool,
    ) -> Judged {
        let disposition = self.record(&eval, &mut event);
        let refused = disposition == Disposition::Deny;
        let error = (refused && msg.expects_response()).then(|| {
            let d = &eval.decision;
            let mut data = json!({
                "decision": d.effect.as_str(),
                "policy": d.policy,
                "rule": d.rule,
                "reason": d.reason,
                "action": event.action,
                "mode": self.mode.as_str(),
                "bundleVersion": self.version,
                "traceId": event.trace_id_hex(),
            });
            if let (false, Some(obj)) = (event.approval_id.is_empty(), data.as_object_mut()) {
                obj.insert(
                    "approvalId".into(),
                    Value::String(event.approval_id.clone()),
                );
            }
            let message = format!("MeshGuard denied {}: {}", event.action, d.reason);
            jsonrpc::error_response(
                msg.id.as_deref(),
                jsonrpc::POLICY_DENIED,
                &message,
                Some(&data),
            )
        });
        Judged {
            msg,
            event,
            decision: eval.decision,
            refused,
            error,
            tools_list: tools_list
                && disposition == Disposition::Allow
                && self.mode == Mode::Enforce,
            invalid: false,
        }
    }

    /// Turns the decided messages into one outcome: forward all, forward the allowed part
    /// of a batch and merge the errors into the answer, or answer locally.
    fn combine(
        &self,
        batch: bool,
        judged: Vec<Judged>,
        identity: &Rc<Identity>,
        req: &Request,
        now_secs: u64,
    ) -> Outcome {
        let forwarded: Vec<&Judged> = judged.iter().filter(|j| !j.refused).collect();
        let errors: Vec<String> = judged.iter().filter_map(|j| j.error.clone()).collect();
        let any_refused = judged.iter().any(|j| j.refused);
        let forward_expects_answer = forwarded.iter().any(|j| j.msg.expects_response());
        let tools_list: Vec<Box<RawValue>> = forwarded
            .iter()
            .filter(|j| j.tools_list)
            .filter_map(|j| j.msg.id.clone())
            .collect();
        let first = judged.first();
        let action = first.map_or("", |j| j.event.action.as_str()).to_string();
        let label = if forwarded.iter().all(|j| j.event.decision == "allow") {
            "allow"
        } else {
            "would_deny"
        };
        // the outcome's decision: the first refusal, else the first message's
        let decision = judged
            .iter()
            .find(|j| j.refused)
            .or(first)
            .map_or_else(|| Decision::deny("empty body"), |j| j.decision.clone());
        let mut verdict_local: Option<(u16, String)> = None;
        let mut plan: Option<ResponsePlan> = None;
        let mut body: Option<Vec<u8>> = None;
        if !any_refused {
            if !tools_list.is_empty() {
                plan = Some(self.plan(tools_list, Vec::new(), identity, req, now_secs));
            }
        } else if forwarded.is_empty() || !forward_expects_answer {
            // Nothing forwarded would answer, so the errors cannot ride on the upstream's
            // reply: answer locally (allowed notifications of such a batch are dropped).
            verdict_local = Some(match (errors.is_empty(), batch) {
                (true, _) => {
                    let reason = judged
                        .iter()
                        .find(|j| j.refused)
                        .map_or("denied", |j| j.decision.reason.as_str());
                    (
                        403,
                        jsonrpc::error_response(None, jsonrpc::POLICY_DENIED, reason, None),
                    )
                }
                (false, true) => (200, jsonrpc::batch(&errors)),
                (false, false) => {
                    let status = if judged.iter().any(|j| j.invalid) {
                        400
                    } else {
                        200
                    };
                    (status, errors.concat())
                }
            });
        } else {
            let parts: Vec<&str> = forwarded.iter().map(|j| j.msg.raw.as_str()).collect();
            body = Some(jsonrpc::batch(&parts).into_bytes());
            plan = Some(self.plan(tools_list, errors, identity, req, now_secs));
        }
        let mut events: Vec<AuditEvent> = judged.into_iter().map(|j| j.event).collect();
        let verdict = match verdict_local {
            Some((status, text)) => {
                for e in &mut events {
                    e.status = status;
                }
                Verdict::Respond(response::json(status, text))
            }
            None => {
                let mut set_headers =
                    forward_headers(identity, label, &action, &AuditEvent::default());
                if let Some(e) = events.iter().find(|e| !e.shadow_policy.is_empty()) {
                    set_headers.push((response::SHADOW_POLICY_HEADER, e.shadow_policy.clone()));
                }
                Verdict::Forward { set_headers, body }
            }
        };
        let kind = match &verdict {
            Verdict::Respond(_) => DecisionKind::enforced(&decision),
            Verdict::Forward { .. } if label == "allow" => DecisionKind::Allow,
            Verdict::Forward { .. } => DecisionKind::WouldDeny,
        };
        let mut it = events.into_iter();
        let event = it.next().unwrap_or_default();
        Outcome {
            verdict,
            kind,
            identity_error: None,
            decision,
            event,
            more_events: it.collect(),
            response: plan,
        }
    }

    fn plan(
        &self,
        tools_list: Vec<Box<RawValue>>,
        inject: Vec<String>,
        identity: &Rc<Identity>,
        req: &Request,
        now_secs: u64,
    ) -> ResponsePlan {
        let cache_scope = req
            .header("mcp-protocol-version")
            .is_some_and(|v| v.trim() >= CACHE_SCOPE_REVISION);
        let lister = (!tools_list.is_empty()).then(|| {
            Rc::new(Lister {
                identity: Rc::clone(identity),
                req: req.clone(),
                now_secs,
                cache_scope,
            })
        });
        ResponsePlan {
            max_bytes: self
                .mcp
                .as_ref()
                .map_or(1024 * 1024, |m| m.max_response_bytes()),
            tools_list,
            inject,
            lister,
        }
    }

    /// The response phase: the replacement for a buffered upstream response body, or
    /// `None` to pass it unchanged. When the buffered body hit the plan's cap the host
    /// passes `Err(TooLarge)` and the engine answers what is safe (for `tools/list`, an
    /// error rather than an unfiltered list).
    pub fn rewrite_response(
        &self,
        plan: &ResponsePlan,
        content_type: Option<&str>,
        body: Result<&[u8], TooLarge>,
    ) -> Option<Vec<u8>> {
        let sse_stream = mime(content_type) == "text/event-stream";
        let filtering = !plan.tools_list.is_empty();
        let unusable =
            |why: &str| filtering.then(|| self.list_errors(plan, why, sse_stream).into_bytes());
        let Ok(body) = body else {
            return unusable("the tools/list response exceeds actions.mcp.max_response_bytes");
        };
        if jsonrpc::check_depth(body, jsonrpc::MAX_DEPTH).is_err() {
            return unusable("the tools/list response nests too deeply to be filtered");
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return unusable("the tools/list response is not UTF-8");
        };
        if sse_stream {
            let events = sse::parse(text);
            let mut out = String::with_capacity(text.len() + 256);
            let mut trailing = "";
            for (i, ev) in events.iter().enumerate() {
                if !ev.terminated && i + 1 == events.len() {
                    trailing = ev.raw;
                    break;
                }
                match ev
                    .data
                    .as_deref()
                    .and_then(|d| self.rewrite_message(plan, d).into_text())
                {
                    Some(new) => out.push_str(&ev.with_data(&new)),
                    None => out.push_str(ev.raw),
                }
            }
            for e in &plan.inject {
                out.push_str(&sse::event(e));
            }
            out.push_str(trailing);
            return Some(out.into_bytes());
        }
        let rewritten = match self.rewrite_message(plan, text) {
            Filtered::Rewritten(new) => Some(new),
            Filtered::Unchanged => None,
            // Only an answer no parse has read whole still needs the check.
            Filtered::Unread => {
                if filtering && serde_json::from_str::<&RawValue>(text).is_err() {
                    return unusable("the tools/list response is not JSON");
                }
                None
            }
        };
        if plan.inject.is_empty() {
            return rewritten.map(String::into_bytes);
        }
        let current = rewritten.as_deref().unwrap_or(text);
        let merged = match serde_json::from_str::<Vec<Box<RawValue>>>(current) {
            Ok(items) => {
                let mut parts: Vec<&str> = items.iter().map(|r| r.get()).collect();
                parts.extend(plan.inject.iter().map(String::as_str));
                jsonrpc::batch(&parts)
            }
            Err(_) if serde_json::from_str::<&RawValue>(current).is_ok() => {
                let mut parts = vec![current];
                parts.extend(plan.inject.iter().map(String::as_str));
                jsonrpc::batch(&parts)
            }
            // not JSON: nothing to merge into; the client still gets the upstream's answer
            Err(_) => return rewritten.map(String::into_bytes),
        };
        Some(merged.into_bytes())
    }

    /// Errors for the `tools/list` requests when their answer cannot be filtered.
    fn list_errors(&self, plan: &ResponsePlan, why: &str, sse_stream: bool) -> String {
        let message = format!("{why}; MeshGuard never passes an unfiltered tool list");
        let mut all: Vec<String> = plan
            .tools_list
            .iter()
            .map(|id| jsonrpc::error_response(Some(id), INTERNAL_ERROR, &message, None))
            .collect();
        all.extend(plan.inject.iter().cloned());
        if sse_stream {
            all.iter().map(|e| sse::event(e)).collect()
        } else if all.len() == 1 {
            all.concat()
        } else {
            jsonrpc::batch(&all)
        }
    }

    /// Filters the `tools/list` results in one JSON-RPC message or batch.
    fn rewrite_message(&self, plan: &ResponsePlan, text: &str) -> Filtered {
        let Some(lister) = plan.lister.as_deref() else {
            return Filtered::Unread;
        };
        if text.trim_start().starts_with('[') {
            let Ok(items) = serde_json::from_str::<Vec<Box<RawValue>>>(text) else {
                return Filtered::Unread;
            };
            let mut changed = false;
            let parts: Vec<String> = items
                .iter()
                .map(|r| match self.rewrite_one(plan, lister, r.get()) {
                    Filtered::Rewritten(new) => {
                        changed = true;
                        new
                    }
                    Filtered::Unchanged | Filtered::Unread => r.get().to_string(),
                })
                .collect();
            // the batch parse above read every element whole
            match changed {
                true => Filtered::Rewritten(jsonrpc::batch(&parts)),
                false => Filtered::Unchanged,
            }
        } else {
            self.rewrite_one(plan, lister, text)
        }
    }

    /// Filters one `tools/list` answer. One pass reads the message, its `result` and the
    /// list of tools as raw JSON; then only each tool's `name` is read
    /// ([`jsonrpc::sole_member`]). Everything else (schemas, descriptions, `nextCursor`)
    /// is carried over verbatim.
    fn rewrite_one(&self, plan: &ResponsePlan, lister: &Lister, text: &str) -> Filtered {
        let Ok(answer) = serde_json::from_str::<ListAnswer<'_>>(text) else {
            return Filtered::Unread;
        };
        // From here on the text was read whole: whatever is not rewritten is valid JSON.
        let id = answer
            .members
            .get("id")
            .and_then(|id| serde_json::from_str::<Value>(id).ok());
        if !id.is_some_and(|id| plan.tools_list.iter().any(|t| jsonrpc::same_id(t, &id))) {
            return Filtered::Unchanged;
        }
        let Some(mut result) = answer.result else {
            return Filtered::Unchanged;
        };
        let Some(tools) = result.tools.take() else {
            return Filtered::Unchanged;
        };
        let total = tools.len();
        let mut listed_count = 0usize;
        let mut kept = String::with_capacity(text.len());
        kept.push('[');
        // One action for every tool of the answer: its buffers are reused, not reallocated.
        let mut action = ActionMatch {
            action: String::new(),
            resource: None,
            source: "mcp:tools/list".into(),
        };
        for t in tools {
            let listed = jsonrpc::sole_member(t.get(), "name")
                .and_then(jsonrpc::raw_str)
                .is_some_and(|name| self.tool_listed(lister, &name, &mut action));
            if listed {
                listed_count += 1;
                if kept.len() > 1 {
                    kept.push(',');
                }
                kept.push_str(t.get());
            }
        }
        // Every tool kept, nothing to add, and no member named twice (a client may read
        // the other copy than this parse did): the upstream's bytes stand, and the host
        // writes nothing back into Envoy's buffer.
        if listed_count == total && !lister.cache_scope && !answer.repeated && !result.repeated {
            return Filtered::Unchanged;
        }
        kept.push(']');
        let mut members = result.members;
        members.insert("tools".into(), &kept);
        if lister.cache_scope {
            members.insert("cacheScope".into(), "\"private\"");
        }
        let result_text = json_object(&members);
        let mut outer = answer.members;
        outer.insert("result".into(), &result_text);
        Filtered::Rewritten(json_object(&outer))
    }

    /// Whether a tool stays in this agent's `tools/list`: its `tools/call` action is
    /// allowed (or needs approval) with no arguments. A tool whose denial may depend on
    /// its arguments (a condition on `context.*`, or a resource taken from an argument)
    /// is kept and decided at call time. `action` is scratch space shared by the tools of
    /// one answer.
    fn tool_listed(&self, lister: &Lister, name: &str, action: &mut ActionMatch) -> bool {
        let Some(mcp) = &self.mcp else {
            return true;
        };
        let (resource, from_argument) = mcp.listing_resource(name);
        mcp.write_tool_action(name, &mut action.action);
        action.resource = resource;
        let facts = BodyFacts {
            context: None,
            mcp_method: Some("tools/call"),
            mcp_tool: Some(name),
            a2a_method: None,
        };
        let eval = self.decide_unrecorded(
            &lister.identity,
            action,
            &lister.req,
            lister.now_secs,
            facts,
        );
        eval.decision.effect != Effect::Deny
            || ((eval.used_context || from_argument) && eval.decision.policy.is_none())
    }
}

/// What `tools/list` filtering made of one JSON-RPC message or batch.
enum Filtered {
    /// The replacement text.
    Rewritten(String),
    /// Read whole (so valid JSON) and left as it is: not an answer to a `tools/list` of
    /// this request, or every tool kept.
    Unchanged,
    /// Not read as JSON-RPC answers (not JSON, or another shape): the caller decides.
    Unread,
}

impl Filtered {
    /// The replacement, if any.
    fn into_text(self) -> Option<String> {
        match self {
            Filtered::Rewritten(text) => Some(text),
            Filtered::Unchanged | Filtered::Unread => None,
        }
    }
}

/// Members of a JSON object as raw JSON texts, by name (sorted, as a `BTreeMap` of
/// values serialises).
type RawMembers<'a> = BTreeMap<String, &'a str>;

/// A JSON-RPC answer as `tools/list` filtering reads it, in one pass: `result` apart,
/// every other member raw.
struct ListAnswer<'a> {
    members: RawMembers<'a>,
    result: Option<ListResult<'a>>,
    /// Some member came twice (the map and `result` keep the last copy).
    repeated: bool,
}

/// The `result` of a `tools/list` answer: `tools` as a list of raw tools, every other
/// member raw.
struct ListResult<'a> {
    members: RawMembers<'a>,
    tools: Option<Vec<&'a RawValue>>,
    /// Some member came twice (the map and `tools` keep the last copy).
    repeated: bool,
}

impl<'de> serde::Deserialize<'de> for ListAnswer<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ListAnswer<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC answer object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = RawMembers::new();
                let mut result = None;
                let mut repeated = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "result" {
                        repeated |= result
                            .replace(map.next_value::<ListResult<'de>>()?)
                            .is_some();
                    } else {
                        repeated |= members
                            .insert(key, map.next_value::<&'de RawValue>()?.get())
                            .is_some();
                    }
                }
                Ok(ListAnswer {
                    members,
                    result,
                    repeated,
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de> serde::Deserialize<'de> for ListResult<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ListResult<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a tools/list result object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = RawMembers::new();
                let mut tools = None;
                let mut repeated = false;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "tools" {
                        repeated |= tools
                            .replace(map.next_value::<Vec<&'de RawValue>>()?)
                            .is_some();
                    } else {
                        repeated |= members
                            .insert(key, map.next_value::<&'de RawValue>()?.get())
                            .is_some();
                    }
                }
                Ok(ListResult {
                    members,
                    tools,
                    repeated,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object from raw member values, written as `serde_json` writes a map.
fn json_object(members: &RawMembers<'_>) -> String {
    let mut out = String::with_capacity(
        members
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
            + 2,
    );
    out.push('{');
    for (i, (k, v)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(k).unwrap_or_default());
        out.push(':');
        out.push_str(v);
    }
    out.push('}');
    out
}

/// JSON-RPC internal error: the answer could not be filtered.
const INTERNAL_ERROR: i64 = -32603;

/// The first MCP revision whose `tools/list` result has `cacheScope`.
const CACHE_SCOPE_REVISION: &str = "2026-07-28";

/// The body field an `Mcp-Name` header mirrors, for the methods that carry one.
fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// An `Mcp-Name` value as sent: verbatim, or `=?base64?…?=` for values that are not
/// printable ASCII. `None` when the encoding is broken (it then matches nothing).
fn decode_header_value(v: &str) -> Option<String> {
    use ct_codecs::{Base64, Decoder};
    match v
        .strip_prefix("=?base64?")
        .and_then(|rest| rest.strip_suffix("?="))
    {
        None => Some(v.to_string()),
        Some(payload) => Base64::decode_to_vec(payload, None)
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
    }
}

/// An `Mcp-Method` / `Mcp-Name` header that disagrees with the body: the id to answer
/// with and why. `Mcp-Name` is compared only for the methods that name something
/// (`tools/call`, `prompts/get`: `params.name`; `resources/read`: `params.uri`).
fn header_mismatch<'a>(
    req: &Request,
    msgs: &'a [Message],
) -> Option<(Option<&'a RawValue>, String)> {
    let method_h = req.header("mcp-method");
    let name_h = req.header("mcp-name");
    if method_h.is_none() && name_h.is_none() {
        return None;
    }
    for m in msgs {
        let Kind::Call { method, params } = &m.kind else {
            continue;
        };
        let id = m.id.as_deref();
        if let Some(h) = method_h {
            if h != method {
                return Some((
                    id,
                    format!("header mismatch: Mcp-Method {h:?} does not match the body's method {method:?}"),
                ));
            }
        }
        let Some(field) = name_field(method) else {
            continue;
        };
        let body_name = params
            .as_ref()
            .and_then(|p| p.get(field))
            .and_then(Value::as_str);
        if let Some(body_name) = body_name {
            // a stateless client sends both; one without the other disagrees too
            if name_h.and_then(decode_header_value).as_deref() != Some(body_name) {
                return Some((
                    id,
                    format!(
                        "header mismatch: Mcp-Name {:?} does not match the body's params.{field} {body_name:?}",
                        name_h.unwrap_or_default()
                    ),
                ));
            }
        }
    }
    None
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
