//! Who sent an Export: the identity of the authenticated ingest peer, and whether it may
//! speak for the workload its events claim.
//!
//! The identity comes from the client certificate of the TLS ingest (`--tls-client-ca`):
//! its first URI SAN (a SPIFFE id, as Istio and SPIRE issue), else its first DNS SAN.
//! Behind an Istio sidecar the sidecar terminates mTLS, so the collector reads the
//! `x-forwarded-client-cert` header the sidecar sets instead (`--peer-from-xfcc`; only
//! safe when the AuthorizationPolicy lets nothing reach the collector but the sidecar).
//!
//! A SPIFFE id `spiffe://<trust domain>/ns/<namespace>/sa/<account>` may speak for
//! workloads of its namespace: events whose `k8s.namespace.name` resource attribute names
//! another namespace are flagged by `audit verify`, as is a stream sent by more than one
//! peer. Other identities are recorded but cannot be compared with a claim.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The identity in a DER client certificate: first URI SAN, else first DNS SAN.
pub fn from_certificate(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok().flatten()?;
    let names = &san.value.general_names;
    let uri = names.iter().find_map(|n| match n {
        GeneralName::URI(u) => Some((*u).to_string()),
        _ => None,
    });
    uri.or_else(|| {
        names.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_string()),
            _ => None,
        })
    })
}

/// The client's URI from an `x-forwarded-client-cert` value: Envoy appends one element
/// per hop (APPEND_FORWARD, Istio's sidecar default), so the last element is the peer the
/// sidecar authenticated; anything a client put in the header itself comes before it.
pub fn from_xfcc(header: &str) -> Option<String> {
    let last = split_unquoted(header, ',').pop()?;
    split_unquoted(last, ';').into_iter().find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("uri")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    })
}

/// Splits at `sep` outside double quotes (a quoted Subject may hold commas).
fn split_unquoted(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(s.get(start..i).unwrap_or(""));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(s.get(start..).unwrap_or(""));
    parts
}

/// The namespace of a SPIFFE id in Istio's shape, if it is one.
pub fn spiffe_namespace(peer: &str) -> Option<&str> {
    let path = peer.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (parts.next(), parts.next()) {
        (Some("ns"), Some(ns)) if !ns.is_empty() => Some(ns),
        _ => None,
    }
}

/// Why `peer` may not send events claiming `namespace` (empty: no claim), if it may not.
pub fn mismatch(peer: &str, namespace: &str) -> Option<String> {
    let ns = spiffe_namespace(peer)?;
    (!namespace.is_empty() && ns != namespace).then(|| {
        format!(
            "its events claim namespace {namespace:?} but the peer's identity is in \
             namespace {ns:?}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfcc_and_spiffe_parsing() {
        let h = "By=spiffe://cluster.local/ns/audit/sa/collector;Hash=ab;\
                 URI=spiffe://cluster.local/ns/shop/sa/cart";
        assert_eq!(
            from_xfcc(h).as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/cart")
        );
        assert_eq!(
            from_xfcc("URI=spiffe://a/ns/x/sa/y,Hash=1;URI=\"spiffe://a/ns/z/sa/w\"").as_deref(),
            Some("spiffe://a/ns/z/sa/w")
        );
        assert_eq!(from_xfcc("Hash=ab"), None);
        assert_eq!(
            from_xfcc("URI=spiffe://fake/ns/a/sa/b,Subject=\"CN=x,O=y\";URI=spiffe://td/ns/c/sa/d")
                .as_deref(),
            Some("spiffe://td/ns/c/sa/d")
        );
        assert_eq!(
            spiffe_namespace("spiffe://cluster.local/ns/shop/sa/cart"),
            Some("shop")
        );
        assert_eq!(spiffe_namespace("spiffe://cluster.local/other"), None);
        assert_eq!(mismatch("spiffe://td/ns/shop/sa/cart", "shop"), None);
        assert_eq!(mismatch("spiffe://td/ns/shop/sa/cart", ""), None);
        assert!(mismatch("spiffe://td/ns/shop/sa/cart", "bank")
            .unwrap()
            .contains("\"bank\""));
        assert_eq!(mismatch("collector.example", "bank"), None);
        assert_eq!(from_certificate(b"not der"), None);
    }
}
