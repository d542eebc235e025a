//! Denial alerts: when one agent is denied more than `--alert-threshold` times within
//! `--alert-window`, a JSON alert is POSTed to every `--alert-webhook`. New pending
//! approvals are announced the same way (type `approval.pending`).
//!
//! Counting happens inline (a few map operations per event); delivery happens on a separate
//! task fed through a bounded queue, so a slow or dead webhook never delays ingestion. When
//! the queue is full, alerts are dropped and counted on stderr rather than blocking.

use super::approvals::PendingNotice;
use crate::timestamp::format_rfc3339_millis;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Denials kept per alert as a sample.
const SAMPLE: usize = 5;
/// Alerts waiting for delivery before new ones are dropped.
const QUEUE: usize = 256;
/// Delivery attempts per webhook.
const ATTEMPTS: u32 = 3;
/// Each attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Agents tracked before idle ones are forgotten.
const MAX_AGENTS: usize = 10_000;

/// A webhook URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookError {
    /// The URL as given.
    pub url: String,
    /// Why it is refused.
    pub reason: String,
}

impl fmt::Display for WebhookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--alert-webhook {:?}: {}", self.url, self.reason)
    }
}

impl std::error::Error for WebhookError {}

/// Parses a webhook URL. Only `http://` is supported: TLS would add a TLS stack to every
/// build; send https alerts through a local relay (see COLLECTOR.md).
pub fn parse_webhook(url: &str) -> Result<Uri, WebhookError> {
    let bad = |reason: &str| WebhookError {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(bad(
                "https is not supported by this build; point it at an http:// relay on the \
                 same host (see COLLECTOR.md, \"Alerts\")",
            ))
        }
        _ => return Err(bad("must start with http://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    Ok(uri)
}

/// One denial, as the alert's sample shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// RFC 3339.
    pub time: String,
    /// The action denied.
    pub action: String,
    /// Why.
    pub reason: String,
    /// Trace id hex.
    pub trace_id: String,
    #[serde(skip)]
    time_unix_nano: i64,
}

impl Denial {
    /// A denial at `time_unix_nano`.
    pub fn new(time_unix_nano: i64, action: String, reason: String, trace_id: String) -> Denial {
        Denial {
            time: format_rfc3339_millis(time_unix_nano),
            action,
            reason,
            trace_id,
            time_unix_nano,
        }
    }
}

/// The JSON POSTed to webhooks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    /// Always `denials`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The agent denied.
    pub agent: String,
    /// Denials within the window.
    pub count: usize,
    /// The window.
    pub window_seconds: u64,
    /// Time of the first denial counted (RFC 3339).
    pub first: String,
    /// Time of the last denial counted (RFC 3339).
    pub last: String,
    /// The latest denials (at most 5).
    pub sample: Vec<Denial>,
}

/// Anything POSTed to the webhooks; each kind carries its own `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Notice {
    /// Type `denials`.
    Denials(Alert),
    /// Type `approval.pending`.
    ApprovalPending(PendingNotice),
}

impl Notice {
    /// The agent concerned, for log lines.
    fn agent(&self) -> &str {
        match self {
            Notice::Denials(a) => &a.agent,
            Notice::ApprovalPending(p) => &p.agent,
        }
    }
}

impl From<Alert> for Notice {
    fn from(a: Alert) -> Self {
        Notice::Denials(a)
    }
}

impl From<PendingNotice> for Notice {
    fn from(p: PendingNotice) -> Self {
        Notice::ApprovalPending(p)
    }
}

#[derive(Debug, Default)]
struct AgentWindow {
    /// Denials in the window, ordered by event time.
    recent: VecDeque<Denial>,
    /// No new alert for this agent before this event time.
    quiet_until: i64,
}

/// Per-agent sliding windows over event time (not arrival time, so a backlog delivered
/// after an outage is judged by when the denials happened).
#[derive(Debug)]
pub struct DenialWindows {
    threshold: usize,
    window: Duration,
    agents: HashMap<String, AgentWindow>,
}

impl DenialWindows {
    /// Alerts when more than `threshold` denials fall within `window`.
    pub fn new(threshold: u32, window: Duration) -> DenialWindows {
        DenialWindows {
            threshold: usize::try_from(threshold).unwrap_or(usize::MAX),
            window,
            agents: HashMap::new(),
        }
    }

    fn window_nanos(&self) -> i64 {
        i64::try_from(self.window.as_nanos()).unwrap_or(i64::MAX)
    }

    /// Counts a denial; returns the alert when it takes the agent over the threshold.
    /// After an alert the agent's window starts afresh and stays quiet for one window, so
    /// there is at most one alert per agent per window.
    pub fn observe(&mut self, agent: &str, denial: Denial) -> Option<Alert> {
        let window = self.window_nanos();
        if self.agents.len() >= MAX_AGENTS && !self.agents.contains_key(agent) {
            self.forget_idle(denial.time_unix_nano);
        }
        let w = self.agents.entry(agent.to_string()).or_default();
        if denial.time_unix_nano < w.quiet_until {
            return None;
        }
        let at = w
            .recent
            .iter()
            .rposition(|d| d.time_unix_nano <= denial.time_unix_nano)
            .map_or(0, |i| i + 1);
        w.recent.insert(at, denial);
        let newest = w.recent.back().map_or(0, |d| d.time_unix_nano);
        while w
            .recent
            .front()
            .is_some_and(|d| d.time_unix_nano <= newest.saturating_sub(window))
        {
            w.recent.pop_front();
        }
        if w.recent.len() <= self.threshold {
            return None;
        }
        let recent = std::mem::take(&mut w.recent);
        w.quiet_until = newest.saturating_add(window);
        let first = recent.front().map(|d| d.time.clone()).unwrap_or_default();
        let last = recent.back().map(|d| d.time.clone()).unwrap_or_default();
        let count = recent.len();
        let sample = recent
            .into_iter()
            .rev()
            .take(SAMPLE)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Some(Alert {
            kind: "denials",
            agent: agent.to_string(),
            count,
            window_seconds: self.window.as_secs(),
            first,
            last,
            sample,
        })
    }

    /// Forgets agents with nothing in their window as of `now` (bounds memory when many
    /// agents come and go).
    fn forget_idle(&mut self, now: i64) {
        let window = self.window_nanos();
        self.agents.retain(|_, w| {
            w.quiet_until > now
                || w.recent
                    .back()
                    .is_some_and(|d| d.time_unix_nano > now.saturating_sub(window))
        });
    }
}

/// The ingestion side's handle: queues alerts without ever waiting.
#[derive(Clone)]
pub struct AlertQueue {
    tx: mpsc::Sender<Notice>,
}

impl AlertQueue {
    /// Queues an alert for delivery; if the queue is full, the alert is dropped and said so.
    pub fn send(&self, notice: impl Into<Notice>) {
        if let Err(e) = self.tx.try_send(notice.into()) {
            let agent = match &e {
                mpsc::error::TrySendError::Full(a) | mpsc::error::TrySendError::Closed(a) => {
                    a.agent().to_string()
                }
            };
            eprintln!(
                "meshguard collector: alert for agent {agent:?} dropped: delivery queue full"
            );
        }
    }
}

/// Starts the delivery task. It ends when every [`AlertQueue`] is dropped and what was
/// queued has been delivered (or has failed its attempts).
pub fn start(webhooks: Vec<Uri>, backoff: Duration) -> (AlertQueue, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Notice>(QUEUE);
    let handle = tokio::spawn(async move {
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let mut deliveries = JoinSet::new();
        while let Some(alert) = rx.recv().await {
            let body = match serde_json::to_vec(&alert) {
                Ok(b) => Bytes::from(b),
                Err(_) => continue,
            };
            for uri in &webhooks {
                let (client, uri, body) = (client.clone(), uri.clone(), body.clone());
                deliveries.spawn(deliver(client, uri, body, backoff));
            }
            // Reap finished deliveries so the set does not grow without bound.
            while deliveries.try_join_next().is_some() {}
        }
        while deliveries.join_next().await.is_some() {}
    });
    (AlertQueue { tx }, handle)
}

async fn deliver(
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    uri: Uri,
    body: Bytes,
    backoff: Duration,
) {
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS {
        let request = Request::post(uri.clone())
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("meshguard/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                eprintln!("meshguard collector: alert webhook {uri}: {e}");
                return;
            }
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return,
            Ok(Ok(resp)) => last_error = format!("HTTP {}", resp.status()),
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs()),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff * 2u32.pow(attempt - 1)).await;
        }
    }
    eprintln!(
        "meshguard collector: alert webhook {uri} failed after {ATTEMPTS} attempts: {last_error}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn denial(t: i64) -> Denial {
        Denial::new(t * S, "delete:db".into(), "no".into(), "ab".into())
    }

    #[test]
    fn alerts_once_when_the_threshold_is_exceeded_within_the_window() {
        let mut w = DenialWindows::new(3, Duration::from_secs(60));
        assert!(w.observe("a", denial(0)).is_none());
        assert!(w.observe("a", denial(10)).is_none());
        assert!(w.observe("a", denial(20)).is_none());
        let alert = w.observe("a", denial(30)).expect("4 > 3");
        assert_eq!(alert.count, 4);
        assert_eq!(alert.window_seconds, 60);
        assert_eq!(alert.first, "1970-01-01T00:00:00.000Z");
        assert_eq!(alert.last, "1970-01-01T00:00:30.000Z");
        assert_eq!(alert.sample.len(), 4);
        // Quiet for one window.
        for t in 31..40 {
            assert!(w.observe("a", denial(t)).is_none());
        }
        // Another agent is counted separately.
        assert!(w.observe("b", denial(30)).is_none());
    }

    #[test]
    fn old_denials_slide_out_and_order_does_not_matter() {
        let mut w = DenialWindows::new(2, Duration::from_secs(10));
        assert!(w.observe("a", denial(0)).is_none());
        assert!(w.observe("a", denial(5)).is_none());
        assert!(
            w.observe("a", denial(20)).is_none(),
            "0 and 5 are out of the window"
        );
        assert!(w.observe("a", denial(25)).is_none());
        let alert = w.observe("a", denial(22)).expect("20, 22, 25");
        assert_eq!(alert.count, 3);
        assert_eq!(alert.first, "1970-01-01T00:00:20.000Z");
        assert_eq!(alert.last, "1970-01-01T00:00:25.000Z");
    }

    #[test]
    fn alert_json_has_the_documented_shape() {
        let mut w = DenialWindows::new(0, Duration::from_secs(60));
        let alert = w.observe("agent-a", denial(1)).unwrap();
        let v = serde_json::to_value(&alert).unwrap();
        assert_eq!(v["type"], "denials");
        assert_eq!(v["agent"], "agent-a");
        assert_eq!(v["count"], 1);
        assert_eq!(v["sample"][0]["action"], "delete:db");
        assert_eq!(v["sample"][0]["trace_id"], "ab");
        assert!(v["sample"][0].get("time").is_some());
    }

    #[test]
    fn webhook_urls_are_checked() {
        assert!(parse_webhook("http://127.0.0.1:9/hook").is_ok());
        assert!(parse_webhook("https://example.com/")
            .unwrap_err()
            .reason
            .contains("relay"));
        assert!(parse_webhook("ftp://x").is_err());
        assert!(parse_webhook("not a url").is_err());
    }
}
