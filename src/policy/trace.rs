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
