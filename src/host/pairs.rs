//! proxy-wasm's serialised header map, read in place: the buffer
//! `proxy_get_header_map_pairs` returns is walked once and each header is handed out as
//! borrowed `&str`s, so the host layer copies only what the caller keeps. (The SDK's
//! `get_map_bytes` copies every name and value into its own `String`/`Vec` first, and
//! panics on a name that is not UTF-8.)
//!
//! Layout (little-endian): the number of pairs `n` (u32), then `n` (name length, value
//! length) u32 pairs, then each name and value in order, each followed by a NUL byte.

use std::borrow::Cow;

fn u32_at(buf: &[u8], at: usize) -> Option<usize> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    let word = u32::from_le_bytes(bytes.try_into().ok()?);
    usize::try_from(word).ok()
}

/// Calls `each` with every (name, value) of a serialised map, in order; names and values
/// that are not UTF-8 are passed lossily. A truncated or inconsistent buffer ends the
/// walk at the last complete pair (Envoy does not send one; this is not a parser of
/// untrusted input, but it never reads out of bounds).
pub(crate) fn for_each(buf: &[u8], each: &mut dyn FnMut(&str, &str)) {
    let Some(n) = u32_at(buf, 0) else {
        return;
    };
    let Some(mut data) = n.checked_mul(8).and_then(|s| s.checked_add(4)) else {
        return;
    };
    for i in 0..n {
        let sizes = 4 + i * 8;
        let (Some(name_len), Some(value_len)) = (u32_at(buf, sizes), u32_at(buf, sizes + 4)) else {
            return;
        };
        let Some(name) = take(buf, &mut data, name_len) else {
            return;
        };
        let Some(value) = take(buf, &mut data, value_len) else {
            return;
        };
        each(&text(name), &text(value));
    }
}

/// `len` bytes at `*at`, then skips them and their NUL terminator.
fn take<'a>(buf: &'a [u8], at: &mut usize, len: usize) -> Option<&'a [u8]> {
    let end = at.checked_add(len)?;
    let bytes = buf.get(*at..end)?;
    *at = end.checked_add(1)?;
    Some(bytes)
}

/// Valid UTF-8 (nearly always) is borrowed, not copied.
fn text(bytes: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Envoy sends (proxy-wasm-cpp-host's `exportPairs`).
    fn serialise(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            out.extend((k.len() as u32).to_le_bytes());
            out.extend((v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            out.extend(*k);
            out.push(0);
            out.extend(*v);
            out.push(0);
        }
        out
    }

    fn read(buf: &[u8]) -> Vec<(String, String)> {
        let mut got = Vec::new();
        for_each(buf, &mut |k, v| got.push((k.to_owned(), v.to_owned())));
        got
    }

    #[test]
    fn reads_every_pair_in_order() {
        let buf = serialise(&[
            (b":method", b"GET"),
            (b":path", b"/v1/orders/42"),
            (b"x-meshguard-agent", b""),
            (b"authorization", b"Bearer a.b.c"),
        ]);
        assert_eq!(
            read(&buf),
            vec![
                (":method".to_owned(), "GET".to_owned()),
                (":path".to_owned(), "/v1/orders/42".to_owned()),
                ("x-meshguard-agent".to_owned(), String::new()),
                ("authorization".to_owned(), "Bearer a.b.c".to_owned()),
            ]
        );
    }

    #[test]
    fn empty_and_bad_buffers_read_nothing_out_of_bounds() {
        assert!(read(&[]).is_empty());
        assert!(read(&serialise(&[])).is_empty());
        let buf = serialise(&[(b"a", b"1"), (b"b", b"2")]);
        // Cut inside the second value: the first pair survives.
        assert_eq!(read(&buf[..buf.len() - 2]), vec![("a".into(), "1".into())]);
        // A count far larger than the buffer.
        let mut huge = buf.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read(&huge).is_empty());
    }

    #[test]
    fn non_utf8_values_are_lossy() {
        let buf = serialise(&[(b"x-a", b"caf\xe9")]);
        assert_eq!(read(&buf), vec![("x-a".into(), "caf\u{fffd}".into())]);
    }
}
