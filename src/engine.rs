//! The governed request path as one plain function: request → identity → action →
//! decision → verdict + audit event. The filter and the CLI both call this, so they
//! decide identically.

use crate::actions::{ActionMapper, ActionMatch};
use crate::audit::{trace_ids, AuditConfig, AuditEvent};
use crate::condition::{Lookup, Value};
use crate::config::{self, ConfigError, Mode, PluginConfig};
use crate::identity::{Identity, IdentityError, TokenCache, Verifier};
use crate::policy::{parse_policy_yaml, Decision, Effect, PolicySet, Subject};
use crate::request::Request;
use crate::response::{self, Denial, LocalResponse};
use crate::tier::TrustTier;
use std::collections::HashSet;

/// A compiled configuration, shared by every request of a worker.
#[derive(Debug)]
pub struct Engine {
    mode: Mode,
    verifier: Verifier,
    actions: ActionMapper,
    policies: PolicySet,
    audit: AuditConfig,
    version: String,
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward upstream after removing client `x-meshguard-*` headers and setting these.
    Forward {
        /// Headers for the upstream.
        set_headers: Vec<(String, String)>,
    },
    /// Answer locally.
    Respond(LocalResponse),
}

/// Everything the glue needs after deciding.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Forward or respond.
    pub verdict: Verdict,
    /// The policy decision (identity failures appear as a deny with no policy).
    pub decision: Decision,
    /// The audit record (latency to be filled in by the caller).
    pub event: AuditEvent,
}

/// The values conditions can refer to (DESIGN §4).
struct Facts<'a> {
    identity: &'a Identity,
    subject: Subject<'a>,
    action: &'a str,
    resource: Option<&'a str>,
    req: &'a Request,
    now_secs: u64,
}

fn json_to_value(v: &serde_json::Value) -> Option<Value> {
    match v {
        serde_json::Value::String(s) => Some(Value::Str(s.clone())),
        serde_json::Value::Number(n) => n.as_f64().map(Value::Num),
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::Array(items) => {
            Some(Value::List(items.iter().filter_map(json_to_value).collect()))
        }
        serde_json::Value::Null | serde_json::Value::Object(_) => None,
    }
}

impl Lookup for Facts<'_> {
    fn lookup(&self, name: &str) -> Option<Value> {
        let num = |n: u64| Some(Value::Num(n as f64));
        match name {
            "time.hour" => num((self.now_secs / 3600) % 24),
            "time.minute" => num((self.now_secs / 60) % 60),
            // ISO 8601: Monday = 1 ... Sunday = 7; 1970-01-01 was a Thursday.
            "time.weekday" => num((self.now_secs / 86_400 + 3) % 7 + 1),
            "time.unix" => num(self.now_secs),
            "agent.id" => Some(Value::Str(self.subject.agent_id.to_string())),
            "agent.trust_tier" => Some(Value::Str(self.subject.tier.as_str().to_string())),
            "agent.issuer" => Some(Value::Str(self.identity.issuer.clone())),
            "action" => Some(Value::Str(self.action.to_string())),
            "resource" => self.resource.map(|r| Value::Str(r.to_string())),
            "request.method" => Some(Value::Str(self.req.method.clone())),
            "request.path" => Some(Value::Str(self.req.path_only().to_string())),
            "request.host" => Some(Value::Str(self.req.authority.clone())),
            "delegation.depth" => num(self.identity.depth() as u64),
            "delegation.chain" => Some(Value::List(
                self.identity
                    .chain
                    .iter()
                    .map(|h| Value::Str(h.agent_id.clone()))
                    .collect(),
            )),
            _ => {
                if let Some(h) = name.strip_prefix("request.headers.") {
                    self.req.header(h).map(|v| Value::Str(v.to_string()))
                } else if let Some(c) = name.strip_prefix("agent.claims.") {
                    let direct = self.identity.claims.get(c);
                    let nested = || {
                        c.split('.')
                            .try_fold(&self.identity.claims, |v, seg| v.get(seg))
                    };
                    direct.or_else(nested).and_then(json_to_value)
                } else {
                    // `context.*` (MCP arguments, JSON bodies) is not collected in this build.
                    None
                }
            }
        }
    }
}

/// 64-bit FNV-1a: a stable fingerprint of the inline policy, so decisions and audit events
/// say which policy text was in force. Not a security measure.
fn fingerprint(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("inline-{h:016x}")
}

fn now_parts(now_unix_nanos: u64) -> u64 {
    now_unix_nanos / 1_000_000_000
}

impl Engine {
    /// Parses and compiles configuration text (JSON or YAML).
    pub fn from_text(text: &[u8]) -> Result<Engine, ConfigError> {
        Engine::compile(config::parse(text)?)
    }

    /// Compiles a parsed configuration.
    pub fn compile(cfg: PluginConfig) -> Result<Engine, ConfigError> {
        if cfg.bundle.is_some() {
            return Err(ConfigError::Unsupported {
                field: "bundle".into(),
                message: "signed policy bundles are not available in this build; \
                          use policies or policy_yaml"
                    .into(),
            });
        }
        let verifier = Verifier::compile(&cfg.identity)?;
        let actions = ActionMapper::compile(&cfg.actions)?;
        cfg.audit.validate()?;
        let (policies, field) = match (&cfg.policy_yaml, cfg.policies.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    "policy_yaml",
                    "give policies either inline (policies) or as text (policy_yaml), not both",
                ))
            }
            (Some(text), true) => (parse_policy_yaml(text)?, "policy_yaml"),
            (None, _) => (cfg.policies.clone(), "policies"),
        };
        let set = PolicySet::compile(&policies, field)?;
        let version = fingerprint(
            serde_json::to_string(&policies)
                .unwrap_or_default()
                .as_bytes(),
        );
        Ok(Engine {
            mode: cfg.mode,
            verifier,
            actions,
            policies: set,
            audit: cfg.audit,
            version,
        })
    }

    /// Enforce or audit.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The audit settings.
    pub fn audit_config(&self) -> &AuditConfig {
        &self.audit
    }

    /// Identifier of the policy in force (`bundleVersion` in responses).
    pub fn policy_version(&self) -> &str {
        &self.version
    }

    /// Number of policies loaded.
    pub fn policy_count(&self) -> usize {
        self.policies.len()
    }

    /// The identity verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The action mapper.
    pub fn action_mapper(&self) -> &ActionMapper {
        &self.actions
    }

    /// Decides an action for a verified identity, applying the delegation rules: the mesh
    /// depth limit, no cycles, and the permission ceiling (every agent of the chain must
    /// itself be allowed the action; the strictest outcome along the chain wins).
    pub fn decide(
        &self,
        identity: &Identity,
        action: &ActionMatch,
        req: &Request,
        now_secs: u64,
    ) -> Decision {
        let depth = identity.depth();
        let max = self.verifier.max_delegation_depth();
        if depth > max {
            return Decision::deny(format!(
                "delegation depth {depth} exceeds the mesh limit of {max}"
            ));
        }
        let mut seen = HashSet::with_capacity(identity.chain.len());
        for hop in &identity.chain {
            if !seen.insert(hop.agent_id.as_str()) {
                return Decision::deny(format!(
                    "delegation cycle: agent {:?} appears twice in the chain {}",
                    hop.agent_id,
                    chain_text(identity)
                ));
            }
        }
        let facts = |subject| Facts {
            identity,
            subject,
            action: &action.action,
            resource: action.resource.as_deref(),
            req,
            now_secs,
        };
        let caller = Subject {
            agent_id: &identity.agent_id,
            tier: identity.tier,
        };
        let mut decision = self.policies.evaluate(
            &caller,
            &action.action,
            action.resource.as_deref(),
            depth,
            &facts(caller),
        );
        for hop in identity.chain.iter().rev().skip(1) {
            let s = Subject {
                agent_id: &hop.agent_id,
                tier: hop.tier.min(identity.tier),
            };
            let d = self.policies.evaluate(
                &s,
                &action.action,
                action.resource.as_deref(),
                depth,
                &facts(s),
            );
            if d.effect > decision.effect {
                decision = Decision {
                    reason: format!(
                        "delegation ceiling: delegator {:?} is not allowed {:?}: {}",
                        hop.agent_id, action.action, d.reason
                    ),
                    ..d
                };
            }
        }
        decision
    }

    /// The whole request path for one request.
    pub fn handle(&self, req: &Request, now_unix_nanos: u64, cache: &mut TokenCache) -> Outcome {
        let now_secs = now_parts(now_unix_nanos);
        let (trace_id, span_id) = trace_ids(req.header("traceparent"), req.header("x-request-id"));
        let mut event = AuditEvent {
            time_unix_nano: now_unix_nanos,
            trace_id,
            span_id,
            mode: self.mode.as_str().into(),
            bundle_version: self.version.clone(),
            method: req.method.clone(),
            path: req.path_only().to_string(),
            authority: req.authority.clone(),
            request_id: req.header("x-request-id").unwrap_or_default().to_string(),
            ..AuditEvent::default()
        };
        let trace_hex = event.trace_id_hex();
        let action = self.actions.map(req);
        if let Some(a) = &action {
            event.action.clone_from(&a.action);
            event.resource = a.resource.clone().unwrap_or_default();
        }
        let identity = self.verifier.authenticate(
            req.header(self.verifier.token_header()),
            now_secs,
            cache,
        );
        let identity = match identity {
            Ok(id) => id,
            Err(e) => return self.identity_failure(&e, event, &trace_hex),
        };
        event.agent_id.clone_from(&identity.agent_id);
        event.trust_tier = identity.tier.as_str().into();
        event.delegation_chain = identity.chain.iter().map(|h| h.agent_id.clone()).collect();
        let decision = match &action {
            Some(a) => self.decide(&identity, a, req, now_secs),
            None => Decision::deny(
                "no action: the request matches no route in actions.routes and carries no action header",
            ),
        };
        event.effect = decision.effect.as_str().into();
        event.policy = decision.policy.clone().unwrap_or_default();
        event.rule = decision.rule.clone().unwrap_or_default();
        event.reason.clone_from(&decision.reason);
        let allowed = decision.effect == Effect::Allow;
        let forward = |label: &str| Verdict::Forward {
            set_headers: vec![
                (response::AGENT_HEADER.into(), identity.agent_id.clone()),
                (response::TIER_HEADER.into(), identity.tier.as_str().into()),
                (response::DECISION_HEADER.into(), label.into()),
                (
                    response::ACTION_HEADER.into(),
                    action.as_ref().map(|a| a.action.clone()).unwrap_or_default(),
                ),
            ],
        };
        let verdict = match (allowed, self.mode) {
            (true, _) => {
                event.decision = "allow".into();
                event.enforced = true;
                forward("allow")
            }
            (false, Mode::Audit) => {
                event.decision = "would_deny".into();
                event.enforced = false;
                forward("would_deny")
            }
            (false, Mode::Enforce) => {
                event.decision = decision.effect.as_str().into();
                event.enforced = true;
                event.status = 403;
                Verdict::Respond(response::forbidden(&Denial {
                    decision: decision.effect.as_str(),
                    policy: decision.policy.as_deref(),
                    rule: decision.rule.as_deref(),
                    reason: &decision.reason,
                    bundle_version: &self.version,
                    trace_id: &trace_hex,
                    agent: &identity.agent_id,
                    action: action.as_ref().map_or("", |a| a.action.as_str()),
                }))
            }
        };
        Outcome {
            verdict,
            decision,
            event,
        }
    }

    fn identity_failure(&self, e: &IdentityError, mut event: AuditEvent, trace_hex: &str) -> Outcome {
        let reason = e.to_string();
        event.effect = Effect::Deny.as_str().into();
        event.reason.clone_from(&reason);
        event.identity_error = e.code().into();
        let verdict = match self.mode {
            Mode::Enforce => {
                event.decision = "deny".into();
                event.enforced = true;
                event.status = 401;
                Verdict::Respond(response::unauthorized(e.code(), &reason, self.mode, trace_hex))
            }
            Mode::Audit => {
                event.decision = "would_deny".into();
                event.enforced = false;
                Verdict::Forward {
                    set_headers: vec![
                        (response::TIER_HEADER.into(), TrustTier::Untrusted.as_str().into()),
                        (response::DECISION_HEADER.into(), "would_deny".into()),
                    ],
                }
            }
        };
        Outcome {
            verdict,
            decision: Decision::deny(reason),
            event,
        }
    }
}

fn chain_text(identity: &Identity) -> String {
    identity
        .chain
        .iter()
        .map(|h| h.agent_id.as_str())
        .collect::<Vec<_>>()
        .join(" > ")
}
