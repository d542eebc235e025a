//! The store test-suite: every scenario runs against SQLite and against a real
//! PostgreSQL (a throwaway cluster, see `testpg.rs`), through the one [`Store`] API.

use super::testpg::PgCluster;
use super::*;
use crate::collector::event::{decode, testing::*};
use crate::collector::integrity::Verdict;
use serde_json::json;
use std::path::PathBuf;

/// A temporary directory removed on drop, even when a test fails.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("meshguard-suite-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

type Scenario = fn(&mut Store);

/// Every scenario, with the writers' [`Location`] for those that open more handles.
const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "retried_batches_do_not_duplicate_and_columns_are_filled",
        retried_batches_do_not_duplicate_and_columns_are_filled,
    ),
    (
        "out_of_order_arrival_gives_no_false_findings",
        out_of_order_arrival_gives_no_false_findings,
    ),
    (
        "tampering_and_conflicts_are_found_on_arrival",
        tampering_and_conflicts_are_found_on_arrival,
    ),
    ("gaps_declared_or_not", gaps_declared_or_not),
    (
        "unchained_events_are_kept_once_and_reported",
        unchained_events_are_kept_once_and_reported,
    ),
    ("filters_and_limits", filters_and_limits),
    (
        "retention_truncates_whole_prefixes_and_verify_says_so",
        retention_truncates_whole_prefixes_and_verify_says_so,
    ),
    ("approvals_round_trip", approvals_round_trip),
    (
        "peers_are_recorded_and_impostors_flagged",
        peers_are_recorded_and_impostors_flagged,
    ),
    (
        "signatures_are_kept_once_and_read_back",
        signatures_are_kept_once_and_read_back,
    ),
];

/// Scenarios needing a second handle on the same store (replicas).
type SharedScenario = fn(&Location);

const SHARED: &[(&str, SharedScenario)] = &[(
    "replicas_interleaving_one_stream_stay_exact",
    replicas_interleaving_one_stream_stay_exact,
)];

fn all(s: &Store) -> Vec<EventRow> {
    s.events(&EventFilter {
        limit: 1000,
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn suite_on_sqlite() {
    for (name, scenario) in SCENARIOS {
        eprintln!("sqlite: {name}");
        let dir = TempDir::new(name);
        let mut s = Store::open_for_writing(&dir.0.join("audit.db")).unwrap();
        scenario(&mut s);
    }
    for (name, scenario) in SHARED {
        eprintln!("sqlite: {name}");
        let dir = TempDir::new(name);
        scenario(&Location::Sqlite(dir.0.join("audit.db")));
    }
}

#[test]
fn suite_on_postgresql() {
    let mut pg = PgCluster::start();
    for (name, scenario) in SCENARIOS {
        eprintln!("postgresql: {name}");
        let mut s = Store::open_for_writing(Location::Postgres(pg.database())).unwrap();
        scenario(&mut s);
    }
    for (name, scenario) in SHARED {
        eprintln!("postgresql: {name}");
        scenario(&Location::Postgres(pg.database()));
    }
}

#[test]
fn postgresql_migrations_are_versioned_and_readers_never_write() {
    let mut pg = PgCluster::start();
    let url = pg.database();
    let at = Location::Postgres(url.clone());
    let e = Store::open_for_reading(&at).err().unwrap();
    assert!(matches!(e, StoreError::PgMissing { .. }), "{e}");
    drop(Store::open_for_writing(&at).unwrap());
    // A second writer (another replica) finds the schema current and changes nothing.
    drop(Store::open_for_writing(&at).unwrap());
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let versions: Vec<i64> = c
        .query("SELECT version FROM meshguard_migrations ORDER BY 1", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    let mut r = Store::open_for_reading(&at).unwrap();
    assert_eq!(r.count_events().unwrap(), 0);
    let mut c2 = Chain::new("s1");
    let batch = decode(&request("n", vec![c2.event("a", "x", "allow")]));
    assert!(
        r.insert_batch(&batch, 1).is_err(),
        "a reader must not write"
    );
    c.execute("INSERT INTO meshguard_migrations VALUES (99, 0)", &[])
        .unwrap();
    let e = Store::open_for_writing(&at).err().unwrap();
    assert!(matches!(e, StoreError::PgNewer { version: 99, .. }), "{e}");
    let e = Store::open_for_writing(Location::Postgres(
        "postgres://meshguard:secret@127.0.0.1:1/none".into(),
    ))
    .err()
    .unwrap();
    assert!(e.to_string().contains("meshguard:***@"), "{e}");
    assert!(!e.to_string().contains("secret"), "{e}");
}

fn retried_batches_do_not_duplicate_and_columns_are_filled(s: &mut Store) {
    let mut c = Chain::new("s1");
    let req = request(
        "node-1",
        (0..3)
            .map(|_| c.event("agent-a", "read:orders", "deny"))
            .collect(),
    );
    let batch = decode(&req);
    let first = s.insert_batch(&batch, 1).unwrap();
    assert_eq!(first.inserted.len(), 3);
    let again = s.insert_batch(&decode(&req), 2).unwrap();
    assert_eq!((again.inserted.len(), again.duplicates), (0, 3));
    assert!(again.findings.is_empty(), "{:?}", again.findings);
    let rows = all(s);
    assert_eq!(rows.len(), 3);
    let r = &rows[0];
    assert_eq!(r.agent, "agent-a");
    assert_eq!(r.decision, "deny");
    assert_eq!(r.workload, "node-1");
    assert_eq!(r.seq, Some(1));
    assert_eq!(r.latency_us, Some(17));
    assert_eq!(r.delegation_chain, ["root", "agent-a"]);
    assert_eq!(r.attributes["meshguard.stream"], json!("s1"));
}

fn out_of_order_arrival_gives_no_false_findings(s: &mut Store) {
    let mut c = Chain::new("s1");
    let evs: Vec<_> = (0..6).map(|_| c.event("a", "x", "allow")).collect();
    let late = request("n", evs[3..].to_vec());
    let early = request("n", evs[..3].to_vec());
    assert!(s
        .insert_batch(&decode(&late), 1)
        .unwrap()
        .findings
        .is_empty());
    assert!(s
        .insert_batch(&decode(&early), 2)
        .unwrap()
        .findings
        .is_empty());
    let reports = s.verify_all().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        reports[0].verdict,
        Verdict::Intact,
        "{:?}",
        reports[0].findings
    );
    assert_eq!(reports[0].events, 6);
}

fn tampering_and_conflicts_are_found_on_arrival(s: &mut Store) {
    let mut c = Chain::new("s1");
    let evs: Vec<_> = (0..3).map(|_| c.event("a", "delete:db", "deny")).collect();
    let mut forged = evs[1].clone();
    set_attr(&mut forged, "meshguard.decision", json!("allow"));
    let out = s
        .insert_batch(
            &decode(&request("n", vec![evs[0].clone(), forged, evs[2].clone()])),
            1,
        )
        .unwrap();
    let kinds: Vec<_> = out
        .findings
        .iter()
        .map(|(_, _, f)| (f.kind(), f.seq()))
        .collect();
    assert_eq!(kinds, [("altered", 2)]);
    // The genuine copy arriving later conflicts with the stored forgery.
    let out = s
        .insert_batch(&decode(&request("n", vec![evs[1].clone()])), 2)
        .unwrap();
    let kinds: Vec<_> = out
        .findings
        .iter()
        .map(|(_, _, f)| (f.kind(), f.seq()))
        .collect();
    assert_eq!(kinds, [("conflict", 2)]);
    let r = &s.verify_all().unwrap()[0];
    let kinds: Vec<_> = r.findings.iter().map(|f| (f.kind(), f.seq())).collect();
    assert_eq!(kinds, [("altered", 2), ("conflict", 2)]);
    assert_eq!(r.verdict, Verdict::Broken);
}

fn gaps_declared_or_not(s: &mut Store) {
    let mut c = Chain::new("s1");
    let e1 = c.event("a", "x", "allow");
    let gap = c.drop_events(2);
    let e4 = c.event("a", "x", "allow");
    let out = s
        .insert_batch(&decode(&request("n", vec![e1, e4])), 1)
        .unwrap();
    assert!(out.findings.is_empty());
    let r = &s.verify_all().unwrap()[0];
    assert_eq!(
        r.findings,
        [Finding::Gap {
            from_seq: 2,
            to_seq: 3
        }]
    );
    let out = s
        .insert_batch(&decode(&request("n", vec![gap])), 2)
        .unwrap();
    assert_eq!((out.gaps, out.findings.len()), (1, 0));
    let r = &s.verify_all().unwrap()[0];
    assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.findings);
    assert_eq!(r.declared_lost_events, 2);
}

fn unchained_events_are_kept_once_and_reported(s: &mut Store) {
    let mut c = Chain::new("s1");
    let mut e = c.event("a", "x", "allow");
    e.attributes.retain(|kv| kv.key != "meshguard.stream");
    let req = request("n", vec![e]);
    s.insert_batch(&decode(&req), 1).unwrap();
    s.insert_batch(&decode(&req), 2).unwrap();
    assert_eq!(all(s).len(), 1);
    let reports = s.verify_all().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].verdict, Verdict::Unchained);
}

fn filters_and_limits(s: &mut Store) {
    let mut c = Chain::new("s1");
    let evs = vec![
        c.event("agent-a", "read:orders", "allow"),
        c.event("agent-b", "write:email", "deny"),
        c.event("agent-a", "read:users", "deny"),
        c.event("agent-a", "delete:users", "deny"),
    ];
    s.insert_batch(&decode(&request("n", evs)), 1).unwrap();
    let q = |f: EventFilter| {
        s.events(&EventFilter { limit: 100, ..f })
            .unwrap()
            .into_iter()
            .map(|r| r.seq.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        q(EventFilter {
            agent: Some("agent-a".into()),
            ..Default::default()
        }),
        [1, 3, 4]
    );
    assert_eq!(
        q(EventFilter {
            action: Some(Pattern::new("read:*").unwrap()),
            ..Default::default()
        }),
        [1, 3]
    );
    assert_eq!(
        q(EventFilter {
            decision: Some("deny".into()),
            action: Some(Pattern::new("write:email").unwrap()),
            ..Default::default()
        }),
        [2]
    );
    let t2 = 1_700_000_000_000_000_000 + 2_000_000;
    assert_eq!(
        q(EventFilter {
            since: Some(t2),
            ..Default::default()
        }),
        [2, 3, 4]
    );
    assert_eq!(
        q(EventFilter {
            until: Some(t2),
            ..Default::default()
        }),
        [1]
    );
    assert_eq!(
        q(EventFilter {
            trace: Some("0303".into()),
            ..Default::default()
        }),
        [3]
    );
    let newest = s
        .events(&EventFilter {
            limit: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        newest.iter().map(|r| r.seq.unwrap()).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(
        s.traces_matching("03", 5).unwrap(),
        ["03030303030303030303030303030303"]
    );
}

fn retention_truncates_whole_prefixes_and_verify_says_so(s: &mut Store) {
    let mut c = Chain::new("s1");
    let evs: Vec<_> = (0..6).map(|_| c.event("a", "x", "allow")).collect();
    let mut other = Chain::new("s2");
    let young = other.event("a", "x", "allow");
    s.insert_batch(&decode(&request("n", evs)), 1).unwrap();
    s.insert_batch(&decode(&request("n", vec![young])), 1)
        .unwrap();
    // Events are 1 ms apart from 1_700_000_000_001_000_000 (seq 1): the cutoff falls
    // between seq 3 and seq 4 of s1, and after s2's only event (seq 1).
    let cutoff = 1_700_000_000_000_000_000 + 3_500_000;
    let out = s.retain(cutoff, 2).unwrap();
    assert_eq!((out.events, out.streams), (4, 2), "{out:?}");
    let seqs: Vec<_> = all(s)
        .iter()
        .map(|r| (r.stream.clone().unwrap(), r.seq.unwrap()))
        .collect();
    assert_eq!(seqs, [("s1".into(), 4), ("s1".into(), 5), ("s1".into(), 6)]);
    let reports = s.verify_all().unwrap();
    assert_eq!(reports.len(), 2, "{reports:?}");
    let r1 = &reports[0];
    assert_eq!(r1.stream.as_deref(), Some("s1"));
    assert_eq!(r1.verdict, Verdict::Intact, "{:?}", r1.findings);
    assert_eq!(
        (r1.truncated_before, r1.events, r1.declared_lost_events),
        (Some(4), 3, 0)
    );
    assert!(r1.declared_losses.is_empty());
    let r2 = &reports[1];
    assert_eq!(
        (r2.verdict, r2.truncated_before, r2.events),
        (Verdict::Intact, Some(2), 0)
    );
    // A second pass with the same cutoff finds nothing more to do.
    assert_eq!(s.retain(cutoff, 2).unwrap(), RetainOutcome::default());
    // A forged truncation point does not hide a broken link: the next event must link
    // to the recorded hash.
    let mut c3 = Chain::new("s3");
    let e3: Vec<_> = (0..4).map(|_| c3.event("a", "x", "allow")).collect();
    s.insert_batch(&decode(&request("n", e3)), 1).unwrap();
    let out = s
        .retain(1_700_000_000_000_000_000 + 2_500_000, 100)
        .unwrap();
    assert_eq!(out.events, 2);
    let r3 = s
        .verify_all()
        .unwrap()
        .into_iter()
        .find(|r| r.stream.as_deref() == Some("s3"))
        .unwrap();
    assert_eq!(
        (r3.verdict, r3.truncated_before),
        (Verdict::Intact, Some(3))
    );
}

fn approvals_round_trip(s: &mut Store) {
    use crate::collector::approvals::{ApprovalStatus, Decision};
    let mut c = Chain::new("s1");
    let mut ev = c.event("agent-a", "delete:db", "require_approval");
    set_attr(&mut ev, "meshguard.approval_id", json!("ap-1"));
    let mut ev2 = c.event("agent-a", "delete:db", "require_approval");
    set_attr(&mut ev2, "meshguard.approval_id", json!("ap-1"));
    let out = s
        .insert_batch(&decode(&request("n", vec![ev.clone()])), 10)
        .unwrap();
    assert_eq!(out.pending.len(), 1);
    let out = s
        .insert_batch(&decode(&request("n", vec![ev2])), 11)
        .unwrap();
    assert!(out.pending.is_empty());
    let list = s.approvals(Some(ApprovalStatus::Pending), 10, 12).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].id.as_str(), list[0].count), ("ap-1", 2));
    let now = 1_800_000_000_000_000_000;
    let decided = s
        .decide_approval(
            "ap-1",
            &Decision::Approve {
                ttl_seconds: 60,
                by: "ops".into(),
                reason: "ok".into(),
            },
            now,
        )
        .unwrap()
        .unwrap();
    assert_eq!(decided.status, ApprovalStatus::Approved);
    assert_eq!(s.active_grants(now).unwrap().len(), 1);
    assert!(s.active_grants(now + 61_000_000_000).unwrap().is_empty());
    assert!(s.approval("nope", now).unwrap().is_none());
    assert_eq!(
        s.approval("ap-1", now + 61_000_000_000)
            .unwrap()
            .unwrap()
            .status,
        ApprovalStatus::Expired
    );
    let state = crate::collector::approvals::GrantsState {
        version: 2,
        grants_sha256: "abc".into(),
        signer: "k".into(),
        document: b"{}".to_vec(),
    };
    assert!(s.save_grants_state(&state).unwrap());
    assert!(!s
        .save_grants_state(&crate::collector::approvals::GrantsState {
            version: 1,
            ..state.clone()
        })
        .unwrap());
    assert_eq!(s.grants_state().unwrap(), Some(state));
}

/// Two handles (two replicas) on one store, each fed half of one stream's Exports in a
/// shuffled order, every Export sent to both (a retry after a lost answer): stored once,
/// no false finding, intact.
fn replicas_interleaving_one_stream_stay_exact(at: &Location) {
    let mut c = Chain::new("s1");
    let evs: Vec<_> = (0..200).map(|_| c.event("a", "x", "allow")).collect();
    let batches: Vec<_> = evs.chunks(5).map(|b| request("n", b.to_vec())).collect();
    let mut order: Vec<usize> = (0..batches.len()).collect();
    // A fixed shuffle: reversed pairs, so neighbours arrive out of order at different
    // replicas.
    order.chunks_mut(2).for_each(<[usize]>::reverse);
    let (a, b): (Vec<_>, Vec<_>) = order.iter().partition(|i| *i % 2 == 0);
    let run = |mine: Vec<usize>, theirs: Vec<usize>| {
        let at = at.clone();
        let batches = batches.clone();
        std::thread::spawn(move || {
            let mut s = Store::open_for_writing(&at).unwrap();
            let mut findings = Vec::new();
            let mut inserted = 0;
            for i in mine.iter().chain(theirs.iter()) {
                let out = s.insert_batch(&decode(&batches[*i]), 1).unwrap();
                inserted += out.inserted.len();
                findings.extend(out.findings);
            }
            (inserted, findings)
        })
    };
    let t1 = run(a.clone(), b.clone());
    let t2 = run(b, a);
    let (n1, f1) = t1.join().unwrap();
    let (n2, f2) = t2.join().unwrap();
    assert_eq!(n1 + n2, 200);
    assert!(f1.is_empty() && f2.is_empty(), "{f1:?} {f2:?}");
    let mut s = Store::open_for_reading(at).unwrap();
    assert_eq!(s.count_events().unwrap(), 200);
    let r = &s.verify_all().unwrap()[0];
    assert_eq!(
        (r.verdict, r.events),
        (Verdict::Intact, 200),
        "{:?}",
        r.findings
    );
}

fn peers_are_recorded_and_impostors_flagged(s: &mut Store) {
    let peer = "spiffe://cluster.local/ns/shop/sa/cart";
    let claimed = |stream: &str, namespace: &str, c: &mut Chain| {
        let mut b = decode(&request(
            "n",
            (0..2).map(|_| c.event("a", "x", "allow")).collect(),
        ));
        for e in &mut b.events {
            e.resource
                .insert("k8s.namespace.name".into(), json!(namespace));
        }
        b.peer = Some(peer.into());
        assert_eq!(b.events[0].chain.as_ref().unwrap().stream, stream);
        b
    };
    let mut honest = Chain::new("honest");
    let mut liar = Chain::new("liar");
    s.insert_batch(&claimed("honest", "shop", &mut honest), 1)
        .unwrap();
    // Retried through another replica: the same peer, nothing new.
    s.insert_batch(&claimed("honest", "shop", &mut honest), 2)
        .unwrap();
    s.insert_batch(&claimed("liar", "bank", &mut liar), 1)
        .unwrap();
    let reports = s.verify_all().unwrap();
    let honest = reports
        .iter()
        .find(|r| r.stream.as_deref() == Some("honest"))
        .unwrap();
    assert_eq!(honest.verdict, Verdict::Intact, "{:?}", honest.findings);
    assert_eq!(honest.peers, [peer]);
    let liar = reports
        .iter()
        .find(|r| r.stream.as_deref() == Some("liar"))
        .unwrap();
    assert_eq!(liar.verdict, Verdict::Broken);
    let kinds: Vec<_> = liar.findings.iter().map(|f| (f.kind(), f.seq())).collect();
    assert_eq!(kinds, [("peer", 1)]);
    assert!(
        liar.findings[0].describe().contains("\"bank\""),
        "{:?}",
        liar.findings
    );
}

fn signatures_are_kept_once_and_read_back(s: &mut Store) {
    use crate::collector::event::Checkpoint;
    use crate::collector::integrity::SignatureKind;
    let mut c = Chain::new("s1");
    let req = request(
        "node-1",
        (0..2)
            .map(|_| c.event("agent-a", "read:orders", "allow"))
            .collect(),
    );
    let mut batch = decode(&req);
    let head = batch.events[1].chain.clone().unwrap();
    assert!(s.signatures().unwrap().is_empty());
    batch.checkpoints.push(Checkpoint {
        workload: "node-1".into(),
        stream: "s1".into(),
        seq: head.seq,
        hash: head.hash.clone(),
        signature: "c2lnbmF0dXJl".into(),
    });
    s.insert_batch(&batch, 1).unwrap();
    // A retried Export stores the checkpoint once.
    s.insert_batch(&batch, 2).unwrap();
    let sigs = s.signatures().unwrap();
    assert_eq!(sigs.len(), 1, "{sigs:?}");
    let sig = &sigs[0];
    assert_eq!(sig.kind, SignatureKind::Checkpoint);
    assert_eq!((sig.from_seq, sig.to_seq, sig.count), (2, 2, 0));
    assert_eq!(sig.hash, head.hash);
    assert_eq!(sig.signature, "c2lnbmF0dXJl");
    assert_eq!(
        s.event_hash_at("node-1", "s1", 2).unwrap(),
        Some(head.hash.clone())
    );
    assert_eq!(s.event_hash_at("node-1", "s1", 3).unwrap(), None);
}
