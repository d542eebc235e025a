//! `meshguard replay`: re-decides recorded decisions under a candidate configuration
//! (README, "Changing policy safely"). Events are read through the store's query API
//! (`EventFilter` / `EventRow`, as `meshguard audit query` reads them); each is rebuilt
//! as the identity, action and request facts the filter saw (agent, tier and chain as
//! recorded, condition inputs from `meshguard.inputs`) and decided by the candidate
//! engine's `Engine::decide_full`, the filter's own decision function.

use crate::audit_query::{FilterText, MAX_LIMIT};
use crate::collector::store::{EventRow, Store};
use crate::{offline, timestamp};
use meshguard::actions::ActionMatch;
use meshguard::config::{Effect, Mode};
use meshguard::engine::request::Request;
use meshguard::engine::{BodyFacts, Engine};
use meshguard::identity::{Hop, Identity};
use meshguard::policy::names::Fact;
use meshguard::tier::TrustTier;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The collector's audit database.
    #[arg(long)]
    db: PathBuf,
    /// The candidate plugin configuration (JSON or YAML, or an Envoy bootstrap).
    #[arg(long)]
    config: PathBuf,
    /// Only events at or after this time: an age (`24h`, `30m`) or RFC 3339.
    #[arg(long)]
    since: Option<String>,
    /// Only events before this time: an age or RFC 3339.
    #[arg(long)]
    until: Option<String>,
    /// Only this agent.
    #[arg(long)]
    agent: Option<String>,
    /// Only actions matching this glob.
    #[arg(long)]
    action: Option<String>,
    /// Most events replayed (the newest).
    #[arg(long, default_value_t = MAX_LIMIT)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Example trace ids kept per group.
    #[arg(long, default_value_t = 5)]
    examples: usize,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// Recorded inputs that stand for "not recorded" (`Engine` writes them for redacted or
/// oversized values).
fn unusable(v: &Value) -> bool {
    v.get("$redacted").is_some() || v.get("$truncated").is_some()
}

/// Names whose values replay rebuilds from the event itself (time, identity, action,
/// request line), so they never make a decision approximate.
fn from_event(name: &str) -> bool {
    matches!(
        Fact::parse(name),
        Some(
            Fact::TimeHour
                | Fact::TimeMinute
                | Fact::TimeWeekday
                | Fact::TimeUnix
                | Fact::AgentId
                | Fact::AgentTrustTier
                | Fact::Action
                | Fact::Resource
                | Fact::RequestMethod
                | Fact::RequestPath
                | Fact::RequestHost
                | Fact::DelegationDepth
                | Fact::DelegationChain
                | Fact::McpMethod
                | Fact::McpTool
                | Fact::A2aMethod
        )
    )
}

/// One decision as it was and as the candidate makes it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
struct Side {
    effect: String,
    policy: String,
    rule: String,
    grant: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    kind: String,
    from: Side,
    to: Side,
    agent: String,
    action: String,
}

#[derive(Default)]
struct Group {
    count: usize,
    approximate: usize,
    examples: Vec<String>,
}

#[derive(Default, Serialize)]
struct Skipped {
    /// No verified identity (401s): nothing to re-decide as.
    no_identity: usize,
    /// No action (malformed requests, unmapped paths).
    no_action: usize,
    /// Refused by a rate limit or loop detection: counters are not replayable.
    controls: usize,
    /// Not a policy decision (public metadata, non-call JSON-RPC methods).
    no_policy_decision: usize,
}

fn str_attr<'a>(row: &'a EventRow, name: &str) -> &'a str {
    row.attributes
        .get(name)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The recorded side of an event; `None` when it is not a replayable policy decision.
fn recorded(row: &EventRow) -> Side {
    Side {
        effect: row.effect.clone(),
        policy: row.policy.clone(),
        rule: row.rule.clone(),
        grant: str_attr(row, "meshguard.grant").to_string(),
    }
}

/// Rebuilds what the filter saw and decides it with `engine`. Returns the candidate's
/// side and whether the rebuild lacked an input the candidate's conditions use.
fn redecide(engine: &Engine, row: &EventRow) -> (Side, bool) {
    let inputs: Map<String, Value> = serde_json::from_str(str_attr(row, "meshguard.inputs"))
        .ok()
        .and_then(|v: Value| v.as_object().cloned())
        .unwrap_or_default();
    let mut approximate = row.delegation_chain.len() > 1;
    for name in engine.policy_set().referenced_names() {
        if !from_event(name) && inputs.get(name).is_none_or(unusable) {
            approximate = true;
        }
    }
    let usable = |prefix: &str| {
        inputs
            .iter()
            .filter(|(_, v)| !unusable(v) && !v.is_null())
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v.clone())))
            .collect::<Map<String, Value>>()
    };
    let mut claims = usable("agent.claims.");
    claims.insert("sub".into(), Value::String(row.agent.clone()));
    let tier = TrustTier::parse(&row.trust_tier).unwrap_or(TrustTier::Untrusted);
    // Tokens are never stored: each delegator's own tier is unknown, so each is given
    // the effective tier (the lowest of the chain), and the decision counts as approximate.
    let chain = if row.delegation_chain.is_empty() {
        vec![Hop {
            agent_id: row.agent.clone(),
            tier,
        }]
    } else {
        row.delegation_chain
            .iter()
            .map(|a| Hop {
                agent_id: a.clone(),
                tier,
            })
            .collect()
    };
    let identity = Identity {
        agent_id: row.agent.clone(),
        tier,
        issuer: inputs
            .get("agent.issuer")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        chain,
        claims: Value::Object(claims),
        expires_at: u64::MAX,
    };
    let headers = usable("request.headers.")
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
        .collect();
    let req = Request {
        method: row.method.clone(),
        path: row.path.clone(),
        authority: row.server_address.clone(),
        headers,
        peer_uri_sans: Vec::new(),
    };
    let action = ActionMatch {
        action: row.action.clone(),
        resource: Some(row.resource.clone()).filter(|r| !r.is_empty()),
        source: "replay".into(),
    };
    let context = usable("context.");
    let context = Value::Object(context);
    let text = |input: &str, attr: &str| -> Option<String> {
        inputs
            .get(input)
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| Some(str_attr(row, attr).to_string()).filter(|s| !s.is_empty()))
    };
    let mcp_method = text("mcp.method", "mcp.method.name");
    let mcp_tool = text("mcp.tool", "gen_ai.tool.name");
    let a2a_method = text("a2a.method", "meshguard.a2a.method");
    let body = BodyFacts {
        context: Some(&context),
        mcp_method: mcp_method.as_deref(),
        mcp_tool: mcp_tool.as_deref(),
        a2a_method: a2a_method.as_deref(),
    };
    let now_secs = u64::try_from(row.time_unix_nano / 1_000_000_000).unwrap_or(0);
    let eval = engine.decide_full(&identity, &action, &req, now_secs, body);
    // A stricter shadow decision is what the event records (as would_deny).
    let d = match (&eval.shadow, eval.decision.effect) {
        (Some(sh), Effect::Allow) => sh,
        _ => &eval.decision,
    };
    (
        Side {
            effect: d.effect.as_str().to_string(),
            policy: d.policy.clone().unwrap_or_default(),
            rule: d.rule.clone().unwrap_or_default(),
            grant: d.grant.clone().unwrap_or_default(),
        },
        approximate,
    )
}

fn kind(from: &Side, to: &Side) -> Option<String> {
    if from == to {
        return None;
    }
    let allow = |s: &Side| s.effect == Effect::Allow.as_str();
    Some(match (allow(from), allow(to)) {
        (true, false) => format!("allow->{}", to.effect),
        (false, true) => format!("{}->allow", from.effect),
        _ if from.effect != to.effect => format!("{}->{}", from.effect, to.effect),
        _ => "rule-change".to_string(),
    })
}

fn side_text(s: &Side) -> String {
    let who = match (s.policy.is_empty(), s.grant.is_empty()) {
        (_, false) => format!("grant {}", s.grant),
        (true, true) => "default".to_string(),
        (false, true) => format!("{}/{}", s.policy, s.rule),
    };
    format!("{} ({who})", s.effect)
}

/// `meshguard replay`.
pub fn run(a: ReplayArgs) -> Result<ExitCode, String> {
    let engine = offline::engine(&a.config)?;
    if engine.mode() == Mode::Audit {
        eprintln!(
            "meshguard replay: the candidate is in audit mode; flips are reported by effect, as enforce would decide"
        );
    }
    let store = Store::open_for_reading(&a.db).map_err(|e| format!("{}: {e}", a.db.display()))?;
    let filter = FilterText {
        agent: a.agent.clone(),
        action: a.action.clone(),
        since: a.since.clone(),
        until: a.until.clone(),
        limit: Some(a.limit.to_string()),
        ..FilterText::default()
    }
    .parse(timestamp::now_nanos())
    .map_err(|e| e.to_string())?;
    let rows = store.events(&filter).map_err(|e| e.to_string())?;
    let mut skipped = Skipped::default();
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    let (mut replayed, mut unchanged, mut approximate) = (0usize, 0usize, 0usize);
    for row in &rows {
        let identity_error = str_attr(row, "meshguard.identity.error");
        if row.agent.is_empty() || !identity_error.is_empty() {
            skipped.no_identity += 1;
            continue;
        }
        if row.action.is_empty() || row.status == Some(400) {
            skipped.no_action += 1;
            continue;
        }
        if row.decision == "rate_limited" || (row.rule == "loop" && row.policy.is_empty()) {
            skipped.controls += 1;
            continue;
        }
        let from = recorded(row);
        if from.policy.is_empty() && from.grant.is_empty() && from.effect == "allow" {
            skipped.no_policy_decision += 1;
            continue;
        }
        let (to, approx) = redecide(&engine, row);
        replayed += 1;
        if approx {
            approximate += 1;
        }
        let Some(k) = kind(&from, &to) else {
            unchanged += 1;
            continue;
        };
        let g = groups
            .entry(GroupKey {
                kind: k,
                from,
                to,
                agent: row.agent.clone(),
                action: row.action.clone(),
            })
            .or_default();
        g.count += 1;
        if approx {
            g.approximate += 1;
        }
        if g.examples.len() < a.examples {
            g.examples.push(row.trace_id.clone());
        }
    }
    let flipped: usize = groups.values().map(|g| g.count).sum();
    match a.format {
        Format::Json => {
            let flips: Vec<Value> = groups
                .iter()
                .map(|(k, g)| {
                    json!({
                        "kind": k.kind,
                        "from": k.from,
                        "to": k.to,
                        "agent": k.agent,
                        "action": k.action,
                        "count": g.count,
                        "approximate": g.approximate,
                        "examples": g.examples,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "events": rows.len(),
                    "replayed": replayed,
                    "unchanged": unchanged,
                    "flipped": flipped,
                    "approximate": approximate,
                    "skipped": skipped,
                    "flips": flips,
                })
            );
        }
        Format::Table => {
            println!(
                "{} events: {replayed} replayed, {unchanged} unchanged, {flipped} flipped, {approximate} approximate (an input the candidate needs was not recorded)",
                rows.len()
            );
            println!(
                "skipped: {} without identity, {} without action, {} refused by rate limits or loop detection, {} without a policy decision",
                skipped.no_identity, skipped.no_action, skipped.controls, skipped.no_policy_decision
            );
            for (k, g) in &groups {
                println!(
                    "{:<22} {:>5}  agent {}  action {}\n{:28}{} -> {}{}\n{:28}e.g. {}",
                    k.kind,
                    g.count,
                    k.agent,
                    k.action,
                    "",
                    side_text(&k.from),
                    side_text(&k.to),
                    if g.approximate > 0 {
                        format!("  ({} approximate)", g.approximate)
                    } else {
                        String::new()
                    },
                    "",
                    g.examples.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(effect: &str, policy: &str, rule: &str) -> Side {
        Side {
            effect: effect.into(),
            policy: policy.into(),
            rule: rule.into(),
            grant: String::new(),
        }
    }

    #[test]
    fn flips_are_named_by_effect_or_rule_change() {
        let allow = side("allow", "p", "read");
        assert_eq!(kind(&allow, &allow), None);
        assert_eq!(
            kind(&allow, &side("deny", "p", "no")).as_deref(),
            Some("allow->deny")
        );
        assert_eq!(
            kind(&side("deny", "", ""), &allow).as_deref(),
            Some("deny->allow")
        );
        assert_eq!(
            kind(&side("require_approval", "p", "r"), &side("deny", "p", "d")).as_deref(),
            Some("require_approval->deny")
        );
        assert_eq!(
            kind(&allow, &side("allow", "q", "other")).as_deref(),
            Some("rule-change")
        );
    }

    #[test]
    fn recorded_markers_and_event_facts() {
        assert!(unusable(&json!({"$redacted": true})));
        assert!(unusable(&json!({"$truncated": true})));
        assert!(!unusable(&json!("x")) && !unusable(&Value::Null));
        assert!(from_event("time.hour") && from_event("delegation.depth"));
        assert!(!from_event("request.headers.x-a") && !from_event("context.to"));
        assert!(!from_event("agent.claims.team"));
    }
}
