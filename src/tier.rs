//! Trust tiers: the ordered levels of confidence MeshGuard places in an agent.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An agent's trust tier. The order is significant: `untrusted < verified < trusted < privileged`,
/// so `min_trust_tier` and the "lowest tier along a delegation chain" rule are plain comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustTier {
    /// No verified standing; the tier of a token that carries no tier claim.
    Untrusted,
    /// Identity verified by the issuer.
    Verified,
    /// Vetted for sensitive operations.
    Trusted,
    /// Administrative agents.
    Privileged,
}

impl TrustTier {
    /// Every tier, lowest first.
    pub const ALL: [TrustTier; 4] = [
        TrustTier::Untrusted,
        TrustTier::Verified,
        TrustTier::Trusted,
        TrustTier::Privileged,
    ];

    /// The tier's name as it appears in tokens, policies and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustTier::Untrusted => "untrusted",
            TrustTier::Verified => "verified",
            TrustTier::Trusted => "trusted",
            TrustTier::Privileged => "privileged",
        }
    }

    /// Parses a tier name exactly as written in tokens (lowercase); anything else is `None`
    /// so that a typo in an issuer's claim is an identity error rather than a silent downgrade.
    pub fn parse(name: &str) -> Option<TrustTier> {
        TrustTier::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

impl fmt::Display for TrustTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_are_ordered_and_round_trip() {
        assert!(TrustTier::Untrusted < TrustTier::Verified);
        assert!(TrustTier::Verified < TrustTier::Trusted);
        assert!(TrustTier::Trusted < TrustTier::Privileged);
        for t in TrustTier::ALL {
            assert_eq!(TrustTier::parse(t.as_str()), Some(t));
        }
        assert_eq!(TrustTier::parse("Verified"), None);
        assert_eq!(TrustTier::parse("admin"), None);
    }
}
