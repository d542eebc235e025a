//! Agent controls (README "Agent controls"): revocation, workload binding, rate limits,
//! loop detection, temporal grants and approval ids. Plain Rust over plain data; the
//! state shared across worker VMs (rate-limit and loop counters) lives in a
//! [`SharedData`] that the caller passes in.

pub mod binding;
pub mod grants;
pub mod loops;
pub mod ratelimit;
pub mod revocation;
pub mod store;

use crate::config::{ConfigError, GrantConfig, GrantsConfig, PluginConfig, Policy};
use crate::identity::{Identity, IdentityError};
use crate::sources::bundle::{Bundle, BundleKeys};
use binding::WorkloadBinding;
use grants::{Grant, GrantsDoc};
use loops::{LoopCheck, LoopDetector};
use ratelimit::{Admission, Limit, RateLimit};
use revocation::Revocations;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
pub use store::{MemoryStore, SharedData};

/// The stable id of a pending approval: `apr_` followed by the first 16 bytes, in
/// lowercase hex, of SHA-256 over `agent \n action \n resource` (an absent resource is
/// empty). The same request always gets the same id, on every filter and in the CLI, so
/// the approval service can match an agent's retries to one pending approval.
pub fn approval_id(agent: &str, action: &str, resource: Option<&str>) -> String {
    let digest = Sha256::new()
        .chain_update(agent.as_bytes())
        .chain_update(b"\n")
        .chain_update(action.as_bytes())
        .chain_update(b"\n")
        .chain_update(resource.unwrap_or_default().as_bytes())
        .finalize();
    format!(
        "apr_{}",
        crate::hex::hex(digest.get(..16).unwrap_or_default())
    )
}

/// Shared-store key of one agent's counter of one rate limit. The name's length
/// prefix keeps `a/b` + `c` apart from `a` + `b/c`; no hashing, which costs
/// microseconds per request under V8 (agent ids are bounded by the token size).
fn limit_key(limit: &str, agent: &str) -> String {
    format!("meshguard/rl/{}:{limit}/{agent}", limit.len())
}

/// The compiled `grants:` document source: where to poll and which keys may sign.
#[derive(Debug, Clone)]
pub struct GrantsSource {
    /// As configured.
    pub config: GrantsConfig,
    /// Verifying keys.
    pub keys: BundleKeys,
}

/// The `grants:` document source, when `cluster`, `path` and `public_keys` are set.
pub fn compile_grants_source(g: &GrantsConfig) -> Result<Option<GrantsSource>, ConfigError> {
    let (cluster, path) = match (&g.cluster, &g.path, g.public_keys.is_empty()) {
        (None, None, true) => return Ok(None),
        (Some(c), Some(p), false) => (c, p),
        _ => {
            return Err(ConfigError::invalid(
                "grants",
                "a grants document source needs cluster, path and public_keys together",
            ))
        }
    };
    if cluster.is_empty() {
        return Err(ConfigError::invalid(
            "grants.cluster",
            "must name an Envoy cluster",
        ));
    }
    if !path.starts_with('/') {
        return Err(ConfigError::invalid("grants.path", "must start with /"));
    }
    if g.interval_seconds == 0 {
        return Err(ConfigError::invalid(
            "grants.interval_seconds",
            "must be greater than 0",
        ));
    }
    let keys = BundleKeys::parse(&g.public_keys).map_err(|m| {
        let (field, msg) = m.split_once(": ").unwrap_or(("public_keys", m.as_str()));
        ConfigError::invalid(format!("grants.{field}"), msg)
    })?;
    Ok(Some(GrantsSource {
        config: g.clone(),
        keys,
    }))
}

/// Why the controls refused a call that policy allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over a rate limit: 429 with `Retry-After`.
    RateLimited {
        /// The limit's name (`rule:<policy>/<rule>` for a rule-level limit).
        limit: String,
        /// The rate as configured.
        rate: String,
        /// `Retry-After`, in seconds.
        retry_after_secs: u64,
    },
    /// The same call repeated too often: 403, reason "loop detected".
    Loop {
        /// Identical calls within the window, this one included.
        count: usize,
        /// The configured maximum.
        max_repeats: u32,
        /// The window in seconds.
        window_secs: u64,
    },
}

/// One allowed call, as the controls see it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The calling agent.
    pub agent: &'a str,
    /// The action.
    pub action: &'a str,
    /// The resource.
    pub resource: Option<&'a str>,
    /// The policy and rule that allowed it (selects a rule-level `rate_limit`).
    pub policy_rule: Option<(&'a str, &'a str)>,
    /// What identifies the call's arguments, for loop detection.
    pub arguments: &'a [u8],
}

/// Counters shared across worker VMs, and who is counting.
#[derive(Clone, Copy)]
pub struct Counters<'a> {
    /// The shared store.
    pub store: &'a dyn SharedData,
    /// An id unique to this VM (any value distinct per worker: the root context id, a
    /// random number drawn at start); it makes the first write of a key detectable.
    pub writer: u64,
}

/// Every agent control, compiled from the configuration, the bundle and the grants
/// document in force.
#[derive(Debug, Default)]
pub struct Controls {
    revocations: Revocations,
    binding: Option<WorkloadBinding>,
    limits: Vec<RateLimit>,
    rule_limits: HashMap<(String, String), (Limit, String)>,
    loop_detector: Option<LoopDetector>,
    grants: Vec<Grant>,
    document_grants: Vec<Grant>,
    document_version: Option<u64>,
    source: Option<GrantsSource>,
}

impl Controls {
    /// Compiles the controls of a configuration; `policies` are the policies in force
    /// (inline or the bundle's, named `field` in errors) for their rule-level limits.
    pub fn compile(
        cfg: &PluginConfig,
        bundle: Option<&Bundle>,
        policies: &[Policy],
        field: &str,
    ) -> Result<Controls, ConfigError> {
        let revocations = Revocations::compile(
            &cfg.revoked,
            bundle.map_or(&[][..], |b| b.revocations.as_slice()),
        )?;
        let binding = match &cfg.identity.workload_binding {
            Some(b) => Some(WorkloadBinding::compile(b)?),
            None => None,
        };
        let mut limits: Vec<RateLimit> = Vec::with_capacity(cfg.rate_limits.len());
        for (i, l) in cfg.rate_limits.iter().enumerate() {
            let f = format!("rate_limits[{i}]");
            if l.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{f}.name"),
                    "must not be empty",
                ));
            }
            if limits.iter().any(|x| x.name == l.name) {
                return Err(ConfigError::invalid(
                    format!("{f}.name"),
                    format!(
                        "rate limit name {:?} is used twice; counters are kept per name",
                        l.name
                    ),
                ));
            }
            let glob = |name: &str, p: &str| {
                crate::glob::Pattern::new(p).map_err(|e| ConfigError::Glob {
                    field: format!("{f}.{name}"),
                    error: e,
                })
            };
            limits.push(RateLimit {
                name: l.name.clone(),
                agents: match &l.agents {
                    Some(a) => Some(glob("agents", a)?),
                    None => None,
                },
                action: glob("action", &l.action)?,
                limit: Limit::parse(&l.limit)
                    .map_err(|m| ConfigError::invalid(format!("{f}.limit"), m))?,
                text: l.limit.clone(),
            });
        }
        let mut rule_limits = HashMap::new();
        for (pi, p) in policies.iter().enumerate() {
            for (ri, r) in p.rules.iter().enumerate() {
                if let Some(text) = &r.rate_limit {
                    let limit = Limit::parse(text).map_err(|m| {
                        ConfigError::invalid(format!("{field}[{pi}].rules[{ri}].rate_limit"), m)
                    })?;
                    let rule = r.name.clone().unwrap_or_else(|| format!("rules[{ri}]"));
                    rule_limits.insert((p.name.clone(), rule), (limit, text.clone()));
                }
            }
        }
        let loop_detector = match &cfg.loop_detection {
            Some(l) => Some(LoopDetector::compile(l)?),
            None => None,
        };
        let mut grants = grants::compile_all(&cfg.grants.inline, "grants.inline")?;
        if let Some(b) = bundle {
            for (i, v) in b.grants.iter().enumerate() {
                let f = format!("bundle.grants[{i}]");
                let spec: GrantConfig = crate::config::from_value(v).map_err(|e| e.within(&f))?;
                grants.push(Grant::compile(&spec, &f)?);
            }
        }
        Ok(Controls {
            revocations,
            binding,
            limits,
            rule_limits,
            loop_detector,
            grants,
            document_grants: Vec::new(),
            document_version: None,
            source: compile_grants_source(&cfg.grants)?,
        })
    }

    /// Installs the grants of a verified grants document (replacing the previous
    /// document's); `None` removes them.
    pub fn set_document(&mut self, doc: Option<&GrantsDoc>) -> Result<(), ConfigError> {
        match doc {
            Some(d) => {
                self.document_grants = grants::compile_all(&d.grants, "grants")?;
                self.document_version = Some(d.version);
            }
            None => {
                self.document_grants.clear();
                self.document_version = None;
            }
        }
        Ok(())
    }

    /// The version of the grants document in force.
    pub fn document_version(&self) -> Option<u64> {
        self.document_version
    }

    /// Where the grants document comes from, when configured.
    pub fn grants_source(&self) -> Option<&GrantsSource> {
        self.source.as_ref()
    }

    /// Grants in force (inline, bundle, document), expired ones included.
    pub fn grant_count(&self) -> usize {
        self.grants.len() + self.document_grants.len()
    }

    /// Revoked tokens and agents.
    pub fn revocation_count(&self) -> usize {
        self.revocations.len()
    }

    /// The first grant valid at `now_secs` for this agent's action.
    pub fn grant_for(
        &self,
        agent: &str,
        action: &str,
        resource: Option<&str>,
        now_secs: u64,
    ) -> Option<&Grant> {
        self.grants
            .iter()
            .chain(&self.document_grants)
            .find(|g| g.allows(agent, action, resource, now_secs))
    }

    /// The identity checks that run on every request, after the token cache:
    /// revocation, then workload binding.
    pub fn check_identity(
        &self,
        identity: &Identity,
        peer_uri_sans: &[String],
    ) -> Result<(), IdentityError> {
        self.revocations.check(identity)?;
        match &self.binding {
            Some(b) => b.check(identity, peer_uri_sans),
            None => Ok(()),
        }
    }

    /// Whether workload binding is configured: only then does the host read the mTLS
    /// peer's certificate for each request.
    pub fn needs_peer_identity(&self) -> bool {
        self.binding.is_some()
    }

    /// Whether any counting control (loop detection, a rate limit) is configured.
    pub fn counts(&self) -> bool {
        self.loop_detector.is_some() || !self.limits.is_empty() || !self.rule_limits.is_empty()
    }

    /// Runs loop detection and the rate limits for a call that policy allowed, counting
    /// it in the shared store. Loop detection runs first, so a looping agent is told so
    /// rather than rate limited; limits count in order (`rate_limits` as listed, then the
    /// rule's) and the first one over its rate refuses the call.
    pub fn check_call(
        &self,
        counters: Counters<'_>,
        call: &Call<'_>,
        now_us: u64,
    ) -> Option<Refusal> {
        let now_ms = now_us / 1000;
        if let Some(d) = &self.loop_detector {
            let key = format!(
                "meshguard/loop/{}",
                loops::fingerprint(
                    call.agent,
                    call.action,
                    call.resource.unwrap_or_default(),
                    call.arguments
                )
            );
            if let LoopCheck::Loop { count } =
                d.record(counters.store, &key, now_ms, counters.writer)
            {
                return Some(Refusal::Loop {
                    count,
                    max_repeats: d.max_repeats,
                    window_secs: d.window_ms / 1000,
                });
            }
        }
        let rule_limit = call.policy_rule.and_then(|(p, r)| {
            self.rule_limits
                .get(&(p.to_string(), r.to_string()))
                .map(|(l, text)| (format!("rule:{p}/{r}"), *l, text.as_str()))
        });
        let global = self
            .limits
            .iter()
            .filter(|l| l.applies(call.agent, call.action))
            .map(|l| (l.name.clone(), l.limit, l.text.as_str()));
        for (name, limit, text) in global.chain(rule_limit) {
            let key = limit_key(&name, call.agent);
            if let Admission::Limited { retry_after_secs } =
                ratelimit::admit(counters.store, &key, limit, now_us, counters.writer)
            {
                return Some(Refusal::RateLimited {
                    limit: name,
                    rate: text.to_string(),
                    retry_after_secs,
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
