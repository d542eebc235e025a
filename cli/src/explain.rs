//! `meshguard explain`: the evaluation trace of one request (README, "Changing policy
//! safely"). The decision is the filter's (`crate::offline::run`); the trace comes from
//! the same evaluation run with a recording `Trace` (`Engine::decide_traced`), so what
//! it shows is what decided.

use crate::offline;
use crate::CheckArgs;
use meshguard::actions::ActionMatch;
use meshguard::condition::Value as CondValue;
use meshguard::config::{self, Policy};
use meshguard::engine::{BodyFacts, Engine};
use meshguard::glob::Pattern;
use meshguard::identity::Identity;
use meshguard::policy::trace::{RuleStep, RuleVerdict, Trace};
use meshguard::tier::TrustTier;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::rc::Rc;

#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    request: CheckArgs,
}

/// What the evaluation reported, in order.
#[derive(Default)]
struct Recorder {
    out: String,
}

impl Trace for Recorder {
    const ON: bool = true;

    fn subject(&mut self, agent: &str, tier: TrustTier, with_shadow: bool) {
        let what = if with_shadow {
            "shadow evaluation (mode: audit policies included)"
        } else {
            "evaluation"
        };
        let _ = writeln!(
            self.out,
            "\n{what} for agent {agent} (tier {})",
            tier.as_str()
        );
    }

    fn policy(&mut self, name: &str, applies: bool, shadow: bool, depth_exceeded: bool) {
        let mut s = format!(
            "  policy {name}: {}",
            if applies { "applies" } else { "does not apply" }
        );
        if shadow {
            s.push_str(" [mode: audit]");
        }
        if depth_exceeded && applies {
            s.push_str(" [delegation depth over its max_delegation_depth: denies]");
        }
        let _ = writeln!(self.out, "{s}");
    }

    fn rule(&mut self, step: RuleStep) {
        let mut head = format!(
            "    {}/{} {} action {:?}",
            step.policy,
            step.rule,
            step.effect.as_str(),
            step.action
        );
        if let Some(r) = &step.resource {
            let _ = write!(head, " resource {r:?}");
        }
        if let Some(t) = step.min_tier {
            let _ = write!(head, " min_trust_tier {}", t.as_str());
        }
        let verdict = match &step.verdict {
            RuleVerdict::ActionMismatch => "no: the action glob does not match".to_string(),
            RuleVerdict::PolicyNotApplicable => "no: its policy does not apply".into(),
            RuleVerdict::ShadowOnly => "skipped: mode: audit policy (shadow only)".into(),
            RuleVerdict::TierBelow => "no: the tier is below min_trust_tier".into(),
            RuleVerdict::ResourceMismatch => "no: the resource glob does not match".into(),
            RuleVerdict::ConditionFalse(i) => format!("no: conditions[{i}] is false"),
            RuleVerdict::Matched => "MATCHES".into(),
        };
        let _ = writeln!(self.out, "{head}: {verdict}");
        for c in &step.conditions {
            let seen: Vec<String> = c
                .seen
                .iter()
                .map(|(n, v)| format!("{n} = {}", show(v.as_ref())))
                .collect();
            let _ = writeln!(
                self.out,
                "      condition {:?} -> {} ({})",
                c.source,
                c.result,
                if seen.is_empty() {
                    "no names".to_string()
                } else {
                    seen.join(", ")
                }
            );
        }
    }

    fn grant(&mut self, agent: &str, grant: Option<&str>) {
        let _ = writeln!(
            self.out,
            "  grants for {agent}: {}",
            match grant {
                Some(g) => format!("grant {g} is valid: lifts the decision to allow"),
                None => "no valid grant".into(),
            }
        );
    }
}

fn show(v: Option<&CondValue>) -> String {
    match v {
        None => "(missing)".into(),
        Some(CondValue::Str(s)) => format!("{s:?}"),
        Some(CondValue::Num(n)) => format!("{n}"),
        Some(CondValue::Bool(b)) => format!("{b}"),
        Some(CondValue::List(items)) => {
            let inner: Vec<String> = items.iter().map(|i| show(Some(i))).collect();
            format!("[{}]", inner.join(", "))
        }
    }
}

fn applies_text(p: &Policy) -> String {
    match &p.applies_to {
        None => "every agent".into(),
        Some(a) if a.trust_tiers.is_empty() && a.agents.is_empty() => "every agent".into(),
        Some(a) => {
            let mut parts = Vec::new();
            if !a.trust_tiers.is_empty() {
                let t: Vec<&str> = a.trust_tiers.iter().map(|t| t.as_str()).collect();
                parts.push(format!("trust_tiers [{}]", t.join(", ")));
            }
            if !a.agents.is_empty() {
                parts.push(format!("agents [{}]", a.agents.join(", ")));
            }
            parts.join(" or ")
        }
    }
}

/// `meshguard explain`.
pub fn run(a: ExplainArgs) -> Result<ExitCode, String> {
    let spec = a.request.spec().map_err(|f| f.0)?;
    let text = offline::load_config(&a.request.config)?;
    let cfg = config::parse(&text).map_err(|e| format!("configuration rejected: {e}"))?;
    let engine = Engine::from_text(&text).map_err(|e| {
        format!(
            "{}: configuration rejected: {e}",
            a.request.config.display()
        )
    })?;
    let outcome = offline::run(&engine, &spec)?;
    let (req, _) = offline::request(&engine, &spec)?;
    let mut out = String::new();
    let _ = writeln!(out, "request: {} {}", req.method, req.path);

    // Identity, as the filter established it.
    let identity: Result<Rc<Identity>, String> = match &spec.claims {
        Some(c) => offline::identity_from_claims(&engine, c).map_err(|e| e.to_string()),
        None => {
            let mut cache = engine.verifier().new_cache();
            engine
                .verifier()
                .authenticate(
                    req.header(engine.verifier().token_header()),
                    spec.at,
                    &mut cache,
                )
                .map_err(|e| e.to_string())
        }
    };
    let id = match identity {
        Ok(id) => id,
        Err(e) => {
            let _ = writeln!(out, "identity: none ({e})");
            return finish(out, &outcome);
        }
    };
    let chain: Vec<String> = id
        .chain
        .iter()
        .map(|h| format!("{}({})", h.agent_id, h.tier.as_str()))
        .collect();
    let _ = writeln!(
        out,
        "identity: agent {} tier {} chain [{}] depth {}",
        id.agent_id,
        id.tier.as_str(),
        chain.join(" -> "),
        id.depth()
    );

    // The action, from the path the filter decides on.
    let normal = meshguard::actions::path::normalise(&req.path)
        .map(|n| n.target())
        .map_err(|e| e.to_string());
    let mapped = match normal {
        Ok(path) => {
            let r = meshguard::engine::request::Request {
                path,
                ..req.clone()
            };
            engine
                .action_mapper()
                .map(&r)
                .map_err(|e| e.to_string())
                .map(|m| (m, r))
        }
        Err(e) => Err(e),
    };
    let (action, nreq): (ActionMatch, _) = match mapped {
        Ok((Some(m), r)) => (m, r),
        Ok((None, _)) => {
            let _ = writeln!(out, "action: none (no route matches, no action header)");
            return finish(out, &outcome);
        }
        Err(e) => {
            let _ = writeln!(out, "action: refused ({e})");
            return finish(out, &outcome);
        }
    };
    let _ = writeln!(
        out,
        "action: {} resource {} (from {})",
        action.action,
        action.resource.as_deref().unwrap_or("(none)"),
        action.source
    );

    // Which agents each policy is written for (the trace says whether it applied).
    let policies = match &cfg.policy_yaml {
        Some(t) => config::parse_policy_yaml(t).unwrap_or_default(),
        None => cfg.policies.clone(),
    };
    let _ = writeln!(out, "\npolicies:");
    for p in &policies {
        let mut extra = String::new();
        if let Some(m) = p.max_delegation_depth {
            let _ = write!(extra, ", max_delegation_depth {m}");
        }
        let _ = writeln!(out, "  {}: applies to {}{extra}", p.name, applies_text(p));
    }

    let mut rec = Recorder::default();
    let eval = engine.decide_traced(&id, &action, &nreq, spec.at, BodyFacts::default(), &mut rec);
    out.push_str(&rec.out);
    let d = &eval.decision;
    let _ = writeln!(
        out,
        "\npolicy decision (deny > require_approval > allow; the most specific rule of the winning effect is named): {} {}",
        d.effect.as_str(),
        match (&d.policy, &d.rule, &d.grant) {
            (_, _, Some(g)) => format!("by grant {g}"),
            (Some(p), Some(r), None) => format!("by {p}/{r}"),
            _ => "(no rule)".into(),
        }
    );

    // The controls that follow an allow.
    let _ = writeln!(out, "\ncontrols:");
    let mut any = false;
    for (i, l) in cfg.rate_limits.iter().enumerate() {
        let agent_ok = l
            .agents
            .as_deref()
            .is_none_or(|g| Pattern::new(g).is_ok_and(|p| p.matches(&id.agent_id)));
        let action_ok = Pattern::new(&l.action).is_ok_and(|p| p.matches(&action.action));
        let _ = writeln!(
            out,
            "  rate_limits[{i}] {} ({} per agent, action {:?}): {}",
            l.name,
            l.limit,
            l.action,
            if agent_ok && action_ok {
                "counts this call"
            } else {
                "does not apply"
            }
        );
        any = true;
    }
    for p in &policies {
        for (ri, r) in p.rules.iter().enumerate() {
            if let Some(limit) = &r.rate_limit {
                let name = r.name.clone().unwrap_or_else(|| format!("rules[{ri}]"));
                let _ = writeln!(
                    out,
                    "  rule rate limit {}/{name}: {limit} (counts calls this rule allows)",
                    p.name
                );
                any = true;
            }
        }
    }
    if let Some(l) = &cfg.loop_detection {
        let _ = writeln!(
            out,
            "  loop: at most {} identical calls within {} s",
            l.max_repeats, l.window_seconds
        );
        any = true;
    }
    if !any {
        let _ = writeln!(out, "  none configured");
    }
    if spec.repeat > 1 {
        let _ = writeln!(out, "  this is identical call {} in a row", spec.repeat);
    }
    finish(out, &outcome)
}

fn finish(mut out: String, outcome: &meshguard::engine::Outcome) -> Result<ExitCode, String> {
    let e = &outcome.event;
    let _ = writeln!(
        out,
        "\nresult: {} (effect {}{}{}){}",
        e.decision,
        e.effect,
        if e.policy.is_empty() {
            String::new()
        } else {
            format!(", policy {}", e.policy)
        },
        if e.rule.is_empty() {
            String::new()
        } else {
            format!(", rule {}", e.rule)
        },
        if e.grant.is_empty() {
            String::new()
        } else {
            format!(", grant {}", e.grant)
        },
    );
    let _ = writeln!(out, "reason: {}", e.reason);
    print!("{out}");
    Ok(ExitCode::from(
        if outcome.decision.effect == meshguard::config::Effect::Allow {
            0
        } else {
            1
        },
    ))
}
