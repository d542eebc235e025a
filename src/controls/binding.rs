//! Workload binding: a token must be presented by the workload it was issued to, the
//! SPIFFE id (URI SAN) of the mTLS peer certificate, which the host reads from Envoy's
//! connection properties into `Request::peer_uri_sans`.

use crate::config::{ConfigError, WorkloadBindingConfig};
use crate::identity::{Identity, IdentityError};
use serde_json::Value;
use std::collections::BTreeMap;

/// Compiled `identity.workload_binding`.
#[derive(Debug, Clone)]
pub struct WorkloadBinding {
    claim: Option<String>,
    agents: BTreeMap<String, String>,
    required: bool,
}

const PREFIX: &str = "spiffe://";

impl WorkloadBinding {
    /// Validates the section.
    pub fn compile(cfg: &WorkloadBindingConfig) -> Result<WorkloadBinding, ConfigError> {
        const F: &str = "identity.workload_binding";
        if let Some(c) = &cfg.claim {
            if c.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("{F}.claim"),
                    "must name a claim",
                ));
            }
        }
        for (agent, id) in &cfg.agents {
            if agent.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{F}.agents"),
                    "agent ids must not be empty",
                ));
            }
            if !id.starts_with(PREFIX) || id.len() == PREFIX.len() {
                return Err(ConfigError::invalid(
                    format!("{F}.agents.{agent}"),
                    format!("{id:?} is not a SPIFFE id (spiffe://trust-domain/path)"),
                ));
            }
        }
        if cfg.claim.is_none() && cfg.agents.is_empty() && !cfg.required {
            return Err(ConfigError::invalid(
                F,
                "binds nothing: set claim, agents, or required: true",
            ));
        }
        Ok(WorkloadBinding {
            claim: cfg.claim.clone(),
            agents: cfg.agents.clone(),
            required: cfg.required,
        })
    }

    /// The SPIFFE ids allowed to present this token.
    fn expected(&self, identity: &Identity) -> Result<Vec<String>, IdentityError> {
        let mut out = Vec::new();
        if let Some(name) = &self.claim {
            let bad = || IdentityError::ClaimType {
                claim: name.clone(),
                expected: "a SPIFFE id string or a list of them",
            };
            match identity.claims.get(name) {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => out.push(s.clone()),
                Some(Value::Array(items)) => {
                    for v in items {
                        out.push(v.as_str().ok_or_else(bad)?.to_string());
                    }
                }
                Some(_) => return Err(bad()),
            }
        }
        if let Some(id) = self.agents.get(&identity.agent_id) {
            out.push(id.clone());
        }
        Ok(out)
    }

    /// Refuses a token presented by another workload (or without mTLS) when it is bound,
    /// and an unbound token when binding is required.
    pub fn check(
        &self,
        identity: &Identity,
        peer_uri_sans: &[String],
    ) -> Result<(), IdentityError> {
        let expected = self.expected(identity)?;
        let ok = if expected.is_empty() {
            !self.required
        } else {
            peer_uri_sans.iter().any(|p| expected.contains(p))
        };
        if ok {
            Ok(())
        } else {
            Err(IdentityError::WrongWorkload {
                expected,
                presented: peer_uri_sans.to_vec(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Hop;
    use crate::tier::TrustTier;
    use serde_json::json;

    const A: &str = "spiffe://cluster.local/ns/agents/sa/agent-a";
    const B: &str = "spiffe://cluster.local/ns/agents/sa/agent-b";

    fn id(agent: &str, claims: Value) -> Identity {
        Identity {
            agent_id: agent.into(),
            tier: TrustTier::Verified,
            issuer: "i".into(),
            chain: vec![Hop {
                agent_id: agent.into(),
                tier: TrustTier::Verified,
            }],
            claims,
            expires_at: u64::MAX,
        }
    }

    fn binding(claim: Option<&str>, agents: &[(&str, &str)], required: bool) -> WorkloadBinding {
        WorkloadBinding::compile(&WorkloadBindingConfig {
            claim: claim.map(str::to_string),
            agents: agents
                .iter()
                .map(|(a, s)| (a.to_string(), s.to_string()))
                .collect(),
            required,
        })
        .unwrap()
    }

    #[test]
    fn agents_map_binds_the_caller_to_its_workload() {
        let b = binding(None, &[("agent-a", A)], false);
        let me = id("agent-a", json!({}));
        assert!(b.check(&me, &[A.into()]).is_ok());
        let e = b.check(&me, &[B.into()]).unwrap_err();
        assert_eq!(e.code(), "wrong_workload");
        assert!(e.to_string().contains("presented by spiffe://"), "{e}");
        // plain text: no peer identity
        let e = b.check(&me, &[]).unwrap_err();
        assert!(e.to_string().contains("no mTLS peer"), "{e}");
        // an agent not in the map is not bound when binding is optional
        assert!(b.check(&id("agent-z", json!({})), &[]).is_ok());
    }

    #[test]
    fn the_token_claim_binds_too_and_required_refuses_unbound_tokens() {
        let b = binding(Some("workload"), &[], true);
        assert!(b
            .check(&id("x", json!({"workload": A})), &[B.into(), A.into()])
            .is_ok());
        assert!(b
            .check(&id("x", json!({"workload": [B, A]})), &[A.into()])
            .is_ok());
        assert!(b
            .check(&id("x", json!({"workload": A})), &[B.into()])
            .is_err());
        let e = b.check(&id("x", json!({})), &[A.into()]).unwrap_err();
        assert!(e.to_string().contains("required"), "{e}");
        // a malformed claim is a 401 naming the claim, not a panic
        let e = b
            .check(&id("x", json!({"workload": 7})), &[A.into()])
            .unwrap_err();
        assert_eq!(e.code(), "claim_type");
        let e = b
            .check(&id("x", json!({"workload": [A, 7]})), &[A.into()])
            .unwrap_err();
        assert_eq!(e.code(), "claim_type");
    }

    #[test]
    fn bad_binding_settings_name_the_field() {
        let bad = |claim: Option<&str>, agents: &[(&str, &str)], required| {
            WorkloadBinding::compile(&WorkloadBindingConfig {
                claim: claim.map(str::to_string),
                agents: agents
                    .iter()
                    .map(|(a, s)| (a.to_string(), s.to_string()))
                    .collect(),
                required,
            })
            .unwrap_err()
            .field()
            .to_string()
        };
        assert_eq!(bad(None, &[], false), "identity.workload_binding");
        assert_eq!(bad(Some(""), &[], true), "identity.workload_binding.claim");
        assert_eq!(
            bad(None, &[("agent-a", "https://x")], false),
            "identity.workload_binding.agents.agent-a"
        );
        assert_eq!(
            bad(None, &[("agent-a", "spiffe://")], false),
            "identity.workload_binding.agents.agent-a"
        );
    }
}
