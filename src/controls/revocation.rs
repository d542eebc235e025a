//! Revoked tokens and agents: checked on every request after the token cache, so a
//! revocation takes effect even for a token whose signature was verified earlier.

use crate::config::{ConfigError, RevocationEntry, RevokedConfig};
use crate::identity::{Identity, IdentityError, RevokedSubject};
use serde_json::Value;
use std::collections::HashSet;

/// Compiled revocations (configuration plus bundle).
#[derive(Debug, Clone, Default)]
pub struct Revocations {
    jti: HashSet<String>,
    agents: HashSet<String>,
}

fn non_empty(v: &str, field: String) -> Result<String, ConfigError> {
    if v.trim().is_empty() {
        Err(ConfigError::invalid(field, "must not be empty"))
    } else {
        Ok(v.to_string())
    }
}

impl Revocations {
    /// Compiles `revoked:` and a bundle's `revocations` (each `{jti}` or `{agent}`).
    pub fn compile(cfg: &RevokedConfig, bundle: &[Value]) -> Result<Revocations, ConfigError> {
        let mut r = Revocations::default();
        for (i, j) in cfg.jti.iter().enumerate() {
            r.jti.insert(non_empty(j, format!("revoked.jti[{i}]"))?);
        }
        for (i, a) in cfg.agents.iter().enumerate() {
            r.agents
                .insert(non_empty(a, format!("revoked.agents[{i}]"))?);
        }
        for (i, v) in bundle.iter().enumerate() {
            let field = format!("bundle.revocations[{i}]");
            let e: RevocationEntry = crate::config::from_value(v).map_err(|e| {
                let why = match e {
                    ConfigError::Parse { message, .. } => message,
                    other => other.to_string(),
                };
                ConfigError::invalid(
                    field.clone(),
                    format!("{why}; expected {{\"jti\": \"...\"}} or {{\"agent\": \"...\"}}"),
                )
            })?;
            match (&e.jti, &e.agent) {
                (Some(j), None) => r.jti.insert(non_empty(j, format!("{field}.jti"))?),
                (None, Some(a)) => r.agents.insert(non_empty(a, format!("{field}.agent"))?),
                _ => {
                    return Err(ConfigError::invalid(
                        field,
                        "give exactly one of jti or agent",
                    ))
                }
            };
        }
        Ok(r)
    }

    /// Number of revoked tokens and agents.
    pub fn len(&self) -> usize {
        self.jti.len() + self.agents.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses a revoked token or a chain containing a revoked agent.
    pub fn check(&self, identity: &Identity) -> Result<(), IdentityError> {
        if self.is_empty() {
            return Ok(());
        }
        if let Some(jti) = identity.claims.get("jti").and_then(Value::as_str) {
            if self.jti.contains(jti) {
                return Err(IdentityError::Revoked(RevokedSubject::Token(
                    jti.to_string(),
                )));
            }
        }
        match identity
            .chain
            .iter()
            .find(|h| self.agents.contains(&h.agent_id))
        {
            Some(h) => Err(IdentityError::Revoked(RevokedSubject::Agent(
                h.agent_id.clone(),
            ))),
            None if self.agents.contains(&identity.agent_id) => Err(IdentityError::Revoked(
                RevokedSubject::Agent(identity.agent_id.clone()),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Hop;
    use crate::tier::TrustTier;
    use serde_json::json;

    fn id(chain: &[&str], jti: Option<&str>) -> Identity {
        Identity {
            agent_id: chain.last().unwrap().to_string(),
            tier: TrustTier::Verified,
            issuer: "i".into(),
            chain: chain
                .iter()
                .map(|a| Hop {
                    agent_id: a.to_string(),
                    tier: TrustTier::Verified,
                })
                .collect(),
            claims: jti.map_or(json!({}), |j| json!({"jti": j})),
            expires_at: u64::MAX,
        }
    }

    #[test]
    fn tokens_and_agents_anywhere_in_the_chain_are_revoked() {
        let cfg = RevokedConfig {
            jti: vec!["t-1".into()],
            agents: vec!["agent-x".into()],
        };
        let r = Revocations::compile(
            &cfg,
            &[
                json!({"agent": "agent-y"}),
                json!({"jti": "t-2", "reason": "leaked"}),
            ],
        )
        .unwrap();
        assert_eq!(r.len(), 4);
        assert!(r.check(&id(&["agent-a"], Some("t-3"))).is_ok());
        assert_eq!(
            r.check(&id(&["agent-a"], Some("t-1"))).unwrap_err(),
            IdentityError::Revoked(RevokedSubject::Token("t-1".into()))
        );
        assert_eq!(
            r.check(&id(&["agent-a"], Some("t-2"))).unwrap_err().code(),
            "revoked"
        );
        // mid-chain delegator
        assert_eq!(
            r.check(&id(&["agent-a", "agent-x", "agent-b"], None))
                .unwrap_err(),
            IdentityError::Revoked(RevokedSubject::Agent("agent-x".into()))
        );
        assert!(r.check(&id(&["agent-y"], None)).is_err());
        // a non-string jti is never matched (the verifier rejects it earlier anyway)
        let mut odd = id(&["agent-a"], None);
        odd.claims = json!({"jti": ["t-1"]});
        assert!(r.check(&odd).is_ok());
    }

    #[test]
    fn bad_revocation_entries_name_the_field() {
        let bad = |v: Value| {
            Revocations::compile(&RevokedConfig::default(), &[json!({"jti": "ok"}), v]).unwrap_err()
        };
        assert_eq!(bad(json!("agent-a")).field(), "bundle.revocations[1]");
        assert_eq!(
            bad(json!({"jti": "a", "agent": "b"})).field(),
            "bundle.revocations[1]"
        );
        assert_eq!(bad(json!({})).field(), "bundle.revocations[1]");
        assert_eq!(bad(json!({"jti": 7})).field(), "bundle.revocations[1]");
        assert_eq!(
            bad(json!({"agent": ""})).field(),
            "bundle.revocations[1].agent"
        );
        let e = Revocations::compile(
            &RevokedConfig {
                jti: vec![" ".into()],
                agents: vec![],
            },
            &[],
        )
        .unwrap_err();
        assert_eq!(e.field(), "revoked.jti[0]");
    }
}
