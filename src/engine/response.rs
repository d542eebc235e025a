//! What MeshGuard answers (DESIGN §5): 401 for identity failures, 403 for denials, and
//! the headers added to forwarded requests.

use crate::config::Mode;
use serde::Serialize;

/// Prefix of every header MeshGuard owns; client-supplied copies are removed.
pub const HEADER_PREFIX: &str = "x-meshguard-";
/// The calling agent, for the upstream.
pub const AGENT_HEADER: &str = "x-meshguard-agent";
/// The agent's effective trust tier, for the upstream.
pub const TIER_HEADER: &str = "x-meshguard-trust-tier";
/// `allow`, or `would_deny` in audit mode.
pub const DECISION_HEADER: &str = "x-meshguard-decision";
/// The action decided on, for the upstream.
pub const ACTION_HEADER: &str = "x-meshguard-action";

/// The shadow policy (`mode: audit`) that would have denied a forwarded request.
pub const SHADOW_POLICY_HEADER: &str = "x-meshguard-shadow-policy";

/// The stable approval id of a require_approval decision: `apr_` and the first 16 hex
/// digits of SHA-256 over agent, action and resource (NUL-separated), so a retry of the
/// same call names the same approval.
pub fn approval_id(agent: &str, action: &str, resource: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [agent, action, resource] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    format!(
        "apr_{}",
        crate::hex::hex(digest.get(..8).unwrap_or_default())
    )
}

/// A response MeshGuard sends instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// 401 or 403.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdentityBody<'a> {
    decision: &'a str,
    error: &'a str,
    error_code: &'a str,
    reason: &'a str,
    mode: &'a str,
    trace_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DenyBody<'a> {
    decision: &'a str,
    policy: Option<&'a str>,
    rule: Option<&'a str>,
    reason: &'a str,
    mode: &'a str,
    bundle_version: &'a str,
    trace_id: &'a str,
    agent: &'a str,
    action: &'a str,
}

/// RFC 6750 allows only printable ASCII without `"` and `\` in `error_description`.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '\'',
        })
        .collect()
}

fn json_headers() -> Vec<(String, String)> {
    vec![
        ("content-type".into(), "application/json".into()),
        ("cache-control".into(), "no-store".into()),
    ]
}

/// The 401 for an identity failure.
pub fn unauthorized(code: &str, reason: &str, mode: Mode, trace_id: &str) -> LocalResponse {
    let mut headers = json_headers();
    headers.push((
        "www-authenticate".into(),
        format!(
            "Bearer realm=\"meshguard\", error=\"invalid_token\", error_description=\"{}\"",
            header_safe(reason)
        ),
    ));
    let body = serde_json::to_string(&IdentityBody {
        decision: "deny",
        error: "invalid_token",
        error_code: code,
        reason,
        mode: mode.as_str(),
        trace_id,
    })
    .unwrap_or_default();
    LocalResponse {
        status: 401,
        headers,
        body,
    }
}

/// What a 403 says about the decision.
#[derive(Debug, Clone, Copy)]
pub struct Denial<'a> {
    /// `deny` or `require_approval`.
    pub decision: &'a str,
    /// Deciding policy.
    pub policy: Option<&'a str>,
    /// Deciding rule.
    pub rule: Option<&'a str>,
    /// Why.
    pub reason: &'a str,
    /// Policy version in force.
    pub bundle_version: &'a str,
    /// W3C trace id (hex) or empty.
    pub trace_id: &'a str,
    /// The calling agent.
    pub agent: &'a str,
    /// The action.
    pub action: &'a str,
}

/// The 403 for a policy denial.
pub fn forbidden(d: &Denial<'_>) -> LocalResponse {
    let body = serde_json::to_string(&DenyBody {
        decision: d.decision,
        policy: d.policy,
        rule: d.rule,
        reason: d.reason,
        mode: Mode::Enforce.as_str(),
        bundle_version: d.bundle_version,
        trace_id: d.trace_id,
        agent: d.agent,
        action: d.action,
    })
    .unwrap_or_default();
    LocalResponse {
        status: 403,
        headers: json_headers(),
        body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthorized_header_is_rfc6750_safe() {
        let r = unauthorized("malformed", "bad \"quote\" \\ é", Mode::Enforce, "");
        let (_, v) = r
            .headers
            .iter()
            .find(|(k, _)| k == "www-authenticate")
            .unwrap();
        assert!(v.starts_with("Bearer "));
        assert!(v.contains("error=\"invalid_token\""));
        assert!(v.contains("bad 'quote' ' '"), "{v}");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["reason"], "bad \"quote\" \\ é");
        assert_eq!(r.status, 401);
    }

    #[test]
    fn approval_ids_are_stable_and_separated() {
        let a = approval_id("agent-a", "write:refund", "payments");
        assert!(a.starts_with("apr_") && a.len() == 20, "{a}");
        assert!(a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a, approval_id("agent-a", "write:refund", "payments"));
        assert_ne!(a, approval_id("agent-b", "write:refund", "payments"));
        assert_ne!(approval_id("ab", "c", ""), approval_id("a", "bc", ""));
    }
}
