//! Reading configuration text: JSON or YAML, with the field path and position of errors.
//!
//! One path for every configuration text: [`tree::documents`](super::tree::documents)
//! (JSON is YAML's flow syntax, so one parser reads both) and then
//! [`de::from_node`](super::de::from_node), so each configuration type is compiled into the
//! module once.

use super::error::ConfigError;
use super::{de, tree};
use serde::de::DeserializeOwned;

/// Deserializes `T` from JSON or YAML text (one document), reporting the field path, line
/// and column on failure.
pub fn from_text<T: DeserializeOwned>(text: &[u8]) -> Result<T, ConfigError> {
    let text = std::str::from_utf8(text).map_err(|e| ConfigError::Parse {
        field: ".".into(),
        line: None,
        column: None,
        message: format!("the text is not UTF-8: {e}"),
    })?;
    let docs = tree::documents(text)?;
    match docs.as_slice() {
        [] => de::from_node(&tree::Node::null(1, 1)),
        [doc] => de::from_node(doc),
        [_, second, ..] => Err(ConfigError::Parse {
            field: ".".into(),
            line: Some(second.line),
            column: Some(second.column),
            message: "more than one YAML document; only policy_yaml may hold several".into(),
        }),
    }
}

/// Deserializes `T` from each YAML document of `text` (`---` separates them).
pub(super) fn each_document<T: DeserializeOwned>(text: &str) -> Result<Vec<T>, ConfigError> {
    tree::documents(text)?
        .iter()
        .enumerate()
        .map(|(i, doc)| {
            de::from_node(doc).map_err(|e: ConfigError| e.within(&format!("[document {}]", i + 1)))
        })
        .collect()
}
