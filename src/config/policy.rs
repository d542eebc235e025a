//! The policy language as written (policies inline, in `policy_yaml`, or in bundles);
//! compiled and evaluated by `crate::policy`.

use super::error::ConfigError;
use super::lenient::de_lenient_opt;
use crate::tier::TrustTier;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A rule's effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Permit the action.
    Allow,
    /// Deny now; a human must approve (reported as needing approval). `human_approval`
    /// (agent-mesh's name for it) is accepted as an alias.
    #[serde(alias = "human_approval")]
    RequireApproval,
    /// Deny.
    Deny,
}

impl Effect {
    /// The name used in responses and audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
            Effect::RequireApproval => "require_approval",
        }
    }
}

/// A policy as written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Unique name, reported in decisions.
    pub name: String,
    /// Author's version (number or string), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<serde_json::Value>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Who the policy governs; omitted means every agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_to: Option<AppliesTo>,
    /// Deepest delegation chain this policy accepts; deeper chains are denied by it.
    #[serde(
        default,
        deserialize_with = "de_lenient_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_delegation_depth: Option<usize>,
    /// `enforce` (default) or `audit`: a policy in audit mode (shadow) records its
    /// denials as `would_deny` while the other policies enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<super::Mode>,
    /// The rules.
    pub rules: Vec<Rule>,
}

/// `applies_to`: a policy applies to an agent whose tier is listed **or** whose id matches
/// one of the `agents` globs. An empty selector applies to every agent.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AppliesTo {
    /// Tiers governed.
    #[serde(default)]
    pub trust_tiers: Vec<TrustTier>,
    /// Agent ids (globs) governed.
    #[serde(default)]
    pub agents: Vec<String>,
}

/// One rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Reported in decisions; unnamed rules are reported as `rules[i]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Action glob.
    pub action: String,
    /// Resource glob; when set, requests without a resource do not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// What a match means.
    pub effect: Effect,
    /// Shown to the caller on deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// All must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<String>,
    /// The agent's effective tier must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_trust_tier: Option<TrustTier>,
    /// `N/s`, `N/m` or `N/h`: when this rule allows a request, the calling agent may be
    /// allowed by it at most N times per period (counted across all worker VMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

/// One YAML document of `policy_yaml`: a single policy or a list of them.
struct PolicyDoc(Vec<Policy>);

impl<'de> Deserialize<'de> for PolicyDoc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PolicyDoc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a policy (mapping) or a list of policies")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<PolicyDoc, A::Error> {
                Policy::deserialize(de::value::MapAccessDeserializer::new(m))
                    .map(|p| PolicyDoc(vec![p]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, s: A) -> Result<PolicyDoc, A::Error> {
                Vec::<Policy>::deserialize(de::value::SeqAccessDeserializer::new(s)).map(PolicyDoc)
            }
            fn visit_unit<E: de::Error>(self) -> Result<PolicyDoc, E> {
                Ok(PolicyDoc(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `policy_yaml`: one or more YAML documents. Errors say which document and line.
pub fn parse_policy_yaml(text: &str) -> Result<Vec<Policy>, ConfigError> {
    let docs: Vec<PolicyDoc> =
        super::text::each_document(text).map_err(|e| e.within("policy_yaml"))?;
    Ok(docs.into_iter().flat_map(|PolicyDoc(ps)| ps).collect())
}
