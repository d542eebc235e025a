//! End to end: the `meshguard collector` binary on free loopback ports, fed through a real
//! tonic client, then read back through `meshguard audit` and the JSON API.
//!
//! Every process and file is owned by a guard that cleans up on drop, so a failing
//! assertion leaves nothing behind.
// A test crate: its helpers fail the test by panicking (clippy.toml covers only #[test]
// functions and #[cfg(test)] modules, not an integration test's helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use meshguard::audit::otlp::AnyValue as FilterValue;
use meshguard::audit::{chain_hash, chain_input, AuditBuffer, AuditEvent, Chain, CHAIN_GENESIS};
use meshguard::config::AuditConfig;
use meshguard::hex::hex;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_meshguard");

// ---------------------------------------------------------------- guards

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("meshguard-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running collector, killed on drop if the test did not stop it.
struct Collector {
    child: Option<Child>,
    grpc: String,
    http: Option<String>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn start(db: &Path, extra: &[&str]) -> Collector {
        let mut child = Command::new(BIN)
            .args(["collector", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start collector");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut c = Collector {
            child: Some(child),
            grpc: String::new(),
            http: None,
            log,
        };
        let wants_http = extra.contains(&"--http");
        let deadline = Instant::now() + Duration::from_secs(20);
        while c.grpc.is_empty() || (wants_http && c.http.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("collector did not start: {:?}", c.log()));
            if let Some(a) = line.strip_prefix("meshguard collector: OTLP/gRPC listening on ") {
                c.grpc = a.to_string();
            }
            if let Some(a) = line.strip_prefix("meshguard collector: HTTP API listening on http://")
            {
                c.http = Some(a.to_string());
            }
        }
        c
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    async fn client(&self) -> LogsServiceClient<Channel> {
        LogsServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .expect("connect")
    }

    /// SIGTERM, then the exit code.
    fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("collector ignored SIGTERM: {:?}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------- filter output

fn any(v: &Value) -> AnyValue {
    let value = match v {
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) if n.is_i64() => any_value::Value::IntValue(n.as_i64().unwrap()),
        Value::Number(n) => any_value::Value::DoubleValue(n.as_f64().unwrap()),
        Value::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        }),
        _ => return AnyValue { value: None },
    };
    AnyValue { value: Some(value) }
}

fn kv(key: &str, v: &Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(any(v)),
        ..Default::default()
    }
}

/// One worker's stream, hashed as the filter hashes it.
struct Stream {
    id: String,
    last_hash: String,
    seq: i64,
}

impl Stream {
    fn new(id: &str) -> Stream {
        Stream {
            id: id.into(),
            last_hash: CHAIN_GENESIS.into(),
            seq: 0,
        }
    }

    fn event(&mut self, agent: &str, action: &str, decision: &str) -> LogRecord {
        self.event_with(agent, action, decision, &[])
    }

    /// A require_approval decision carrying the filter's approval id.
    fn asking(&mut self, agent: &str, action: &str, resource: &str, id: &str) -> LogRecord {
        self.event_with(
            agent,
            action,
            "require_approval",
            &[
                ("meshguard.resource", json!(resource)),
                ("meshguard.approval_id", json!(id)),
                ("meshguard.reason", json!("production deletes need a human")),
            ],
        )
    }

    /// An event whose `extra` attributes replace or add to the usual ones.
    fn event_with(
        &mut self,
        agent: &str,
        action: &str,
        decision: &str,
        extra: &[(&'static str, Value)],
    ) -> LogRecord {
        self.seq += 1;
        let time = 1_700_000_000_000_000_000u64 + self.seq as u64 * 1_000_000_000;
        let mut trace = [0u8; 16];
        trace[..8].copy_from_slice(&(self.seq as u64).to_be_bytes());
        trace[8..].copy_from_slice(&self.id.len().to_be_bytes());
        trace[0] = self.id.as_bytes()[0];
        let mut attrs = vec![
            ("meshguard.decision", json!(decision)),
            ("meshguard.effect", json!(decision)),
            ("meshguard.enforced", json!(true)),
            ("meshguard.agent.id", json!(agent)),
            ("meshguard.trust_tier", json!("verified")),
            ("meshguard.delegation.chain", json!(["orchestrator", agent])),
            ("meshguard.delegation.depth", json!(1)),
            ("meshguard.action", json!(action)),
            ("meshguard.resource", json!("orders")),
            ("meshguard.policy", json!("p1")),
            ("meshguard.rule", json!("r1")),
            ("meshguard.reason", json!(format!("because {decision}"))),
            ("meshguard.mode", json!("enforce")),
            ("meshguard.bundle.version", json!("v1")),
            ("http.request.method", json!("POST")),
            ("url.path", json!("/v1/orders")),
            ("http.response.status_code", json!(403)),
            ("meshguard.latency_us", json!(42)),
            ("x.unknown.attribute", json!([1, 2.5, "z", 0.1])),
            ("meshguard.stream", json!(self.id)),
            ("meshguard.seq", json!(self.seq)),
            ("meshguard.prev_hash", json!(self.last_hash)),
        ];
        attrs.retain(|(k, _)| !extra.iter().any(|(x, _)| x == k));
        attrs.extend(extra.iter().cloned());
        let hash = chain_hash(&chain_input(&self.last_hash, time, &hex(&trace), &attrs));
        self.last_hash = hash.clone();
        let mut attributes: Vec<KeyValue> = attrs.iter().map(|(k, v)| kv(k, v)).collect();
        attributes.push(kv("meshguard.hash", &json!(hash)));
        LogRecord {
            time_unix_nano: time,
            event_name: "meshguard.decision".into(),
            severity_text: "WARN".into(),
            trace_id: trace.to_vec(),
            span_id: vec![1; 8],
            attributes,
            ..Default::default()
        }
    }

    /// Drops `n` events (as a full buffer does) and returns the gap declaration.
    fn drop_events(&mut self, n: i64) -> LogRecord {
        let from = self.seq + 1;
        for _ in 0..n {
            let _ = self.event("dropped", "x", "allow");
        }
        LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000,
            event_name: "meshguard.audit.gap".into(),
            attributes: vec![
                kv("meshguard.stream", &json!(self.id)),
                kv("meshguard.gap.from_seq", &json!(from)),
                kv("meshguard.gap.to_seq", &json!(self.seq)),
                kv("meshguard.gap.count", &json!(n)),
                kv("meshguard.gap.last_hash", &json!(self.last_hash)),
            ],
            ..Default::default()
        }
    }
}

fn request(workload: &str, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", &json!("meshguard")),
                    kv("envoy.node.id", &json!(workload)),
                    kv("envoy.node.cluster", &json!("orders")),
                ],
                ..Default::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn export(
    client: &mut LogsServiceClient<Channel>,
    req: ExportLogsServiceRequest,
) -> ExportLogsServiceResponse {
    client.export(req).await.expect("export").into_inner()
}

/// Sends raw bytes as an Export message, as a broken sender would.
async fn export_raw(addr: &str, bytes: Vec<u8>) -> tonic::Status {
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Default)]
    struct Raw;
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
            bytes::BufMut::put_slice(dst, &item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = tonic::Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
            let n = bytes::Buf::remaining(src);
            Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
        }
    }
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }

    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
    );
    grpc.unary(tonic::Request::new(bytes), path, Raw)
        .await
        .expect_err("the collector must refuse it")
}

// ---------------------------------------------------------------- readers

/// A GET through a plain socket: (status, JSON body).
fn http_get(addr: &str, path: &str) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `meshguard audit ...`: (exit code, stdout, stderr).
fn audit(args: &[&str], db: &Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("audit")
        .args(args)
        .arg("--db")
        .arg(db)
        .output()
        .expect("run meshguard audit");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A webhook receiver that fails its first request, to exercise retries.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>, Arc<Mutex<u32>>) {
    use axum::extract::State;
    use axum::http::StatusCode;
    type Seen = (Arc<Mutex<Vec<Value>>>, Arc<Mutex<u32>>);
    let seen: Seen = (Arc::default(), Arc::default());
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State((ok, calls)): State<Seen>, axum::Json(body): axum::Json<Value>| async move {
                    let n = {
                        let mut c = calls.lock().unwrap();
                        *c += 1;
                        *c
                    };
                    if n == 1 {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    ok.lock().unwrap().push(body);
                    StatusCode::OK
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), seen.0, seen.1)
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_stores_verifies_queries_and_alerts() {
    let dir = TempDir::new("e2e");
    let db = dir.join("audit.db");
    let (hook, alerts, hook_calls) = webhook().await;
    let mut collector = Collector::start(
        &db,
        &[
            "--http",
            "127.0.0.1:0",
            "--alert-webhook",
            &hook,
            "--alert-threshold",
            "2",
            "--alert-window",
            "1h",
            "--max-message-bytes",
            "65536",
        ],
    );
    let mut client = collector.client().await;

    // Stream a: 6 events, the first batch retried, the last batch before the middle one.
    let mut a = Stream::new("a");
    let ev_a: Vec<LogRecord> = vec![
        a.event("agent-x", "read:orders", "allow"),
        a.event("agent-x", "delete:orders", "deny"),
        a.event("agent-x", "delete:users", "deny"),
        a.event("agent-y", "read:orders", "allow"),
        a.event("agent-x", "delete:db", "require_approval"),
        a.event("agent-y", "write:email", "would_deny"),
    ];
    let first = request("pod-1", ev_a[..3].to_vec());
    let r = export(&mut client, first.clone()).await;
    assert!(r.partial_success.is_none(), "{r:?}");
    export(&mut client, first).await; // retried batch
    export(&mut client, request("pod-1", ev_a[5..].to_vec())).await; // out of order
    export(&mut client, request("pod-1", ev_a[3..5].to_vec())).await;

    // Stream b: event 2 tampered in transit.
    let mut b = Stream::new("b");
    let mut ev_b: Vec<LogRecord> = (0..3)
        .map(|_| b.event("agent-z", "read:x", "deny"))
        .collect();
    for kv in &mut ev_b[1].attributes {
        if kv.key == "meshguard.decision" {
            kv.value = Some(any(&json!("allow")));
        }
    }
    export(&mut client, request("pod-1", ev_b)).await;

    // Stream c (another workload): seqs 2..3 dropped and declared.
    let mut c = Stream::new("c");
    let c1 = c.event("agent-c", "read:x", "allow");
    let gap = c.drop_events(2);
    let c4 = c.event("agent-c", "read:x", "allow");
    export(&mut client, request("pod-2", vec![c1, gap, c4])).await;

    // Stream d: seq 2 lost without a declaration.
    let mut d = Stream::new("d");
    let d1 = d.event("agent-d", "read:x", "allow");
    let _lost = d.event("agent-d", "read:x", "allow");
    let d3 = d.event("agent-d", "read:x", "allow");
    export(&mut client, request("pod-2", vec![d1, d3])).await;

    // A record that is not ours is rejected, the rest of its batch kept.
    let foreign = LogRecord {
        event_name: "app.log".into(),
        ..Default::default()
    };
    let e1 = Stream::new("e").event("agent-e", "read:x", "allow");
    let r = export(&mut client, request("pod-3", vec![foreign, e1])).await;
    let ps = r.partial_success.expect("partial success");
    assert_eq!(ps.rejected_log_records, 1);
    assert!(ps.error_message.contains("app.log"), "{}", ps.error_message);

    // Malformed protobuf, non-UTF-8 string, oversized message: refused, collector fine.
    let garbage = export_raw(&collector.grpc, vec![0x0a, 0xff, 0xff, 0xff]).await;
    assert_eq!(garbage.code(), Code::Internal, "{garbage:?}");
    let bad_utf8 = vec![0x0a, 8, 0x12, 6, 0x12, 4, 0x62, 2, 0xff, 0xfe];
    let status = export_raw(&collector.grpc, bad_utf8).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let mut big = Stream::new("big").event("agent-big", "read:x", "allow");
    big.body = Some(any(&json!("x".repeat(100_000))));
    let status = client
        .export(request("pod-1", vec![big]))
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    // Everything stored once: 6 + 3 + 2 + 2 + 1.
    let api = collector.http.clone().expect("http");
    let (code, health) = http_get(&api, "/healthz");
    assert_eq!((code, &health["status"]), (200, &json!("ok")));
    assert_eq!(health["events"], 14, "{health}");

    let (code, body) = http_get(&api, "/v1/events?agent=agent-x&action=delete:*&limit=10");
    assert_eq!(code, 200);
    let evs = body["events"].as_array().unwrap();
    assert_eq!(evs.len(), 3, "{body}");
    assert_eq!(evs[0]["decision"], "deny");
    assert_eq!(
        evs[0]["delegation_chain"],
        json!(["orchestrator", "agent-x"])
    );
    assert_eq!(evs[0]["latency_us"], 42);
    assert_eq!(evs[0]["workload"], "pod-1");
    assert_eq!(
        evs[0]["attributes"]["x.unknown.attribute"],
        json!([1, 2.5, "z", 0.1])
    );
    let trace_id = evs[0]["trace_id"].as_str().unwrap().to_string();
    let (code, t) = http_get(&api, &format!("/v1/traces/{trace_id}"));
    assert_eq!((code, t["events"].as_array().map(Vec::len)), (200, Some(1)));
    let (code, _) = http_get(&api, "/v1/traces/0000000000000000000000000000abcd");
    assert_eq!(code, 404);
    let (code, e) = http_get(&api, "/v1/events?since=yesterday");
    assert_eq!(code, 400);
    assert!(e["error"].as_str().unwrap().contains("since"), "{e}");
    let (code, integrity) = http_get(&api, "/v1/integrity");
    assert_eq!(code, 200);
    assert_eq!(integrity["intact"], false);

    // The alert: agent-x had 3 denials > threshold 2; delivered on the second attempt.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alerts.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let got = alerts.lock().unwrap();
        assert_eq!(got.len(), 1, "{got:?} {:?}", collector.log());
        assert_eq!(got[0]["type"], "denials");
        assert_eq!(got[0]["agent"], "agent-x");
        assert_eq!(got[0]["count"], 3);
        assert_eq!(got[0]["window_seconds"], 3600);
        assert_eq!(got[0]["sample"].as_array().map(Vec::len), Some(3));
        assert_eq!(*hook_calls.lock().unwrap(), 2, "one failure, one retry");
    }

    // Stop gracefully: exit 0 and a checkpointed, self-contained database.
    drop(client);
    assert_eq!(collector.terminate(), Some(0), "{:?}", collector.log());
    let wal = dir.join("audit.db-wal");
    assert!(
        std::fs::metadata(&wal).map_or(true, |m| m.len() == 0),
        "WAL left behind"
    );
    let log = collector.log().join("\n");
    assert!(log.contains("seq 2 altered"), "{log}");

    // `audit verify`: b altered, d gap, c a declared loss, exit 1.
    let (code, out, err) = audit(&["verify"], &db);
    assert_eq!(code, 1, "{out}{err}");
    let line = |stream: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(stream))
            .unwrap_or_else(|| panic!("no row for {stream}: {out}"))
            .to_string()
    };
    assert!(line("a").ends_with("intact"), "{out}");
    assert!(line("b").ends_with("broken"), "{out}");
    assert!(line("c").ends_with("intact"), "{out}");
    assert!(line("d").ends_with("broken"), "{out}");
    assert!(out.contains("pod-1/b: seq 2 altered"), "{out}");
    assert!(out.contains("pod-2/d: seq 2 missing"), "{out}");
    assert!(out.contains("pod-2/c: declared loss of seqs 2..3"), "{out}");
    let (_, json_out, _) = audit(&["verify", "--format", "json"], &db);
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["intact"], false);
    assert_eq!(v["streams"].as_array().unwrap().len(), 5);

    // `audit query`: no duplicates, filters, formats.
    let (code, out, err) = audit(&["query", "--format", "jsonl", "--limit", "1000"], &db);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 14);
    let (_, out, _) = audit(&["query", "--decision", "deny", "--agent", "agent-x"], &db);
    assert_eq!(out.lines().count(), 3, "{out}"); // header + 2
    assert!(out.starts_with("TIME"), "{out}");
    assert!(
        out.contains("delete:orders") && out.contains("p1/r1"),
        "{out}"
    );
    let (code, _, err) = audit(&["query", "--since", "soon"], &db);
    assert_eq!(code, 2);
    assert!(err.contains("since"), "{err}");

    // `audit trace` by prefix.
    let (code, out, err) = audit(&["trace", &trace_id[..20]], &db);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("orchestrator > agent-x"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_on_intact_streams_with_declared_losses() {
    let dir = TempDir::new("intact");
    let db = dir.join("audit.db");
    let mut collector = Collector::start(&db, &[]);
    let mut client = collector.client().await;
    let mut s1 = Stream::new("w1");
    let mut s2 = Stream::new("w2");
    let first = s1.event("agent-a", "read:x", "allow");
    let gap = s1.drop_events(3);
    let after = s1.event("agent-a", "read:x", "deny");
    // The gap declaration arrives after the event that follows it.
    export(&mut client, request("pod", vec![after, first])).await;
    export(&mut client, request("pod", vec![gap])).await;
    let two: Vec<LogRecord> = (0..2).map(|_| s2.event("agent-b", "x", "allow")).collect();
    export(&mut client, request("pod", two)).await;

    // What the filter itself emits: its encoder, its chain, its gap notice for events its
    // full buffer dropped. Decoded with the opentelemetry-proto types and sent twice.
    let cfg = AuditConfig {
        buffer_events: 4,
        ..AuditConfig::default()
    };
    let mut buffer = AuditBuffer::new(&cfg, Chain::new("worker-0-7f3a"));
    for i in 0..6u8 {
        buffer.push(AuditEvent {
            time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i) * 1_000_000,
            trace_id: vec![0xab, i, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14],
            span_id: vec![i; 8],
            decision: if i % 2 == 0 { "allow" } else { "deny" }.into(),
            effect: "allow".into(),
            enforced: true,
            agent_id: "agent-a".into(),
            trust_tier: "verified".into(),
            delegation_chain: vec!["orchestrator".into(), "agent-a".into()],
            action: "read:orders".into(),
            reason: "r\u{e9}sum\u{e9} \"quoted\"".into(),
            latency_us: 12 + u64::from(i),
            ..AuditEvent::default()
        });
    }
    let (_, bytes) = buffer
        .take_batch(
            u64::MAX / 2,
            1_700_000_001_000_000_000,
            &[
                ("envoy.node.id", FilterValue::Str("pod-filter")),
                ("service.name", FilterValue::Str("meshguard")),
            ],
        )
        .expect("a batch");
    let from_filter = ExportLogsServiceRequest::decode(bytes.as_slice()).expect("valid OTLP");
    let r = export(&mut client, from_filter.clone()).await;
    assert!(r.partial_success.is_none(), "{r:?}");
    export(&mut client, from_filter).await;
    // The client stays connected, as Envoy does: shutdown must not wait for it.
    assert_eq!(collector.terminate(), Some(0), "{:?}", collector.log());

    let (code, out, err) = audit(&["verify"], &db);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("declared loss of seqs 2..4"), "{out}");
    assert!(
        out.contains("pod-filter/worker-0-7f3a: declared loss of seqs 1..2"),
        "{out}"
    );
    assert!(out.contains("all 3 stream(s) intact"), "{out}");
    let (_, jsonl, _) = audit(&["query", "--agent", "agent-a", "--format", "jsonl"], &db);
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        rows.len(),
        6,
        "2 from stream w1 + 4 kept by the filter: {jsonl}"
    );
    let last = rows
        .iter()
        .find(|r| r["stream"] == "worker-0-7f3a" && r["seq"] == 6)
        .expect("the filter's last event");
    assert_eq!(last["decision"], "deny");
    assert_eq!(last["latency_us"], 17);
    assert_eq!(last["reason"], "r\u{e9}sum\u{e9} \"quoted\"");
    assert_eq!(last["delegation_chain"], json!(["orchestrator", "agent-a"]));
}

#[test]
fn bad_startup_flags_exit_2_with_a_reason() {
    let dir = TempDir::new("flags");
    let run = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("collector")
            .args(args)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let db = dir.join("a.db");
    let db = db.to_str().unwrap();
    let (code, err) = run(&["--listen", "not-an-address", "--db", db]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--listen"), "{err}");
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--db", "/nonexistent/dir/a.db"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("cannot open audit database"), "{err}");
    let corrupt = dir.join("corrupt.db");
    std::fs::write(&corrupt, vec![7u8; 4096]).unwrap();
    let (code, err) = run(&["--listen", "127.0.0.1:0", "--db", corrupt.to_str().unwrap()]);
    assert_eq!(code, Some(2));
    assert!(err.contains("damaged"), "{err}");
}

// ---------------------------------------------------------------- approvals and grants

/// Any request through a plain socket: (status, lower-cased head, body bytes).
fn http_call(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, head, raw[split + 4..].to_vec())
}

fn header_value(head: &str, name: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// `meshguard <args>`: (exit code, stdout, stderr).
fn meshguard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .output()
        .expect("run meshguard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Verifies a grants document exactly as documented (cli/COLLECTOR.md "Grants
/// document"), independently of the collector's own code: Ed25519 over
/// `meshguard-grants/v1\n` + canonical JSON without `signatures`.
fn verify_grants(bytes: &[u8], public_x: &str) -> Value {
    use ct_codecs::{Base64UrlSafeNoPadding, Decoder};
    let doc: Value = serde_json::from_slice(bytes).expect("JSON");
    assert_eq!(doc["format"], "meshguard-grants/v1");
    let mut unsigned = doc.clone();
    unsigned.as_object_mut().unwrap().remove("signatures");
    let canonical = meshguard::sources::bundle::canonical_json(&unsigned).unwrap();
    let input = format!("meshguard-grants/v1\n{canonical}");
    let sig = doc["signatures"][0]["sig"].as_str().expect("a signature");
    assert_eq!(doc["signatures"][0]["alg"], "Ed25519");
    let sig = Base64UrlSafeNoPadding::decode_to_vec(sig, None).unwrap();
    let pk = Base64UrlSafeNoPadding::decode_to_vec(public_x, None).unwrap();
    let pk = ed25519_compact::PublicKey::from_slice(&pk).unwrap();
    pk.verify(
        input.as_bytes(),
        &ed25519_compact::Signature::from_slice(&sig).unwrap(),
    )
    .expect("the grants document verifies with the collector's public key");
    doc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_become_signed_grants() {
    let dir = TempDir::new("approvals");
    let db = dir.join("audit.db");
    let out_dir = dir.join("keys");
    let (code, _, err) = meshguard(&[
        "keygen",
        "--alg",
        "EdDSA",
        "--kid",
        "grants",
        "--out-dir",
        out_dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let key = out_dir.join("grants.key.json");
    let jwks = out_dir.join("grants.jwks.json");
    let jwks_doc: Value = serde_json::from_slice(&std::fs::read(&jwks).unwrap()).unwrap();
    let x = jwks_doc["keys"][0]["x"].as_str().unwrap().to_string();
    let (hook, notices, _) = webhook().await;
    let args = [
        "--http",
        "127.0.0.1:0",
        "--grants-key",
        key.to_str().unwrap(),
        "--alert-webhook",
        &hook,
    ];
    let mut collector = Collector::start(&db, &args);
    let api = collector.http.clone().expect("http");
    let url = format!("http://{api}");
    let mut client = collector.client().await;

    // Before anything is approved: an empty, signed document.
    let (code, head, body) = http_call(&api, "GET", "/grants", &[], None);
    assert_eq!(code, 200, "{head}");
    let doc0 = verify_grants(&body, &x);
    assert_eq!(doc0["grants"], json!([]));
    let v0 = doc0["version"].as_u64().unwrap();
    let etag0 = header_value(&head, "etag");
    assert!(etag0.starts_with('"'), "{head}");
    let (code, _, body) = http_call(&api, "GET", "/grants", &[("If-None-Match", &etag0)], None);
    assert_eq!((code, body.len()), (304, 0), "unchanged: 304");

    // The agent asks three times for one thing (one batch retried) and once for another.
    let mut s = Stream::new("a");
    let first = request(
        "pod-1",
        vec![
            s.asking("agent-x", "delete:db", "prod", "apr_aaaa"),
            s.asking("agent-x", "delete:db", "prod", "apr_aaaa"),
            s.event("agent-x", "read:orders", "deny"),
        ],
    );
    export(&mut client, first.clone()).await;
    export(&mut client, first).await;
    let second = request(
        "pod-1",
        vec![
            s.asking("agent-x", "delete:db", "prod", "apr_aaaa"),
            s.asking("agent-y", "wire:money", "", "apr_bbbb"),
        ],
    );
    export(&mut client, second).await;

    let (code, _, body) = http_call(&api, "GET", "/api/approvals?status=pending", &[], None);
    assert_eq!(code, 200);
    let list: Value = serde_json::from_slice(&body).unwrap();
    let pending = list["approvals"].as_array().unwrap();
    assert_eq!(pending.len(), 2, "{list}");
    let a = pending.iter().find(|p| p["id"] == "apr_aaaa").unwrap();
    assert_eq!(a["count"], 3, "the retried batch counted once: {a}");
    assert_eq!(
        (&a["agent"], &a["resource"]),
        (&json!("agent-x"), &json!("prod"))
    );
    assert_eq!(a["status"], "pending");
    assert_eq!(a["trace_ids"].as_array().map(Vec::len), Some(3));

    // One webhook notice per new pending approval (the first delivery fails and is retried).
    let deadline = Instant::now() + Duration::from_secs(10);
    while notices.lock().unwrap().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let got = notices.lock().unwrap();
        let mut ids: Vec<&str> = got
            .iter()
            .filter(|n| n["type"] == "approval.pending")
            .filter_map(|n| n["approval_id"].as_str())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["apr_aaaa", "apr_bbbb"], "{got:?}");
    }

    // Approve through the CLI (JSON output), deny through the API; bad input is refused.
    let (code, out, err) = meshguard(&[
        "approvals",
        "approve",
        "apr_aaaa",
        "--for",
        "3s",
        "--by",
        "alice",
        "--reason",
        "incident 7",
        "--url",
        &url,
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    let approved: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decided_by"], "alice");
    let (code, _, body) = http_call(
        &api,
        "POST",
        "/api/approvals/apr_bbbb/deny",
        &[],
        Some(&json!({"denied_by": "bob", "reason": "no"})),
    );
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let (code, _, body) = http_call(
        &api,
        "POST",
        "/api/approvals/apr_bbbb/approve",
        &[],
        Some(&json!({"for": "1h"})),
    );
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("approved_by"));
    let (code, _, body) = http_call(
        &api,
        "POST",
        "/api/approvals/apr_bbbb/approve",
        &[],
        Some(&json!({"for": "soon", "approved_by": "bob"})),
    );
    assert_eq!(code, 400);
    assert!(String::from_utf8_lossy(&body).contains("for"));
    let (code, _, err) = meshguard(&[
        "approvals",
        "approve",
        "apr_nope",
        "--for",
        "1h",
        "--by",
        "alice",
        "--url",
        &url,
    ]);
    assert_eq!(code, 1, "unknown id: {err}");
    let (code, _, err) = meshguard(&[
        "approvals",
        "deny",
        "apr_bbbb",
        "--by",
        "bob",
        "--url",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(code, 2, "unreachable collector: {err}");
    assert!(err.contains("cannot reach"), "{err}");

    // The grant is published: new version, signed, with the approval's fields.
    let (code, head, body) = http_call(&api, "GET", "/grants", &[("If-None-Match", &etag0)], None);
    assert_eq!(code, 200);
    let doc1 = verify_grants(&body, &x);
    let v1 = doc1["version"].as_u64().unwrap();
    assert!(v1 > v0, "{v1} > {v0}");
    assert_eq!(
        header_value(&head, "x-meshguard-grants-version"),
        v1.to_string()
    );
    let grants = doc1["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{doc1}");
    assert_eq!(grants[0]["id"], "apr_aaaa");
    assert_eq!(grants[0]["agent"], "agent-x");
    assert_eq!(grants[0]["action"], "delete:db");
    assert_eq!(grants[0]["resource"], "prod");
    assert_eq!(grants[0]["approved_by"], "alice");
    assert_eq!(grants[0]["reason"], "incident 7");
    assert_eq!(grants[0]["expires_at"], approved["expires_at"]);

    // `meshguard grants verify` agrees, and catches a tampered copy.
    let file = dir.join("grants.json");
    std::fs::write(&file, &body).unwrap();
    let (code, out, _) = meshguard(&[
        "grants",
        "verify",
        "--pubkey",
        jwks.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}");
    let tampered = String::from_utf8_lossy(&body).replace("agent-x", "agent-z");
    std::fs::write(&file, tampered).unwrap();
    let (code, out, _) = meshguard(&[
        "grants",
        "verify",
        "--pubkey",
        jwks.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("rejected"), "{out}");

    let (code, out, _) = meshguard(&[
        "approvals",
        "list",
        "--url",
        &url,
        "--status",
        "denied",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0);
    let denied: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(denied[0]["id"], "apr_bbbb");
    assert_eq!(denied[0]["decided_by"], "bob");

    // After the TTL the grant is gone and the version grew.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (code, head, body) = http_call(&api, "GET", "/grants", &[], None);
    assert_eq!(code, 200);
    let doc2 = verify_grants(&body, &x);
    let v2 = doc2["version"].as_u64().unwrap();
    assert!(v2 > v1, "{v2} > {v1}");
    assert_eq!(doc2["grants"], json!([]));
    let etag2 = header_value(&head, "etag");
    let (code, out, _) = meshguard(&[
        "approvals",
        "list",
        "--db",
        db.to_str().unwrap(),
        "--status",
        "expired",
    ]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID") && out.contains("apr_aaaa"), "{out}");

    // A restart serves the same document; a change made on the database directly (the
    // CLI's --db) is published with a higher version.
    drop(client);
    assert_eq!(collector.terminate(), Some(0), "{:?}", collector.log());
    let collector = Collector::start(&db, &args);
    let api = collector.http.clone().expect("http");
    let (code, head, _) = http_call(&api, "GET", "/grants", &[("If-None-Match", &etag2)], None);
    assert_eq!(
        code, 304,
        "same grants, same document after a restart: {head}"
    );
    let (code, _, err) = meshguard(&[
        "approvals",
        "approve",
        "apr_bbbb",
        "--for",
        "1h",
        "--by",
        "carol",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, body) = http_call(&api, "GET", "/grants", &[("If-None-Match", &etag2)], None);
    assert_eq!(code, 200);
    let doc3 = verify_grants(&body, &x);
    assert!(doc3["version"].as_u64().unwrap() > v2);
    assert_eq!(doc3["grants"][0]["id"], "apr_bbbb");
    assert!(
        doc3["grants"][0].get("resource").is_none(),
        "no resource: any"
    );
}

#[test]
fn grants_need_a_usable_key_and_the_http_api() {
    let dir = TempDir::new("grants-flags");
    let db = dir.join("audit.db");
    let (code, _, err) = meshguard(&[
        "collector",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
        "--grants-key",
        "/nonexistent.json",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("--http"), "{err}");
    let bad = dir.join("es256.key.json");
    let (code, _, _) = meshguard(&[
        "keygen",
        "--kid",
        "es256",
        "--out-dir",
        dir.0.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let (code, _, err) = meshguard(&[
        "collector",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
        "--http",
        "127.0.0.1:0",
        "--grants-key",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--grants-key") && err.contains("EdDSA"),
        "{err}"
    );
}
