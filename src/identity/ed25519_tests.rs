//! The curve25519-dalek verifier against `ed25519-compact` (what jwt-simple verifies with):
//! the same keys, signatures and tokens must get the same answer.

use super::*;
use ct_codecs::{Base64UrlSafeNoPadding, Encoder, Hex};
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::traits::IsIdentity;
use std::collections::HashSet;

/// splitmix64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in out.iter_mut() {
            *b = self.next() as u8;
        }
        out
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn vec(&mut self, max_len: usize) -> Vec<u8> {
        let len = self.below(max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
    fn scalar(&mut self) -> Scalar {
        Scalar::from_bytes_mod_order_wide(&self.bytes::<64>())
    }
}

/// Whether `ed25519-compact`, checked as jwt-simple checks keys, accepts.
fn compact_accepts(pk: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let pk = ed25519_compact::PublicKey::new(*pk);
    let Ok(sig) = ed25519_compact::Signature::from_slice(signature) else {
        return false;
    };
    pk.validate().is_ok() && pk.verify(message, &sig).is_ok()
}

fn dalek_accepts(pk: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    Ed25519Key::from_bytes(pk).is_ok_and(|k| k.verify_signature(message, signature).is_ok())
}

/// Asserts both verifiers give the same answer and returns it.
#[track_caller]
fn agree(pk: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let compact = compact_accepts(pk, message, signature);
    assert_eq!(
        dalek_accepts(pk, message, signature),
        compact,
        "pk {pk:02x?} sig {signature:02x?} message {message:02x?}"
    );
    assert_eq!(
        Ed25519Key::from_bytes(pk).is_ok(),
        ed25519_compact::PublicKey::new(*pk).validate().is_ok(),
        "key acceptance differs for {pk:02x?}"
    );
    compact
}

fn hex<const N: usize>(s: &str) -> [u8; N] {
    Hex::decode_to_vec(s, None).unwrap().try_into().unwrap()
}

/// A point of order exactly 8: [L]P of a random point P, until its order is 8.
fn order_eight_point(rng: &mut Rng) -> EdwardsPoint {
    loop {
        let Some(p) = CompressedEdwardsY(rng.bytes()).decompress() else {
            continue;
        };
        let t = p * (Scalar::ZERO - Scalar::ONE) + p;
        if !(t + t + t + t).is_identity() {
            assert!(t.mul_by_cofactor().is_identity());
            return t;
        }
    }
}

/// Signs with a raw secret scalar (any A, including ones with a torsion component).
fn sign_raw(a: &Scalar, pk: &[u8; 32], r: &Scalar, r_point: &EdwardsPoint, m: &[u8]) -> [u8; 64] {
    let r_bytes = r_point.compress().to_bytes();
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(pk);
    h.update(m);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_bytes);
    sig[32..].copy_from_slice(s.as_bytes());
    sig
}

#[test]
fn rfc8032_vectors_verify() {
    for (pk, message, signature) in [
        (
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ] {
        let pk: [u8; 32] = hex(pk);
        let message = Hex::decode_to_vec(message, None).unwrap();
        let signature: [u8; 64] = hex(signature);
        assert!(agree(&pk, &message, &signature));
        let mut wrong = message.clone();
        wrong.push(0);
        assert!(!agree(&pk, &wrong, &signature));
    }
}

#[test]
fn random_signatures_and_bit_flips_agree() {
    let mut rng = Rng(0x5eed_0001);
    let mut accepted = 0;
    for _ in 0..1500 {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(rng.bytes()));
        let pk: [u8; 32] = *kp.pk;
        let message = rng.vec(200);
        let sig: [u8; 64] = *kp.sk.sign(&message, None);
        assert!(agree(&pk, &message, &sig));
        accepted += 1;

        let mut flipped = sig;
        let bit = rng.below(512);
        flipped[bit / 8] ^= 1 << (bit % 8);
        accepted += usize::from(agree(&pk, &message, &flipped));

        if !message.is_empty() {
            let mut m = message.clone();
            let bit = rng.below(m.len() * 8);
            m[bit / 8] ^= 1 << (bit % 8);
            assert!(!agree(&pk, &m, &sig));
        }

        let mut other_pk = pk;
        let bit = rng.below(256);
        other_pk[bit / 8] ^= 1 << (bit % 8);
        assert!(!agree(&other_pk, &message, &sig));

        // A random R and a canonical random S.
        let mut random = rng.bytes::<64>();
        random[32..].copy_from_slice(rng.scalar().as_bytes());
        assert!(!agree(&pk, &message, &random));
        // Wrong lengths.
        assert!(!agree(&pk, &message, &sig[..63]));
    }
    assert!(accepted >= 1500);
}

#[test]
fn non_canonical_s_is_refused_by_both() {
    let mut rng = Rng(0x5eed_0002);
    let l = Scalar::ZERO - Scalar::ONE; // L − 1
    for _ in 0..200 {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(rng.bytes()));
        let pk: [u8; 32] = *kp.pk;
        let message = rng.vec(64);
        let sig: [u8; 64] = *kp.sk.sign(&message, None);
        // S + L, computed on the little-endian bytes: the same residue, not canonical.
        let mut s_plus_l = [0u8; 32];
        let mut carry = 0u16;
        let mut l_bytes = *l.as_bytes();
        l_bytes[0] += 1; // L − 1 + 1 = L; the low byte of L − 1 is 0xec
        for i in 0..32 {
            let v = u16::from(sig[32 + i]) + u16::from(l_bytes[i]) + carry;
            s_plus_l[i] = v as u8;
            carry = v >> 8;
        }
        if carry != 0 {
            continue;
        }
        let mut tampered = sig;
        tampered[32..].copy_from_slice(&s_plus_l);
        assert!(!agree(&pk, &message, &tampered));
    }
}

#[test]
fn small_order_and_non_canonical_encodings_agree() {
    let mut rng = Rng(0x5eed_0003);
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]));
    let pk: [u8; 32] = *kp.pk;
    let message = b"small order";
    let sig: [u8; 64] = *kp.sk.sign(message, None);
    let mut encodings: Vec<[u8; 32]> = Vec::new();
    // Every small-order point, both sign bits.
    let t = order_eight_point(&mut rng);
    for i in 0..8u64 {
        let p = t * Scalar::from(i);
        let e = p.compress().to_bytes();
        encodings.push(e);
        let mut other_sign = e;
        other_sign[31] ^= 0x80;
        encodings.push(other_sign);
    }
    // Every non-canonical y (p ≤ y < 2^255), both sign bits.
    for low in 0xedu8..=0xff {
        let mut e = [0xffu8; 32];
        e[0] = low;
        e[31] = 0x7f;
        encodings.push(e);
        e[31] = 0xff;
        encodings.push(e);
    }
    for e in &encodings {
        // As the public key (never accepted)…
        assert!(!agree(e, message, &sig));
        // …and as R, with an otherwise valid key and S.
        let mut s = sig;
        s[..32].copy_from_slice(e);
        assert!(!agree(&pk, message, &s));
    }
    // A key whose y is canonical-only-by-reduction (y + p) of a valid key is refused.
    for _ in 0..50 {
        let y = rng.bytes::<32>();
        agree(&y, message, &sig);
    }
}

/// A key or R with a torsion component passes the cofactored equation
/// `[8](SB − kA − R) = 0` that ed25519-compact checks; the new verifier must accept it too.
#[test]
fn mixed_order_keys_and_nonces_agree_with_the_cofactored_equation() {
    let mut rng = Rng(0x5eed_0004);
    let t = order_eight_point(&mut rng);
    let mut accepted = 0;
    for i in 0..200u64 {
        let a = rng.scalar();
        let torsion_a = t * Scalar::from(i % 8);
        let a_point = ED25519_BASEPOINT_POINT * a + torsion_a;
        let pk = a_point.compress().to_bytes();
        let r = rng.scalar();
        let torsion_r = t * Scalar::from((i / 8) % 8);
        let r_point = ED25519_BASEPOINT_POINT * r + torsion_r;
        let message = rng.vec(40);
        let sig = sign_raw(&a, &pk, &r, &r_point, &message);
        accepted += usize::from(agree(&pk, &message, &sig));
    }
    assert!(accepted > 150, "{accepted}");
}

// ---- Tokens: the same claims or the same error as jwt-simple. ----

fn b64(bytes: &[u8]) -> String {
    Base64UrlSafeNoPadding::encode_to_string(bytes).unwrap()
}

fn mint(kp: &ed25519_compact::KeyPair, header: &str, payload: &str) -> String {
    let signed = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = kp.sk.sign(signed.as_bytes(), None);
    format!("{signed}.{}", b64(&sig[..]))
}

fn options(now: u64) -> VerificationOptions {
    VerificationOptions {
        allowed_issuers: Some(HashSet::from(["https://issuer".to_string()])),
        allowed_audiences: Some(HashSet::from(["mesh".to_string()])),
        time_tolerance: Some(Duration::from_secs(60)),
        max_token_length: Some(4096),
        artificial_time: Some(UnixTimeStamp::from_secs(now)),
        ..VerificationOptions::default()
    }
}

/// The outcome as comparable text: the claims on success, the error's text otherwise.
fn outcome(r: Result<JWTClaims<NoCustomClaims>, Error>) -> String {
    match r {
        Ok(c) => {
            // An audience list is a HashSet: sort it so that order does not count.
            let mut v = serde_json::to_value(&c).unwrap();
            if let Some(serde_json::Value::Array(aud)) = v.get_mut("aud") {
                aud.sort_by_key(|a| a.to_string());
            }
            format!("ok {v}")
        }
        Err(e) => format!("err {e}"),
    }
}

#[test]
fn tokens_get_the_same_claims_and_errors_as_jwt_simple() {
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([11; 32]));
    let other = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([12; 32]));
    let jwk = format!(
        r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#,
        b64(&kp.pk[..])
    );
    let ours = Ed25519Key::from_jwk(&jwk).unwrap();
    let theirs = Ed25519PublicKey::from_jwk(&jwk).unwrap();
    let now = 1_800_000_000u64;
    let h = r#"{"alg":"EdDSA","typ":"JWT"}"#;
    let good = format!(
        r#"{{"iss":"https://issuer","aud":"mesh","sub":"a","exp":{},"iat":{}}}"#,
        now + 300,
        now - 10
    );
    let claims =
        |extra: &str| format!(r#"{{"iss":"https://issuer","aud":"mesh","sub":"a"{extra}}}"#);
    let mut tokens: Vec<String> = vec![
        mint(&kp, h, &good),
        mint(&kp, r#"{"alg":"Ed25519"}"#, &good),
        mint(&kp, r#"{"alg":"EdDSA","typ":"at+jwt"}"#, &good),
        mint(&kp, r#"{"alg":"EdDSA","typ":"JOSE"}"#, &good),
        mint(&kp, r#"{"alg":"EdDSA","typ":5}"#, &good),
        mint(&kp, r#"{"alg":"EdDSA","x5c":"not-a-list"}"#, &good),
        mint(&kp, r#"{"alg":"EdDSA","salt":"!!"}"#, &good),
        mint(&kp, r#"{"alg":"EdDSA","salt":"AAAA"}"#, &good),
        mint(&kp, r#"{"alg":"EdDSA","crit":[]}"#, &good),
        mint(&kp, r#"{"alg":"EdDSA","crit":["b64"]}"#, &good),
        mint(&kp, r#"{"alg":"ES256"}"#, &good),
        mint(&kp, r#"{"typ":"JWT"}"#, &good),
        mint(&other, h, &good),
        mint(&kp, h, &claims(&format!(r#","exp":{}"#, now - 61))),
        mint(&kp, h, &claims(&format!(r#","exp":{}"#, now - 59))),
        mint(
            &kp,
            h,
            &claims(&format!(r#","exp":{},"nbf":{}"#, now + 300, now + 61)),
        ),
        mint(
            &kp,
            h,
            &claims(&format!(r#","exp":{},"nbf":{}"#, now + 300, now + 59)),
        ),
        mint(
            &kp,
            h,
            &claims(&format!(r#","exp":{},"iat":{}"#, now + 300, now + 61)),
        ),
        mint(&kp, h, &claims(r#","exp":"soon""#)),
        mint(&kp, h, &claims(r#","exp":1.5"#)),
        mint(
            &kp,
            h,
            &format!(
                r#"{{"iss":"https://other","aud":"mesh","exp":{}}}"#,
                now + 9
            ),
        ),
        mint(&kp, h, &format!(r#"{{"aud":"mesh","exp":{}}}"#, now + 9)),
        mint(
            &kp,
            h,
            &format!(
                r#"{{"iss":"https://issuer","aud":["x","mesh"],"exp":{}}}"#,
                now + 9
            ),
        ),
        mint(
            &kp,
            h,
            &format!(
                r#"{{"iss":"https://issuer","aud":["x"],"exp":{}}}"#,
                now + 9
            ),
        ),
        mint(
            &kp,
            h,
            &format!(r#"{{"iss":"https://issuer","exp":{}}}"#, now + 9),
        ),
        mint(&kp, h, r#"{"iss":"https://issuer","aud":"mesh"}"#),
        mint(&kp, h, "[1,2]"),
        mint(&kp, h, "not json"),
        mint(
            &kp,
            &format!(r#"{{"alg":"EdDSA","pad":"{}"}}"#, "x".repeat(6200)),
            &good,
        ),
    ];
    let base = mint(&kp, h, &good);
    let (signed, sig) = base.rsplit_once('.').unwrap();
    tokens.push(format!("{signed}.{}", &sig[..sig.len() - 4]));
    tokens.push(format!("{signed}.{sig}AA"));
    tokens.push(format!("{signed}.{sig}!"));
    tokens.push(format!("{signed}.{sig}.x"));
    tokens.push(signed.to_string());
    tokens.push(format!("{signed}."));
    tokens.push(format!("{}X.{sig}", signed));
    let mut seen_ok = 0;
    for token in &tokens {
        let a = outcome(ours.verify_token(token, Some(options(now))));
        let b = outcome(theirs.verify_token::<NoCustomClaims>(token, Some(options(now))));
        assert_eq!(a, b, "token {token}");
        seen_ok += usize::from(a.starts_with("ok"));
    }
    // Enough of them pass that the comparison covers success as well as every failure.
    assert!(seen_ok >= 5, "{seen_ok}");
    // Random tampering of a good token: the same outcome, byte by byte.
    let mut rng = Rng(0x5eed_0005);
    for _ in 0..300 {
        let mut bytes = base.clone().into_bytes();
        let i = rng.below(bytes.len());
        bytes[i] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."[rng.below(65)];
        let token = String::from_utf8(bytes).unwrap();
        let a = outcome(ours.verify_token(&token, Some(options(now))));
        let b = outcome(theirs.verify_token::<NoCustomClaims>(&token, Some(options(now))));
        assert_eq!(a, b, "token {token}");
    }
}

#[test]
fn keys_parse_like_jwt_simple() {
    let mut rng = Rng(0x5eed_0006);
    for _ in 0..300 {
        let x: [u8; 32] = rng.bytes();
        let jwk = format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#, b64(&x));
        assert_eq!(
            Ed25519Key::from_jwk(&jwk).is_ok(),
            Ed25519PublicKey::from_jwk(&jwk).is_ok(),
            "{jwk}"
        );
    }
    let short = format!(
        r#"{{"kty":"OKP","crv":"Ed25519","x":"{}"}}"#,
        b64(&[1u8; 31])
    );
    assert!(Ed25519Key::from_jwk(&short).is_err());
}
