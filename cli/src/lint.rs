//! `meshguard lint`: policy problems a valid configuration can still have (README,
//! "Changing policy safely"). Each finding names the field path and how to fix it.
//! Lint reads the configuration as written (`meshguard::config`) and compiles globs and
//! conditions with the filter's own parsers; it never decides.

use crate::offline;
use meshguard::condition::Condition;
use meshguard::config::{self, Effect, PluginConfig, Policy, Rule};
use meshguard::glob::Pattern;
use meshguard::tier::TrustTier;
use serde::Serialize;
use serde_json::json;
use std::cell::Cell;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct LintArgs {
    /// Plugin configurations (JSON or YAML), or Envoy bootstraps carrying one.
    #[arg(required = true)]
    configs: Vec<PathBuf>,
    /// Exit 1 when there is any finding (warnings included).
    #[arg(long)]
    strict: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Judge grant lifetimes as of this time (RFC 3339 or epoch seconds); default now.
    #[arg(long, value_name = "RFC3339|UNIX_SECONDS")]
    at: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Longest grant lifetime lint accepts without a finding.
const MAX_GRANT_SECS: u64 = 30 * 86_400;

/// One problem.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    /// Which configuration file.
    pub file: String,
    /// Stable identifier of the check.
    pub code: &'static str,
    /// Field path in the plugin configuration.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: String,
}

struct Ctx<'a> {
    file: &'a str,
    out: Vec<Finding>,
}

impl Ctx<'_> {
    fn add(&mut self, code: &'static str, path: String, message: String, hint: &str) {
        self.out.push(Finding {
            file: self.file.to_string(),
            code,
            path,
            message,
            hint: hint.to_string(),
        });
    }
}

/// Whether glob `outer` matches everything glob `inner` can match (approximated by
/// matching `inner`'s text, in which `*` is an ordinary character to `outer`).
fn covers(outer: &str, inner: &str) -> bool {
    outer == inner || Pattern::new(outer).is_ok_and(|p| p.matches(inner))
}

fn rule_name(r: &Rule, i: usize) -> String {
    r.name.clone().unwrap_or_else(|| format!("rules[{i}]"))
}

/// Whether two policies apply to the same agents (same `applies_to`, or `deny_p` applies
/// to everyone).
fn same_scope(deny_p: &Policy, p: &Policy) -> bool {
    let scope = |p: &Policy| {
        p.applies_to
            .as_ref()
            .map(|a| {
                let mut t = a.trust_tiers.clone();
                t.sort();
                let mut ag = a.agents.clone();
                ag.sort();
                (t, ag)
            })
            .unwrap_or_default()
    };
    let d = scope(deny_p);
    (d.0.is_empty() && d.1.is_empty()) || d == scope(p)
}

/// Names a condition refers to; `None` when it does not parse (a configuration error
/// the filter reports itself).
fn condition_names(c: &str) -> Option<usize> {
    let cond = Condition::parse(c).ok()?;
    let n = Cell::new(0usize);
    let _ = cond.check_names(
        |_| {
            n.set(n.get() + 1);
            true
        },
        String::new,
    );
    Some(n.get())
}

fn lint_policies(cx: &mut Ctx<'_>, policies: &[Policy], field: &str) {
    for (pi, p) in policies.iter().enumerate() {
        let pf = format!("{field}[{pi}]");
        if p.rules.is_empty() {
            cx.add(
                "policy-decides-nothing",
                format!("{pf}.rules"),
                format!(
                    "policy {:?} has no rules: it applies to nobody's requests",
                    p.name
                ),
                "add rules or delete the policy",
            );
        }
        if let Some(a) = &p.applies_to {
            if a.trust_tiers.is_empty()
                && !a.agents.is_empty()
                && a.agents.iter().all(|g| g.trim().is_empty())
            {
                cx.add(
                    "policy-applies-to-nobody",
                    format!("{pf}.applies_to.agents"),
                    format!(
                        "policy {:?} lists only empty agent names: it applies to nobody",
                        p.name
                    ),
                    "name the agents (globs allowed) or the trust tiers it is for",
                );
            }
        }
        let tiers: Vec<TrustTier> = p
            .applies_to
            .as_ref()
            .filter(|a| a.agents.is_empty())
            .map(|a| a.trust_tiers.clone())
            .unwrap_or_default();
        let mut names_seen: Vec<(String, usize)> = Vec::new();
        for (ri, r) in p.rules.iter().enumerate() {
            let rf = format!("{pf}.rules[{ri}]");
            if let Some(n) = &r.name {
                if let Some((_, first)) = names_seen.iter().find(|(m, _)| m == n) {
                    cx.add(
                        "duplicate-rule-name",
                        format!("{rf}.name"),
                        format!("rule name {n:?} is also used by {pf}.rules[{first}]: decisions and audit events cannot tell them apart"),
                        "give every rule of a policy its own name",
                    );
                } else {
                    names_seen.push((n.clone(), ri));
                }
            }
            if let (Some(min), Some(max)) = (r.min_trust_tier, tiers.iter().max()) {
                if min > *max {
                    cx.add(
                        "tier-floor-unreachable",
                        format!("{rf}.min_trust_tier"),
                        format!(
                            "min_trust_tier {} is above every tier the policy applies to ({}): the rule can never decide",
                            min.as_str(),
                            tiers.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
                        ),
                        "lower min_trust_tier or add the tier to applies_to.trust_tiers",
                    );
                }
            }
            for (ci, c) in r.conditions.iter().enumerate() {
                if condition_names(c) == Some(0) {
                    cx.add(
                        "constant-condition",
                        format!("{rf}.conditions[{ci}]"),
                        format!("condition {c:?} refers to no name: it is always true or always false"),
                        "compare a name (time.hour, agent.claims.x, context.y, ...) or delete the condition",
                    );
                }
            }
            if r.effect != Effect::Allow && r.reason.as_deref().is_none_or(|s| s.trim().is_empty())
            {
                cx.add(
                    "missing-reason",
                    format!("{rf}.reason"),
                    format!(
                        "a {} rule without a reason: the agent is refused without being told why",
                        r.effect.as_str()
                    ),
                    "add reason: \"...\" (it is returned to the agent and recorded)",
                );
            }
            // An identical earlier rule decides first and equally: this one never decides.
            if let Some(prev) = p.rules.iter().take(ri).position(|q| {
                q.action == r.action
                    && q.resource == r.resource
                    && q.effect == r.effect
                    && q.conditions == r.conditions
                    && q.min_trust_tier == r.min_trust_tier
            }) {
                cx.add(
                    "duplicate-rule",
                    rf.clone(),
                    format!(
                        "rule {:?} repeats {pf}.rules[{prev}] ({} {}): it can never decide",
                        rule_name(r, ri),
                        r.effect.as_str(),
                        r.action
                    ),
                    "delete the repeated rule",
                );
            }
        }
    }
    // An allow whose every request is also denied by an unconditional deny that covers its
    // action and resource, for the same agents, can never decide (deny overrides).
    for (pi, p) in policies.iter().enumerate() {
        for (ri, r) in p.rules.iter().enumerate() {
            if r.effect != Effect::Allow {
                continue;
            }
            let shadowing = policies.iter().enumerate().find_map(|(qi, q)| {
                if q.mode == Some(config::Mode::Audit) || !same_scope(q, p) {
                    return None;
                }
                q.rules.iter().enumerate().find_map(|(di, d)| {
                    let hit = d.effect == Effect::Deny
                        && d.conditions.is_empty()
                        && d.min_trust_tier
                            .is_none_or(|m| r.min_trust_tier.is_some_and(|rm| rm >= m))
                        && covers(&d.action, &r.action)
                        && match (&d.resource, &r.resource) {
                            (None, _) => true,
                            (Some(dr), Some(rr)) => covers(dr, rr),
                            (Some(_), None) => false,
                        };
                    hit.then(|| format!("{field}[{qi}].rules[{di}]"))
                })
            });
            if let Some(deny) = shadowing {
                cx.add(
                    "allow-shadowed-by-deny",
                    format!("{field}[{pi}].rules[{ri}]"),
                    format!(
                        "allow rule {:?} ({}) is fully covered by the deny at {deny}: deny overrides, so it can never decide",
                        rule_name(r, ri),
                        r.action
                    ),
                    "narrow the deny (action, resource, a condition) or delete the allow",
                );
            }
        }
    }
}

fn lint_controls(cx: &mut Ctx<'_>, cfg: &PluginConfig, now: u64) {
    let rl = &cfg.rate_limits;
    for (i, a) in rl.iter().enumerate() {
        for (j, b) in rl.iter().enumerate().skip(i + 1) {
            let agents = match (&a.agents, &b.agents) {
                (None, _) | (_, None) => true,
                (Some(x), Some(y)) => covers(x, y) || covers(y, x),
            };
            if agents && (covers(&a.action, &b.action) || covers(&b.action, &a.action)) {
                cx.add(
                    "overlapping-rate-limits",
                    format!("rate_limits[{j}]"),
                    format!(
                        "rate limit {:?} ({} {}) overlaps rate_limits[{i}] {:?} ({} {}): a call counts against both and the stricter decides",
                        b.name, b.action, b.limit, a.name, a.action, a.limit
                    ),
                    "give the limits disjoint action or agent globs, or merge them",
                );
            }
        }
    }
    for (i, g) in cfg.grants.inline.iter().enumerate() {
        let path = format!("grants.inline[{i}].expires_at");
        match meshguard::time::parse(g.expires_at.trim()) {
            None => cx.add(
                "grant-without-expiry",
                path,
                format!("grant {:?} has no usable expiry ({:?})", g.id, g.expires_at),
                "set expires_at to an RFC 3339 time at most 30 days ahead",
            ),
            Some(t) if t.saturating_sub(now) > MAX_GRANT_SECS => cx.add(
                "grant-too-long",
                path,
                format!(
                    "grant {:?} lasts {} more days (more than 30): a temporary exception outliving the policy's intent",
                    g.id,
                    t.saturating_sub(now) / 86_400
                ),
                "shorten expires_at, or make the access a policy rule",
            ),
            Some(_) => {}
        }
    }
}

/// Lints one configuration text.
pub fn lint_text(file: &str, text: &[u8], now: u64) -> Result<Vec<Finding>, String> {
    let cfg = config::parse(text).map_err(|e| format!("{file}: configuration rejected: {e}"))?;
    let mut cx = Ctx {
        file,
        out: Vec::new(),
    };
    match &cfg.policy_yaml {
        Some(t) => {
            let ps = config::parse_policy_yaml(t)
                .map_err(|e| format!("{file}: configuration rejected: {e}"))?;
            lint_policies(&mut cx, &ps, "policy_yaml");
        }
        None => lint_policies(&mut cx, &cfg.policies, "policies"),
    }
    lint_controls(&mut cx, &cfg, now);
    Ok(cx.out)
}

/// `meshguard lint`.
pub fn run(a: LintArgs) -> Result<ExitCode, String> {
    let now = match &a.at {
        Some(t) => offline::parse_at(t)?,
        None => offline::now_secs(),
    };
    let mut all = Vec::new();
    for path in &a.configs {
        let text = offline::load_config(path)?;
        // The filter must accept it first: lint is about valid configurations.
        meshguard::engine::Engine::from_text(&text)
            .map_err(|e| format!("{}: configuration rejected: {e}", path.display()))?;
        all.extend(lint_text(&path.display().to_string(), &text, now)?);
    }
    match a.format {
        Format::Json => println!("{}", json!({ "findings": all })),
        Format::Table => {
            for f in &all {
                println!("warning[{}] {}: {}: {}", f.code, f.file, f.path, f.message);
                println!("    fix: {}", f.hint);
            }
            println!(
                "{} finding(s) in {} configuration(s)",
                all.len(),
                a.configs.len()
            );
        }
    }
    Ok(if a.strict && !all.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
