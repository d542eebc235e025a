//! The governed request path as one plain function: request → identity → action →
//! decision → verdict + audit event. The filter and the CLI both call this, so they
//! decide identically.

pub mod body;
pub mod decision_api;
pub mod request;
pub mod response;

use crate::actions::a2a::A2aMapper;
use crate::actions::mcp::{dig, McpMapper};
use crate::actions::path::{self as req_path, PathRejection};
use crate::actions::{ActionMapper, ActionMatch, MappingError};
use crate::audit::{trace_ids, AuditEvent};
use crate::condition::{Lookup, Value};
use crate::config::{
    self, parse_policy_yaml, AuditConfig, BundleConfig, ConfigError, DecisionApiConfig, Effect,
    Mode, PluginConfig, StatusConfig,
};
use crate::controls::grants::GrantsDoc;
use crate::controls::{Call, Controls, Counters, GrantsSource, MemoryStore, Refusal};
use crate::identity::{Identity, IdentityError, RemoteKeys, TokenCache, Verifier};
use crate::policy::names::Fact;
use crate::policy::trace::{NoTrace, Trace, Unexplained};
use crate::policy::{Decision, PolicySet, Subject};
use crate::probe::{self, Stage};
use crate::shared::SharedData;
use crate::sources::bundle::{BundleKeys, VerifiedBundle};
use crate::tier::TrustTier;
use request::Request;
use response::{Denial, LocalResponse};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

/// A compiled configuration, shared by every request of a worker.
#[derive(Debug)]
pub struct Engine {
    mode: Mode,
    verifier: Verifier,
    actions: ActionMapper,
    policies: Rc<PolicySet>,
    audit: AuditConfig,
    version: String,
    bundle: Option<BundleSource>,
    bundle_version: Option<u64>,
    agents: usize,
    status: Option<StatusConfig>,
    controls: Controls,
    /// Where [`Engine::handle`] and the body phase count rate limits and loop repeats:
    /// this VM's own memory unless the host hands in Envoy's shared data
    /// ([`Engine::with_shared_counters`]), so limits hold per Envoy, not per worker.
    counters: Rc<dyn SharedData>,
    /// This VM's writer id in `counters`.
    writer: u64,
    mcp: Option<McpMapper>,
    a2a: Option<A2aMapper>,
    decision_api: Option<DecisionApiConfig>,
}

/// What the caller keeps between requests: the worker's token cache and the counters
/// shared by every worker VM (rate limits, loop detection).
pub struct State<'a> {
    /// Verified tokens of this worker.
    pub cache: &'a mut TokenCache,
    /// Envoy's shared data (or a [`MemoryStore`]) and this VM's writer id.
    pub counters: Counters<'a>,
}

/// The compiled `bundle:` section: where to poll and which keys may sign.
#[derive(Debug, Clone)]
pub struct BundleSource {
    /// As configured.
    pub config: BundleConfig,
    /// Verifying keys.
    pub keys: BundleKeys,
}

/// Documents fetched at run time that an engine is built from, besides the configuration
/// (see [`crate::sources`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct Documents<'a> {
    /// The bundle in force; its policies replace the inline ones.
    pub bundle: Option<&'a VerifiedBundle>,
    /// Fetched keys by issuer.
    pub jwks: Option<&'a HashMap<String, Rc<RemoteKeys>>>,
    /// The signed grants document in force.
    pub grants: Option<&'a GrantsDoc>,
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Forward upstream after removing client `x-meshguard-*` headers and setting these.
    Forward {
        /// Headers for the upstream.
        set_headers: Vec<(&'static str, String)>,
        /// A replacement request body (a JSON-RPC batch with its denied elements removed);
        /// `None` forwards the body as received.
        body: Option<Vec<u8>>,
    },
    /// Answer locally.
    Respond(LocalResponse),
}

/// Why a request was refused as malformed (400) before any policy decision: MeshGuard
/// cannot tell unambiguously what it asks for (README, "Request paths").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Malformed {
    /// The path has no single meaning across upstreams.
    Path(PathRejection),
    /// A caller-declared action or resource header was sent more than once.
    Header(MappingError),
}

impl Malformed {
    /// The `errorCode` of the 400.
    pub fn code(&self) -> &'static str {
        match self {
            Malformed::Path(p) => p.code(),
            Malformed::Header(_) => "duplicate_header",
        }
    }

    /// The reason given in the 400 and the audit event.
    pub fn reason(&self) -> String {
        match self {
            Malformed::Path(p) => p.to_string(),
            Malformed::Header(h) => h.to_string(),
        }
    }
}

/// What was decided, as reported (`meshguard.decision`) and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// Allowed and forwarded.
    Allow,
    /// Denied (403 by policy, 400 for a malformed request, 401 for identity failures).
    Deny,
    /// Denied until a human approves.
    RequireApproval,
    /// Refused by a rate limit (429).
    RateLimited,
    /// Audit mode: a denial that was recorded and forwarded.
    WouldDeny,
}

impl DecisionKind {
    /// The name in audit events and responses.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Allow => "allow",
            DecisionKind::Deny => "deny",
            DecisionKind::RequireApproval => "require_approval",
            DecisionKind::RateLimited => "rate_limited",
            DecisionKind::WouldDeny => "would_deny",
        }
    }

    /// The enforced kind of a decision.
    pub(crate) fn enforced(decision: &Decision) -> DecisionKind {
        match decision.effect {
            _ if decision.retry_after_secs.is_some() => DecisionKind::RateLimited,
            Effect::Allow => DecisionKind::Allow,
            Effect::Deny => DecisionKind::Deny,
            Effect::RequireApproval => DecisionKind::RequireApproval,
        }
    }
}

/// Everything the glue needs after deciding.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Forward or respond.
    pub verdict: Verdict,
    /// What was decided (`event.decision` in typed form).
    pub kind: DecisionKind,
    /// Why the request has no verified identity, when it has none.
    pub identity_error: Option<IdentityError>,
    /// The policy decision (identity failures appear as a deny with no policy).
    pub decision: Decision,
    /// The audit record (latency to be filled in by the caller).
    pub event: AuditEvent,
    /// Further decisions taken on the same request (the other elements of a JSON-RPC
    /// batch), each audited like `event`.
    pub more_events: Vec<AuditEvent>,
    /// Set when the upstream's response must pass through the engine (MCP `tools/list`
    /// filtering, merging denied batch elements into the answer). The host keeps it for
    /// the response phase; see [`body::ResponsePlan`].
    pub response: Option<body::ResponsePlan>,
}

impl Outcome {
    /// Whether the token named a key its issuer does not have: a hint that the issuer
    /// rotated its keys, worth an early JWKS refetch. (Keys that were never fetched are
    /// retried on their own schedule and do not count.)
    pub fn wants_jwks_refresh(&self) -> bool {
        matches!(self.identity_error, Some(IdentityError::UnknownKid(_)))
    }
}

/// What a request body adds to the facts conditions see: the MCP arguments, A2A params
/// or `/enforce` context (`context.*`), and the JSON-RPC method names.
#[derive(Debug, Default, Clone, Copy)]
pub struct BodyFacts<'a> {
    /// `context.*`: a JSON object.
    pub context: Option<&'a serde_json::Value>,
    /// `mcp.method`.
    pub mcp_method: Option<&'a str>,
    /// `mcp.tool`.
    pub mcp_tool: Option<&'a str>,
    /// `a2a.method`.
    pub a2a_method: Option<&'a str>,
}

/// A decision together with what the shadow policies (`mode: audit`) would have decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evaluation {
    /// The enforced decision.
    pub decision: Decision,
    /// A stricter decision of a shadow policy: recorded as `would_deny`, not enforced.
    pub shadow: Option<Decision>,
    /// Whether a condition looked at `context.*` (the arguments): a `tools/list` entry
    /// whose denial depends on them is kept and decided at call time.
    pub used_context: bool,
    /// `meshguard.inputs` (see `Engine::inputs`); empty when no condition exists.
    pub inputs: String,
}

/// The values conditions can refer to (README, "Policy language"), by the names of
/// [`crate::policy::names`].
struct Facts<'a> {
    identity: &'a Identity,
    subject: Subject<'a>,
    action: &'a str,
    resource: Option<&'a str>,
    req: &'a Request,
    now_secs: u64,
    body: BodyFacts<'a>,
    used_context: &'a Cell<bool>,
}

fn json_to_value(v: &serde_json::Value) -> Option<Value> {
    match v {
        serde_json::Value::String(s) => Some(Value::Str(s.clone())),
        serde_json::Value::Number(n) => n.as_f64().map(Value::Num),
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::Array(items) => Some(Value::List(
            items.iter().filter_map(json_to_value).collect(),
        )),
        serde_json::Value::Null | serde_json::Value::Object(_) => None,
    }
}

impl Lookup for Facts<'_> {
    /// Answers through the same table that validated the policy's names, so every name a
    /// loaded condition uses is one this match handles.
    fn lookup(&self, name: &str) -> Option<Value> {
        let num = |n: u64| Some(Value::Num(n as f64));
        let text = |s: &str| Some(Value::Str(s.to_string()));
        match Fact::parse(name)? {
            Fact::TimeHour => num((self.now_secs / 3600) % 24),
            Fact::TimeMinute => num((self.now_secs / 60) % 60),
            // ISO 8601: Monday = 1 ... Sunday = 7; 1970-01-01 was a Thursday.
            Fact::TimeWeekday => num((self.now_secs / 86_400 + 3) % 7 + 1),
            Fact::TimeUnix => num(self.now_secs),
            Fact::AgentId => text(self.subject.agent_id),
            Fact::AgentTrustTier => text(self.subject.tier.as_str()),
            Fact::AgentIssuer => text(&self.identity.issuer),
            Fact::AgentClaim(c) => {
                let direct = self.identity.claims.get(c);
                let nested = || {
                    c.split('.')
                        .try_fold(&self.identity.claims, |v, seg| v.get(seg))
                };
                direct.or_else(nested).and_then(json_to_value)
            }
            Fact::Action => text(self.action),
            Fact::Resource => self.resource.and_then(text),
            Fact::RequestMethod => text(&self.req.method),
            Fact::RequestPath => text(self.req.path_only()),
            Fact::RequestHost => text(&self.req.authority),
            Fact::RequestHeader(h) => self.req.header(h).and_then(text),
            // Filled from JSON-RPC bodies (MCP, A2A, `/enforce`); a request without one
            // leaves them missing, which makes any comparison on them false.
            Fact::Context(c) => {
                self.used_context.set(true);
                self.body
                    .context
                    .and_then(|ctx| dig(ctx, c))
                    .and_then(json_to_value)
            }
            Fact::McpMethod => self.body.mcp_method.and_then(text),
            Fact::McpTool => self.body.mcp_tool.and_then(text),
            Fact::A2aMethod => self.body.a2a_method.and_then(text),
            Fact::DelegationDepth => num(self.identity.depth() as u64),
            Fact::DelegationChain => Some(Value::List(
                self.identity
                    .chain
                    .iter()
                    .map(|h| Value::Str(h.agent_id.clone()))
                    .collect(),
            )),
        }
    }
}

/// Most names `meshguard.inputs` records; the rest are left out (replay marks decisions
/// that needed them approximate).
pub const MAX_INPUTS: usize = 32;

/// Longest JSON text of one recorded input value.
pub const MAX_INPUT_BYTES: usize = 256;

/// Writes a condition value as JSON: whole numbers as integers (`10`, not `10.0`).
fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Str(s) => {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        Value::Num(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            let _ = serde_json::to_writer(&mut *out, &(*n as i64));
        }
        Value::Num(n) if n.is_finite() => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::Num(_) => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
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

fn compile_bundle_source(b: &BundleConfig) -> Result<BundleSource, ConfigError> {
    if b.cluster.is_empty() {
        return Err(ConfigError::invalid(
            "bundle.cluster",
            "must name an Envoy cluster",
        ));
    }
    if !b.path.starts_with('/') {
        return Err(ConfigError::invalid("bundle.path", "must start with /"));
    }
    if b.interval_seconds == 0 {
        return Err(ConfigError::invalid(
            "bundle.interval_seconds",
            "must be greater than 0",
        ));
    }
    let keys = BundleKeys::parse(&b.public_keys).map_err(|m| {
        let (field, msg) = m.split_once(": ").unwrap_or(("public_keys", m.as_str()));
        ConfigError::invalid(format!("bundle.{field}"), msg)
    })?;
    Ok(BundleSource {
        config: b.clone(),
        keys,
    })
}

fn now_parts(now_unix_nanos: u64) -> u64 {
    now_unix_nanos / 1_000_000_000
}

impl Engine {
    /// Parses and compiles configuration text (JSON or YAML).
    pub fn from_text(text: &[u8]) -> Result<Engine, ConfigError> {
        Engine::build(&config::parse(text)?, Documents::default())
    }

    /// Compiles a configuration together with the bundle and JWKS fetched so far.
    pub fn build(cfg: &PluginConfig, src: Documents<'_>) -> Result<Engine, ConfigError> {
        let empty = HashMap::new();
        let verifier = Verifier::compile_with(&cfg.identity, src.jwks.unwrap_or(&empty))?;
        let actions = ActionMapper::compile(&cfg.actions)?;
        let mcp = match &cfg.actions.mcp {
            Some(m) => Some(McpMapper::compile(m)?),
            None => None,
        };
        let a2a = match &cfg.actions.a2a {
            Some(a) => Some(A2aMapper::compile(a)?),
            None => None,
        };
        if let Some(d) = &cfg.decision_api {
            decision_api::validate(d)?;
        }
        cfg.audit.validate()?;
        crate::audit::CheckpointSigner::from_config(&cfg.audit)?;
        let bundle = match &cfg.bundle {
            Some(b) => Some(compile_bundle_source(b)?),
            None => None,
        };
        if let Some(status) = &cfg.status {
            if !status.path.starts_with('/') {
                return Err(ConfigError::invalid("status.path", "must start with /"));
            }
        }
        let inline = match (&cfg.policy_yaml, cfg.policies.is_empty()) {
            (Some(_), false) => {
                return Err(ConfigError::invalid(
                    "policy_yaml",
                    "give policies either inline (policies) or as text (policy_yaml), not both",
                ))
            }
            (Some(text), true) => Some((parse_policy_yaml(text)?, "policy_yaml")),
            (None, _) => None,
        };
        let (set, version, bundle_version, agents, controls) = match src.bundle {
            Some(b) => (
                Rc::clone(b.policies()),
                b.version().to_string(),
                Some(b.version()),
                b.bundle().agents.len(),
                Controls::compile(
                    cfg,
                    Some(b.bundle()),
                    &b.bundle().policies,
                    "bundle.policies",
                )?,
            ),
            None => {
                let (policies, field) =
                    inline.unwrap_or_else(|| (cfg.policies.clone(), "policies"));
                let set = Rc::new(PolicySet::compile(&policies, field)?);
                let fp = fingerprint(
                    serde_json::to_string(&policies)
                        .unwrap_or_default()
                        .as_bytes(),
                );
                let controls = Controls::compile(cfg, None, &policies, field)?;
                (set, fp, None, 0, controls)
            }
        };
        let mut controls = controls;
        if let Some(doc) = src.grants {
            controls.set_document(Some(doc))?;
        }
        Ok(Engine {
            mode: cfg.mode,
            verifier,
            actions,
            policies: set,
            audit: cfg.audit.clone(),
            version,
            bundle,
            bundle_version,
            agents,
            status: cfg.status.clone(),
            controls,
            counters: Rc::new(MemoryStore::new()),
            writer: 0,
            mcp,
            a2a,
            decision_api: cfg.decision_api.clone(),
        })
    }

    /// Counts rate limits and loop repeats in `store` (Envoy's shared data, so every
    /// worker VM of an Envoy shares the counters) as `writer`, an id unique to this VM.
    pub fn with_shared_counters(mut self, store: Rc<dyn SharedData>, writer: u64) -> Engine {
        self.counters = store;
        self.writer = writer;
        self
    }

    /// Installs the grants of a verified grants document (see
    /// `controls::grants::verify_grants_document`); `None` removes them.
    pub fn set_grants_document(&mut self, doc: Option<&GrantsDoc>) -> Result<(), ConfigError> {
        self.controls.set_document(doc)
    }

    /// Where the signed grants document comes from, when configured.
    pub fn grants_source(&self) -> Option<&GrantsSource> {
        self.controls.grants_source()
    }

    /// The agent controls in force.
    pub fn controls(&self) -> &Controls {
        &self.controls
    }

    /// Where bundles come from, when configured.
    pub fn bundle_source(&self) -> Option<&BundleSource> {
        self.bundle.as_ref()
    }

    /// The version of the bundle in force, if a bundle (not inline policy) decides.
    pub fn bundle_version(&self) -> Option<u64> {
        self.bundle_version
    }

    /// Agent records carried by the bundle in force.
    pub fn agent_count(&self) -> usize {
        self.agents
    }

    /// The status endpoint, when configured.
    pub fn status_config(&self) -> Option<&StatusConfig> {
        self.status.as_ref()
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

    /// The compiled policies in force.
    pub fn policy_set(&self) -> &PolicySet {
        &self.policies
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
        self.decide_with(
            identity,
            action,
            req,
            now_secs,
            BodyFacts::default(),
            false,
            &mut NoTrace,
        )
        .decision
    }

    /// [`Engine::decide_full`] for a decision no audit event records (a `tools/list`
    /// entry): the same effect, deciding policy and `used_context`, without collecting
    /// `meshguard.inputs` and, where no delegation limit decides, with an empty `reason`
    /// ([`Unexplained`]).
    pub(crate) fn decide_unrecorded(
        &self,
        identity: &Identity,
        action: &ActionMatch,
        req: &Request,
        now_secs: u64,
        body: BodyFacts<'_>,
    ) -> Evaluation {
        self.decide_with(
            identity,
            action,
            req,
            now_secs,
            body,
            false,
            &mut Unexplained,
        )
    }

    /// [`Engine::decide`] with the facts of a body (`context.*`, `mcp.*`, `a2a.*`) and
    /// what the shadow policies would have decided.
    pub fn decide_full(
        &self,
        identity: &Identity,
        action: &ActionMatch,
        req: &Request,
        now_secs: u64,
        body: BodyFacts<'_>,
    ) -> Evaluation {
        self.decide_with(identity, action, req, now_secs, body, true, &mut NoTrace)
    }

    /// [`Engine::decide_full`] reporting every policy, rule, condition and grant check to
    /// `trace` (`meshguard explain`); with [`NoTrace`] it is the same code with the
    /// recording compiled out.
    pub fn decide_traced<T: Trace>(
        &self,
        identity: &Identity,
        action: &ActionMatch,
        req: &Request,
        now_secs: u64,
        body: BodyFacts<'_>,
        trace: &mut T,
    ) -> Evaluation {
        self.decide_with(identity, action, req, now_secs, body, true, trace)
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_with<T: Trace>(
        &self,
        identity: &Identity,
        action: &ActionMatch,
        req: &Request,
        now_secs: u64,
        body: BodyFacts<'_>,
        with_inputs: bool,
        trace: &mut T,
    ) -> Evaluation {
        let used_context = Cell::new(false);
        let inputs = Cell::new(if with_inputs {
            self.inputs(identity, action, req, now_secs, body)
        } else {
            String::new()
        });
        let done = |decision: Decision, shadow: Option<Decision>, used: &Cell<bool>| Evaluation {
            decision,
            shadow,
            used_context: used.get(),
            // one `done` per decision: the text moves instead of being copied
            inputs: inputs.take(),
        };
        let depth = identity.depth();
        let max = self.verifier.max_delegation_depth();
        if depth > max {
            return done(
                Decision::deny(format!(
                    "delegation depth {depth} exceeds the mesh limit of {max}"
                )),
                None,
                &used_context,
            );
        }
        // Chains are short (a handful of hops, 33 at most): comparing with the earlier hops
        // costs less than a set's allocation, which every decision would pay.
        for (i, hop) in identity.chain.iter().enumerate() {
            let earlier = identity.chain.get(..i).unwrap_or_default();
            if earlier.iter().any(|h| h.agent_id == hop.agent_id) {
                return done(
                    Decision::deny(format!(
                        "delegation cycle: agent {:?} appears twice in the chain {}",
                        hop.agent_id,
                        chain_text(identity)
                    )),
                    None,
                    &used_context,
                );
            }
        }
        let facts = |subject| Facts {
            identity,
            subject,
            action: &action.action,
            resource: action.resource.as_deref(),
            req,
            now_secs,
            body,
            used_context: &used_context,
        };
        let caller = Subject {
            agent_id: &identity.agent_id,
            tier: identity.tier,
        };
        // A temporal grant lifts require_approval and default deny (no rule matched),
        // never a deny rule; it is checked per agent of the chain, so the ceiling holds.
        let granted = |d: Decision, agent: &str, trace: &mut T| -> Decision {
            let liftable = d.effect == Effect::RequireApproval
                || (d.effect == Effect::Deny && d.policy.is_none());
            if !liftable {
                return d;
            }
            let grant = self.controls.grant_for(
                agent,
                &action.action,
                action.resource.as_deref(),
                now_secs,
            );
            if T::ON {
                trace.grant(agent, grant.map(|g| g.spec.id.as_str()));
            }
            match grant {
                Some(g) => Decision {
                    effect: Effect::Allow,
                    reason: g.describe(),
                    grant: Some(g.spec.id.clone()),
                    ..d
                },
                None => d,
            }
        };
        let res = action.resource.as_deref();
        let f = facts(caller);
        let mut decision = granted(
            self.policies
                .evaluate_traced(&caller, &action.action, res, depth, &f, trace),
            caller.agent_id,
            trace,
        );
        let mut shadow =
            self.policies
                .shadow_traced(&decision, &caller, &action.action, res, depth, &f, trace);
        for hop in identity.chain.iter().rev().skip(1) {
            let s = Subject {
                agent_id: &hop.agent_id,
                tier: hop.tier.min(identity.tier),
            };
            let f = facts(s);
            let d = granted(
                self.policies
                    .evaluate_traced(&s, &action.action, res, depth, &f, trace),
                s.agent_id,
                trace,
            );
            if shadow.is_none() {
                shadow = self
                    .policies
                    .shadow_traced(&d, &s, &action.action, res, depth, &f, trace);
            }
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
        // Each agent of a delegated chain is also held to its own tier: a policy scoped to
        // that tier (say, `verified` agents may not delete) would otherwise be escaped by
        // delegating through a lower-tier agent, which lowers the chain's tier.
        if identity.chain.len() > 1 {
            for hop in identity.chain.iter().rev() {
                if hop.tier <= identity.tier {
                    continue;
                }
                let s = Subject {
                    agent_id: &hop.agent_id,
                    tier: hop.tier,
                };
                let f = facts(s);
                let d = granted(
                    self.policies
                        .evaluate_traced(&s, &action.action, res, depth, &f, trace),
                    s.agent_id,
                    trace,
                );
                if d.effect > decision.effect {
                    decision = Decision {
                        reason: format!(
                            "delegation ceiling: {:?} at its own tier {} is not allowed {:?}: {}",
                            hop.agent_id,
                            hop.tier.as_str(),
                            action.action,
                            d.reason
                        ),
                        ..d
                    };
                }
            }
        }
        // a shadow denial matters only where the enforced decision is an allow
        let shadow = shadow.filter(|_| decision.effect == Effect::Allow);
        done(decision, shadow, &used_context)
    }

    /// `meshguard.inputs`: the values the configuration's conditions can refer to, as a
    /// JSON object by name (README, "Audit events"), so `meshguard replay` can re-decide
    /// exactly. At most [`MAX_INPUTS`] names; a value longer than [`MAX_INPUT_BYTES`] is
    /// recorded as `{"$truncated":true}`, a name `audit.redact` covers as
    /// `{"$redacted":true}`; a missing value is `null`. Empty when no condition exists.
    fn inputs(
        &self,
        identity: &Identity,
        action: &ActionMatch,
        req: &Request,
        now_secs: u64,
        body: BodyFacts<'_>,
    ) -> String {
        let names = self.policies.referenced_names();
        if names.is_empty() {
            return String::new();
        }
        let used_context = Cell::new(false);
        let facts = Facts {
            identity,
            subject: Subject {
                agent_id: &identity.agent_id,
                tier: identity.tier,
            },
            action: &action.action,
            resource: action.resource.as_deref(),
            req,
            now_secs,
            body,
            used_context: &used_context,
        };
        // Written straight into one buffer: this runs on every decision of a configuration
        // with conditions. Names are sorted, so the object's keys are too.
        let mut out = Vec::with_capacity(64 * names.len().min(MAX_INPUTS));
        out.push(b'{');
        for (i, name) in names.iter().take(MAX_INPUTS).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut out, name);
            out.push(b':');
            if self.audit.redacts(name) {
                out.extend_from_slice(br#"{"$redacted":true}"#);
                continue;
            }
            let start = out.len();
            match facts.lookup(name) {
                Some(v) => write_value(&mut out, &v),
                None => out.extend_from_slice(b"null"),
            }
            if out.len().saturating_sub(start) > MAX_INPUT_BYTES {
                out.truncate(start);
                out.extend_from_slice(br#"{"$truncated":true}"#);
            }
        }
        out.push(b'}');
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`Engine::decide`] for a request whose action mapping may have found nothing: no
    /// action is a denial with a reason that says so.
    fn decide_request(
        &self,
        identity: &Identity,
        action: Option<&ActionMatch>,
        req: &Request,
        now_secs: u64,
    ) -> Decision {
        match action {
            Some(a) => self.decide(identity, a, req, now_secs),
            None => Decision::deny(
                "no action: the request matches no route in actions.routes and carries no action header",
            ),
        }
    }

    /// The controls that follow a policy decision: a `require_approval` decision gets its
    /// approval id; an allowed call is counted by loop detection and the rate limits,
    /// which may refuse it. `arguments` identifies the call's arguments for loop
    /// detection (MCP tool arguments as JSON; for REST the method and path with query).
    pub fn apply_controls(
        &self,
        identity: &Identity,
        action: Option<&ActionMatch>,
        decision: Decision,
        arguments: &[u8],
        counters: Counters<'_>,
        now_unix_nanos: u64,
    ) -> Decision {
        let Some(action) = action else {
            return decision;
        };
        match decision.effect {
            Effect::RequireApproval => Decision {
                approval_id: Some(crate::controls::approval_id(
                    &identity.agent_id,
                    &action.action,
                    action.resource.as_deref(),
                )),
                ..decision
            },
            Effect::Allow if self.controls.counts() => {
                let call = Call {
                    agent: &identity.agent_id,
                    action: &action.action,
                    resource: action.resource.as_deref(),
                    policy_rule: decision.policy.as_deref().zip(decision.rule.as_deref()),
                    arguments,
                };
                match self.controls.check_call(counters, &call, now_unix_nanos / 1000) {
                    None => decision,
                    Some(Refusal::Loop {
                        count,
                        max_repeats,
                        window_secs,
                    }) => Decision {
                        rule: Some("loop".into()),
                        ..Decision::deny(format!(
                            "loop detected: {count} identical calls within {window_secs} s (loop.max_repeats is {max_repeats})"
                        ))
                    },
                    Some(Refusal::RateLimited {
                        limit,
                        rate,
                        retry_after_secs,
                    }) => Decision {
                        reason: format!(
                            "rate limit {limit} ({rate}) exceeded; retry in {retry_after_secs} s"
                        ),
                        rule: Some(limit),
                        retry_after_secs: Some(retry_after_secs),
                        ..Decision::deny("")
                    },
                }
            }
            _ => decision,
        }
    }

    /// The whole request path for one request, with rate limits and loop detection
    /// counted in this VM only (see [`Engine::handle_with`] for counters shared by
    /// every worker).
    ///
    /// Everything after authentication sees the normalised path (route globs,
    /// `request.path`, the audit event's `url.path`); when it differs from what was
    /// received, a forwarded request carries it as `:path` so the upstream acts on exactly
    /// the path that was decided on.
    pub fn handle(&self, req: &Request, now_unix_nanos: u64, cache: &mut TokenCache) -> Outcome {
        self.handle_with(
            req,
            now_unix_nanos,
            State {
                cache,
                counters: Counters {
                    store: &*self.counters,
                    writer: self.writer,
                },
            },
        )
    }

    /// The whole request path for one request.
    pub fn handle_with(&self, req: &Request, now_unix_nanos: u64, state: State<'_>) -> Outcome {
        let State { cache, counters } = state;
        let identity = self.verifier.authenticate(
            req.header(self.verifier.token_header()),
            now_parts(now_unix_nanos),
            cache,
        );
        probe::lap(Stage::Identity);
        self.handle_authenticated(req, now_unix_nanos, identity, counters)
    }

    /// [`Engine::handle`] after authentication: path normalisation, action mapping,
    /// decision, mode, verdict and audit event. `meshguard check --claims` enters here
    /// with an identity built from unsigned claims; everything after that is the filter's
    /// path.
    pub fn handle_authenticated(
        &self,
        req: &Request,
        now_unix_nanos: u64,
        identity: Result<Rc<Identity>, IdentityError>,
        counters: Counters<'_>,
    ) -> Outcome {
        // Revocation and workload binding apply to cached verifications too.
        let identity = identity.and_then(|id| {
            self.controls
                .check_identity(&id, &req.peer_uri_sans)
                .map(|()| id)
        });
        probe::lap(Stage::IdentityControls);
        if req_path::is_plainly_normal(&req.path) {
            probe::lap(Stage::Path);
            return self.handle_normalised(req, now_unix_nanos, identity, counters);
        }
        let normal = match req_path::normalise(&req.path) {
            Ok(n) => n,
            Err(rejection) => {
                return self.malformed(req, Malformed::Path(rejection), now_unix_nanos, &identity)
            }
        };
        let target = normal.target();
        probe::lap(Stage::Path);
        if target == req.path {
            return self.handle_normalised(req, now_unix_nanos, identity, counters);
        }
        let normalised = Request {
            path: target,
            ..req.clone()
        };
        let mut outcome = self.handle_normalised(&normalised, now_unix_nanos, identity, counters);
        if let Verdict::Forward { set_headers, .. } = &mut outcome.verdict {
            set_headers.push((":path", normalised.path));
        }
        outcome
    }

    fn base_event(&self, req: &Request, now_unix_nanos: u64) -> AuditEvent {
        let (trace_id, span_id) = trace_ids(req.header("traceparent"), req.header("x-request-id"));
        AuditEvent {
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
        }
    }

    /// The 400 for a malformed request, in every mode: there is no action to decide on
    /// (or no single one), so there is nothing audit mode could let through as observed.
    /// The caller is still identified when possible, so the audit trail says who tried.
    fn malformed(
        &self,
        req: &Request,
        why: Malformed,
        now_unix_nanos: u64,
        identity: &Result<Rc<Identity>, IdentityError>,
    ) -> Outcome {
        let mut event = self.base_event(req, now_unix_nanos);
        let trace_hex = event.trace_id_hex();
        match identity {
            Ok(id) => {
                event.agent_id.clone_from(&id.agent_id);
                event.trust_tier = id.tier.as_str().into();
                event.delegation_chain = id.chain.iter().map(|h| h.agent_id.clone()).collect();
            }
            Err(e) => event.identity_error = e.code().into(),
        }
        let identity_error = identity.as_ref().err().cloned();
        let reason = why.reason();
        event.decision = Effect::Deny.as_str().into();
        event.effect = Effect::Deny.as_str().into();
        event.enforced = true;
        event.status = 400;
        event.reason.clone_from(&reason);
        Outcome {
            verdict: Verdict::Respond(response::bad_request(
                why.code(),
                &reason,
                self.mode,
                &trace_hex,
            )),
            kind: DecisionKind::Deny,
            identity_error,
            decision: Decision::deny(reason),
            event,
            more_events: Vec::new(),
            response: None,
        }
    }

    /// [`Engine::handle`] for a request whose path is already normalised.
    fn handle_normalised(
        &self,
        req: &Request,
        now_unix_nanos: u64,
        identity: Result<Rc<Identity>, IdentityError>,
        counters: Counters<'_>,
    ) -> Outcome {
        let now_secs = now_parts(now_unix_nanos);
        let mut event = self.base_event(req, now_unix_nanos);
        let trace_hex = event.trace_id_hex();
        probe::lap(Stage::Event);
        // A caller-declared header that disagrees with the route is refused after the
        // caller is identified (a 401 stays a 401), and audited as the route's action.
        let (action, relabel) = match self.actions.map(req) {
            Ok(a) => (a, None),
            Err(e) => match &e {
                MappingError::DuplicateHeader { .. } => {
                    return self.malformed(req, Malformed::Header(e), now_unix_nanos, &identity)
                }
                MappingError::Disagrees { route_match, .. } => {
                    (Some(route_match.as_ref().clone()), Some(e.to_string()))
                }
            },
        };
        if let Some(a) = &action {
            event.action.clone_from(&a.action);
            event.resource = a.resource.clone().unwrap_or_default();
        }
        probe::lap(Stage::Actions);
        let identity = match identity {
            Ok(id) => id,
            Err(e) => return self.identity_failure(&e, event, &trace_hex),
        };
        record_identity(&mut event, &identity);
        let eval = match relabel {
            Some(reason) => Evaluation {
                decision: Decision::deny(reason),
                shadow: None,
                used_context: false,
                inputs: String::new(),
            },
            None => {
                let mut eval = match &action {
                    Some(a) => self.decide_full(&identity, a, req, now_secs, BodyFacts::default()),
                    None => Evaluation {
                        decision: self.decide_request(&identity, None, req, now_secs),
                        shadow: None,
                        used_context: false,
                        inputs: String::new(),
                    },
                };
                probe::lap(Stage::Policy);
                // Loop detection tells calls apart by their arguments: for REST, the method
                // and the path with its query (built only when a counting control is set).
                let arguments = if self.controls.counts() {
                    format!("{} {}", req.method, req.path)
                } else {
                    String::new()
                };
                eval.decision = self.apply_controls(
                    &identity,
                    action.as_ref(),
                    eval.decision,
                    arguments.as_bytes(),
                    counters,
                    now_unix_nanos,
                );
                probe::lap(Stage::Controls);
                eval
            }
        };
        let action_name = action.as_ref().map_or("", |a| a.action.as_str());
        let disposition = self.record(&eval, &mut event);
        let kind = disposition.kind(&eval.decision);
        let verdict = match disposition {
            Disposition::Allow => Verdict::Forward {
                body: None,
                set_headers: forward_headers(&identity, kind.as_str(), action_name, &event),
            },
            Disposition::WouldDeny => Verdict::Forward {
                body: None,
                set_headers: forward_headers(&identity, kind.as_str(), action_name, &event),
            },
            Disposition::Deny => {
                let d = &eval.decision;
                let denial = Denial {
                    decision: kind.as_str(),
                    policy: d.policy.as_deref(),
                    rule: d.rule.as_deref(),
                    reason: &d.reason,
                    bundle_version: &self.version,
                    trace_id: &trace_hex,
                    agent: &identity.agent_id,
                    action: action_name,
                    approval_id: Some(event.approval_id.as_str()).filter(|s| !s.is_empty()),
                };
                let response = match d.retry_after_secs {
                    Some(secs) => response::too_many_requests(&denial, secs),
                    None => response::forbidden(&denial),
                };
                event.status = response.status;
                Verdict::Respond(response)
            }
        };
        Outcome {
            verdict,
            kind,
            identity_error: None,
            decision: eval.decision,
            event,
            more_events: Vec::new(),
            response: None,
        }
    }

    fn authenticate(
        &self,
        req: &Request,
        now_secs: u64,
        cache: &mut TokenCache,
    ) -> Result<Rc<Identity>, IdentityError> {
        // Revocation and workload binding apply to cached verifications too.
        self.verifier
            .authenticate(req.header(self.verifier.token_header()), now_secs, cache)
            .and_then(|id| {
                self.controls
                    .check_identity(&id, &req.peer_uri_sans)
                    .map(|()| id)
            })
    }

    /// Records an evaluation in the event and says how to carry it out: a shadow denial or
    /// audit mode forwards as `would_deny`; otherwise a non-allow is enforced.
    fn record(&self, eval: &Evaluation, event: &mut AuditEvent) -> Disposition {
        let put = |d: &Decision, event: &mut AuditEvent| {
            event.grant = d.grant.clone().unwrap_or_default();
            event.effect = d.effect.as_str().into();
            event.policy = d.policy.clone().unwrap_or_default();
            event.rule = d.rule.clone().unwrap_or_default();
            event.reason.clone_from(&d.reason);
        };
        event.inputs.clone_from(&eval.inputs);
        let d = &eval.decision;
        if d.effect == Effect::Allow {
            if let Some(sh) = &eval.shadow {
                put(sh, event);
                event.shadow_policy = sh.policy.clone().unwrap_or_default();
                event.decision = "would_deny".into();
                event.enforced = false;
                return Disposition::WouldDeny;
            }
            put(d, event);
            event.decision = "allow".into();
            event.enforced = true;
            return Disposition::Allow;
        }
        put(d, event);
        if d.effect == Effect::RequireApproval {
            event.approval_id = d.approval_id.clone().unwrap_or_else(|| {
                crate::controls::approval_id(
                    &event.agent_id,
                    &event.action,
                    Some(event.resource.as_str()).filter(|r| !r.is_empty()),
                )
            });
        }
        match self.mode {
            Mode::Audit => {
                event.decision = "would_deny".into();
                event.enforced = false;
                Disposition::WouldDeny
            }
            Mode::Enforce => {
                event.decision = DecisionKind::enforced(d).as_str().into();
                event.enforced = true;
                Disposition::Deny
            }
        }
    }

    fn identity_failure(
        &self,
        e: &IdentityError,
        mut event: AuditEvent,
        trace_hex: &str,
    ) -> Outcome {
        let reason = e.to_string();
        event.effect = Effect::Deny.as_str().into();
        event.reason.clone_from(&reason);
        event.identity_error = e.code().into();
        let kind = match self.mode {
            Mode::Enforce => DecisionKind::Deny,
            Mode::Audit => DecisionKind::WouldDeny,
        };
        event.decision = kind.as_str().into();
        let verdict = match self.mode {
            Mode::Enforce => {
                event.enforced = true;
                event.status = 401;
                Verdict::Respond(response::unauthorized(
                    e.code(),
                    &reason,
                    self.mode,
                    trace_hex,
                ))
            }
            Mode::Audit => {
                event.enforced = false;
                Verdict::Forward {
                    body: None,
                    set_headers: vec![
                        (response::TIER_HEADER, TrustTier::Untrusted.as_str().into()),
                        (response::DECISION_HEADER, kind.as_str().into()),
                    ],
                }
            }
        };
        Outcome {
            verdict,
            kind,
            identity_error: Some(e.clone()),
            decision: Decision::deny(reason),
            event,
            more_events: Vec::new(),
            response: None,
        }
    }
}

/// How a decision is carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disposition {
    /// Forward as allowed.
    Allow,
    /// Forward; the denial is only recorded (audit mode or a shadow policy).
    WouldDeny,
    /// Refuse.
    Deny,
}

impl Disposition {
    /// What is reported for a decision carried out this way.
    fn kind(self, decision: &Decision) -> DecisionKind {
        match self {
            Disposition::Allow => DecisionKind::Allow,
            Disposition::WouldDeny => DecisionKind::WouldDeny,
            Disposition::Deny => DecisionKind::enforced(decision),
        }
    }
}

fn record_identity(event: &mut AuditEvent, identity: &Identity) {
    event.agent_id.clone_from(&identity.agent_id);
    event.trust_tier = identity.tier.as_str().into();
    event.delegation_chain = identity.chain.iter().map(|h| h.agent_id.clone()).collect();
}

/// The identity headers for the upstream; names the shadow policy when one would deny.
fn forward_headers(
    identity: &Identity,
    label: &str,
    action: &str,
    event: &AuditEvent,
) -> Vec<(&'static str, String)> {
    // Names are the contract's constants, not copies: four allocations less per
    // forwarded request (tests/allocations.rs counts them).
    let mut h = Vec::with_capacity(5);
    h.extend([
        (response::AGENT_HEADER, identity.agent_id.clone()),
        (response::TIER_HEADER, identity.tier.as_str().into()),
        (response::DECISION_HEADER, label.into()),
        (response::ACTION_HEADER, action.into()),
    ]);
    if !event.shadow_policy.is_empty() {
        h.push((response::SHADOW_POLICY_HEADER, event.shadow_policy.clone()));
    }
    h
}

fn chain_text(identity: &Identity) -> String {
    identity
        .chain
        .iter()
        .map(|h| h.agent_id.as_str())
        .collect::<Vec<_>>()
        .join(" > ")
}

#[cfg(test)]
mod controls_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;
    use serde_json::{json, Value as Json};

    const NOW: u64 = 1_800_000_000; // 2027-01-15T08:00:00Z, a Friday

    fn key() -> ES256KeyPair {
        ES256KeyPair::generate().with_key_id("k1")
    }

    /// The configuration as istiod renders it: compact JSON, sorted keys.
    fn config(key: &ES256KeyPair, mode: &str) -> Vec<u8> {
        let jwk: Json = serde_json::from_str(&key.public_key().to_jwk()).unwrap();
        let cfg = json!({
            "actions": {"routes": [{"action": "write:email", "method": "POST", "path": "/v1/email/*", "resource": "notifications"}]},
            "audit": {"cluster": "meshguard-collector", "flush_interval_ms": 200.0, "max_batch": 500},
            "identity": {"clock_skew_seconds": 60, "issuers": [{"audiences": ["agents"], "issuer": "https://issuer.example", "jwks": {"keys": [jwk]}}]},
            "mode": mode,
            "policies": [
                {"name": "verified-agent-policy", "version": 1, "applies_to": {"trust_tiers": ["verified", "trusted"]},
                 "rules": [
                    {"action": "read:*", "effect": "allow"},
                    {"name": "allow-email", "action": "write:email", "effect": "allow", "conditions": ["time.hour >= 7 AND request.headers.x-recipient-domain == \"example.com\""]},
                    {"action": "delete:*", "effect": "deny", "reason": "Verified agents cannot delete resources"}]},
                {"name": "approvals", "rules": [{"name": "big-refunds", "action": "write:refund", "effect": "require_approval"}]}
            ]
        });
        serde_json::to_vec(&cfg).unwrap()
    }

    fn token(key: &ES256KeyPair, extra: Json) -> String {
        let mut c = Claims::with_custom_claims(extra, Duration::from_secs(600))
            .with_issuer("https://issuer.example")
            .with_audience("agents")
            .with_subject("agent-a");
        c.issued_at = Some(UnixTimeStamp::from_secs(NOW));
        c.expires_at = Some(UnixTimeStamp::from_secs(NOW + 600));
        key.sign(c).unwrap()
    }

    fn request(method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Request {
        let mut h: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(t) = token {
            h.push(("authorization".into(), format!("Bearer {t}")));
        }
        Request {
            method: method.into(),
            path: path.into(),
            authority: "tools.local".into(),
            headers: h,
            peer_uri_sans: Vec::new(),
        }
    }

    fn run(engine: &Engine, req: &Request) -> Outcome {
        engine.handle(req, NOW * 1_000_000_000, &mut engine.verifier().new_cache())
    }

    fn header<'a>(v: &'a Verdict, name: &str) -> Option<&'a str> {
        match v {
            Verdict::Forward { set_headers, .. } => set_headers
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str()),
            Verdict::Respond(_) => None,
        }
    }

    fn body(v: &Verdict) -> (u16, Json) {
        match v {
            Verdict::Respond(r) => (r.status, serde_json::from_str(&r.body).unwrap()),
            Verdict::Forward { .. } => (200, Json::Null),
        }
    }

    #[test]
    fn allowed_requests_are_forwarded_with_identity_headers() {
        let k = key();
        let e = Engine::from_text(&config(&k, "enforce")).unwrap();
        let t = token(&k, json!({"trust_tier": "verified"}));
        let o = run(
            &e,
            &request(
                "POST",
                "/v1/email/send?x=1",
                Some(&t),
                &[
                    ("x-recipient-domain", "example.com"),
                    (
                        "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                ],
            ),
        );
        assert_eq!(header(&o.verdict, "x-meshguard-agent"), Some("agent-a"));
        assert_eq!(
            header(&o.verdict, "x-meshguard-trust-tier"),
            Some("verified")
        );
        assert_eq!(header(&o.verdict, "x-meshguard-decision"), Some("allow"));
        assert_eq!(o.decision.rule.as_deref(), Some("allow-email"));
        assert_eq!(o.event.decision, "allow");
        assert_eq!(o.event.path, "/v1/email/send");
        assert_eq!(o.event.resource, "notifications");
        assert_eq!(o.event.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // the header condition fails for another domain: default deny
        let o = run(
            &e,
            &request(
                "POST",
                "/v1/email/send",
                Some(&t),
                &[("x-recipient-domain", "evil.example")],
            ),
        );
        let (status, b) = body(&o.verdict);
        assert_eq!((status, &b["policy"]), (403, &Json::Null));
    }

    #[test]
    fn denials_are_403_json_and_approval_says_so() {
        let k = key();
        let e = Engine::from_text(&config(&k, "enforce")).unwrap();
        let t = token(&k, json!({"trust_tier": "verified"}));
        let o = run(
            &e,
            &request(
                "DELETE",
                "/x",
                Some(&t),
                &[("x-meshguard-action", "delete:orders")],
            ),
        );
        let (status, b) = body(&o.verdict);
        assert_eq!(status, 403);
        assert_eq!(b["decision"], "deny");
        assert_eq!(b["policy"], "verified-agent-policy");
        assert_eq!(b["rule"], "rules[2]");
        assert_eq!(b["reason"], "Verified agents cannot delete resources");
        assert_eq!(b["mode"], "enforce");
        assert_eq!(b["bundleVersion"], e.policy_version());
        let o = run(
            &e,
            &request(
                "POST",
                "/refunds",
                Some(&t),
                &[("x-meshguard-action", "write:refund")],
            ),
        );
        let (status, b) = body(&o.verdict);
        assert_eq!(
            (status, b["decision"].as_str()),
            (403, Some("require_approval"))
        );
        let o = run(&e, &request("GET", "/unmapped", Some(&t), &[]));
        let (status, b) = body(&o.verdict);
        assert_eq!(status, 403);
        assert!(b["reason"].as_str().unwrap().contains("no action"), "{b}");
    }

    #[test]
    fn identity_failures_are_401_with_reason_and_audited() {
        let k = key();
        let e = Engine::from_text(&config(&k, "enforce")).unwrap();
        let o = run(
            &e,
            &request("GET", "/", None, &[("x-meshguard-action", "read:x")]),
        );
        match &o.verdict {
            Verdict::Respond(r) => {
                assert_eq!(r.status, 401);
                assert!(
                    r.headers
                        .iter()
                        .any(|(k, v)| k == "www-authenticate"
                            && v.contains("error=\"invalid_token\""))
                );
                let b: Json = serde_json::from_str(&r.body).unwrap();
                assert_eq!(b["errorCode"], "missing_token");
            }
            Verdict::Forward { .. } => panic!("must not forward"),
        }
        assert_eq!(o.event.identity_error, "missing_token");
        assert_eq!(o.event.status, 401);
        assert_eq!(o.event.action, "read:x");
        let o = run(
            &e,
            &request("GET", "/", Some("\u{e9}t\u{e9}.\u{1F600}.x"), &[]),
        );
        assert_eq!(body(&o.verdict).1["errorCode"], "malformed");
    }

    #[test]
    fn audit_mode_forwards_and_records_would_deny() {
        let k = key();
        let e = Engine::from_text(&config(&k, "audit")).unwrap();
        let t = token(&k, json!({"trust_tier": "verified"}));
        let o = run(
            &e,
            &request(
                "DELETE",
                "/",
                Some(&t),
                &[("x-meshguard-action", "delete:orders")],
            ),
        );
        assert_eq!(
            header(&o.verdict, "x-meshguard-decision"),
            Some("would_deny")
        );
        assert_eq!(
            (o.event.decision.as_str(), o.event.enforced),
            ("would_deny", false)
        );
        assert_eq!(o.event.effect, "deny");
        let o = run(
            &e,
            &request(
                "GET",
                "/",
                Some("garbage"),
                &[("x-meshguard-action", "read:x")],
            ),
        );
        assert_eq!(
            header(&o.verdict, "x-meshguard-decision"),
            Some("would_deny")
        );
        assert_eq!(header(&o.verdict, "x-meshguard-agent"), None);
        assert_eq!(o.event.identity_error, "malformed");
    }

    #[test]
    fn outcomes_carry_typed_signals() {
        let k = key();
        let e = Engine::from_text(&config(&k, "enforce")).unwrap();
        let t = token(&k, json!({"trust_tier": "verified"}));
        let read = [("x-meshguard-action", "read:orders")];
        let o = run(&e, &request("GET", "/", Some(&t), &read));
        assert_eq!((o.kind, &o.identity_error), (DecisionKind::Allow, &None));
        assert!(!o.wants_jwks_refresh());
        let o = run(
            &e,
            &request("GET", "/", Some(&t), &[("x-meshguard-action", "delete:x")]),
        );
        assert_eq!(
            (o.kind, o.event.decision.as_str()),
            (DecisionKind::Deny, "deny")
        );
        let o = run(
            &e,
            &request(
                "POST",
                "/",
                Some(&t),
                &[("x-meshguard-action", "write:refund")],
            ),
        );
        assert_eq!(o.kind, DecisionKind::RequireApproval);
        let stranger = ES256KeyPair::generate().with_key_id("rotated");
        let o = run(
            &e,
            &request("GET", "/", Some(&token(&stranger, json!({}))), &read),
        );
        assert!(matches!(
            o.identity_error,
            Some(IdentityError::UnknownKid(_))
        ));
        assert!(o.wants_jwks_refresh(), "an unknown kid hints at a rotation");
        let o = run(&e, &request("GET", "/", None, &read));
        assert!(matches!(
            o.identity_error,
            Some(IdentityError::MissingToken { .. })
        ));
        assert!(!o.wants_jwks_refresh());
        let audit = Engine::from_text(&config(&k, "audit")).unwrap();
        let o = run(&audit, &request("GET", "/", None, &read));
        assert_eq!(
            (o.kind, o.event.decision.as_str()),
            (DecisionKind::WouldDeny, "would_deny")
        );
    }

    #[test]
    fn delegation_ceiling_cycles_and_depth() {
        let k = key();
        let e = Engine::from_text(&config(&k, "enforce")).unwrap();
        let get = |claims: Json| {
            let t = token(&k, claims);
            let o = run(
                &e,
                &request(
                    "GET",
                    "/",
                    Some(&t),
                    &[("x-meshguard-action", "read:orders")],
                ),
            );
            (body(&o.verdict).0, o)
        };
        // verified delegator, trusted actor: both allowed read:* → allowed, tier = verified
        let (s, o) = get(
            json!({"trust_tier": "verified", "act": {"sub": "agent-b", "trust_tier": "trusted"}}),
        );
        assert_eq!(s, 200);
        assert_eq!(header(&o.verdict, "x-meshguard-agent"), Some("agent-b"));
        assert_eq!(
            header(&o.verdict, "x-meshguard-trust-tier"),
            Some("verified")
        );
        assert_eq!(o.event.delegation_chain, ["agent-a", "agent-b"]);
        // an untrusted delegator lowers the chain: nobody's policy applies → deny
        let (s, _) = get(
            json!({"trust_tier": "untrusted", "act": {"sub": "agent-b", "trust_tier": "trusted"}}),
        );
        assert_eq!(s, 403);
        // cycle
        let (s, o) = get(
            json!({"trust_tier": "verified", "act": {"sub": "agent-b", "trust_tier": "verified", "act": {"sub": "agent-a", "trust_tier": "verified"}}}),
        );
        assert_eq!(s, 403);
        assert!(o.decision.reason.contains("cycle"), "{}", o.decision.reason);
        // depth beyond the mesh limit (4)
        let mut act = json!({"sub": "h5", "trust_tier": "verified"});
        for i in (1..5).rev() {
            act = json!({"sub": format!("h{i}"), "trust_tier": "verified", "act": act});
        }
        let (s, o) = get(json!({"trust_tier": "verified", "act": act}));
        assert_eq!(s, 403);
        assert!(
            o.decision.reason.contains("depth 5"),
            "{}",
            o.decision.reason
        );
    }

    #[test]
    fn ceiling_names_the_delegator_that_is_not_allowed() {
        let k = key();
        let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
        let cfg = json!({
            "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
            "policy_yaml": "name: p\nrules:\n  - {action: 'write:*', effect: allow, resource: 'db', conditions: ['agent.id != \"agent-a\"']}\n"
        });
        let e = Engine::from_text(cfg.to_string().as_bytes()).unwrap();
        let t = token(&k, json!({"act": {"sub": "agent-b"}}));
        let o = run(
            &e,
            &request(
                "POST",
                "/",
                Some(&t),
                &[
                    ("x-meshguard-action", "write:rows"),
                    ("x-meshguard-resource", "db"),
                ],
            ),
        );
        assert_eq!(o.decision.effect, Effect::Deny);
        assert!(
            o.decision.reason.contains("delegator \"agent-a\""),
            "{}",
            o.decision.reason
        );
    }

    /// Found by the property test `a_delegate_never_gets_more_than_its_delegators`
    /// (tests/proptests.rs): a verified agent denied an action by a policy for verified
    /// agents got it allowed by delegating to an untrusted agent, since the chain was only
    /// judged at its lowest tier, where that policy does not apply.
    #[test]
    fn delegating_to_a_lower_tier_does_not_escape_a_tier_scoped_deny() {
        let k = key();
        let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
        let cfg = json!({
            "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
            "policies": [
                {"name": "everyone", "rules": [{"action": "delete:**", "effect": "allow"}]},
                {"name": "verified-no-delete", "applies_to": {"trust_tiers": ["verified"]},
                 "rules": [{"action": "delete:**", "effect": "deny", "reason": "verified agents do not delete"}]}
            ]
        });
        let e = Engine::from_text(cfg.to_string().as_bytes()).unwrap();
        let delete = [("x-meshguard-action", "delete:orders")];
        let alone = token(&k, json!({"trust_tier": "verified"}));
        let o = run(&e, &request("POST", "/", Some(&alone), &delete));
        assert_eq!(o.decision.effect, Effect::Deny);
        let via_untrusted = token(
            &k,
            json!({"trust_tier": "verified", "act": {"sub": "agent-b", "trust_tier": "untrusted"}}),
        );
        let o = run(&e, &request("POST", "/", Some(&via_untrusted), &delete));
        assert_eq!(o.decision.effect, Effect::Deny, "{}", o.decision.reason);
        assert!(
            o.decision
                .reason
                .contains("\"agent-a\" at its own tier verified"),
            "{}",
            o.decision.reason
        );
        // An untrusted agent alone is allowed: the policy is scoped to verified agents.
        let untrusted = token(&k, json!({"trust_tier": "untrusted"}));
        let o = run(&e, &request("POST", "/", Some(&untrusted), &delete));
        assert_eq!(o.decision.effect, Effect::Allow, "{}", o.decision.reason);
    }

    /// The issue-8 configuration: orders are readable, email needs a condition that
    /// fails, `request.path` is visible to conditions.
    fn paths_engine(k: &ES256KeyPair, mode: &str) -> Engine {
        let jwk: Json = serde_json::from_str(&k.public_key().to_jwk()).unwrap();
        let cfg = json!({
            "mode": mode,
            "identity": {"issuers": [{"issuer": "https://issuer.example", "audiences": ["agents"], "jwks": {"keys": [jwk]}}]},
            "actions": {"routes": [
                {"method": "POST", "path": "/v1/email/*", "action": "write:email", "resource": "notifications"},
                {"method": "GET", "path": "/v1/orders/**", "action": "read:orders", "resource": "orders"},
                {"method": "GET", "path": "/v1/admin/**", "action": "admin:read"}
            ]},
            "policy_yaml": "name: p\nrules:\n  - {action: 'read:*', effect: allow}\n  - {name: seen, action: 'admin:read', effect: allow, conditions: ['request.path == \"/v1/admin/delete\"']}\n"
        });
        Engine::from_text(cfg.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn routes_see_the_normalised_path_and_the_upstream_gets_it() {
        let k = key();
        let e = paths_engine(&k, "enforce");
        let t = token(&k, json!({}));
        for raw in [
            "/v1/orders/../admin/delete",
            "/v1/orders/%2e%2e/admin/delete",
            "/v1/orders/.%2E/admin/delete",
            "/v1/orders/7/../../admin/./delete",
        ] {
            let o = run(&e, &request("GET", raw, Some(&t), &[]));
            // decided as admin:read (not read:orders), and request.path saw the
            // normalised path (the rule's condition held)
            assert_eq!(o.event.action, "admin:read", "{raw}");
            assert_eq!(o.decision.rule.as_deref(), Some("seen"), "{raw}");
            assert_eq!(o.event.path, "/v1/admin/delete");
            assert_eq!(header(&o.verdict, ":path"), Some("/v1/admin/delete"));
            assert_eq!(header(&o.verdict, "x-meshguard-action"), Some("admin:read"));
        }
        // `//..` is refused; the query is kept verbatim; an unchanged path is not rewritten
        let o = run(
            &e,
            &request("GET", "/v1/orders//../admin/delete", Some(&t), &[]),
        );
        assert!(
            matches!(o.verdict, Verdict::Respond(_)),
            "//.. must be refused"
        );
        let o = run(
            &e,
            &request("GET", "/v1//orders/./7?q=%2e%2e/", Some(&t), &[]),
        );
        assert_eq!(header(&o.verdict, ":path"), Some("/v1/orders/7?q=%2e%2e/"));
        let o = run(&e, &request("GET", "/v1/orders/7?q=1", Some(&t), &[]));
        assert_eq!(o.event.action, "read:orders");
        assert_eq!(header(&o.verdict, ":path"), None);
    }

    #[test]
    fn ambiguous_paths_are_400_in_every_mode_and_audited() {
        let k = key();
        for mode in ["enforce", "audit"] {
            let e = paths_engine(&k, mode);
            let t = token(&k, json!({}));
            for (raw, code) in [
                ("/v1/orders/..%2fadmin/delete", "encoded_slash"),
                ("/v1/orders/..%5Cadmin", "encoded_backslash"),
                ("/v1/orders/../../../etc", "above_root"),
                ("/v1/orders/..;/admin", "dot_segment_parameter"),
            ] {
                let o = run(&e, &request("GET", raw, Some(&t), &[]));
                let (status, b) = body(&o.verdict);
                assert_eq!(status, 400, "{mode} {raw}");
                assert_eq!(b["errorCode"], code);
                assert_eq!(b["error"], "invalid_request");
                assert_eq!(b["mode"], mode);
                assert!(!b["reason"].as_str().unwrap().is_empty());
                assert_eq!((o.event.status, o.event.enforced), (400, true));
                assert_eq!(o.event.decision, "deny");
                assert_eq!(o.event.agent_id, "agent-a", "the caller is still recorded");
                assert_eq!(o.event.reason, b["reason"].as_str().unwrap());
                assert_eq!(o.event.path, raw.split('?').next().unwrap());
            }
            // no token: still a 400 (the request is malformed before it is anyone's)
            let o = run(&e, &request("GET", "/v1/orders/%2f", None, &[]));
            assert_eq!(body(&o.verdict).0, 400);
            assert_eq!(o.event.identity_error, "missing_token");
        }
    }

    #[test]
    fn a_header_cannot_relabel_a_routed_request() {
        let k = key();
        let e = paths_engine(&k, "enforce");
        let t = token(&k, json!({}));
        // POST /v1/email/send is write:email (denied: no rule allows it)
        let o = run(&e, &request("POST", "/v1/email/send", Some(&t), &[]));
        assert_eq!(body(&o.verdict).0, 403);
        let o = run(
            &e,
            &request(
                "POST",
                "/v1/email/send",
                Some(&t),
                &[("x-meshguard-action", "read:orders")],
            ),
        );
        let (status, b) = body(&o.verdict);
        assert_eq!(status, 403);
        assert_eq!(b["action"], "write:email");
        let reason = b["reason"].as_str().unwrap();
        assert!(
            reason.contains("\"read:orders\"") && reason.contains("\"write:email\""),
            "{reason}"
        );
        assert_eq!(o.event.action, "write:email");
        assert_eq!(o.event.resource, "notifications");
        // an agreeing header changes nothing; the header still works where no route maps
        let o = run(
            &e,
            &request(
                "GET",
                "/v1/orders/7",
                Some(&t),
                &[("x-meshguard-action", "read:orders")],
            ),
        );
        assert_eq!(
            header(&o.verdict, "x-meshguard-action"),
            Some("read:orders")
        );
        let o = run(
            &e,
            &request(
                "POST",
                "/v1/unrouted",
                Some(&t),
                &[("x-meshguard-action", "read:things")],
            ),
        );
        assert_eq!(
            header(&o.verdict, "x-meshguard-action"),
            Some("read:things")
        );
        // an unauthenticated relabelling attempt is a 401 first
        let o = run(
            &e,
            &request(
                "POST",
                "/v1/email/send",
                None,
                &[("x-meshguard-action", "read:orders")],
            ),
        );
        assert_eq!(body(&o.verdict).0, 401);
        // duplicated action headers: 400, wherever they are sent
        for path in ["/v1/unrouted", "/v1/email/send"] {
            let o = run(
                &e,
                &request(
                    "POST",
                    path,
                    Some(&t),
                    &[
                        ("x-meshguard-action", "read:orders"),
                        ("x-meshguard-action", "write:email"),
                    ],
                ),
            );
            let (status, b) = body(&o.verdict);
            assert_eq!(
                (status, b["errorCode"].as_str()),
                (400, Some("duplicate_header"))
            );
        }
    }

    #[test]
    fn audit_mode_records_a_relabelling_attempt_and_forwards_the_routes_action() {
        let k = key();
        let e = paths_engine(&k, "audit");
        let t = token(&k, json!({}));
        let o = run(
            &e,
            &request(
                "POST",
                "/v1/email/send",
                Some(&t),
                &[("x-meshguard-action", "read:orders")],
            ),
        );
        assert_eq!(
            header(&o.verdict, "x-meshguard-decision"),
            Some("would_deny")
        );
        assert_eq!(
            header(&o.verdict, "x-meshguard-action"),
            Some("write:email")
        );
        assert!(o.event.reason.contains("disagrees"), "{}", o.event.reason);
    }

    #[test]
    fn every_name_of_the_table_is_answered_for_a_full_request() {
        let k = key();
        let e = Engine::from_text(&config(&k, "enforce")).unwrap();
        let t = token(
            &k,
            json!({"trust_tier": "verified", "x-y": "claim", "act": {"sub": "agent-b"}}),
        );
        let identity = e.verifier().verify(&t, NOW).unwrap();
        let req = request("POST", "/v1/email/send?q=1", Some(&t), &[("x-y", "header")]);
        let action = e.action_mapper().map(&req).unwrap().unwrap();
        let used = Cell::new(false);
        let ctx = json!({"x-y": 1});
        let with_body = |body: BodyFacts<'_>| {
            let facts = Facts {
                identity: &identity,
                subject: Subject {
                    agent_id: &identity.agent_id,
                    tier: identity.tier,
                },
                action: &action.action,
                resource: action.resource.as_deref(),
                req: &req,
                now_secs: NOW,
                body,
                used_context: &used,
            };
            crate::policy::names::examples("x-y")
                .into_iter()
                .map(|name| {
                    let a = facts.lookup(&name);
                    (name, a)
                })
                .collect::<Vec<_>>()
        };
        // a JSON-RPC body answers every name of the table
        let full = BodyFacts {
            context: Some(&ctx),
            mcp_method: Some("tools/call"),
            mcp_tool: Some("t"),
            a2a_method: Some("message/send"),
        };
        for (name, answer) in with_body(full) {
            assert!(answer.is_some(), "{name} is in the table but not answered");
        }
        assert!(used.get(), "context lookups are noticed");
        // a plain HTTP request has no body values
        let from_bodies = [
            Fact::Context("x-y"),
            Fact::McpMethod,
            Fact::McpTool,
            Fact::A2aMethod,
        ];
        for (name, answer) in with_body(BodyFacts::default()) {
            let fact = Fact::parse(&name).unwrap();
            assert_eq!(from_bodies.contains(&fact), answer.is_none(), "{name}");
        }
        let facts = Facts {
            identity: &identity,
            subject: Subject {
                agent_id: &identity.agent_id,
                tier: identity.tier,
            },
            action: &action.action,
            resource: action.resource.as_deref(),
            req: &req,
            now_secs: NOW,
            body: BodyFacts::default(),
            used_context: &used,
        };
        assert_eq!(
            facts.lookup("request.headers.x-y"),
            Some(Value::Str("header".into()))
        );
        assert_eq!(
            facts.lookup("agent.claims.x-y"),
            Some(Value::Str("claim".into()))
        );
        assert_eq!(facts.lookup("time.hours"), None);
    }

    #[test]
    fn a_typo_in_a_condition_is_a_configuration_error() {
        let k = key();
        let mut cfg: Json = serde_json::from_slice(&config(&k, "enforce")).unwrap();
        cfg["policies"][0]["rules"][2]["conditions"] =
            json!(["action != \"x\" AND time.hours >= 0"]);
        let e = Engine::from_text(cfg.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(
                "policies[0].rules[2].conditions[0]: condition \"action != \"x\" AND time.hours >= 0\": \
                 unknown name `time.hours` at column 19 (valid names: time.hour, time.minute,"
            ),
            "{e}"
        );
        assert!(
            e.contains("agent.claims.<claim>, request.headers.<header>, context.<field>"),
            "{e}"
        );
        // the open namespaces take any suffix; the extensions stay valid
        cfg["policies"][0]["rules"][2]["conditions"] = json!([
            "agent.claims.team == 1 AND request.headers.x-a == 1 AND context.amount > 1 \
             AND time.unix > 0 AND agent.issuer == 1 AND request.host == 1 AND mcp.tool == 1"
        ]);
        assert!(Engine::from_text(cfg.to_string().as_bytes()).is_ok());
        // policy_yaml and bundles go through the same compile
        let yaml = json!({"identity": cfg["identity"], "policy_yaml": "name: p\nrules:\n  - {action: 'x', effect: deny, conditions: ['time.hours > 1']}\n"});
        let e = Engine::from_text(yaml.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field(), "policy_yaml[0].rules[0].conditions[0]", "{e}");
    }

    #[test]
    fn bad_configurations_name_the_field() {
        let k = key();
        let mut cfg: Json = serde_json::from_slice(&config(&k, "enforce")).unwrap();
        cfg["policies"][0]["rules"][1]["conditions"][0] = json!("time.hour >= ");
        let e = Engine::from_text(cfg.to_string().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("policies[0].rules[1].conditions[0]:") && e.contains("column"),
            "{e}"
        );
        let e = Engine::from_text(b"identity:\n  issuers: []\n").unwrap_err();
        assert_eq!(e.field(), "identity.issuers");
        let mut bad_bundle = cfg.clone();
        bad_bundle["policies"][0]["rules"][1]["conditions"][0] = json!("time.hour >= 7");
        bad_bundle["bundle"] = json!({"cluster": "b", "path": "/x", "public_keys": ["AAAA"]});
        let e = Engine::from_text(bad_bundle.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.field(), "bundle.public_keys[0]", "{e}");
    }
}
