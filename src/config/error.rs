//! `ConfigError`: what is wrong with a configuration, always naming the field.

use crate::condition::ConditionError;
use crate::glob::GlobError;
use std::fmt;

/// Everything that can be wrong with a configuration. Each variant names the field.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The text is not JSON/YAML, or a field has the wrong type or name.
    Parse {
        /// Dotted path of the field (`.` for the document itself).
        field: String,
        /// 1-based line, when the parser knows it.
        line: Option<usize>,
        /// 1-based column, when the parser knows it.
        column: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A policy condition that does not parse.
    Condition {
        /// e.g. `policies[0].rules[1].conditions[0]`.
        field: String,
        /// Carries the condition text and the column.
        error: ConditionError,
    },
    /// A glob that does not compile.
    Glob {
        /// e.g. `policies[0].rules[2].action`.
        field: String,
        /// Carries the pattern.
        error: GlobError,
    },
    /// A well-formed value that is not acceptable (empty list, bad key, ...).
    Invalid {
        /// The field.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// A feature that this build does not provide.
    Unsupported {
        /// The field.
        field: String,
        /// What to use instead.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Prefixes the field path, so nested parsers (policy_yaml) report full paths.
    pub(crate) fn within(self, prefix: &str) -> ConfigError {
        let join = |f: String| {
            if f == "." || f.is_empty() {
                prefix.to_string()
            } else if f.starts_with('[') {
                format!("{prefix}{f}")
            } else {
                format!("{prefix}.{f}")
            }
        };
        match self {
            ConfigError::Parse {
                field,
                line,
                column,
                message,
            } => ConfigError::Parse {
                field: join(field),
                line,
                column,
                message,
            },
            ConfigError::Condition { field, error } => ConfigError::Condition {
                field: join(field),
                error,
            },
            ConfigError::Glob { field, error } => ConfigError::Glob {
                field: join(field),
                error,
            },
            ConfigError::Invalid { field, message } => ConfigError::Invalid {
                field: join(field),
                message,
            },
            ConfigError::Unsupported { field, message } => ConfigError::Unsupported {
                field: join(field),
                message,
            },
        }
    }

    /// The field the error is about.
    pub fn field(&self) -> &str {
        match self {
            ConfigError::Parse { field, .. }
            | ConfigError::Condition { field, .. }
            | ConfigError::Glob { field, .. }
            | ConfigError::Invalid { field, .. }
            | ConfigError::Unsupported { field, .. } => field,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Parse {
                field,
                line,
                column,
                message,
            } => {
                write!(f, "{field}: {message}")?;
                match (line, column) {
                    (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
                    (Some(l), None) => write!(f, " (line {l})"),
                    _ => Ok(()),
                }
            }
            ConfigError::Condition { field, error } => write!(f, "{field}: {error}"),
            ConfigError::Glob { field, error } => write!(f, "{field}: {error}"),
            ConfigError::Invalid { field, message } => write!(f, "{field}: {message}"),
            ConfigError::Unsupported { field, message } => {
                write!(f, "{field}: not supported: {message}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}
