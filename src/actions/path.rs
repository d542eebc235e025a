//! The request path as the upstream will act on it.
//!
//! Route globs and `request.path` must see the path a normalising upstream serves, or a
//! caller walks out of a route (`GET /v1/orders/../admin/delete` matching
//! `/v1/orders/**`). [`normalise`] produces that path — RFC 3986 §6.2.2 percent-decoding
//! of unreserved characters only, uppercase hex in the escapes that remain, duplicate
//! slashes merged, then §5.2.4 dot-segment removal — and rejects what has no single
//! meaning across upstreams (README, "Request paths"): an encoded `/` or `\`, a raw
//! backslash, a fragment, control characters, invalid escapes, double-encoded `.` `/` `\`,
//! dot segments with `;` parameters, dot segments that climb above the root, and `//..`,
//! which upstreams that merge slashes and upstreams that do not resolve differently.
//!
//! Decoding happens once: `%252e` stays `%252E`'s literal form (`%25` is not unreserved),
//! as in Envoy; because an upstream that decodes twice would turn it into `.`, the
//! double-encoded forms of `.` `/` `\` are rejected instead of passed on.

use std::borrow::Cow;
use std::fmt;

/// Why a request path was refused: it cannot be given one meaning that every upstream
/// shares. Each variant's message says what to send instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRejection {
    /// `:path` is empty.
    Empty,
    /// `:path` does not start with `/` (`*`, or an absolute URI Envoy did not rewrite).
    NotOriginForm,
    /// A raw `#`: a fragment is never sent to a server, and upstreams disagree on it.
    Fragment,
    /// `%2F`: an encoded slash is a separator to some upstreams and data to others.
    EncodedSlash,
    /// `%5C`: an encoded backslash, a separator to some upstreams.
    EncodedBackslash,
    /// A raw `\`, which some upstreams treat as `/`.
    Backslash,
    /// A control character (raw or percent-encoded, U+0000–U+001F, U+007F).
    ControlCharacter,
    /// A raw space or non-ASCII byte, which must be percent-encoded.
    UnencodedCharacter,
    /// `%` not followed by two hex digits.
    InvalidEscape,
    /// `%25` followed by `2E`, `2F` or `5C`: `.` `/` `\` encoded twice.
    DoubleEncoded,
    /// A dot segment with `;` parameters (`..;x`), which upstreams that strip parameters
    /// resolve as `..`.
    DotSegmentParameter,
    /// A `..` segment climbs above the root.
    AboveRoot,
    /// A `..` segment follows an empty one (`//..`): it removes different segments
    /// depending on whether the upstream merges slashes.
    EmptySegmentDotDot,
}

impl PathRejection {
    /// A stable short code for responses and audit events (`errorCode`).
    pub fn code(self) -> &'static str {
        match self {
            PathRejection::Empty => "empty_path",
            PathRejection::NotOriginForm => "not_origin_form",
            PathRejection::Fragment => "fragment",
            PathRejection::EncodedSlash => "encoded_slash",
            PathRejection::EncodedBackslash => "encoded_backslash",
            PathRejection::Backslash => "backslash",
            PathRejection::ControlCharacter => "control_character",
            PathRejection::UnencodedCharacter => "unencoded_character",
            PathRejection::InvalidEscape => "invalid_escape",
            PathRejection::DoubleEncoded => "double_encoded",
            PathRejection::DotSegmentParameter => "dot_segment_parameter",
            PathRejection::AboveRoot => "above_root",
            PathRejection::EmptySegmentDotDot => "empty_segment_dot_dot",
        }
    }
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let msg = match self {
            PathRejection::Empty => "the request path is empty; it must start with /",
            PathRejection::NotOriginForm => {
                "the request path must start with / (origin form); `*` and absolute URIs are not accepted"
            }
            PathRejection::Fragment => {
                "the request path contains '#'; fragments are not sent to servers (encode it as %23)"
            }
            PathRejection::EncodedSlash => {
                "the request path contains an encoded slash (%2F), which upstreams read either as a separator or as data"
            }
            PathRejection::EncodedBackslash => {
                "the request path contains an encoded backslash (%5C), which some upstreams read as a separator"
            }
            PathRejection::Backslash => {
                "the request path contains a backslash, which some upstreams read as /"
            }
            PathRejection::ControlCharacter => {
                "the request path contains a control character (raw or percent-encoded)"
            }
            PathRejection::UnencodedCharacter => {
                "the request path contains a space or non-ASCII character that is not percent-encoded"
            }
            PathRejection::InvalidEscape => {
                "the request path contains '%' not followed by two hex digits (encode '%' as %25)"
            }
            PathRejection::DoubleEncoded => {
                "the request path contains a double-encoded '.', '/' or '\\' (%252E, %252F, %255C)"
            }
            PathRejection::DotSegmentParameter => {
                "the request path contains a dot segment with ';' parameters ('..;' or '.;'), which upstreams that strip parameters resolve as a dot segment"
            }
            PathRejection::AboveRoot => "the request path's '..' segments climb above /",
            PathRejection::EmptySegmentDotDot => {
                "the request path has '..' after an empty segment ('//..'), which resolves differently with and without merged slashes"
            }
        };
        f.write_str(msg)
    }
}

impl std::error::Error for PathRejection {}

/// A request target split into its normalised path and its query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalPath {
    /// The normalised path, starting with `/`, without query.
    pub path: String,
    /// The query including its leading `?`, exactly as received (empty when none).
    pub query: String,
}

impl NormalPath {
    /// The request target to forward: the normalised path and the query as received.
    pub fn target(&self) -> String {
        format!("{}{}", self.path, self.query)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes unreserved escapes, uppercases the others, and rejects what is ambiguous at
/// the character level.
fn decode_unreserved(raw: &str) -> Result<String, PathRejection> {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_value);
                let lo = bytes.get(i + 2).copied().and_then(hex_value);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(PathRejection::InvalidEscape);
                };
                let c = hi * 16 + lo;
                match c {
                    b'/' => return Err(PathRejection::EncodedSlash),
                    b'\\' => return Err(PathRejection::EncodedBackslash),
                    0..=0x1f | 0x7f => return Err(PathRejection::ControlCharacter),
                    b'%' => {
                        let next = (
                            bytes.get(i + 3).map(u8::to_ascii_uppercase),
                            bytes.get(i + 4).map(u8::to_ascii_uppercase),
                        );
                        if matches!(
                            next,
                            (Some(b'2'), Some(b'E' | b'F')) | (Some(b'5'), Some(b'C'))
                        ) {
                            return Err(PathRejection::DoubleEncoded);
                        }
                    }
                    _ => {}
                }
                if is_unreserved(c) {
                    out.push(char::from(c));
                } else {
                    out.push('%');
                    out.push(char::from(hex_digit(hi)));
                    out.push(char::from(hex_digit(lo)));
                }
                i += 3;
            }
            b'\\' => return Err(PathRejection::Backslash),
            b'#' => return Err(PathRejection::Fragment),
            0..=0x1f | 0x7f => return Err(PathRejection::ControlCharacter),
            b' ' | 0x80..=0xff => return Err(PathRejection::UnencodedCharacter),
            _ => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    Ok(out)
}

fn hex_digit(v: u8) -> u8 {
    match v {
        0..=9 => b'0' + v,
        _ => b'A' + (v - 10),
    }
}

/// RFC 3986 §5.2.4 over `/`-separated segments (the text after the leading `/`).
/// `merge` drops empty segments first, as an upstream that merges slashes does.
fn remove_dot_segments(decoded: &str, merge: bool) -> Result<String, PathRejection> {
    let segments: Vec<&str> = decoded.get(1..).unwrap_or_default().split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, seg) in segments.iter().enumerate() {
        let is_last = i == last;
        match *seg {
            "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(PathRejection::AboveRoot);
                }
            }
            "" if merge && !is_last => continue,
            s => {
                out.push(s);
                continue;
            }
        }
        // A trailing dot segment leaves a trailing slash (`/a/b/..` is `/a/`).
        if is_last {
            out.push("");
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() {
        path.push('/');
    }
    if merge {
        return Ok(path);
    }
    // Without merging first, empty segments may survive; merge them now for comparison.
    let mut merged = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && merged.ends_with('/')) {
            merged.push(c);
        }
    }
    Ok(merged)
}

/// The common case, decided in one pass: no escapes, no characters to refuse, no empty or
/// dot segments (a conservative test: any `/.` takes the full path).
fn is_already_normal(raw: &str) -> bool {
    raw.bytes()
        .all(|b| matches!(b, 0x21..=0x7e) && !matches!(b, b'%' | b'\\' | b'#'))
        && !raw.contains("//")
        && !raw.contains("/.")
}

/// Whether a request target is plainly normal already: then [`normalise`] would return it
/// unchanged, so the request path can skip building the copy. `false` says nothing (the
/// target may still normalise to itself).
pub fn is_plainly_normal(target: &str) -> bool {
    let raw = target.split_once('?').map_or(target, |(raw, _)| raw);
    target.starts_with('/') && is_already_normal(raw)
}

/// Normalises a request target (`:path`, query included) or says why it cannot be.
pub fn normalise(target: &str) -> Result<NormalPath, PathRejection> {
    if target.is_empty() {
        return Err(PathRejection::Empty);
    }
    if !target.starts_with('/') {
        return Err(PathRejection::NotOriginForm);
    }
    let (raw, query) = match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    };
    if is_already_normal(raw) {
        return Ok(NormalPath {
            path: raw.to_string(),
            query: query.to_string(),
        });
    }
    let decoded = decode_unreserved(raw)?;
    for seg in decoded.split('/') {
        if let Some((name, _)) = seg.split_once(';') {
            if name == "." || name == ".." {
                return Err(PathRejection::DotSegmentParameter);
            }
        }
    }
    let merged = remove_dot_segments(&decoded, true)?;
    let unmerged = remove_dot_segments(&decoded, false)?;
    if merged != unmerged {
        return Err(PathRejection::EmptySegmentDotDot);
    }
    Ok(NormalPath {
        path: merged,
        query: query.to_string(),
    })
}

/// The path with `;` parameters removed from every segment (`/a;v=1/b` is `/a/b`), as
/// servlet containers and other parameter-stripping upstreams route it.
pub fn without_parameters(path: &str) -> Cow<'_, str> {
    if !path.contains(';') {
        return Cow::Borrowed(path);
    }
    let stripped: Vec<&str> = path
        .split('/')
        .map(|seg| seg.split_once(';').map_or(seg, |(name, _)| name))
        .collect();
    Cow::Owned(stripped.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathRejection as R;

    #[test]
    fn normalised_forms() {
        let table: &[(&str, &str)] = &[
            ("/", "/"),
            ("/v1/orders/7", "/v1/orders/7"),
            ("/v1/orders/", "/v1/orders/"),
            // dot segments, plain and encoded, any case
            ("/v1/orders/../admin/delete", "/v1/admin/delete"),
            ("/v1/orders/%2e%2e/admin", "/v1/admin"),
            ("/v1/orders/%2E%2E/admin", "/v1/admin"),
            ("/v1/orders/.%2e/admin", "/v1/admin"),
            ("/v1/orders/%2e./admin", "/v1/admin"),
            ("/v1/orders/./7", "/v1/orders/7"),
            ("/v1/orders/%2e/7", "/v1/orders/7"),
            ("/v1/./orders/./././7", "/v1/orders/7"),
            // trailing dot segments keep the trailing slash (RFC 3986 §5.2.4)
            ("/v1/orders/..", "/v1/"),
            ("/v1/orders/.", "/v1/orders/"),
            ("/v1/orders/7/%2e%2e", "/v1/orders/"),
            ("/..%2e", "/..."),
            ("/a/../..b", "/..b"),
            // duplicate slashes
            ("//v1//orders///7", "/v1/orders/7"),
            ("/v1/orders//", "/v1/orders/"),
            ("//", "/"),
            ("/a//./b", "/a/b"),
            ("/a/.//b", "/a/b"),
            // unreserved escapes decoded, others kept with uppercase hex
            ("/v1/%6Frders/%7e%5f%2D", "/v1/orders/~_-"),
            ("/v1/a%3ab%40c", "/v1/a%3Ab%40c"),
            ("/v1/caf%c3%a9", "/v1/caf%C3%A9"),
            ("/v1/%23x", "/v1/%23x"),
            // decoded once only: %25 stays encoded
            ("/v1/%25", "/v1/%25"),
            ("/v1/%2541", "/v1/%2541"),
            // parameters that are not dot segments are data
            ("/v1/email;v=1/send", "/v1/email;v=1/send"),
            ("/v1/x;/../y", "/v1/y"),
            ("/v1/...;x", "/v1/...;x"),
            // query untouched
            ("/v1/orders/../x?a=/../b%2F#", "/v1/x"),
            ("/v1/orders?", "/v1/orders"),
        ];
        for (input, want) in table {
            let got = normalise(input).unwrap_or_else(|e| panic!("{input}: rejected: {e}"));
            assert_eq!(got.path, *want, "input {input}");
        }
    }

    #[test]
    fn query_is_kept_verbatim() {
        let n = normalise("/v1/orders/../x?a=/../b%2F&c=%2e#").unwrap();
        assert_eq!(n.path, "/v1/x");
        assert_eq!(n.query, "?a=/../b%2F&c=%2e#");
        assert_eq!(n.target(), "/v1/x?a=/../b%2F&c=%2e#");
        assert_eq!(normalise("/a").unwrap().target(), "/a");
    }

    #[test]
    fn rejections() {
        let table: &[(&str, R)] = &[
            ("", R::Empty),
            ("*", R::NotOriginForm),
            ("http://evil/v1/orders", R::NotOriginForm),
            ("v1/orders", R::NotOriginForm),
            ("/v1/orders/..%2fadmin", R::EncodedSlash),
            ("/v1/orders/..%2Fadmin", R::EncodedSlash),
            ("/v1/orders%2f..%2f..%2fadmin", R::EncodedSlash),
            ("/v1/orders/..%5cadmin", R::EncodedBackslash),
            ("/v1/orders/..%5Cadmin", R::EncodedBackslash),
            ("/v1/orders/..\\admin", R::Backslash),
            ("/v1/orders/7#frag", R::Fragment),
            ("/v1/orders/%00", R::ControlCharacter),
            ("/v1/orders/%0a", R::ControlCharacter),
            ("/v1/orders/%7F", R::ControlCharacter),
            ("/v1/orders/\u{0}", R::ControlCharacter),
            ("/v1/orders/\t", R::ControlCharacter),
            ("/v1/orders/a b", R::UnencodedCharacter),
            ("/v1/orders/caf\u{e9}", R::UnencodedCharacter),
            ("/v1/orders/%", R::InvalidEscape),
            ("/v1/orders/%2", R::InvalidEscape),
            ("/v1/orders/%zz", R::InvalidEscape),
            ("/v1/orders/%g0", R::InvalidEscape),
            ("/v1/orders/%252e%252e/admin", R::DoubleEncoded),
            ("/v1/orders/%252E", R::DoubleEncoded),
            ("/v1/orders/..%252fadmin", R::DoubleEncoded),
            ("/v1/orders/%255c", R::DoubleEncoded),
            ("/v1/orders/..;/admin", R::DotSegmentParameter),
            ("/v1/orders/.;x/admin", R::DotSegmentParameter),
            (
                "/v1/orders/%2e%2e;jsessionid=1/admin",
                R::DotSegmentParameter,
            ),
            ("/..", R::AboveRoot),
            ("/../v1/orders", R::AboveRoot),
            ("/v1/../../admin", R::AboveRoot),
            ("/v1/orders/../../../admin", R::AboveRoot),
            ("/%2e%2e/x", R::AboveRoot),
            ("/./..", R::AboveRoot),
            ("/v1//../admin", R::EmptySegmentDotDot),
            ("/v1/orders//..", R::EmptySegmentDotDot),
            ("/v1/orders/.//../admin", R::EmptySegmentDotDot),
        ];
        for (input, want) in table {
            assert_eq!(normalise(input), Err(*want), "input {input:?}");
        }
    }

    #[test]
    fn rejection_messages_and_codes_are_distinct() {
        let all = [
            R::Empty,
            R::NotOriginForm,
            R::Fragment,
            R::EncodedSlash,
            R::EncodedBackslash,
            R::Backslash,
            R::ControlCharacter,
            R::UnencodedCharacter,
            R::InvalidEscape,
            R::DoubleEncoded,
            R::DotSegmentParameter,
            R::AboveRoot,
            R::EmptySegmentDotDot,
        ];
        let codes: std::collections::HashSet<_> = all.iter().map(|r| r.code()).collect();
        let texts: std::collections::HashSet<_> = all.iter().map(|r| r.to_string()).collect();
        assert_eq!((codes.len(), texts.len()), (all.len(), all.len()));
        assert!(R::EncodedSlash.to_string().contains("%2F"));
    }

    #[test]
    fn the_fast_path_agrees_with_the_full_one() {
        for input in [
            "/",
            "/v1/orders/7",
            "/v1/email;v=1/send",
            "/a.b/c.",
            "/v1/x:y@z!$&'()*+,=~_-",
        ] {
            assert!(is_already_normal(input), "{input}");
            let decoded = decode_unreserved(input).unwrap();
            assert_eq!(remove_dot_segments(&decoded, true).unwrap(), input);
            assert_eq!(remove_dot_segments(&decoded, false).unwrap(), input);
        }
        for input in ["/a//b", "/a/./b", "/a/%41", "/a\\b", "/a#b", "/a b", "/.."] {
            assert!(!is_already_normal(input), "{input}");
        }
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for input in [
            "/v1/orders/../admin",
            "/v1/%2e/a%3ab//c/.",
            "/a/b/c/../../d?x",
            "/v1/%6Frders/",
        ] {
            let once = normalise(input).unwrap();
            assert_eq!(normalise(&once.target()).unwrap(), once, "{input}");
        }
    }

    #[test]
    fn parameters_are_stripped_per_segment() {
        assert_eq!(without_parameters("/v1/email;v=1/send"), "/v1/email/send");
        assert_eq!(without_parameters("/a;x/b;y;z/c"), "/a/b/c");
        assert!(matches!(
            without_parameters("/plain"),
            Cow::Borrowed("/plain")
        ));
    }
}
