//! The Guardian-compatible decision API (README, "Decision API"): `POST /enforce`,
//! `POST /enforce/batch` and `GET /health`, answered by the filter itself with the
//! Guardian sidecar's JSON shapes. The agent is the bearer token's; a body naming another
//! `agentId` is refused.

use super::body::{BodyKind, PendingBody, Step, TooLarge};
use super::request::Request;
use super::response::{self, LocalResponse};
use super::{record_identity, BodyFacts, DecisionKind, Disposition, Engine, Outcome, Verdict};
use crate::actions::ActionMatch;
use crate::audit::AuditEvent;
use crate::config::{ConfigError, DecisionApiConfig};
use crate::health::{self, Health};
use crate::identity::{Identity, TokenCache};
use crate::policy::Decision;
use crate::sources::SyncStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which decision-API endpoint a path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /enforce`.
    Enforce,
    /// `POST /enforce/batch`.
    Batch,
    /// `GET /health`.
    Health,
}

/// Checks `decision_api:`; errors name the field.
pub fn validate(cfg: &DecisionApiConfig) -> Result<(), ConfigError> {
    crate::actions::mcp::check_paths(&cfg.paths, "decision_api.paths")?;
    for (field, v) in [
        ("decision_api.max_body_bytes", cfg.max_body_bytes),
        ("decision_api.max_batch_actions", cfg.max_batch_actions),
    ] {
        if v == 0 {
            return Err(ConfigError::invalid(field, "must be greater than 0"));
        }
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnforceRequest {
    #[serde(default)]
    agent_id: Option<String>,
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchRequest {
    #[serde(default)]
    agent_id: Option<String>,
    actions: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    action: String,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    context: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnforceResponse<'a> {
    decision: &'a str,
    policy: Option<&'a str>,
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    latency_ms: f64,
    bundle_version: &'a str,
    mode: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    would_deny: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchResult<'a> {
    action: &'a str,
    decision: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchResponse<'a> {
    results: Vec<BatchResult<'a>>,
    all_allowed: bool,
    bundle_version: &'a str,
    mode: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    decision: &'a str,
    error: &'a str,
    reason: &'a str,
    mode: &'a str,
}

/// The `/health` answer.
pub fn health_response(h: &Health) -> LocalResponse {
    response::json(200, serde_json::to_string(h).unwrap_or_default())
}

/// One decision as the API reports it.
struct Answer {
    event: AuditEvent,
    decision: Decision,
    /// What the caller is told: `allow`, `deny`, `require_approval` (audit mode and
    /// shadow denials say `allow`: the action proceeds).
    told: &'static str,
    would_deny: bool,
}

impl Engine {
    /// Which decision-API endpoint `path` is, when the API is configured.
    pub fn decision_api_endpoint(&self, path: &str) -> Option<Endpoint> {
        let api = self.decision_api.as_ref()?;
        let p = api.paths.iter().find(|p| *p == path)?;
        Some(if p.ends_with("/batch") {
            Endpoint::Batch
        } else if p.ends_with("/health") {
            Endpoint::Health
        } else {
            Endpoint::Enforce
        })
    }

    /// The health report from what the engine knows; the host, which holds the sync
    /// status and start time, may answer with [`health_response`] of a fuller report.
    pub fn engine_health(&self, now_secs: u64) -> Health {
        let sync = SyncStatus {
            last_ok: self.bundle_version.is_some(),
            reachable: self.bundle_version.is_some(),
            ..SyncStatus::default()
        };
        health::report(self, &sync, None, now_secs, now_secs)
    }

    pub(super) fn start_decision_api(
        &self,
        ep: Endpoint,
        req: &Request,
        now_unix_nanos: u64,
        cache: &mut TokenCache,
    ) -> Step {
        let now_secs = now_unix_nanos / 1_000_000_000;
        let mut event = self.base_event(req, now_unix_nanos);
        let local = |event: AuditEvent, status: u16, body: String, decision: Decision| {
            Step::Decided(Box::new(Outcome {
                kind: DecisionKind::enforced(&decision),
                identity_error: None,
                verdict: Verdict::Respond(response::json(status, body)),
                decision,
                event,
                more_events: Vec::new(),
                response: None,
            }))
        };
        let want = if ep == Endpoint::Health {
            "GET"
        } else {
            "POST"
        };
        if !req.method.eq_ignore_ascii_case(want) {
            let reason = format!("{} answers {want} only", req.path_only());
            event.decision = "deny".into();
            event.effect = "deny".into();
            event.enforced = true;
            event.status = 405;
            event.reason.clone_from(&reason);
            let body = error_body("method_not_allowed", &reason, self.mode.as_str());
            return local(event, 405, body, Decision::deny(reason));
        }
        if ep == Endpoint::Health {
            let allow = Decision::allow("health check");
            event.decision = "allow".into();
            event.effect = "allow".into();
            event.enforced = true;
            event.status = 200;
            event.action = "meshguard:health".into();
            let body = serde_json::to_string(&self.engine_health(now_secs)).unwrap_or_default();
            return local(event, 200, body, allow);
        }
        let identity = match self.authenticate(req, now_secs, cache) {
            Ok(id) => id,
            Err(e) => {
                // no upstream to forward to: 401 in audit mode too
                let reason = e.to_string();
                event.decision = "deny".into();
                event.effect = "deny".into();
                event.enforced = true;
                event.status = 401;
                event.reason.clone_from(&reason);
                event.identity_error = e.code().into();
                let trace = event.trace_id_hex();
                let r = response::unauthorized(e.code(), &reason, self.mode, &trace);
                return Step::Decided(Box::new(Outcome {
                    verdict: Verdict::Respond(r),
                    kind: DecisionKind::Deny,
                    identity_error: Some(e.clone()),
                    decision: Decision::deny(reason),
                    event,
                    more_events: Vec::new(),
                    response: None,
                }));
            }
        };
        record_identity(&mut event, &identity);
        let max_bytes = self
            .decision_api
            .as_ref()
            .map_or(64 * 1024, |a| a.max_body_bytes);
        Step::ReadBody(PendingBody {
            max_bytes,
            kind: if ep == Endpoint::Batch {
                BodyKind::EnforceBatch
            } else {
                BodyKind::Enforce
            },
            identity,
            event: Box::new(event),
        })
    }

    fn answer(
        &self,
        identity: &Identity,
        base: &AuditEvent,
        req: &Request,
        now_secs: u64,
        item: &BatchItem,
    ) -> Answer {
        let (action, resource, context) = (
            &item.action,
            item.resource.as_deref(),
            item.context.as_ref(),
        );
        let mut event = base.clone();
        let m = ActionMatch {
            action: action.to_string(),
            resource: resource.map(str::to_string),
            source: "decision_api".into(),
        };
        event.action = m.action.clone();
        event.resource = m.resource.clone().unwrap_or_default();
        event.status = 200;
        let facts = BodyFacts {
            context,
            ..BodyFacts::default()
        };
        let eval = self.decide_full(identity, &m, req, now_secs, facts);
        let disp = self.record(&eval, &mut event);
        let told = match disp {
            Disposition::Allow | Disposition::WouldDeny => "allow",
            Disposition::Deny => eval.decision.effect.as_str(),
        };
        let decision = match (&eval.shadow, disp) {
            (Some(sh), Disposition::WouldDeny) => sh.clone(),
            _ => eval.decision,
        };
        Answer {
            event,
            decision,
            told,
            would_deny: disp == Disposition::WouldDeny,
        }
    }

    pub(super) fn handle_decision_api(
        &self,
        pending: PendingBody,
        req: &Request,
        body: Result<&[u8], TooLarge>,
        now_unix_nanos: u64,
    ) -> Outcome {
        let now_secs = now_unix_nanos / 1_000_000_000;
        let PendingBody {
            max_bytes,
            kind,
            identity,
            event: base,
        } = pending;
        let base = *base;
        let mode = self.mode.as_str();
        let refuse = |mut event: AuditEvent, status: u16, code: &str, reason: String| {
            event.decision = "deny".into();
            event.effect = "deny".into();
            event.enforced = true;
            event.status = status;
            event.reason.clone_from(&reason);
            Outcome {
                verdict: Verdict::Respond(response::json(status, error_body(code, &reason, mode))),
                kind: DecisionKind::Deny,
                identity_error: None,
                decision: Decision::deny(reason),
                event,
                more_events: Vec::new(),
                response: None,
            }
        };
        let Ok(body) = body else {
            let reason =
                format!("request body exceeds decision_api.max_body_bytes ({max_bytes} bytes)");
            return refuse(base, 413, "too_large", reason);
        };
        if crate::actions::jsonrpc::check_depth(body, crate::actions::jsonrpc::MAX_DEPTH).is_err() {
            return refuse(base, 400, "bad_request", "the body nests too deeply".into());
        }
        let claimed_agent = |agent: &Option<String>| -> Option<String> {
            agent
                .as_deref()
                .filter(|a| !a.is_empty() && *a != identity.agent_id)
                .map(|a| {
                    format!(
                        "agentId {a:?} is not the agent of the bearer token ({:?})",
                        identity.agent_id
                    )
                })
        };
        if kind == BodyKind::Enforce {
            let r: EnforceRequest = match serde_json::from_slice(body) {
                Ok(r) => r,
                Err(e) => {
                    let reason = format!(
                        "the body must be {{\"agentId\", \"action\", \"resource\", \"context\"}}: {e}"
                    );
                    return refuse(base, 400, "bad_request", reason);
                }
            };
            if let Some(why) = claimed_agent(&r.agent_id) {
                let mut ev = base;
                ev.action.clone_from(&r.action);
                return refuse(ev, 403, "agent_mismatch", why);
            }
            let item = BatchItem {
                action: r.action.clone(),
                resource: r.resource.clone(),
                context: r.context.clone(),
            };
            let a = self.answer(&identity, &base, req, now_secs, &item);
            let resp = EnforceResponse {
                decision: a.told,
                policy: a.decision.policy.as_deref(),
                rule: a.decision.rule.as_deref(),
                reason: (a.told != "allow" || a.would_deny).then_some(a.decision.reason.as_str()),
                latency_ms: 0.0,
                bundle_version: &self.version,
                mode,
                approval_id: Some(a.event.approval_id.as_str()).filter(|s| !s.is_empty()),
                would_deny: a.would_deny,
            };
            let text = serde_json::to_string(&resp).unwrap_or_default();
            return Outcome {
                verdict: Verdict::Respond(response::json(200, text)),
                kind: DecisionKind::enforced(&a.decision),
                identity_error: None,
                decision: a.decision,
                event: a.event,
                more_events: Vec::new(),
                response: None,
            };
        }
        let r: BatchRequest = match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => {
                let reason =
                    format!("the body must be {{\"agentId\", \"actions\": [{{\"action\", \"resource\", \"context\"}}]}}: {e}");
                return refuse(base, 400, "bad_request", reason);
            }
        };
        let limit = self
            .decision_api
            .as_ref()
            .map_or(100, |a| a.max_batch_actions);
        if r.actions.is_empty() || r.actions.len() > limit {
            let reason = format!(
                "actions must hold 1 to {limit} entries (decision_api.max_batch_actions); got {}",
                r.actions.len()
            );
            return refuse(base, 400, "bad_request", reason);
        }
        if let Some(why) = claimed_agent(&r.agent_id) {
            return refuse(base, 403, "agent_mismatch", why);
        }
        let answers: Vec<Answer> = r
            .actions
            .iter()
            .map(|i| self.answer(&identity, &base, req, now_secs, i))
            .collect();
        let all_allowed = answers.iter().all(|a| a.told == "allow");
        let results = answers
            .iter()
            .zip(&r.actions)
            .map(|(a, i)| BatchResult {
                action: &i.action,
                decision: a.told,
                reason: (a.told != "allow" || a.would_deny).then_some(a.decision.reason.as_str()),
                latency_ms: 0.0,
                approval_id: Some(a.event.approval_id.as_str()).filter(|s| !s.is_empty()),
            })
            .collect();
        let text = serde_json::to_string(&BatchResponse {
            results,
            all_allowed,
            bundle_version: &self.version,
            mode,
        })
        .unwrap_or_default();
        let decision = answers
            .iter()
            .find(|a| a.told != "allow")
            .or(answers.first())
            .map_or_else(|| Decision::deny("empty batch"), |a| a.decision.clone());
        let mut events = answers.into_iter().map(|a| a.event);
        let event = events.next().unwrap_or_default();
        Outcome {
            kind: DecisionKind::enforced(&decision),
            identity_error: None,
            verdict: Verdict::Respond(response::json(200, text)),
            decision,
            event,
            more_events: events.collect(),
            response: None,
        }
    }
}

fn error_body(code: &str, reason: &str, mode: &str) -> String {
    serde_json::to_string(&ErrorBody {
        decision: "deny",
        error: code,
        reason,
        mode,
    })
    .unwrap_or_default()
}
