//! Microseconds per Ed25519 verification of a JWT-sized message, for ed25519-compact and
//! for the curve25519-dalek verification of src/identity/ed25519.rs (the same calls),
//! alternated in rounds so both see the same machine load. Run under node by
//! `make bench-ed25519-v8`; natively with `cargo run --release`.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};
use std::process::ExitCode;
use std::time::Instant;

/// The verification equation of src/identity/ed25519.rs (cofactored, canonical S).
fn dalek_verify(minus_a: &EdwardsPoint, pk: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
    let (r_bytes, s_bytes) = sig.split_at(32);
    let (Ok(r_bytes), Ok(s_bytes)) = (<[u8; 32]>::try_from(r_bytes), <[u8; 32]>::try_from(s_bytes))
    else {
        return false;
    };
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)) else {
        return false;
    };
    let Some(r) = CompressedEdwardsY(r_bytes).decompress() else {
        return false;
    };
    if r.is_small_order() {
        return false;
    }
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(pk);
    h.update(message);
    let digest: [u8; 64] = h.finalize().into();
    let k = Scalar::from_bytes_mod_order_wide(&digest);
    (EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, minus_a, &s) - r).is_small_order()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> ExitCode {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let rounds = 7;
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]));
    let message = b"eyJhbGciOiJFZERTQSIsImtpZCI6ImJlbmNoIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lzc3Vlci5leGFtcGxlIiwic3ViIjoiYWdlbnQtMSIsImF1ZCI6Im1lc2giLCJleHAiOjE4MDAwMDAwMDB9";
    let pk: [u8; 32] = *kp.pk;
    let sig: [u8; 64] = *kp.sk.sign(message, None);
    let Some(a) = CompressedEdwardsY(pk).decompress() else {
        return ExitCode::FAILURE;
    };
    let minus_a = -a;
    let (mut compact, mut dalek) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        let mut ok = 0;
        for _ in 0..n {
            // Parsing included: jwt-simple decodes the key for every verification.
            let key = ed25519_compact::PublicKey::new(pk);
            ok += usize::from(
                key.verify(message, &ed25519_compact::Signature::new(sig))
                    .is_ok(),
            );
        }
        compact.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        let t = Instant::now();
        for _ in 0..n {
            ok += usize::from(dalek_verify(&minus_a, &pk, message, &sig));
        }
        dalek.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        if ok != 2 * n {
            eprintln!("a valid signature did not verify");
            return ExitCode::FAILURE;
        }
    }
    let (c, d) = (median(compact), median(dalek));
    println!(
        "best: ed25519-compact {c:.1} µs, curve25519-dalek {d:.1} µs per verification ({:.2}x), median of {rounds} rounds of {n}",
        c / d
    );
    ExitCode::SUCCESS
}
