//! Reading configuration text: JSON or YAML, with the field path and position of errors.

use super::error::ConfigError;
use serde::Deserialize;

fn path_string(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." {
        ".".into()
    } else {
        s
    }
}

/// Deserializes `T` from JSON or YAML text, reporting the field path on failure.
/// JSON is tried when the text starts with `{` or `[` (serde_json reports JSON errors
/// more precisely); everything else is YAML.
pub fn from_text<T: for<'de> Deserialize<'de>>(text: &[u8]) -> Result<T, ConfigError> {
    let trimmed = text.iter().position(|b| !b.is_ascii_whitespace());
    let is_json = trimmed
        .and_then(|i| text.get(i))
        .is_some_and(|b| *b == b'{' || *b == b'[');
    if is_json {
        let mut d = serde_json::Deserializer::from_slice(text);
        let value = serde_path_to_error::deserialize(&mut d).map_err(|e| {
            let field = path_string(e.path());
            let inner = e.into_inner();
            ConfigError::Parse {
                field,
                line: Some(inner.line()),
                column: Some(inner.column()),
                message: strip_location(&inner.to_string()),
            }
        })?;
        d.end().map_err(|e| ConfigError::Parse {
            field: ".".into(),
            line: Some(e.line()),
            column: Some(e.column()),
            message: strip_location(&e.to_string()),
        })?;
        Ok(value)
    } else {
        let d = serde_yaml::Deserializer::from_slice(text);
        yaml_document(d)
    }
}

pub(super) fn yaml_document<T: for<'de> Deserialize<'de>>(
    d: serde_yaml::Deserializer<'_>,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(d).map_err(|e| {
        let field = path_string(e.path());
        let inner = e.into_inner();
        let loc = inner.location();
        let full = strip_location(&inner.to_string());
        // serde_yaml prefixes its message with the path we already report.
        let message = full
            .strip_prefix(&format!("{field}: "))
            .map_or_else(|| full.clone(), str::to_string);
        ConfigError::Parse {
            field,
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            message,
        }
    })
}

/// serde_json and serde_yaml append " at line X column Y"; we print the location ourselves.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg.get(..i).unwrap_or(msg).to_string(),
        None => msg.to_string(),
    }
}
