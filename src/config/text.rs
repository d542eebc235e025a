//! Reading configuration text: JSON or YAML, with the field path and position of errors.
//!
//! One path for every configuration text: [`tree::documents`](super::tree::documents)
//! (JSON is YAML's flow syntax, so one parser reads both) and then
//! [`de::from_node`](super::de::from_node), so each configuration type is compiled into the
//! module once.

use super::error::ConfigError;
use super::{de, tree};
use serde::de::DeserializeOwned;
use std::borrow::Cow;

/// Deserializes `T` from JSON or YAML text (one document), reporting the field path, line
/// and column on failure.
pub fn from_text<T: DeserializeOwned>(text: &[u8]) -> Result<T, ConfigError> {
    let text = std::str::from_utf8(text).map_err(|e| ConfigError::Parse {
        field: ".".into(),
        line: None,
        column: None,
        message: format!("the text is not UTF-8: {e}"),
    })?;
    let json = text.trim_start().starts_with(['{', '[']);
    let docs = tree::documents(&surrogate_pairs(text, json))?;
    match docs.as_slice() {
        [] => de::from_node(&tree::Node::null(1, 1), json),
        [doc] => de::from_node(doc, json),
        [_, second, ..] => Err(ConfigError::Parse {
            field: ".".into(),
            line: Some(second.line),
            column: Some(second.column),
            message: "more than one YAML document; only policy_yaml may hold several".into(),
        }),
    }
}

/// Deserializes `T` from JSON already parsed (a signed document's member). Errors name
/// the field path but no line.
pub fn from_value<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ConfigError> {
    de::from_node(&tree::Node::from_json(value), true)
}

/// Deserializes `T` from each YAML document of `text` (`---` separates them).
pub(super) fn each_document<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, ConfigError> {
    tree::documents(text)?
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            de::from_node(doc, false)
                .map_err(|e: ConfigError| e.within(&format!("[document {}]", i + 1)))
        })
        .collect()
}

/// JSON writes a character outside the BMP as a UTF-16 pair of `\uXXXX` escapes (Python's
/// `json.dumps` does by default); YAML refuses those and has `\UXXXXXXXX` instead. In JSON
/// text (it starts with `{` or `[`, and backslashes only occur in its strings) each pair is
/// rewritten so the YAML scanner reads JSON as serde_json did; columns after a pair on
/// the same line shift by two.
fn surrogate_pairs(text: &str, json: bool) -> Cow<'_, str> {
    if !json || !text.contains("\\u") {
        return Cow::Borrowed(text);
    }
    let hex = |s: &str, at: usize| {
        s.get(at..at + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok())
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('\\') {
        let (before, from) = rest.split_at(i);
        out.push_str(before);
        let pair = from
            .strip_prefix("\\u")
            .and_then(|_| Some((hex(from, 2)?, from.get(6..8)?, hex(from, 8)?)));
        match pair {
            Some((hi @ 0xD800..=0xDBFF, "\\u", lo @ 0xDC00..=0xDFFF)) => {
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                out.push_str(&format!("\\U{c:08X}"));
                rest = from.get(12..).unwrap_or_default();
            }
            _ => {
                // Copy the escape (`\\`, `\"`, a lone `\uXXXX`) as it is.
                let n = from.chars().nth(1).map_or(1, |c| 1 + c.len_utf8());
                out.push_str(from.get(..n).unwrap_or(from));
                rest = from.get(n..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}
