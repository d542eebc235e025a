//! The MeshGuard policy language (README, "Policy language"): model, compilation and evaluation.
//!
//! Decision: default deny. Among matching rules of applicable policies, any `deny` wins,
//! then `require_approval`, then `allow`; the decision names the most specific rule of the
//! winning effect (exact action beats wildcard, more literal characters beat fewer, a
//! resource pattern beats none, earlier beats later).

pub mod names;
pub mod trace;

use crate::condition::{Condition, Lookup};
use crate::config::{ConfigError, Effect, Policy};
use crate::glob::{normalize, Pattern, PatternSet};
use crate::tier::TrustTier;
use names::Fact;
use serde::Serialize;
use std::cell::RefCell;
use trace::{ConditionStep, NoTrace, Recording, RuleStep, RuleVerdict, Trace};

/// Who is asking: one agent of the chain.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Agent id.
    pub agent_id: &'a str,
    /// The tier to decide with.
    pub tier: TrustTier,
}

/// The outcome of policy evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The winning effect (deny when nothing matched).
    pub effect: Effect,
    /// The deciding policy, if a rule decided.
    pub policy: Option<String>,
    /// The deciding rule, if a rule decided.
    pub rule: Option<String>,
    /// Human-readable explanation.
    pub reason: String,
    /// The temporal grant that turned this decision into allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The stable id of the pending approval of a `require_approval` decision
    /// (`crate::controls::approval_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
    /// Set when a rate limit refused the call: the `Retry-After` seconds of its 429.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

impl Decision {
    /// A denial that no rule made (default deny, delegation limits, missing action).
    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision {
            effect: Effect::Deny,
            policy: None,
            rule: None,
            reason: reason.into(),
            grant: None,
            approval_id: None,
            retry_after_secs: None,
        }
    }

    /// An allow that no rule decided (a method any authenticated agent may call, a public
    /// document), with the reason that says why.
    pub fn allow(reason: impl Into<String>) -> Decision {
        Decision {
            effect: Effect::Allow,
            ..Decision::deny(reason)
        }
    }
}

#[derive(Debug)]
struct CompiledPolicy {
    name: String,
    tiers: Vec<TrustTier>,
    agents: Vec<Pattern>,
    max_depth: Option<usize>,
    /// `mode: audit`: its denials are recorded as `would_deny`, never enforced.
    shadow: bool,
}

impl CompiledPolicy {
    fn applies(&self, s: &Subject<'_>) -> bool {
        (self.tiers.is_empty() && self.agents.is_empty())
            || self.tiers.contains(&s.tier)
            || self.agents.iter().any(|a| a.matches(s.agent_id))
    }
}

#[derive(Debug)]
struct CompiledRule {
    policy: usize,
    name: String,
    effect: Effect,
    action: Pattern,
    resource: Option<Pattern>,
    conditions: Vec<Condition>,
    min_tier: Option<TrustTier>,
    reason: Option<String>,
}

impl CompiledRule {
    fn rank(&self) -> (usize, usize) {
        (
            self.action.specificity(),
            self.resource.as_ref().map_or(0, |r| 1 + r.specificity()),
        )
    }
}

/// Policies compiled for evaluation.
#[derive(Debug)]
pub struct PolicySet {
    policies: Vec<CompiledPolicy>,
    rules: Vec<CompiledRule>,
    actions: PatternSet,
    has_shadow: bool,
    /// Every name any condition refers to, sorted (`meshguard.inputs` records their values).
    names: Vec<String>,
}

impl PolicySet {
    /// Compiles policies; `field` prefixes error paths (`policies` or `policy_yaml`).
    pub fn compile(policies: &[Policy], field: &str) -> Result<PolicySet, ConfigError> {
        let mut compiled = Vec::with_capacity(policies.len());
        let mut rules = Vec::new();
        let mut referenced: Vec<String> = Vec::new();
        for (pi, p) in policies.iter().enumerate() {
            let pf = format!("{field}[{pi}]");
            if p.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{pf}.name"),
                    "must not be empty",
                ));
            }
            if compiled.iter().any(|c: &CompiledPolicy| c.name == p.name) {
                return Err(ConfigError::invalid(
                    format!("{pf}.name"),
                    format!("policy name {:?} is used twice; decisions name policies, so names must be unique", p.name),
                ));
            }
            let applies = p.applies_to.clone().unwrap_or_default();
            let mut agents = Vec::with_capacity(applies.agents.len());
            for (ai, a) in applies.agents.iter().enumerate() {
                agents.push(Pattern::new(a).map_err(|e| ConfigError::Glob {
                    field: format!("{pf}.applies_to.agents[{ai}]"),
                    error: e,
                })?);
            }
            for (ri, r) in p.rules.iter().enumerate() {
                let rf = format!("{pf}.rules[{ri}]");
                let action = Pattern::new(&r.action).map_err(|e| ConfigError::Glob {
                    field: format!("{rf}.action"),
                    error: e,
                })?;
                let resource = match &r.resource {
                    Some(res) => Some(Pattern::new(res).map_err(|e| ConfigError::Glob {
                        field: format!("{rf}.resource"),
                        error: e,
                    })?),
                    None => None,
                };
                let mut conditions = Vec::with_capacity(r.conditions.len());
                for (ci, c) in r.conditions.iter().enumerate() {
                    let condition_error = |e| ConfigError::Condition {
                        field: format!("{rf}.conditions[{ci}]"),
                        error: e,
                    };
                    let cond = Condition::parse(c).map_err(condition_error)?;
                    let seen = RefCell::new(Vec::new());
                    cond.check_names(
                        |n| {
                            seen.borrow_mut().push(n.to_string());
                            Fact::parse(n).is_some()
                        },
                        names::valid_names,
                    )
                    .map_err(condition_error)?;
                    referenced.extend(seen.into_inner());
                    conditions.push(cond);
                }
                rules.push(CompiledRule {
                    policy: pi,
                    name: r.name.clone().unwrap_or_else(|| format!("rules[{ri}]")),
                    effect: r.effect,
                    action,
                    resource,
                    conditions,
                    min_tier: r.min_trust_tier,
                    reason: r.reason.clone(),
                });
            }
            compiled.push(CompiledPolicy {
                name: p.name.clone(),
                tiers: applies.trust_tiers,
                agents,
                max_depth: p.max_delegation_depth,
                shadow: p.mode == Some(crate::config::Mode::Audit),
            });
        }
        let actions = PatternSet::new(rules.iter().map(|r| r.action.as_str())).map_err(|e| {
            ConfigError::Glob {
                field: field.to_string(),
                error: e,
            }
        })?;
        let has_shadow = compiled.iter().any(|p| p.shadow);
        referenced.sort_unstable();
        referenced.dedup();
        Ok(PolicySet {
            has_shadow,
            names: referenced,
            policies: compiled,
            rules,
            actions,
        })
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether there are no policies (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Every rule as (policy name, rule name), in evaluation order; unnamed rules are
    /// `rules[i]` as in decisions.
    pub fn rule_names(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules.iter().map(|r| {
            let policy = self.policies.get(r.policy).map_or("", |p| p.name.as_str());
            (policy, r.name.as_str())
        })
    }

    /// Every name the conditions refer to, sorted and without repeats.
    pub fn referenced_names(&self) -> &[String] {
        &self.names
    }

    /// Decides one action for one subject with the enforcing policies (shadow policies,
    /// `mode: audit`, never change the outcome). `depth` is the delegation depth, checked
    /// against each applicable policy's `max_delegation_depth`.
    pub fn evaluate(
        &self,
        subject: &Subject<'_>,
        action: &str,
        resource: Option<&str>,
        depth: usize,
        ctx: &dyn Lookup,
    ) -> Decision {
        self.eval(subject, action, resource, depth, ctx, false, &mut NoTrace)
    }

    /// [`PolicySet::evaluate`] reporting each step to `trace` (`meshguard explain`).
    pub fn evaluate_traced<T: Trace>(
        &self,
        subject: &Subject<'_>,
        action: &str,
        resource: Option<&str>,
        depth: usize,
        ctx: &dyn Lookup,
        trace: &mut T,
    ) -> Decision {
        self.eval(subject, action, resource, depth, ctx, false, trace)
    }

    /// What the shadow policies would add to `enforced`: the decision with every policy
    /// enforcing, when it is stricter than `enforced` (it then names a shadow policy).
    /// `None` when there are no shadow policies or they change nothing.
    pub fn shadow(
        &self,
        enforced: &Decision,
        subject: &Subject<'_>,
        action: &str,
        resource: Option<&str>,
        depth: usize,
        ctx: &dyn Lookup,
    ) -> Option<Decision> {
        self.shadow_traced(
            enforced,
            subject,
            action,
            resource,
            depth,
            ctx,
            &mut NoTrace,
        )
    }

    /// [`PolicySet::shadow`] reporting each step to `trace`.
    #[allow(clippy::too_many_arguments)]
    pub fn shadow_traced<T: Trace>(
        &self,
        enforced: &Decision,
        subject: &Subject<'_>,
        action: &str,
        resource: Option<&str>,
        depth: usize,
        ctx: &dyn Lookup,
        trace: &mut T,
    ) -> Option<Decision> {
        if !self.has_shadow {
            return None;
        }
        let all = self.eval(subject, action, resource, depth, ctx, true, trace);
        (all.effect > enforced.effect).then_some(all)
    }

    #[allow(clippy::too_many_arguments)]
    fn eval<T: Trace>(
        &self,
        subject: &Subject<'_>,
        action: &str,
        resource: Option<&str>,
        depth: usize,
        ctx: &dyn Lookup,
        with_shadow: bool,
        trace: &mut T,
    ) -> Decision {
        if T::ON {
            trace.subject(subject.agent_id, subject.tier, with_shadow);
            for p in &self.policies {
                let exceeded = p.max_depth.is_some_and(|m| depth > m);
                trace.policy(&p.name, p.applies(subject), p.shadow, exceeded);
            }
        }
        for p in self.policies.iter().filter(|p| with_shadow || !p.shadow) {
            if let Some(max) = p.max_depth {
                if depth > max && p.applies(subject) {
                    return Decision {
                        effect: Effect::Deny,
                        policy: Some(p.name.clone()),
                        rule: Some("max_delegation_depth".into()),
                        reason: format!(
                            "delegation depth {depth} exceeds the policy's limit of {max}"
                        ),
                        ..Decision::deny("")
                    };
                }
            }
        }
        let normalized_action = normalize(action);
        let normalized_resource = resource.map(normalize);
        let mut candidates = Vec::new();
        self.actions
            .matches_into(&normalized_action, &mut candidates);
        candidates.sort_unstable();
        if T::ON {
            for (idx, rule) in self.rules.iter().enumerate() {
                if candidates.binary_search(&idx).is_err() {
                    trace.rule(self.step(rule, RuleVerdict::ActionMismatch, Vec::new()));
                }
            }
        }
        let mut best: [Option<&CompiledRule>; 3] = [None, None, None];
        for idx in candidates {
            let Some(rule) = self.rules.get(idx) else {
                continue;
            };
            let Some(policy) = self.policies.get(rule.policy) else {
                continue;
            };
            let skip = if !policy.applies(subject) {
                Some(RuleVerdict::PolicyNotApplicable)
            } else if policy.shadow && !with_shadow {
                Some(RuleVerdict::ShadowOnly)
            } else if rule.min_tier.is_some_and(|m| subject.tier < m) {
                Some(RuleVerdict::TierBelow)
            } else {
                match (&rule.resource, &normalized_resource) {
                    (Some(pat), Some(res)) if !pat.matches_normalized(res) => {
                        Some(RuleVerdict::ResourceMismatch)
                    }
                    (Some(_), None) => Some(RuleVerdict::ResourceMismatch),
                    _ => None,
                }
            };
            if let Some(verdict) = skip {
                if T::ON {
                    trace.rule(self.step(rule, verdict, Vec::new()));
                }
                continue;
            }
            if T::ON {
                let (ok, steps) = traced_conditions(&rule.conditions, ctx);
                let verdict = match ok {
                    Ok(()) => RuleVerdict::Matched,
                    Err(i) => RuleVerdict::ConditionFalse(i),
                };
                trace.rule(self.step(rule, verdict, steps));
                if ok.is_err() {
                    continue;
                }
            } else if !rule.conditions.iter().all(|c| c.eval(ctx)) {
                continue;
            }
            let slot = match rule.effect {
                Effect::Allow => 0,
                Effect::RequireApproval => 1,
                Effect::Deny => 2,
            };
            if let Some(cell) = best.get_mut(slot) {
                if cell.is_none_or(|b| rule.rank() > b.rank()) {
                    *cell = Some(rule);
                }
            }
        }
        let winner = best.iter().rev().flatten().next();
        match winner {
            None if !T::REASONS => Decision::deny(String::new()),
            None => Decision::deny(format!(
                "no policy allows {action:?} for agent {:?} (tier {})",
                subject.agent_id, subject.tier
            )),
            Some(rule) => {
                let policy = self
                    .policies
                    .get(rule.policy)
                    .map(|p| p.name.clone())
                    .unwrap_or_default();
                let reason = match (&rule.reason, rule.effect) {
                    _ if !T::REASONS => String::new(),
                    (Some(r), _) => r.clone(),
                    (None, Effect::Allow) => {
                        format!("allowed by rule {} of policy {policy}", rule.name)
                    }
                    (None, Effect::Deny) => {
                        format!("denied by rule {} of policy {policy}", rule.name)
                    }
                    (None, Effect::RequireApproval) => format!(
                        "{action:?} requires human approval (rule {} of policy {policy})",
                        rule.name
                    ),
                };
                Decision {
                    effect: rule.effect,
                    policy: Some(policy),
                    rule: Some(rule.name.clone()),
                    reason,
                    ..Decision::deny("")
                }
            }
        }
    }
}

impl PolicySet {
    fn step(
        &self,
        rule: &CompiledRule,
        verdict: RuleVerdict,
        conditions: Vec<ConditionStep>,
    ) -> RuleStep {
        RuleStep {
            policy: self
                .policies
                .get(rule.policy)
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            rule: rule.name.clone(),
            effect: rule.effect,
            action: rule.action.as_str().to_string(),
            resource: rule.resource.as_ref().map(|r| r.as_str().to_string()),
            min_tier: rule.min_tier,
            verdict,
            conditions,
        }
    }
}

/// Evaluates conditions in order, as `all` does, recording each with the values it saw;
/// `Err(i)` names the first false one.
fn traced_conditions(
    conditions: &[Condition],
    ctx: &dyn Lookup,
) -> (Result<(), usize>, Vec<ConditionStep>) {
    let mut steps = Vec::with_capacity(conditions.len());
    for (i, c) in conditions.iter().enumerate() {
        let rec = Recording {
            inner: ctx,
            seen: RefCell::new(Vec::new()),
        };
        let result = c.eval(&rec);
        steps.push(ConditionStep {
            source: c.source().to_string(),
            result,
            seen: rec.seen.into_inner(),
        });
        if !result {
            return (Err(i), steps);
        }
    }
    (Ok(()), steps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Value;
    use crate::config::parse_policy_yaml;
    use std::collections::HashMap;

    struct Ctx(HashMap<&'static str, Value>);
    impl Lookup for Ctx {
        fn lookup(&self, name: &str) -> Option<Value> {
            self.0.get(name).cloned()
        }
    }
    fn hour(h: u32) -> Ctx {
        Ctx(HashMap::from([("time.hour", Value::Num(f64::from(h)))]))
    }

    /// The seed policy of the README ("Policy language") and the MeshGuard docs, verbatim.
    const SEED: &str = r#"
name: verified-agent-policy
version: 1
applies_to: { trust_tiers: [verified] }      # and/or agents: [ids]; omitted = every agent
rules:
  - action: "read:*"
    effect: allow
  - name: allow-email
    action: "write:email"
    effect: allow
    conditions:
      - "time.hour >= 9 AND time.hour <= 17"
  - action: "delete:*"
    effect: deny
    reason: "Verified agents cannot delete resources"
"#;

    /// The same policy as printed in the MeshGuard-vs-OPA document (no applies_to,
    /// a trailing comment on the condition).
    const SEED_OPA: &str = r#"name: verified-agent-policy
version: 1
rules:
- action: "read:*"
  effect: allow
- action: "write:email"
  effect: allow
  conditions:
  - "time.hour >= 9 AND time.hour <= 17" # Business hours only
- action: "delete:*"
  effect: deny
  reason: "Verified agents cannot delete resources"
"#;

    fn set(yaml: &str) -> PolicySet {
        PolicySet::compile(&parse_policy_yaml(yaml).unwrap(), "policy_yaml").unwrap()
    }

    fn verified(id: &str) -> Subject<'_> {
        Subject {
            agent_id: id,
            tier: TrustTier::Verified,
        }
    }

    #[test]
    fn seed_policies_load_verbatim_and_decide() {
        for (text, email_rule) in [(SEED, "allow-email"), (SEED_OPA, "rules[1]")] {
            let s = set(text);
            let a = verified("agent-a");
            let d = s.evaluate(&a, "read:orders", None, 0, &hour(3));
            assert_eq!(
                (d.effect, d.rule.as_deref()),
                (Effect::Allow, Some("rules[0]"))
            );
            let d = s.evaluate(&a, "delete:orders", None, 0, &hour(10));
            assert_eq!(d.effect, Effect::Deny);
            assert_eq!(d.reason, "Verified agents cannot delete resources");
            assert_eq!(d.policy.as_deref(), Some("verified-agent-policy"));
            let d = s.evaluate(&a, "write:email", None, 0, &hour(10));
            assert_eq!(
                (d.effect, d.rule.as_deref()),
                (Effect::Allow, Some(email_rule))
            );
            let d = s.evaluate(&a, "write:email", None, 0, &hour(20));
            assert_eq!(
                (d.effect, d.policy),
                (Effect::Deny, None),
                "outside hours: default deny"
            );
            let d = s.evaluate(&a, "write:email", None, 0, &Ctx(HashMap::new()));
            assert_eq!(
                d.effect,
                Effect::Deny,
                "missing time is false, not an error"
            );
        }
        let s = set(SEED);
        let d = s.evaluate(
            &Subject {
                agent_id: "x",
                tier: TrustTier::Trusted,
            },
            "read:orders",
            None,
            0,
            &hour(10),
        );
        assert_eq!(
            (d.effect, d.policy),
            (Effect::Deny, None),
            "tier not covered"
        );
    }

    #[test]
    fn deny_overrides_then_approval_then_allow_and_most_specific_names() {
        let s = set(r#"
- name: broad
  rules:
    - { action: "payments:**", effect: allow }
    - { name: approve-refunds, action: "payments:refund", effect: require_approval }
- name: specific
  applies_to: { agents: ["agent-*"] }
  rules:
    - { name: wildcard-deny, action: "payments:*", effect: deny, resource: "prod-*" }
    - { name: exact-deny, action: "payments:refund", effect: deny, resource: "prod-eu" }
"#);
        let a = verified("agent-7");
        let d = s.evaluate(&a, "payments:refund", Some("prod-eu"), 0, &hour(1));
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Deny, Some("exact-deny"))
        );
        let d = s.evaluate(&a, "payments:refund", Some("dev"), 0, &hour(1));
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::RequireApproval, Some("approve-refunds"))
        );
        let d = s.evaluate(&a, "payments:list", None, 0, &hour(1));
        assert_eq!(
            (d.effect, d.policy.as_deref()),
            (Effect::Allow, Some("broad"))
        );
        let d = s.evaluate(
            &verified("other"),
            "payments:refund",
            Some("prod-eu"),
            0,
            &hour(1),
        );
        assert_eq!(
            d.effect,
            Effect::RequireApproval,
            "`specific` does not apply to other"
        );
    }

    #[test]
    fn min_tier_and_delegation_depth() {
        let s = set(r#"
name: p
max_delegation_depth: 1
rules:
  - { action: "admin:*", effect: allow, min_trust_tier: trusted }
"#);
        let t = Subject {
            agent_id: "a",
            tier: TrustTier::Trusted,
        };
        assert_eq!(
            s.evaluate(&t, "admin:x", None, 0, &hour(1)).effect,
            Effect::Allow
        );
        assert_eq!(
            s.evaluate(&verified("a"), "admin:x", None, 0, &hour(1))
                .effect,
            Effect::Deny
        );
        let d = s.evaluate(&t, "admin:x", None, 2, &hour(1));
        assert_eq!(
            (d.effect, d.rule.as_deref()),
            (Effect::Deny, Some("max_delegation_depth"))
        );
    }

    #[test]
    fn errors_name_field_and_position() {
        let bad = "name: p\nrules:\n  - action: x\n    effect: allow\n    conditions: [\"time.hour >= \"]\n";
        let e = PolicySet::compile(&parse_policy_yaml(bad).unwrap(), "policy_yaml").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("policy_yaml[0].rules[0].conditions[0]:"),
            "{msg}"
        );
        assert!(msg.contains("column 14"), "{msg}");
        let e =
            parse_policy_yaml("name: p\nrules:\n  - action: x\n    effect: alow\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("rules[0].effect") && msg.contains("line 4"),
            "{msg}"
        );
        let e = parse_policy_yaml("name: a\nrules: []\n---\nname: b\nrulez: []\n").unwrap_err();
        assert!(e.to_string().contains("document 2"), "{e}");
        let e = PolicySet::compile(
            &parse_policy_yaml("name: p\nrules: [{action: '[x', effect: deny}]").unwrap(),
            "policies",
        )
        .unwrap_err();
        assert_eq!(e.field(), "policies[0].rules[0].action");
    }

    #[test]
    fn multi_document_yaml_and_lists() {
        let ps = parse_policy_yaml(&format!(
            "{SEED}\n---\n- name: two\n  rules: []\n- name: three\n  rules: []\n"
        ))
        .unwrap();
        let names: Vec<&str> = ps.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["verified-agent-policy", "two", "three"]);
        let dup = parse_policy_yaml("name: a\nrules: []\n---\nname: a\nrules: []\n").unwrap();
        assert!(PolicySet::compile(&dup, "policy_yaml").is_err());
    }

    #[test]
    fn shadow_policies_never_change_the_enforced_decision() {
        let ps = parse_policy_yaml(
            r#"
name: base
rules:
  - { action: "read:*", effect: allow }
  - { action: "delete:*", effect: deny }
---
name: candidate
mode: audit
rules:
  - { name: no-secrets, action: "read:secrets", effect: deny }
  - { action: "write:*", effect: allow }
  - { action: "delete:*", effect: allow }
"#,
        )
        .unwrap();
        let set = PolicySet::compile(&ps, "policies").unwrap();
        let s = Subject {
            agent_id: "a",
            tier: TrustTier::Verified,
        };
        let ctx = hour(10);
        let run = |action: &str| {
            let d = set.evaluate(&s, action, None, 0, &ctx);
            let sh = set.shadow(&d, &s, action, None, 0, &ctx);
            (d, sh)
        };
        // enforced allow, the shadow policy would deny: reported, not enforced
        let (d, sh) = run("read:secrets");
        assert_eq!(d.effect, Effect::Allow);
        let sh = sh.unwrap();
        assert_eq!(sh.effect, Effect::Deny);
        assert_eq!(sh.policy.as_deref(), Some("candidate"));
        assert_eq!(sh.rule.as_deref(), Some("no-secrets"));
        // nothing to add
        assert!(run("read:orders").1.is_none());
        // a shadow allow never loosens default deny, nor an enforced deny
        let (d, sh) = run("write:x");
        assert_eq!((d.effect, d.policy), (Effect::Deny, None));
        assert!(sh.is_none());
        assert_eq!(run("delete:x").0.effect, Effect::Deny);
        // without shadow policies, no second evaluation
        let plain = PolicySet::compile(&parse_policy_yaml(SEED).unwrap(), "p").unwrap();
        let d = plain.evaluate(&s, "read:x", None, 0, &ctx);
        assert!(plain.shadow(&d, &s, "read:x", None, 0, &ctx).is_none());
        assert!(parse_policy_yaml("name: x\nmode: stealth\nrules: []").is_err());
    }
}
