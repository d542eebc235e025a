//! ES256 (ECDSA P-256 / SHA-256) verification with per-key precomputed tables.
//!
//! Why not jwt-simple's own ES256: `p256` 0.14 verifies with a generic wNAF `u1·G + u2·Q`
//! (about 256 doublings plus ~100 additions) and offers no per-key precomputation, which
//! made a cold ES256 token cost ~950 µs per request in Envoy's V8 (bench/README.md "Cold
//! verification in V8"). Here both `G` (once per VM) and every JWKS key (once, when it is
//! parsed) get a fixed-base table of affine multiples for every `w`-bit window, so a
//! verification is only ~2·⌈257/w⌉ mixed additions and no doublings. All arithmetic is
//! `p256`'s own; this module only chooses which points to add. The inputs (key, message,
//! signature) are public, so variable-time lookups and inversion leak nothing secret.
//!
//! The token checks around the signature replicate jwt-simple's `Token::verify` and
//! `JWTClaims::validate` step for step (both are crate-private there) and return the same
//! `JWTError`s, so `IdentityError` reasons are unchanged; the tests below compare both
//! implementations on the same tokens.

use jwt_simple::prelude::{JWTClaims, NoCustomClaims, VerificationOptions};
use jwt_simple::JWTError;
use p256::ecdsa::Signature;
use p256::elliptic_curve::group::{Curve, Group};
use p256::elliptic_curve::ops::Reduce;
use p256::elliptic_curve::point::AffineCoordinates;
use p256::elliptic_curve::PrimeField;
use p256::{AffinePoint, FieldBytes, ProjectivePoint, PublicKey, Scalar};
use sha2::{Digest, Sha256};
use std::sync::{Arc, OnceLock};

/// Window width in bits. Measured 2026-11-30 (bench/README.md "ES256 with per-key
/// tables"): natively w = 5 verifies in 59.7 µs with 60 KB of table per key, w = 6 in
/// 56.3 µs with 99 KB; in Envoy the two were within noise (+268 / +255 µs CPU per cold
/// request, against +740 µs before), so the smaller table wins.
const WINDOW: u32 = 5;

/// Affine multiples `d·2^(w·i)·P` for `d` in `1..=2^(w-1)` and every window `i`: with signed
/// digits, `k·P` is one table lookup and one mixed addition per non-zero window.
struct FixedBaseTable {
    w: u32,
    /// `2^(w-1)` points per window, windows in order.
    points: Vec<AffinePoint>,
}

impl FixedBaseTable {
    fn new(point: ProjectivePoint, w: u32) -> FixedBaseTable {
        let half = 1usize << (w - 1);
        let windows = windows(w);
        let mut projective = Vec::with_capacity(windows * half);
        let mut base = point;
        for _ in 0..windows {
            let mut multiple = base;
            for _ in 0..half {
                projective.push(multiple);
                multiple += base;
            }
            for _ in 0..w {
                base = base.double();
            }
        }
        let mut points = vec![AffinePoint::IDENTITY; projective.len()];
        ProjectivePoint::batch_normalize(&projective, &mut points);
        FixedBaseTable { w, points }
    }

    /// Adds `k·P` to `acc`. Variable time: `k` is derived from public values only.
    fn add_multiple(&self, acc: &mut ProjectivePoint, k: &Scalar) {
        let half = 1usize << (self.w - 1);
        let bytes = k.to_repr();
        let mut carry = 0u32;
        for i in 0..windows(self.w) {
            let v = window_bits(&bytes, i as u32 * self.w, self.w) + carry;
            // Signed digit in -2^(w-1)..=2^(w-1): halves the table, negation is free.
            let (magnitude, negative) = if v > (1 << (self.w - 1)) {
                carry = 1;
                ((1u32 << self.w) - v, true)
            } else {
                carry = 0;
                (v, false)
            };
            if magnitude == 0 {
                continue;
            }
            let Some(p) = self.points.get(i * half + magnitude as usize - 1) else {
                continue;
            };
            if negative {
                *acc += -p;
            } else {
                *acc += p;
            }
        }
    }

    /// Bytes held by the table (what a key costs in memory).
    #[cfg(test)]
    fn size_bytes(&self) -> usize {
        self.points.len() * std::mem::size_of::<AffinePoint>()
    }
}

/// Windows needed for a 256-bit scalar plus the final carry of the signed recoding.
fn windows(w: u32) -> usize {
    257usize.div_ceil(w as usize)
}

/// Bits `start..start + len` of a big-endian 256-bit number (zero past bit 255).
fn window_bits(be: &FieldBytes, start: u32, len: u32) -> u32 {
    (0..len).fold(0, |acc, j| {
        let bit = start + j;
        let byte = be
            .get(31usize.wrapping_sub(bit as usize / 8))
            .copied()
            .unwrap_or(0);
        acc | (u32::from((byte >> (bit % 8)) & 1) << j)
    })
}

/// The generator's table: built once per VM, on the first ES256 key.
fn generator_table() -> &'static FixedBaseTable {
    static TABLE: OnceLock<FixedBaseTable> = OnceLock::new();
    TABLE.get_or_init(|| FixedBaseTable::new(ProjectivePoint::GENERATOR, WINDOW))
}

/// An ES256 public key with its precomputed table. Clones share the table.
#[derive(Clone)]
pub(super) struct Es256Key {
    table: Arc<FixedBaseTable>,
}

impl Es256Key {
    /// Builds the key's table from the public point (what `ES256PublicKey` already
    /// validated: on the curve, not the identity).
    pub(super) fn new(key: &jwt_simple::prelude::ES256PublicKey) -> Result<Es256Key, String> {
        Self::with_window(key, WINDOW)
    }

    fn with_window(key: &jwt_simple::prelude::ES256PublicKey, w: u32) -> Result<Es256Key, String> {
        let point = PublicKey::from_sec1_bytes(&key.to_bytes())
            .map_err(|e| format!("not a P-256 public key: {e}"))?;
        generator_table();
        Ok(Es256Key {
            table: Arc::new(FixedBaseTable::new(point.to_projective(), w)),
        })
    }

    /// Bytes the key's table holds (the generator's table is shared by all keys).
    #[cfg(test)]
    fn table_bytes(&self) -> usize {
        self.table.size_bytes()
    }

    /// ECDSA verification of `message` (SHA-256 hashed here) with the same acceptance as
    /// `p256`'s `verify_prehashed`: `r`, `s` in `1..n`, high `s` accepted (`NORMALIZE_S` is
    /// false for P-256), `R ≠ ∞` and `x(R) mod n = r`.
    fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = Signature::try_from(signature) else {
            return false;
        };
        let (r, s) = sig.split_scalars();
        let z = <Scalar as Reduce<FieldBytes>>::reduce(&Sha256::digest(message));
        let Some(s_inv) = Option::<Scalar>::from(s.invert_vartime()) else {
            return false;
        };
        let mut acc = ProjectivePoint::IDENTITY;
        generator_table().add_multiple(&mut acc, &(z * s_inv));
        self.table.add_multiple(&mut acc, &(*r * s_inv));
        let affine = acc.to_affine();
        if bool::from(affine.is_identity()) {
            return false;
        }
        <Scalar as Reduce<FieldBytes>>::reduce(&affine.x()) == *r
    }

    /// `ES256PublicKey::verify_token` with the signature checked through the tables.
    pub(super) fn verify_token(
        &self,
        token: &str,
        options: Option<VerificationOptions>,
    ) -> Result<JWTClaims<NoCustomClaims>, jwt_simple::Error> {
        super::jws::verify_token(token, options, &["ES256"], |signed, signature| {
            if self.verify_signature(signed, signature) {
                Ok(())
            } else {
                Err(JWTError::InvalidSignature.into())
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ct_codecs::{Base64UrlSafeNoPadding, Encoder};
    use jwt_simple::prelude::{
        Duration, ECDSAP256PublicKeyLike, ES256PublicKey, HashSet, UnixTimeStamp,
    };
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::ecdsa::{SigningKey, VerifyingKey};
    use p256::elliptic_curve::bigint::U256;
    use p256::NonZeroScalar;
    use serde_json::Value;

    /// Deterministic bytes: SHA-256 of a label and counter (reproducible failures).
    fn bytes32(label: &str, i: u64) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(label.as_bytes());
        h.update(i.to_be_bytes());
        h.finalize().into()
    }

    fn signing_key(i: u64) -> SigningKey {
        SigningKey::from_slice(&bytes32("key", i)).unwrap()
    }

    fn public(vk: &VerifyingKey) -> ES256PublicKey {
        ES256PublicKey::from_bytes(vk.to_sec1_point(false).as_bytes()).unwrap()
    }

    fn table_key(vk: &VerifyingKey, w: u32) -> Es256Key {
        Es256Key::with_window(&public(vk), w).unwrap()
    }

    /// p256's own verdict: what jwt-simple's ES256 path calls (SHA-256 + `verify_prehashed`).
    fn reference(vk: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
        Signature::try_from(sig).is_ok_and(|s| vk.verify(msg, &s).is_ok())
    }

    fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
        let mut v = bytes.to_vec();
        v[bit / 8] ^= 1 << (bit % 8);
        v
    }

    fn n_bytes() -> [u8; 32] {
        U256::from_be_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551")
            .to_be_bytes()
            .into()
    }

    #[test]
    fn agrees_with_p256_on_random_keys_messages_and_corruptions() {
        let mut checked = 0;
        for i in 0..300u64 {
            let sk = signing_key(i);
            let vk = *sk.verifying_key();
            // Every window width in the measured range stays correct, not only the chosen one.
            let key = table_key(&vk, 4 + (i % 4) as u32);
            let other = *signing_key(i + 10_000).verifying_key();
            for m in 0..4u64 {
                let msg = bytes32("msg", i * 4 + m);
                let sig: Signature = sk.sign(&msg);
                let sig = sig.to_bytes().to_vec();
                assert!(reference(&vk, &msg, &sig));
                assert!(key.verify_signature(&msg, &sig), "key {i} msg {m}");
                let pick = bytes32("bit", i * 4 + m);
                let sig_bit = usize::from(pick[0]) * 2 + usize::from(pick[1] & 1);
                let bad_sig = flip(&sig, sig_bit);
                assert_eq!(
                    key.verify_signature(&msg, &bad_sig),
                    reference(&vk, &msg, &bad_sig)
                );
                assert!(!key.verify_signature(&msg, &bad_sig));
                let bad_msg = flip(&msg, usize::from(pick[2]));
                assert!(!key.verify_signature(&bad_msg, &sig));
                assert!(!reference(&vk, &bad_msg, &sig));
                if i < 4 {
                    // Someone else's key.
                    assert!(!table_key(&other, WINDOW).verify_signature(&msg, &sig));
                }
                checked += 1;
            }
            assert!(!reference(&other, &bytes32("msg", i * 4), &[0; 64]));
        }
        assert_eq!(checked, 1200);
    }

    #[test]
    fn every_bit_of_signature_message_and_key_flipped() {
        for i in 0..3u64 {
            let sk = signing_key(100 + i);
            let vk = *sk.verifying_key();
            let key = table_key(&vk, WINDOW);
            let msg = bytes32("msg", 100 + i);
            let sig: Signature = sk.sign(&msg);
            let sig = sig.to_bytes().to_vec();
            for bit in 0..512 {
                let bad = flip(&sig, bit);
                assert_eq!(key.verify_signature(&msg, &bad), reference(&vk, &msg, &bad));
                assert!(!key.verify_signature(&msg, &bad), "sig bit {bit}");
            }
            for bit in 0..256 {
                assert!(
                    !key.verify_signature(&flip(&msg, bit), &sig),
                    "msg bit {bit}"
                );
            }
            // Key bits: flipping the compressed x gives another valid point about half the time.
            let compressed = vk.to_sec1_point(true).as_bytes().to_vec();
            let mut other_points = 0;
            for bit in 0..256 {
                let bytes = flip(&compressed, 8 + bit);
                let Ok(vk2) = VerifyingKey::from_sec1_bytes(&bytes) else {
                    assert!(ES256PublicKey::from_bytes(&bytes).is_err());
                    continue;
                };
                other_points += 1;
                let key2 = table_key(&vk2, WINDOW);
                assert_eq!(
                    key2.verify_signature(&msg, &sig),
                    reference(&vk2, &msg, &sig)
                );
                assert!(!key2.verify_signature(&msg, &sig), "key bit {bit}");
            }
            assert!(other_points > 50, "{other_points}");
        }
    }

    #[test]
    fn out_of_range_scalars_and_high_s_match_p256() {
        let sk = signing_key(7);
        let vk = *sk.verifying_key();
        let key = table_key(&vk, WINDOW);
        let msg = b"edge cases";
        let sig: Signature = sk.sign(msg);
        let (r, s) = (sig.r().to_bytes(), sig.s().to_bytes());
        let n = n_bytes();
        let n_plus_1 = U256::from_be_slice(&n)
            .wrapping_add(&U256::ONE)
            .to_be_bytes();
        let cat = |a: &[u8], b: &[u8]| [a, b].concat();
        for bad in [
            cat(&[0; 32], &s),
            cat(&r, &[0; 32]),
            cat(&n, &s),
            cat(&r, &n),
            cat(&n_plus_1, &s),
            cat(&r, &n_plus_1),
            cat(&[0xff; 32], &s),
            cat(&r, &[0xff; 32]),
            cat(&r, &s)[..63].to_vec(),
            cat(&cat(&r, &s), &[0]),
            Vec::new(),
        ] {
            assert!(!reference(&vk, msg, &bad));
            assert!(!key.verify_signature(msg, &bad));
        }
        // High s (n - s) verifies in p256 for P-256 (NORMALIZE_S = false): same here.
        let high = cat(&r, &(-*sig.s()).to_bytes());
        assert_eq!(reference(&vk, msg, &high), key.verify_signature(msg, &high));
        assert!(key.verify_signature(msg, &high));
    }

    #[test]
    fn point_at_infinity_is_rejected() {
        // Q = d·G and r = -z/d make u1·G + u2·Q = ∞, for d = 1 (Q = G) and d = n - 1 (Q = -G).
        let msg = b"infinity";
        let z = <Scalar as Reduce<FieldBytes>>::reduce(&Sha256::digest(msg));
        for d in [Scalar::ONE, -Scalar::ONE, Scalar::from(12345u64)] {
            let sk = SigningKey::from(NonZeroScalar::new(d).unwrap());
            let vk = *sk.verifying_key();
            let key = table_key(&vk, WINDOW);
            let r = -z * d.invert().unwrap();
            let s = Scalar::from(3u64);
            let sig = [r.to_bytes().to_vec(), s.to_bytes().to_vec()].concat();
            assert!(!reference(&vk, msg, &sig));
            assert!(!key.verify_signature(msg, &sig));
        }
    }

    #[test]
    fn r_is_x_mod_n_when_x_is_at_least_n() {
        // A point R with n ≤ x(R) < p, then a key Q = u2⁻¹(R − u1·G) for which (x − n, s)
        // is a valid signature: the x-to-r reduction must match p256's.
        let n = U256::from_be_slice(&n_bytes());
        let big_r = (0u64..)
            .find_map(|k| {
                let x = n.wrapping_add(&U256::from(k)).to_be_bytes();
                let enc = [&[2u8][..], &x[..]].concat();
                PublicKey::from_sec1_bytes(&enc).ok()
            })
            .unwrap();
        let r = <Scalar as Reduce<FieldBytes>>::reduce(&big_r.as_affine().x());
        let msg = b"wraps around";
        let z = <Scalar as Reduce<FieldBytes>>::reduce(&Sha256::digest(msg));
        let s = Scalar::from(5u64);
        let s_inv = s.invert().unwrap();
        let (u1, u2) = (z * s_inv, r * s_inv);
        let q = (big_r.to_projective() - ProjectivePoint::GENERATOR * u1) * u2.invert().unwrap();
        let vk = VerifyingKey::from_affine(q.to_affine()).unwrap();
        let sig = [r.to_bytes().to_vec(), s.to_bytes().to_vec()].concat();
        assert!(reference(&vk, msg, &sig));
        assert!(table_key(&vk, WINDOW).verify_signature(msg, &sig));
        let wrong = [(r + Scalar::ONE).to_bytes().to_vec(), s.to_bytes().to_vec()].concat();
        assert!(!table_key(&vk, WINDOW).verify_signature(msg, &wrong));
    }

    fn b64(bytes: &[u8]) -> String {
        Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
    }

    fn token(sk: &SigningKey, header: &str, claims: &str) -> String {
        let signed = format!("{}.{}", b64(header.as_bytes()), b64(claims.as_bytes()));
        let sig: Signature = sk.sign(signed.as_bytes());
        format!("{signed}.{}", b64(&sig.to_bytes()))
    }

    /// Ok claims as JSON, or the error's message (JWTError messages are distinct).
    fn outcome(r: Result<JWTClaims<NoCustomClaims>, jwt_simple::Error>) -> String {
        match r {
            Ok(c) => {
                // `aud` is a set: its order is the hasher's, not the token's.
                let mut v = serde_json::to_value(&c).unwrap();
                if let Some(Value::Array(a)) = v.get_mut("aud") {
                    a.sort_by_key(|x| x.to_string());
                }
                format!("ok {v}")
            }
            Err(e) => format!("err {e}"),
        }
    }

    #[test]
    fn token_outcomes_equal_jwt_simple() {
        let sk = signing_key(42);
        let vk = *sk.verifying_key();
        let theirs = public(&vk);
        let ours = Es256Key::new(&theirs).unwrap();
        let other = signing_key(43);
        let now = 1_800_000_000u64;
        let options = || VerificationOptions {
            allowed_issuers: Some(HashSet::from(["iss".to_string()])),
            allowed_audiences: Some(HashSet::from(["agents".to_string()])),
            time_tolerance: Some(Duration::from_secs(60)),
            max_token_length: Some(4096),
            artificial_time: Some(UnixTimeStamp::from_secs(now)),
            ..VerificationOptions::default()
        };
        let h = r#"{"alg":"ES256","typ":"JWT"}"#;
        let claims = |extra: &str| {
            format!(
                r#"{{"iss":"iss","aud":"agents","sub":"a","exp":{},"iat":{}{extra}}}"#,
                now + 300,
                now - 10
            )
        };
        let mut tokens = vec![
            token(&sk, h, &claims("")),
            token(&sk, r#"{"alg":"ES256"}"#, &claims("")),
            token(&sk, r#"{"alg":"ES256","typ":"at+jwt"}"#, &claims("")),
            token(&sk, r#"{"alg":"ES256","typ":"foo"}"#, &claims("")),
            token(&sk, r#"{"alg":"ES256","crit":[]}"#, &claims("")),
            token(&sk, r#"{"alg":"ES256","crit":["x"]}"#, &claims("")),
            token(&sk, r#"{"alg":"ES256","salt":"AAAA"}"#, &claims("")),
            token(&sk, r#"{"alg":"ES256","salt":"!!"}"#, &claims("")),
            token(&sk, r#"{"alg":"ES256","salt":5}"#, &claims("")),
            token(&sk, r#"{"alg":"ES384"}"#, &claims("")),
            token(&sk, r#"{"alg":"ES256","kid":"k"}"#, &claims("")),
            token(&sk, r#"{"typ":"JWT"}"#, &claims("")),
            token(&sk, "[]", &claims("")),
            token(&sk, "not json", &claims("")),
            token(&other, h, &claims("")),
            token(
                &sk,
                h,
                &format!(r#"{{"iss":"iss","aud":"agents","exp":{}}}"#, now - 61),
            ),
            token(
                &sk,
                h,
                &format!(r#"{{"iss":"iss","aud":"agents","exp":{}}}"#, now - 59),
            ),
            token(
                &sk,
                h,
                &format!(r#"{{"iss":"iss","aud":"agents","nbf":{}}}"#, now + 61),
            ),
            token(
                &sk,
                h,
                &format!(r#"{{"iss":"iss","aud":"agents","nbf":{}}}"#, now + 59),
            ),
            token(
                &sk,
                h,
                &format!(r#"{{"iss":"iss","aud":"agents","iat":{}}}"#, now + 61),
            ),
            token(
                &sk,
                h,
                &format!(r#"{{"iss":"iss","aud":"agents","iat":{}}}"#, now + 59),
            ),
            token(&sk, h, r#"{"iss":"other","aud":"agents"}"#),
            token(&sk, h, r#"{"aud":"agents"}"#),
            token(&sk, h, r#"{"iss":"iss","aud":"nobody"}"#),
            token(&sk, h, r#"{"iss":"iss","aud":["nobody","agents"]}"#),
            token(&sk, h, r#"{"iss":"iss"}"#),
            token(&sk, h, r#"{"iss":"iss","aud":"agents","exp":"soon"}"#),
            token(&sk, h, r#"{"iss":"iss","aud":5}"#),
            token(
                &sk,
                h,
                r#"{"iss":"iss","aud":"agents","nonce":"n","jti":"j"}"#,
            ),
            token(&sk, h, "[1]"),
            token(&sk, h, "x"),
        ];
        let good = tokens[0].clone();
        let (head, sig) = good.rsplit_once('.').unwrap();
        tokens.extend([
            format!("{good}.x"),
            head.to_string(),
            format!("{head}.!!"),
            format!("{head}.{}", b64(&[0; 64])),
            format!("{head}.{}", b64(&[1; 63])),
            format!("{head}A.{sig}"),
            format!("{}.{sig}", "A".repeat(4000)),
            format!("{}.x.{sig}", "A".repeat(9000)),
            String::new(),
            "..".to_string(),
        ]);
        let mut oks = 0;
        for t in &tokens {
            let a = outcome(theirs.verify_token::<NoCustomClaims>(t, Some(options())));
            let b = outcome(ours.verify_token(t, Some(options())));
            assert_eq!(a, b, "token {t}");
            oks += usize::from(a.starts_with("ok"));
        }
        assert!(oks >= 8, "{oks} accepted");
        // Options this module never sets still follow jwt-simple.
        let strict = VerificationOptions {
            required_signature_type: Some("jwt".into()),
            required_content_type: Some("x".into()),
            required_key_id: Some("k".into()),
            required_subject: Some("b".into()),
            required_nonce: Some("n".into()),
            reject_before: Some(UnixTimeStamp::from_secs(now)),
            max_validity: Some(Duration::from_secs(5)),
            accept_future: true,
            ..options()
        };
        for t in &tokens {
            assert_eq!(
                outcome(theirs.verify_token::<NoCustomClaims>(t, Some(strict.clone()))),
                outcome(ours.verify_token(t, Some(strict.clone()))),
                "token {t}"
            );
        }
    }

    #[test]
    fn table_sizes() {
        let vk = *signing_key(1).verifying_key();
        let sizes: Vec<usize> = (4..=7).map(|w| table_key(&vk, w).table_bytes()).collect();
        // 2^(w-1) points per window, ⌈257/w⌉ windows.
        let point = std::mem::size_of::<AffinePoint>();
        assert_eq!(
            sizes,
            [
                65 * 8 * point,
                52 * 16 * point,
                43 * 32 * point,
                37 * 64 * point
            ]
        );
    }
}

/// Native timing behind bench/README.md "ES256 with per-key tables" (run in release:
/// `cargo test --release -p meshguard-filter --lib es256::timing -- --ignored --nocapture`).
/// The variants alternate per signature, so neighbours' load hits all of them alike.
#[cfg(test)]
mod timing {
    use super::*;
    use jwt_simple::prelude::{ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike};
    use p256::ecdsa::signature::{Signer, Verifier};
    use p256::ecdsa::SigningKey;
    use std::time::Instant;

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    #[test]
    #[ignore = "timing, not a check: run in release"]
    fn per_window_width() {
        let sk = SigningKey::from_slice(&Sha256::digest(b"timing")).unwrap();
        let vk = *sk.verifying_key();
        let public =
            jwt_simple::prelude::ES256PublicKey::from_bytes(vk.to_sec1_point(false).as_bytes())
                .unwrap();
        generator_table();
        let widths = [4u32, 5, 6, 7];
        let mut keys = Vec::new();
        for w in widths {
            let t = Instant::now();
            let key = Es256Key::with_window(&public, w).unwrap();
            let built = t.elapsed().as_secs_f64() * 1e6;
            println!(
                "w={w}: table {} bytes, built in {built:.0} µs",
                key.table_bytes()
            );
            keys.push(key);
        }
        let sigs: Vec<(Vec<u8>, Vec<u8>)> = (0..400u32)
            .map(|i| {
                let msg = Sha256::digest(i.to_be_bytes()).to_vec();
                let sig: Signature = sk.sign(&msg);
                (msg, sig.to_bytes().to_vec())
            })
            .collect();
        let mut reference = Vec::new();
        let mut ours = vec![Vec::new(); keys.len()];
        for (msg, sig) in &sigs {
            let t = Instant::now();
            let s = Signature::try_from(sig.as_slice()).unwrap();
            assert!(vk.verify(msg, &s).is_ok());
            reference.push(t.elapsed().as_secs_f64() * 1e6);
            for (key, out) in keys.iter().zip(ours.iter_mut()) {
                let t = Instant::now();
                assert!(key.verify_signature(msg, sig));
                out.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        // Whole tokens: jwt-simple's `verify_token` against this module's.
        let theirs = jwt_simple::prelude::ES256KeyPair::from_bytes(&sk.to_bytes()).unwrap();
        let table = Es256Key::new(&theirs.public_key()).unwrap();
        let (mut whole_theirs, mut whole_ours) = (Vec::new(), Vec::new());
        for i in 0..200u64 {
            let claims =
                jwt_simple::prelude::Claims::create(jwt_simple::prelude::Duration::from_secs(600))
                    .with_subject(format!("agent-{i}"));
            let token = theirs.sign(claims).unwrap();
            let t = Instant::now();
            assert!(theirs
                .public_key()
                .verify_token::<NoCustomClaims>(&token, None)
                .is_ok());
            whole_theirs.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            assert!(table.verify_token(&token, None).is_ok());
            whole_ours.push(t.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "whole token: jwt-simple {:.1} µs, tables {:.1} µs",
            median(whole_theirs),
            median(whole_ours)
        );
        println!(
            "p256 verify (jwt-simple's path): {:.1} µs",
            median(reference)
        );
        for (w, out) in widths.iter().zip(ours) {
            println!("tables w={w}: {:.1} µs", median(out));
        }
    }
}
