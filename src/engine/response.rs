//! What MeshGuard answers (README, "Responses"): 401 for identity failures, 403 for denials, and
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

/// Whether a request header is one MeshGuard owns and so removes from what the client
/// sent: `x-meshguard-*` in any case, and also spelled with underscores, because CGI-style
/// upstreams (WSGI, PHP, nginx with `underscores_in_headers`) read `x_meshguard_agent` as
/// the same variable as `x-meshguard-agent`, and a leftover copy could shadow ours.
pub fn is_owned_header(name: &str) -> bool {
    name.get(..HEADER_PREFIX.len()).is_some_and(|p| {
        p.bytes()
            .zip(HEADER_PREFIX.bytes())
            .all(|(a, b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    })
}

/// A response MeshGuard sends instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// 400, 401, 403 or 429.
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
    /// The same code under the name the public contract uses (`error_code: revoked`);
    /// `errorCode` stays for clients written against earlier releases.
    #[serde(rename = "error_code")]
    error_code_contract: &'a str,
    reason: &'a str,
    mode: &'a str,
    trace_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BadRequestBody<'a> {
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
    #[serde(skip_serializing_if = "Option::is_none")]
    approval_id: Option<&'a str>,
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

/// A local JSON answer (JSON-RPC errors, decision-API results) with this status.
pub(crate) fn json(status: u16, body: String) -> LocalResponse {
    LocalResponse {
        status,
        headers: json_headers(),
        body,
    }
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
        error_code_contract: code,
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

/// The 400 for a request MeshGuard cannot decide on unambiguously (a path with no single
/// meaning, a duplicated action header); `code` is the stable `errorCode`.
pub fn bad_request(code: &str, reason: &str, mode: Mode, trace_id: &str) -> LocalResponse {
    let body = serde_json::to_string(&BadRequestBody {
        decision: "deny",
        error: "invalid_request",
        error_code: code,
        reason,
        mode: mode.as_str(),
        trace_id,
    })
    .unwrap_or_default();
    LocalResponse {
        status: 400,
        headers: json_headers(),
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
    /// The pending approval of a `require_approval` decision (`approvalId`).
    pub approval_id: Option<&'a str>,
}

/// The 403 for a policy denial.
pub fn forbidden(d: &Denial<'_>) -> LocalResponse {
    LocalResponse {
        status: 403,
        headers: json_headers(),
        body: deny_body(d),
    }
}

/// The 429 for a rate-limited call: the 403's body, plus `Retry-After` in seconds.
pub fn too_many_requests(d: &Denial<'_>, retry_after_secs: u64) -> LocalResponse {
    let mut headers = json_headers();
    headers.push(("retry-after".into(), retry_after_secs.to_string()));
    LocalResponse {
        status: 429,
        headers,
        body: deny_body(d),
    }
}

fn deny_body(d: &Denial<'_>) -> String {
    serde_json::to_string(&DenyBody {
        decision: d.decision,
        policy: d.policy,
        rule: d.rule,
        reason: d.reason,
        mode: Mode::Enforce.as_str(),
        bundle_version: d.bundle_version,
        trace_id: d.trace_id,
        agent: d.agent,
        action: d.action,
        approval_id: d.approval_id,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_headers_in_every_spelling() {
        for ours in [
            "x-meshguard-agent",
            "X-MeshGuard-Trust-Tier",
            "x_meshguard_agent",
            "x-meshguard_decision",
            "X_MESHGUARD_ACTION",
            "x-meshguard-",
        ] {
            assert!(is_owned_header(ours), "{ours}");
        }
        for theirs in [
            "x-meshguard",
            "x-mesh-guard-agent",
            "authorization",
            "x-meshguardagent",
            "é",
        ] {
            assert!(!is_owned_header(theirs), "{theirs}");
        }
    }

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
        assert_eq!(
            (&body["error_code"], &body["errorCode"]),
            (&"malformed".into(), &"malformed".into())
        );
        assert_eq!(r.status, 401);
    }

    #[test]
    fn rate_limited_is_429_with_retry_after_and_the_403_body() {
        let d = Denial {
            decision: "rate_limited",
            policy: None,
            rule: Some("email"),
            reason: "rate limit email exceeded",
            bundle_version: "v",
            trace_id: "",
            agent: "agent-a",
            action: "write:email",
            approval_id: None,
        };
        let r = too_many_requests(&d, 7);
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("retry-after".into(), "7".into())));
        assert_eq!(r.body, forbidden(&d).body);
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["rule"], "email");
        assert!(body.get("approvalId").is_none());
        let with_id = forbidden(&Denial {
            approval_id: Some("apr_x"),
            ..d
        });
        let body: serde_json::Value = serde_json::from_str(&with_id.body).unwrap();
        assert_eq!(body["approvalId"], "apr_x");
    }

    #[test]
    fn approval_ids_are_stable_and_separated() {
        let a = crate::controls::approval_id("agent-a", "write:refund", Some("payments"));
        assert!(a.starts_with("apr_") && a.len() == 36, "{a}");
        assert!(a[4..].chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(
            a,
            crate::controls::approval_id("agent-a", "write:refund", Some("payments"))
        );
        assert_ne!(
            a,
            crate::controls::approval_id("agent-b", "write:refund", Some("payments"))
        );
        assert_ne!(
            crate::controls::approval_id("ab", "c", None),
            crate::controls::approval_id("a", "bc", None)
        );
    }
}
