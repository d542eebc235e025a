//! One fetch of a document: what the host is asked to send, what it hands back, and how
//! that answer is read (including Envoy's own replies when the source cannot be reached).

use std::fmt;

/// A fetched document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DocId {
    /// The signed policy bundle (`bundle:`).
    Bundle,
    /// An issuer's remote JWKS (`identity.issuers[].jwks_cluster`), by issuer.
    Jwks(String),
    /// The signed grants document (`grants.cluster` + `grants.path`).
    Grants,
}

impl DocId {
    /// The source name: shared-data keys (`meshguard/<source>/...`) and log messages.
    pub fn source(&self) -> String {
        match self {
            DocId::Bundle => "bundle".into(),
            DocId::Jwks(issuer) => format!("jwks/{issuer}"),
            DocId::Grants => "grants".into(),
        }
    }

    /// The kind of document: the stats prefix (`meshguard.<kind>.fetches`).
    pub fn kind(&self) -> &'static str {
        match self {
            DocId::Bundle => "bundle",
            DocId::Jwks(_) => "jwks",
            DocId::Grants => "grants",
        }
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source())
    }
}

/// A fetch to start now: an HTTP GET through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchRequest {
    /// What is fetched; hand it back with the answer.
    pub doc: DocId,
    /// Envoy cluster.
    pub cluster: String,
    /// Request path.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// `If-None-Match`, when a document is held and its ETag known.
    pub etag: Option<String>,
    /// Call timeout.
    pub timeout_ms: u64,
}

impl FetchRequest {
    /// The request headers, pseudo-headers first.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = vec![
            (":method", "GET"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            ("accept", "application/json"),
        ];
        if let Some(e) = &self.etag {
            headers.push(("if-none-match", e.as_str()));
        }
        headers
    }
}

/// An HTTP call's answer as the host copied it out of Envoy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Response headers with `:status` (none when the call failed without an answer).
    pub headers: Vec<(String, String)>,
    /// The body's full size.
    pub body_size: usize,
    /// The body, or its first [`Sources::read_limit`](super::Sources::read_limit) bytes.
    pub body: Option<Vec<u8>>,
}

impl Reply {
    /// A header's value (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `:status`, if the call got an answer.
    pub fn status(&self) -> Option<u16> {
        self.header(":status").and_then(|s| s.trim().parse().ok())
    }
}

/// Why a fetch brought no document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The call could not be started (typically: no such cluster).
    NotStarted {
        /// The cluster asked for.
        cluster: String,
        /// What the host said.
        detail: String,
    },
    /// No answer at all: connection refused or reset, timeout.
    NoResponse,
    /// Envoy answered the call itself (503 `upstream connect error`, `no healthy
    /// upstream`, 504 `upstream request timeout`): the source was not reached.
    LocalReply {
        /// Envoy's status.
        status: u16,
    },
    /// The source answered with an error status.
    Status(u16),
}

impl Failure {
    /// Whether the source itself answered (health's `gatewayReachable`).
    pub fn reachable(&self) -> bool {
        matches!(self, Failure::Status(_))
    }

    /// For logs and the status endpoint's `lastError`.
    pub fn reason(&self) -> String {
        match self {
            Failure::NotStarted { cluster, detail } => format!(
                "could not start the call to cluster {cluster:?} ({detail}); is the cluster defined?"
            ),
            Failure::NoResponse => "no response (connection failed or timed out)".into(),
            Failure::LocalReply { status } => {
                format!("no response (connection failed or timed out: Envoy answered {status})")
            }
            Failure::Status(s) => format!("HTTP status {s}"),
        }
    }
}

/// What an answer means for the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetched {
    /// 304: what we hold is current.
    NotModified,
    /// 200 with a body.
    Body {
        /// The document.
        body: Vec<u8>,
        /// Its ETag, if any.
        etag: Option<String>,
    },
    /// 200 with a body over the cap (not read).
    TooLarge {
        /// Its size.
        size: usize,
        /// The cap.
        max: usize,
    },
    /// No document.
    Failed(Failure),
}

/// Bodies Envoy writes when it answers a call itself because the upstream was not reached.
const LOCAL_REPLY_BODIES: [&[u8]; 3] = [
    b"upstream connect error",
    b"no healthy upstream",
    b"upstream request timeout",
];

/// Whether a 503/504 is Envoy's own reply rather than the source's: Envoy adds
/// `x-envoy-upstream-service-time` to what an upstream answered, never to its local
/// replies, whose bodies it writes itself.
fn is_local_reply(reply: &Reply) -> bool {
    matches!(reply.status(), Some(503 | 504))
        && reply.header("x-envoy-upstream-service-time").is_none()
        && reply
            .body
            .as_deref()
            .is_some_and(|b| LOCAL_REPLY_BODIES.iter().any(|p| b.starts_with(p)))
}

/// Reads an answer; `max` caps the body of a 200.
pub fn classify(reply: Reply, max: usize) -> Fetched {
    let status = reply.status();
    if status == Some(200) && reply.body_size > max {
        return Fetched::TooLarge {
            size: reply.body_size,
            max,
        };
    }
    if is_local_reply(&reply) {
        return Fetched::Failed(Failure::LocalReply {
            status: status.unwrap_or(503),
        });
    }
    match status {
        Some(304) => Fetched::NotModified,
        Some(200) => Fetched::Body {
            etag: reply.header("etag").map(str::to_string),
            body: reply.body.unwrap_or_default(),
        },
        Some(s) => Fetched::Failed(Failure::Status(s)),
        None => Fetched::Failed(Failure::NoResponse),
    }
}
