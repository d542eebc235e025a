//! Hash-chain verification of audit streams.
//!
//! Every worker VM of the filter numbers its events 1, 2, 3, ... in its own stream and links
//! each event to the previous one by hash (`meshguard::audit::chain_input`). From what the
//! store holds this module tells, per stream:
//!
//! - **altered**: an event whose content no longer hashes to its `meshguard.hash`;
//! - **break**: an event whose `meshguard.prev_hash` is not the hash of its predecessor
//!   (the event before it, or the `last_hash` of a declared gap that ends just before it);
//! - **gap**: seqs missing without a declaration (lost in transit or deleted);
//! - **conflict**: a second, different event arrived with a seq already stored (recorded
//!   by the store when it happens, since only the first copy is kept);
//! - **declared loss**: seqs the filter said it dropped (buffer overflow). Reported, but the
//!   stream stays intact: the loss is known and the chain continues across it.
//!
//! Links are only judged when the predecessor is known, so events arriving out of order
//! never produce false findings; missing seqs are only judged by the full pass.

use meshguard::audit::{event_chain_hash, CHAIN_GENESIS};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The chain hash an event should carry, recomputed from its content with the
/// construction its `meshguard.chain.version` names (absent: 1).
pub fn event_hash(
    prev_hash: &str,
    time_unix_nano: u64,
    trace_id_hex: &str,
    attributes: &Map<String, Value>,
) -> String {
    let attrs: Vec<(&str, Value)> = attributes
        .iter()
        .filter(|(k, _)| k.as_str() != "meshguard.hash")
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    event_chain_hash(prev_hash, time_unix_nano, trace_id_hex, &attrs)
}

/// Something wrong with a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Finding {
    /// The event's content does not hash to its `meshguard.hash`.
    Altered {
        /// The event.
        seq: i64,
        /// `meshguard.hash` as stored.
        hash: String,
        /// What the content hashes to.
        computed: String,
    },
    /// The event's `meshguard.prev_hash` does not link to its predecessor.
    Break {
        /// The event whose link is wrong.
        seq: i64,
        /// `meshguard.prev_hash` as stored.
        prev_hash: String,
        /// What it should be (one value, or several when overlapping gap declarations
        /// each name a last hash).
        expected: Vec<String>,
    },
    /// Seqs missing that no gap declaration covers.
    Gap {
        /// First missing seq.
        from_seq: i64,
        /// Last missing seq.
        to_seq: i64,
    },
    /// A different event arrived for a seq already stored; the first copy was kept.
    Conflict {
        /// The seq.
        seq: i64,
        /// What differed.
        detail: String,
    },
    /// The stream arrived from an authenticated ingest peer whose identity does not match
    /// the workload its events claim (or from more than one peer).
    Peer {
        /// The stream's first stored seq (0 when none is left).
        seq: i64,
        /// The authenticated peer (SPIFFE id or certificate name).
        peer: String,
        /// What is wrong.
        detail: String,
    },
    /// The stream cannot be attributed to its workload: no key for it, or no checkpoint
    /// its key signed (an invented stream, or a filter without `audit.signing_key`).
    Unauthenticated {
        /// Why.
        detail: String,
    },
    /// A signature that does not verify with the workload's key (forged or edited).
    BadSignature {
        /// The checkpoint's seq, or the gap's first seq.
        seq: i64,
        /// What it signs and where it was found.
        detail: String,
    },
    /// A validly signed checkpoint names a different hash than the stored event: the
    /// events up to it were rewritten (hashes recomputed) or the event is missing.
    Rewritten {
        /// The checkpointed seq.
        seq: i64,
        /// The hash the filter signed.
        signed_hash: String,
        /// The hash stored for that seq (empty: no event stored).
        stored_hash: String,
    },
    /// Events after the last validly signed checkpoint: nothing vouches for them (the
    /// filter checkpoints every batch, so a signed stream has none but a batch in flight).
    Unsigned {
        /// First unvouched seq.
        from_seq: i64,
        /// Last stored seq.
        to_seq: i64,
    },
    /// A declared loss without a valid signature: it could be a deletion passed off as
    /// the filter's drop.
    UnsignedGap {
        /// First seq of the declaration.
        from_seq: i64,
        /// Last seq of the declaration.
        to_seq: i64,
    },
    /// The checkpoint log kept outside the store saw the stream reach a seq the store no
    /// longer has: events were cut off its end (or the whole stream removed).
    Truncated {
        /// The highest seq checkpointed outside the store.
        checkpoint_seq: i64,
        /// The highest seq stored (0: none).
        stored_last_seq: i64,
    },
}

impl Finding {
    /// The kind as stored and printed: `altered`, `break`, `gap`, `conflict`, `peer`.
    pub fn kind(&self) -> &'static str {
        match self {
            Finding::Altered { .. } => "altered",
            Finding::Break { .. } => "break",
            Finding::Gap { .. } => "gap",
            Finding::Conflict { .. } => "conflict",
            Finding::Peer { .. } => "peer",
            Finding::Unauthenticated { .. } => "unauthenticated",
            Finding::BadSignature { .. } => "bad_signature",
            Finding::Rewritten { .. } => "rewritten",
            Finding::Unsigned { .. } => "unsigned",
            Finding::UnsignedGap { .. } => "unsigned_gap",
            Finding::Truncated { .. } => "truncated",
        }
    }

    /// The seq it is about (the first missing one for a gap).
    pub fn seq(&self) -> i64 {
        match self {
            Finding::Altered { seq, .. }
            | Finding::Break { seq, .. }
            | Finding::Conflict { seq, .. }
            | Finding::Peer { seq, .. }
            | Finding::BadSignature { seq, .. }
            | Finding::Rewritten { seq, .. } => *seq,
            Finding::Gap { from_seq, .. }
            | Finding::Unsigned { from_seq, .. }
            | Finding::UnsignedGap { from_seq, .. } => *from_seq,
            Finding::Unauthenticated { .. } => 0,
            Finding::Truncated {
                stored_last_seq, ..
            } => stored_last_seq.saturating_add(1),
        }
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Finding::Altered {
                seq,
                hash,
                computed,
            } => format!(
                "seq {seq} altered: content hashes to {} but the event says {}",
                short(computed),
                short(hash)
            ),
            Finding::Break {
                seq,
                prev_hash,
                expected,
            } => format!(
                "seq {seq} breaks the chain: prev_hash {} but its predecessor's hash is {}",
                short(prev_hash),
                expected
                    .iter()
                    .map(|h| short(h))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Finding::Gap { from_seq, to_seq } if from_seq == to_seq => {
                format!("seq {from_seq} missing (no gap declared)")
            }
            Finding::Gap { from_seq, to_seq } => {
                format!("seqs {from_seq}..{to_seq} missing (no gap declared)")
            }
            Finding::Conflict { seq, detail } => format!("seq {seq} conflict: {detail}"),
            Finding::Peer { peer, detail, .. } => format!("sent by peer {peer}: {detail}"),
            Finding::Unauthenticated { detail } => format!("unauthenticated stream: {detail}"),
            Finding::BadSignature { seq, detail } => {
                format!("seq {seq}: signature does not verify ({detail})")
            }
            Finding::Rewritten {
                seq,
                signed_hash,
                stored_hash,
            } => format!(
                "seq {seq} rewritten: the filter signed hash {} but the store holds {}",
                short(signed_hash),
                short(stored_hash)
            ),
            Finding::Unsigned { from_seq, to_seq } => format!(
                "seqs {from_seq}..{to_seq} come after the last signed checkpoint: nothing vouches for them"
            ),
            Finding::UnsignedGap { from_seq, to_seq } => format!(
                "declared loss {from_seq}..{to_seq} is not signed by the workload's key: it may hide deleted events"
            ),
            Finding::Truncated {
                checkpoint_seq,
                stored_last_seq,
            } => format!(
                "truncated: the checkpoint log saw seq {checkpoint_seq} but the store ends at {}",
                if *stored_last_seq == 0 {
                    "no event".to_string()
                } else {
                    format!("seq {stored_last_seq}")
                }
            ),
        }
    }
}

fn short(hash: &str) -> String {
    if hash.is_empty() {
        "(none)".into()
    } else {
        hash.chars().take(12).collect()
    }
}

/// What `prev_hash` an event with this seq must carry, given what is known about its
/// predecessor: the genesis for seq 1, else the predecessor's hash, else the `last_hash`
/// of each gap declared to end just before it. Empty when nothing is known yet.
pub fn expected_prev(
    seq: i64,
    predecessor_hash: Option<&str>,
    gap_last_hashes: &[String],
) -> Vec<String> {
    if seq == 1 {
        vec![CHAIN_GENESIS.to_string()]
    } else if let Some(h) = predecessor_hash {
        vec![h.to_string()]
    } else {
        gap_last_hashes.to_vec()
    }
}

/// A [`Finding::Break`] when `prev_hash` is none of the expected values.
pub fn check_link(seq: i64, prev_hash: &str, expected: Vec<String>) -> Option<Finding> {
    if expected.is_empty() || expected.iter().any(|e| e == prev_hash) {
        None
    } else {
        Some(Finding::Break {
            seq,
            prev_hash: prev_hash.to_string(),
            expected,
        })
    }
}

/// A [`Finding::Altered`] when the content does not hash to the claimed hash.
pub fn check_content(seq: i64, hash: &str, computed: &str) -> Option<Finding> {
    (hash != computed).then(|| Finding::Altered {
        seq,
        hash: hash.to_string(),
        computed: computed.to_string(),
    })
}

/// Events the filter declared dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeclaredLoss {
    /// First dropped seq.
    pub from_seq: i64,
    /// Last dropped seq.
    pub to_seq: i64,
    /// `meshguard.gap.count` as declared.
    pub count: i64,
    /// Hash of the last dropped event.
    pub last_hash: String,
}

/// The verdict on one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// No findings (declared losses allowed).
    Intact,
    /// At least one finding.
    Broken,
    /// Events without chain fields: nothing can be verified.
    Unchained,
}

impl Verdict {
    /// As printed.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Intact => "intact",
            Verdict::Broken => "broken",
            Verdict::Unchained => "unchained",
        }
    }
}

/// The result of verifying one stream (or a workload's unchained events).
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// `envoy.node.id`.
    pub workload: String,
    /// The stream, or `None` for the row of a workload's unchained events.
    pub stream: Option<String>,
    /// Events stored.
    pub events: u64,
    /// Lowest seq stored.
    pub first_seq: Option<i64>,
    /// Highest seq stored.
    pub last_seq: Option<i64>,
    /// Gaps the filter declared.
    pub declared_losses: Vec<DeclaredLoss>,
    /// Distinct seqs covered by declared gaps.
    pub declared_lost_events: u64,
    /// What is wrong.
    pub findings: Vec<Finding>,
    /// intact, broken or unchained.
    pub verdict: Verdict,
    /// Authenticated ingest peers that sent this stream (empty without ingest auth).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Retention deleted every seq below this one on purpose (`--retain`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated_before: Option<i64>,
}

/// One stored event, as the full pass needs it.
#[derive(Debug, Clone)]
pub struct ChainEvent {
    /// `meshguard.seq`.
    pub seq: i64,
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// Trace id hex.
    pub trace_id: String,
    /// `meshguard.prev_hash`.
    pub prev_hash: String,
    /// `meshguard.hash`.
    pub hash: String,
    /// All attributes.
    pub attributes: Map<String, Value>,
}

/// The full pass over one stream: feed its events in seq order, then [`finish`].
///
/// [`finish`]: StreamVerifier::finish
#[derive(Debug)]
pub struct StreamVerifier {
    report: StreamReport,
    prev: Option<(i64, String)>,
}

impl StreamVerifier {
    /// Starts a stream, with its declared gaps.
    pub fn new(workload: &str, stream: &str, mut gaps: Vec<DeclaredLoss>) -> StreamVerifier {
        gaps.sort_by_key(|g| (g.from_seq, g.to_seq));
        let declared_lost_events = union_len(&gaps);
        StreamVerifier {
            report: StreamReport {
                workload: workload.to_string(),
                stream: Some(stream.to_string()),
                events: 0,
                first_seq: None,
                last_seq: None,
                declared_losses: gaps,
                declared_lost_events,
                findings: Vec::new(),
                verdict: Verdict::Intact,
                peers: Vec::new(),
                truncated_before: None,
            },
            prev: None,
        }
    }

    /// The next event; seqs must increase (the store's UNIQUE key makes them distinct).
    pub fn push(&mut self, ev: &ChainEvent) {
        let r = &mut self.report;
        r.events += 1;
        r.first_seq.get_or_insert(ev.seq);
        r.last_seq = Some(ev.seq);
        let computed = event_hash(
            &ev.prev_hash,
            ev.time_unix_nano,
            &ev.trace_id,
            &ev.attributes,
        );
        r.findings
            .extend(check_content(ev.seq, &ev.hash, &computed));
        // The filter never declares a gap over events it sent: an event inside a declared
        // range means the declaration is false, and it would otherwise hide missing seqs.
        if let Some(g) = r
            .declared_losses
            .iter()
            .find(|g| (g.from_seq..=g.to_seq).contains(&ev.seq))
        {
            r.findings.push(Finding::Conflict {
                seq: ev.seq,
                detail: format!(
                    "event stored inside declared gap {}..{}",
                    g.from_seq, g.to_seq
                ),
            });
        }
        let next_expected = self.prev.as_ref().map_or(1, |(s, _)| s.saturating_add(1));
        if ev.seq > next_expected {
            for (from_seq, to_seq) in uncovered(next_expected, ev.seq - 1, &r.declared_losses) {
                r.findings.push(Finding::Gap { from_seq, to_seq });
            }
        }
        let predecessor = match &self.prev {
            Some((s, h)) if *s == ev.seq - 1 => Some(h.as_str()),
            _ => None,
        };
        let gap_hashes: Vec<String> = r
            .declared_losses
            .iter()
            .filter(|g| g.to_seq == ev.seq - 1)
            .map(|g| g.last_hash.clone())
            .collect();
        r.findings.extend(check_link(
            ev.seq,
            &ev.prev_hash,
            expected_prev(ev.seq, predecessor, &gap_hashes),
        ));
        self.prev = Some((ev.seq, ev.hash.clone()));
    }

    /// The report, with findings recorded by the store on arrival (conflicts) added.
    pub fn finish(mut self, recorded: Vec<Finding>) -> StreamReport {
        self.report.findings.extend(recorded);
        self.report.findings.sort_by_key(Finding::seq);
        self.report.verdict = if self.report.findings.is_empty() {
            Verdict::Intact
        } else {
            Verdict::Broken
        };
        self.report
    }
}

/// The report row for a workload's events that carry no chain fields.
pub fn unchained_report(workload: &str, events: u64) -> StreamReport {
    StreamReport {
        workload: workload.to_string(),
        stream: None,
        events,
        first_seq: None,
        last_seq: None,
        declared_losses: Vec::new(),
        declared_lost_events: 0,
        findings: Vec::new(),
        verdict: Verdict::Unchained,
        peers: Vec::new(),
        truncated_before: None,
    }
}

/// The parts of `from..=to` that no gap (sorted by `from_seq`) covers.
fn uncovered(from: i64, to: i64, gaps: &[DeclaredLoss]) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut cur = from;
    for g in gaps {
        if g.to_seq < cur {
            continue;
        }
        if g.from_seq > to {
            break;
        }
        if g.from_seq > cur {
            out.push((cur, g.from_seq - 1));
        }
        cur = cur.max(g.to_seq.saturating_add(1));
        if cur > to {
            return out;
        }
    }
    if cur <= to {
        out.push((cur, to));
    }
    out
}

/// How many distinct seqs the gaps (sorted by `from_seq`) cover.
fn union_len(gaps: &[DeclaredLoss]) -> u64 {
    let mut total: u64 = 0;
    let mut covered_to = 0i64;
    for g in gaps {
        let start = g.from_seq.max(covered_to.saturating_add(1));
        if g.to_seq >= start {
            total += u64::try_from(g.to_seq - start + 1).unwrap_or(0);
        }
        covered_to = covered_to.max(g.to_seq);
    }
    total
}

// ---- Authenticity (README, "Audit integrity") ------------------------------------------
// The chain shows that stored events link up; it cannot show who wrote them, since anyone
// who can write the store can recompute every hash. The filter therefore signs, with a key
// the store never holds, a checkpoint of its stream's head with every batch and each gap
// it declares. Verification with the public keys tells rewritten, invented and (with the
// checkpoint log kept outside the store) truncated streams apart from intact ones.

/// What a stored signature vouches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    /// The hash of event `to_seq` (a checkpoint of the stream's head after a batch).
    Checkpoint,
    /// A declared loss `from_seq..=to_seq` of `count` events whose last hash is `hash`.
    Gap,
}

impl SignatureKind {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureKind::Checkpoint => "checkpoint",
            SignatureKind::Gap => "gap",
        }
    }
}

/// One stored signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureRow {
    /// `envoy.node.id`.
    pub workload: String,
    /// The stream.
    pub stream: String,
    /// What it vouches for.
    pub kind: SignatureKind,
    /// The checkpointed seq, or the gap's first seq.
    pub from_seq: i64,
    /// The checkpointed seq, or the gap's last seq.
    pub to_seq: i64,
    /// The gap's count (0 for a checkpoint).
    pub count: i64,
    /// The checkpointed event's hash, or the gap's last hash.
    pub hash: String,
    /// Base64 Ed25519 signature.
    pub signature: String,
}

impl SignatureRow {
    fn message(&self) -> Vec<u8> {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        match self.kind {
            SignatureKind::Checkpoint => meshguard::audit::checkpoint_message(
                &self.workload,
                &self.stream,
                u(self.to_seq),
                &self.hash,
            ),
            SignatureKind::Gap => meshguard::audit::gap_message(
                &self.workload,
                &self.stream,
                u(self.from_seq),
                u(self.to_seq),
                u(self.count),
                &self.hash,
            ),
        }
    }
}

/// The workloads' public keys (`meshguard audit verify --keys FILE`).
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: std::collections::HashMap<String, Vec<ed25519_compact::PublicKey>>,
}

impl TrustedKeys {
    /// Parses the keys file: one `<workload> <public key>` per line, the key as base64 of
    /// its 32 bytes (standard or URL-safe, e.g. the `x` of the JWKS `meshguard keygen --alg
    /// EdDSA` writes); several lines may name one workload (rotation); `#` starts a comment.
    pub fn parse(text: &str) -> Result<TrustedKeys, String> {
        use ct_codecs::{Base64, Base64NoPadding, Base64UrlSafe, Base64UrlSafeNoPadding, Decoder};
        let mut keys: std::collections::HashMap<String, Vec<ed25519_compact::PublicKey>> =
            std::collections::HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (workload, key) = line
                .rsplit_once(char::is_whitespace)
                .ok_or_else(|| format!("line {}: expected \"<workload> <public key>\"", n + 1))?;
            let key = key.trim();
            let raw = Base64::decode_to_vec(key, None)
                .or_else(|_| Base64NoPadding::decode_to_vec(key, None))
                .or_else(|_| Base64UrlSafe::decode_to_vec(key, None))
                .or_else(|_| Base64UrlSafeNoPadding::decode_to_vec(key, None))
                .map_err(|_| format!("line {}: the public key is not base64", n + 1))?;
            let pk = ed25519_compact::PublicKey::from_slice(&raw).map_err(|_| {
                format!(
                    "line {}: an Ed25519 public key is 32 bytes, got {}",
                    n + 1,
                    raw.len()
                )
            })?;
            keys.entry(workload.trim().to_string())
                .or_default()
                .push(pk);
        }
        if keys.is_empty() {
            return Err("no keys: expected lines \"<workload> <public key>\"".into());
        }
        Ok(TrustedKeys { keys })
    }

    fn verifies(&self, workload: &str, message: &[u8], signature: &str) -> bool {
        use ct_codecs::{Base64, Decoder};
        let Some(sig) = Base64::decode_to_vec(signature, None)
            .ok()
            .and_then(|raw| ed25519_compact::Signature::from_slice(&raw).ok())
        else {
            return false;
        };
        self.keys
            .get(workload)
            .is_some_and(|ks| ks.iter().any(|k| k.verify(message, &sig).is_ok()))
    }
}

/// Checks one stream's signatures and adds what they reveal to its report: `signatures`
/// are the store's for this stream, `outside` the checkpoint log's (kept apart from the
/// store), `stored_hash` the store's `meshguard.hash` at a seq.
pub fn authenticate(
    report: &mut StreamReport,
    keys: &TrustedKeys,
    signatures: &[&SignatureRow],
    outside: &[&SignatureRow],
    stored_hash: &mut dyn FnMut(i64) -> Option<String>,
) {
    let workload = report.workload.clone();
    let last_seq = report.last_seq.unwrap_or(0);
    // Retention (`--retain`) deleted everything below this seq on purpose: a checkpoint
    // there vouches for events that are gone by design, not rewritten.
    let truncated_before = report.truncated_before.unwrap_or(0);
    let mut found = Vec::new();
    if !keys.keys.contains_key(&workload) {
        found.push(Finding::Unauthenticated {
            detail: format!("no public key for workload {workload:?} in the keys file"),
        });
    }
    let mut signed_through = 0i64;
    let mut check_checkpoint = |cp: &SignatureRow, where_: &str, found: &mut Vec<Finding>| {
        if !keys.verifies(&workload, &cp.message(), &cp.signature) {
            if keys.keys.contains_key(&workload) {
                found.push(Finding::BadSignature {
                    seq: cp.to_seq,
                    detail: format!("checkpoint in {where_}"),
                });
            }
            return false;
        }
        match stored_hash(cp.to_seq) {
            Some(h) if h == cp.hash => {}
            Some(h) => found.push(Finding::Rewritten {
                seq: cp.to_seq,
                signed_hash: cp.hash.clone(),
                stored_hash: h,
            }),
            None if cp.to_seq > last_seq || cp.to_seq < truncated_before => {}
            None => found.push(Finding::Rewritten {
                seq: cp.to_seq,
                signed_hash: cp.hash.clone(),
                stored_hash: String::new(),
            }),
        }
        true
    };
    let mut stored_checkpoint_seq = 0i64;
    for cp in signatures
        .iter()
        .filter(|s| s.kind == SignatureKind::Checkpoint)
    {
        if check_checkpoint(cp, "the store", &mut found) {
            stored_checkpoint_seq = stored_checkpoint_seq.max(cp.to_seq);
            signed_through = signed_through.max(cp.to_seq.min(last_seq));
        }
    }
    let mut outside_seq = 0i64;
    for cp in outside
        .iter()
        .filter(|s| s.kind == SignatureKind::Checkpoint)
    {
        if check_checkpoint(cp, "the checkpoint log", &mut found) {
            outside_seq = outside_seq.max(cp.to_seq);
        }
    }
    let known = stored_checkpoint_seq.max(outside_seq);
    if known > last_seq {
        found.push(Finding::Truncated {
            checkpoint_seq: known,
            stored_last_seq: last_seq,
        });
    }
    if keys.keys.contains_key(&workload) {
        if stored_checkpoint_seq == 0 && outside_seq == 0 {
            found.push(Finding::Unauthenticated {
                detail: format!("no checkpoint signed by the key of workload {workload:?}"),
            });
        } else if last_seq > signed_through {
            found.push(Finding::Unsigned {
                from_seq: signed_through.saturating_add(1),
                to_seq: last_seq,
            });
        }
        for g in &report.declared_losses {
            let signed = signatures.iter().any(|s| {
                s.kind == SignatureKind::Gap
                    && (s.from_seq, s.to_seq, s.count, s.hash.as_str())
                        == (g.from_seq, g.to_seq, g.count, g.last_hash.as_str())
                    && keys.verifies(&workload, &s.message(), &s.signature)
            });
            if !signed {
                found.push(Finding::UnsignedGap {
                    from_seq: g.from_seq,
                    to_seq: g.to_seq,
                });
            }
        }
    }
    report.findings.extend(found);
    report.findings.sort_by_key(Finding::seq);
    if !report.findings.is_empty() {
        report.verdict = Verdict::Broken;
    }
}

/// The report of a stream the checkpoint log knows but the store holds nothing of.
pub fn missing_stream_report(workload: &str, stream: &str) -> StreamReport {
    StreamReport {
        workload: workload.to_string(),
        stream: Some(stream.to_string()),
        events: 0,
        first_seq: None,
        last_seq: None,
        declared_losses: Vec::new(),
        declared_lost_events: 0,
        findings: Vec::new(),
        verdict: Verdict::Intact,
        peers: Vec::new(),
        truncated_before: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::event::{decode, testing::*};

    /// Decodes records into what the store would hand the full pass.
    fn chain_events(
        records: Vec<opentelemetry_proto::tonic::logs::v1::LogRecord>,
    ) -> Vec<ChainEvent> {
        decode(&request("n", records))
            .events
            .into_iter()
            .map(|e| {
                let c = e.chain.unwrap();
                ChainEvent {
                    seq: c.seq,
                    time_unix_nano: e.time_unix_nano,
                    trace_id: e.trace_id,
                    prev_hash: c.prev_hash,
                    hash: c.hash,
                    attributes: e.attributes,
                }
            })
            .collect()
    }

    fn verify(events: &[ChainEvent], gaps: Vec<DeclaredLoss>) -> StreamReport {
        let mut v = StreamVerifier::new("n", "s", gaps);
        for e in events {
            v.push(e);
        }
        v.finish(Vec::new())
    }

    fn loss(from_seq: i64, to_seq: i64, last_hash: &str) -> DeclaredLoss {
        DeclaredLoss {
            from_seq,
            to_seq,
            count: to_seq - from_seq + 1,
            last_hash: last_hash.into(),
        }
    }

    #[test]
    fn an_untouched_chain_is_intact() {
        let mut c = Chain::new("s");
        let evs = chain_events((0..5).map(|_| c.event("a", "read:x", "allow")).collect());
        let r = verify(&evs, Vec::new());
        assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.findings);
        assert_eq!((r.events, r.first_seq, r.last_seq), (5, Some(1), Some(5)));
    }

    #[test]
    fn altered_content_and_rewritten_hash_are_both_caught() {
        let mut c = Chain::new("s");
        let mut evs = chain_events((0..4).map(|_| c.event("a", "read:x", "deny")).collect());
        // Content changed, hash left: altered at 2.
        evs[1]
            .attributes
            .insert("meshguard.decision".into(), Value::from("allow"));
        // Content changed and hash recomputed: 3 verifies alone but 4 no longer links.
        evs[2]
            .attributes
            .insert("meshguard.action".into(), Value::from("read:y"));
        evs[2].hash = event_hash(
            &evs[2].prev_hash,
            evs[2].time_unix_nano,
            &evs[2].trace_id,
            &evs[2].attributes,
        );
        let r = verify(&evs, Vec::new());
        let kinds: Vec<(&str, i64)> = r.findings.iter().map(|f| (f.kind(), f.seq())).collect();
        assert_eq!(kinds, [("altered", 2), ("break", 4)]);
        assert_eq!(r.verdict, Verdict::Broken);
    }

    #[test]
    fn declared_losses_keep_the_chain_intact_and_undeclared_gaps_do_not() {
        let mut c = Chain::new("s");
        let mut records = vec![c.event("a", "x", "allow")];
        let gap = c.drop_events(2); // seqs 2..3
        let last = c.last_hash.clone();
        records.push(c.event("a", "x", "allow")); // 4
        let _lost = c.event("a", "x", "allow"); // 5, lost in transit
        records.push(c.event("a", "x", "allow")); // 6
        drop(gap);
        let evs = chain_events(records);
        let r = verify(&evs, vec![loss(2, 3, &last)]);
        assert_eq!(r.declared_lost_events, 2);
        let kinds: Vec<(&str, i64)> = r.findings.iter().map(|f| (f.kind(), f.seq())).collect();
        assert_eq!(kinds, [("gap", 5)], "{:?}", r.findings);

        let r = verify(&evs[..2], Vec::new());
        assert_eq!(
            r.findings,
            [Finding::Gap {
                from_seq: 2,
                to_seq: 3
            }]
        );

        // A declaration whose last hash is wrong does not let a forged event through.
        let r = verify(&evs[..2], vec![loss(2, 3, CHAIN_GENESIS)]);
        assert_eq!(r.findings.len(), 1);
        assert_eq!(r.findings[0].kind(), "break");
    }

    #[test]
    fn a_declaration_over_stored_events_is_a_conflict() {
        let mut c = Chain::new("s");
        let evs = chain_events((0..4).map(|_| c.event("a", "x", "allow")).collect());
        // Seq 2 deleted and "declared" lost together with seq 3, which is still stored.
        let kept = [evs[0].clone(), evs[2].clone(), evs[3].clone()];
        let r = verify(&kept, vec![loss(2, 3, &evs[2].prev_hash)]);
        let kinds: Vec<(&str, i64)> = r.findings.iter().map(|f| (f.kind(), f.seq())).collect();
        assert_eq!(kinds, [("conflict", 3)], "{:?}", r.findings);
    }

    #[test]
    fn a_stream_that_starts_late_is_a_gap_unless_declared() {
        let mut c = Chain::new("s");
        let _ = c.event("a", "x", "allow");
        let evs = chain_events(vec![c.event("a", "x", "allow")]);
        let r = verify(&evs, Vec::new());
        assert_eq!(
            r.findings,
            [Finding::Gap {
                from_seq: 1,
                to_seq: 1
            }]
        );
    }

    #[test]
    fn coverage_arithmetic() {
        let gaps = [loss(2, 3, ""), loss(3, 5, ""), loss(9, 9, "")];
        assert_eq!(uncovered(1, 10, &gaps), [(1, 1), (6, 8), (10, 10)]);
        assert_eq!(uncovered(2, 5, &gaps), []);
        assert_eq!(union_len(&gaps), 5);
    }

    #[test]
    fn links_are_only_judged_with_a_known_predecessor() {
        assert_eq!(check_link(7, "abc", expected_prev(7, None, &[])), None);
        assert!(check_link(1, "abc", expected_prev(1, None, &[])).is_some());
        assert_eq!(
            check_link(1, CHAIN_GENESIS, expected_prev(1, None, &[])),
            None
        );
        assert_eq!(check_link(3, "h2", expected_prev(3, Some("h2"), &[])), None);
    }

    mod authenticity {
        use super::*;
        use crate::collector::event::Batch;
        use meshguard::audit::otlp::AnyValue as FilterValue;
        use meshguard::audit::{AuditBuffer, AuditEvent};
        use meshguard::config::AuditConfig;
        use prost::Message;
        use std::collections::HashMap;

        const SEED: [u8; 32] = [5; 32];

        fn seed_b64() -> String {
            use ct_codecs::Encoder;
            ct_codecs::Base64::encode_to_string(SEED).unwrap()
        }

        fn keys_for(workload: &str) -> TrustedKeys {
            use ct_codecs::Encoder;
            let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(SEED));
            let pk = ct_codecs::Base64::encode_to_string(kp.pk.as_ref()).unwrap();
            TrustedKeys::parse(&format!("# test\n{workload} {pk}\n")).unwrap()
        }

        /// What the real filter exports for `n` events in batches of 3, decoded.
        fn filter_batches(n: u8, signed: bool) -> Vec<Batch> {
            let cfg = AuditConfig {
                max_batch: 3,
                signing_key: signed.then(seed_b64),
                ..AuditConfig::default()
            };
            let mut buffer = AuditBuffer::new(&cfg, meshguard::audit::Chain::new("st"));
            for i in 0..n {
                buffer.push(AuditEvent {
                    time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
                    decision: "deny".into(),
                    agent_id: format!("agent-{i}"),
                    action: "delete:db".into(),
                    ..AuditEvent::default()
                });
            }
            let mut out = Vec::new();
            while let Some((id, bytes)) =
                buffer.take_batch(0, 1, &[("envoy.node.id", FilterValue::Str("pod-1"))])
            {
                buffer.finish_batch(id, true, 0);
                let req = opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest::decode(bytes.as_slice()).unwrap();
                out.push(decode(&req));
            }
            out
        }

        struct Store {
            events: Vec<ChainEvent>,
            sigs: Vec<SignatureRow>,
            gaps: Vec<DeclaredLoss>,
        }

        fn store(batches: &[Batch]) -> Store {
            let mut s = Store {
                events: Vec::new(),
                sigs: Vec::new(),
                gaps: Vec::new(),
            };
            for b in batches {
                for e in &b.events {
                    let c = e.chain.clone().unwrap();
                    s.events.push(ChainEvent {
                        seq: c.seq,
                        time_unix_nano: e.time_unix_nano,
                        trace_id: e.trace_id.clone(),
                        prev_hash: c.prev_hash,
                        hash: c.hash,
                        attributes: e.attributes.clone(),
                    });
                }
                s.sigs.extend(
                    b.checkpoints
                        .iter()
                        .map(crate::collector::store::checkpoint_row),
                );
            }
            s
        }

        fn check(s: &Store, keys: &TrustedKeys, outside: &[SignatureRow]) -> StreamReport {
            let mut v = StreamVerifier::new("pod-1", "st", s.gaps.clone());
            for e in &s.events {
                v.push(e);
            }
            let mut r = v.finish(Vec::new());
            let hashes: HashMap<i64, String> =
                s.events.iter().map(|e| (e.seq, e.hash.clone())).collect();
            let sigs: Vec<&SignatureRow> = s.sigs.iter().collect();
            let outside: Vec<&SignatureRow> = outside.iter().collect();
            authenticate(&mut r, keys, &sigs, &outside, &mut |seq| {
                hashes.get(&seq).cloned()
            });
            r
        }

        fn kinds(r: &StreamReport) -> Vec<(&'static str, i64)> {
            r.findings.iter().map(|f| (f.kind(), f.seq())).collect()
        }

        #[test]
        fn a_signed_stream_from_the_filter_is_intact_and_authenticated() {
            let batches = filter_batches(7, true);
            assert_eq!(batches.len(), 3);
            assert!(batches
                .iter()
                .all(|b| b.checkpoints.len() == 1 && b.rejected.is_empty()));
            let r = check(&store(&batches), &keys_for("pod-1"), &[]);
            assert_eq!(r.verdict, Verdict::Intact, "{:?}", r.findings);
        }

        #[test]
        fn a_rewritten_suffix_with_recomputed_hashes_is_revealed_by_the_checkpoints() {
            let mut s = store(&filter_batches(7, true));
            // The store writer turns seq 5 into an allow and recomputes the chain 5..7.
            let mut prev = s.events[3].hash.clone();
            for e in s.events.iter_mut().skip(4) {
                if e.seq == 5 {
                    e.attributes
                        .insert("meshguard.decision".into(), Value::from("allow"));
                }
                e.attributes
                    .insert("meshguard.prev_hash".into(), Value::from(prev.clone()));
                e.prev_hash = prev.clone();
                e.hash = event_hash(&e.prev_hash, e.time_unix_nano, &e.trace_id, &e.attributes);
                prev = e.hash.clone();
            }
            let keys = keys_for("pod-1");
            let mut v = StreamVerifier::new("pod-1", "st", Vec::new());
            for e in &s.events {
                v.push(e);
            }
            assert_eq!(
                v.finish(Vec::new()).verdict,
                Verdict::Intact,
                "the chain alone is fooled"
            );
            let r = check(&s, &keys, &[]);
            assert_eq!(
                kinds(&r),
                [("rewritten", 6), ("rewritten", 7)],
                "{:?}",
                r.findings
            );
            // ... and editing the checkpoints too breaks their signatures.
            for sig in s.sigs.iter_mut().filter(|x| x.to_seq > 3) {
                sig.hash = s.events[usize::try_from(sig.to_seq - 1).unwrap()]
                    .hash
                    .clone();
            }
            let r = check(&s, &keys, &[]);
            assert_eq!(
                kinds(&r),
                [("unsigned", 4), ("bad_signature", 6), ("bad_signature", 7)],
                "{:?}",
                r.findings
            );
        }

        #[test]
        fn an_invented_stream_is_unauthenticated() {
            let s = store(&filter_batches(4, false));
            let r = check(&s, &keys_for("pod-1"), &[]);
            assert_eq!(kinds(&r), [("unauthenticated", 0)], "{:?}", r.findings);
            // signed by someone, but not by a key the keys file has for this workload
            let s = store(&filter_batches(4, true));
            let r = check(&s, &keys_for("pod-2"), &[]);
            assert_eq!(kinds(&r), [("unauthenticated", 0)], "{:?}", r.findings);
            assert!(r.findings[0]
                .describe()
                .contains("no public key for workload \"pod-1\""));
        }

        #[test]
        fn truncation_after_a_checkpoint_shows_against_the_outside_log() {
            let batches = filter_batches(7, true);
            let outside: Vec<SignatureRow> = batches
                .iter()
                .flat_map(|b| {
                    b.checkpoints
                        .iter()
                        .map(crate::collector::store::checkpoint_row)
                })
                .collect();
            let mut s = store(&batches);
            // The last batch (seq 7 and its checkpoint) removed from the store.
            s.events.retain(|e| e.seq <= 6);
            s.sigs.retain(|x| x.to_seq <= 6);
            let keys = keys_for("pod-1");
            assert_eq!(
                check(&s, &keys, &[]).verdict,
                Verdict::Intact,
                "undetectable from the store alone"
            );
            let r = check(&s, &keys, &outside);
            assert_eq!(kinds(&r), [("truncated", 7)], "{:?}", r.findings);
            assert!(r.findings[0]
                .describe()
                .contains("saw seq 7 but the store ends at seq 6"));
        }

        #[test]
        fn a_deletion_passed_off_as_a_declared_loss_is_an_unsigned_gap() {
            let mut s = store(&filter_batches(7, true));
            let last = s.events[2].hash.clone();
            s.events.retain(|e| e.seq != 2 && e.seq != 3);
            s.gaps.push(DeclaredLoss {
                from_seq: 2,
                to_seq: 3,
                count: 2,
                last_hash: last,
            });
            let r = check(&s, &keys_for("pod-1"), &[]);
            assert_eq!(
                kinds(&r),
                [("unsigned_gap", 2), ("rewritten", 3)],
                "{:?}",
                r.findings
            );
        }

        #[test]
        fn keys_files_are_checked() {
            assert!(TrustedKeys::parse("").is_err());
            let e = TrustedKeys::parse("pod-1 AAAA").unwrap_err();
            assert!(e.contains("32 bytes"), "{e}");
            assert!(TrustedKeys::parse("justonefield").is_err());
        }
    }
}
