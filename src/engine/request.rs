//! The request as the engine sees it: plain data copied out of Envoy (or built by the CLI).

/// One HTTP request's governance-relevant parts. Header names are lowercase, as Envoy
/// delivers them over HTTP/2 and normalises them over HTTP/1.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// `:method`, e.g. `POST`.
    pub method: String,
    /// `:path` including any query string, as received.
    pub path: String,
    /// `:authority` (the Host).
    pub authority: String,
    /// All request headers, lowercase names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// URI SANs (SPIFFE ids) of the downstream mTLS peer certificate, from Envoy's
    /// `connection.uri_san_peer_certificate`; empty over plain text or without a
    /// certificate. Workload binding compares tokens against it.
    pub peer_uri_sans: Vec<String>,
}

impl Request {
    /// The first value of a header (names compare case-insensitively, so callers may pass
    /// configured names as users wrote them).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without its query string: what route globs and `request.path` see.
    pub fn path_only(&self) -> &str {
        match self.path.find(['?', '#']) {
            Some(i) => self.path.get(..i).unwrap_or(&self.path),
            None => &self.path,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lookup_and_path() {
        let r = Request {
            method: "GET".into(),
            path: "/v1/orders?id=7".into(),
            authority: "svc".into(),
            headers: vec![("x-a".into(), "1".into()), ("x-a".into(), "2".into())],
            peer_uri_sans: Vec::new(),
        };
        assert_eq!(r.header("X-A"), Some("1"));
        assert_eq!(r.header("x-b"), None);
        assert_eq!(r.path_only(), "/v1/orders");
    }
}
