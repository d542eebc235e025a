//! The evaluation trace behind `meshguard explain`: what [`super::PolicySet`] looked at
//! for one decision. The evaluation is generic over [`Trace`]; the filter passes
//! [`NoTrace`], whose `ON = false` lets the compiler drop every recording step, so the
//! request path pays nothing for it.

use crate::condition::{Lookup, Value};
use crate::config::Effect;
use crate::tier::TrustTier;
use std::cell::RefCell;

/// Why a rule did or did not match, in the order the evaluation checks.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleVerdict {
    /// The action glob does not match the action.
    ActionMismatch,
    /// Its policy does not apply to the subject.
    PolicyNotApplicable,
    /// Its policy is in `mode: audit` and only counts for the shadow decision.
    ShadowOnly,
    /// The subject's tier is below the rule's `min_trust_tier`.
    TierBelow,
    /// The resource glob does not match (or the request has no resource).
    ResourceMismatch,
    /// The condition with this index evaluated false.
    ConditionFalse(usize),
    /// Everything matched: the rule is a candidate for the decision.
    Matched,
}

/// One condition as evaluated, with the values its names had.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionStep {
    /// The condition text.
    pub source: String,
    /// Its value.
    pub result: bool,
    /// Each name it looked up and what it found (`None`: missing).
    pub seen: Vec<(String, Option<Value>)>,
}

/// One rule as evaluated.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleStep {
    /// Policy name.
    pub policy: String,
    /// Rule name (`rules[i]` when unnamed).
    pub rule: String,
    /// Its effect.
    pub effect: Effect,
    /// Its action glob.
    pub action: String,
    /// Its resource glob.
    pub resource: Option<String>,
    /// Its tier floor.
    pub min_tier: Option<TrustTier>,
    /// The outcome.
    pub verdict: RuleVerdict,
    /// The conditions evaluated (up to the first false one).
    pub conditions: Vec<ConditionStep>,
}

/// Receives the steps of an evaluation. Every method has an empty default.
pub trait Trace {
    /// Whether this trace records anything; `false` skips the bookkeeping entirely.
    const ON: bool = false;
    /// Whether decisions carry their human-readable `reason`; `false` leaves it empty for
    /// callers that read only the effect and the deciding policy (see [`Unexplained`]).
    const REASONS: bool = true;
    /// A new evaluation starts for this subject (the caller, then each delegator).
    fn subject(&mut self, _agent: &str, _tier: TrustTier, _with_shadow: bool) {}
    /// Whether a policy applies to the subject, and its `max_delegation_depth` verdict.
    fn policy(&mut self, _name: &str, _applies: bool, _shadow: bool, _depth_exceeded: bool) {}
    /// One rule's verdict.
    fn rule(&mut self, _step: RuleStep) {}
    /// The grant check for a liftable decision: the grant found, if any.
    fn grant(&mut self, _agent: &str, _grant: Option<&str>) {}
}

/// The trace of the request path: records nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTrace;

impl Trace for NoTrace {}

/// The trace of decisions nobody reads the reason of (each tool of a `tools/list` answer,
/// which is kept or dropped): records nothing and formats no reason. The default-deny
/// reason quotes the action and agent with `{:?}` (escaping char by char), and most tools
/// of a filtered list are default denials: formatting reasons was ~100 k of the ~276 k
/// instructions the 100 decisions of a 100-tool answer took (callgrind, bench
/// `mcp/tools_list_100`, 2026-11-30).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unexplained;

impl Trace for Unexplained {
    const REASONS: bool = false;
}

/// A [`Lookup`] that remembers what it answered, for [`ConditionStep::seen`].
pub(crate) struct Recording<'a> {
    pub(crate) inner: &'a dyn Lookup,
    pub(crate) seen: RefCell<Vec<(String, Option<Value>)>>,
}

impl Lookup for Recording<'_> {
    fn lookup(&self, name: &str) -> Option<Value> {
        let v = self.inner.lookup(name);
        let mut seen = self.seen.borrow_mut();
        if !seen.iter().any(|(n, _)| n == name) {
            seen.push((name.to_string(), v.clone()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_policy_yaml;
    use crate::policy::{PolicySet, Subject};
    use std::collections::HashMap;

    struct Ctx(HashMap<&'static str, Value>);
    impl Lookup for Ctx {
        fn lookup(&self, name: &str) -> Option<Value> {
            self.0.get(name).cloned()
        }
    }

    #[derive(Default)]
    struct Steps(Vec<RuleStep>, Vec<(String, bool)>);
    impl Trace for Steps {
        const ON: bool = true;
        fn policy(&mut self, name: &str, applies: bool, _shadow: bool, _depth: bool) {
            self.1.push((name.to_string(), applies));
        }
        fn rule(&mut self, step: RuleStep) {
            self.0.push(step);
        }
    }

    /// The traced evaluation decides exactly as the plain one and says why for each rule.
    #[test]
    fn traced_evaluation_decides_the_same_and_reports_every_rule() {
        let set = PolicySet::compile(
            &parse_policy_yaml(
                r#"
name: p
applies_to: { trust_tiers: [verified] }
rules:
  - { name: hours, action: "write:*", effect: allow, conditions: ["time.hour >= 9"] }
  - { name: other, action: "read:*", effect: allow }
  - { name: floor, action: "write:email", effect: allow, min_trust_tier: trusted }
---
name: q
applies_to: { agents: [bot] }
rules:
  - { action: "write:*", effect: deny, reason: r }
"#,
            )
            .unwrap(),
            "policies",
        )
        .unwrap();
        let s = Subject {
            agent_id: "a",
            tier: TrustTier::Verified,
        };
        let ctx = Ctx(HashMap::from([("time.hour", Value::Num(7.0))]));
        let mut steps = Steps::default();
        let plain = set.evaluate(&s, "write:email", None, 0, &ctx);
        let traced = set.evaluate_traced(&s, "write:email", None, 0, &ctx, &mut steps);
        assert_eq!(plain, traced);
        assert_eq!(
            steps.1,
            vec![("p".to_string(), true), ("q".to_string(), false)]
        );
        let verdicts: HashMap<String, RuleVerdict> = steps
            .0
            .iter()
            .map(|r| (format!("{}/{}", r.policy, r.rule), r.verdict.clone()))
            .collect();
        assert_eq!(verdicts["p/hours"], RuleVerdict::ConditionFalse(0));
        assert_eq!(verdicts["p/other"], RuleVerdict::ActionMismatch);
        assert_eq!(verdicts["p/floor"], RuleVerdict::TierBelow);
        assert_eq!(verdicts["q/rules[0]"], RuleVerdict::PolicyNotApplicable);
        let hours = steps.0.iter().find(|r| r.rule == "hours").unwrap();
        assert_eq!(
            hours.conditions[0].seen,
            vec![("time.hour".to_string(), Some(Value::Num(7.0)))]
        );
        assert_eq!(set.referenced_names(), ["time.hour"]);
    }
}
