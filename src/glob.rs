//! MeshGuard globs for actions, resources and paths.
//!
//! The contract says `*` stays within a segment and `**` crosses segments. Actions use `:`
//! as their segment separator (`read:orders`) and paths use `/`, so both are separators:
//! patterns and values have `:` mapped to `/` before globset (with `literal_separator`)
//! sees them. A pattern that is exactly `*` means "anything", because that is what every
//! policy author who writes `action: "*"` intends.

use globset::{GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use std::borrow::Cow;
use std::fmt;

/// A glob that failed to compile, with the pattern and globset's explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobError {
    /// The pattern as the user wrote it.
    pub pattern: String,
    /// Why globset rejected it.
    pub message: String,
}

impl fmt::Display for GlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid glob {:?}: {}", self.pattern, self.message)
    }
}

impl std::error::Error for GlobError {}

/// Maps a value onto the form patterns are compiled in (`:` becomes `/`).
pub fn normalize(value: &str) -> Cow<'_, str> {
    if value.contains(':') {
        Cow::Owned(value.replace(':', "/"))
    } else {
        Cow::Borrowed(value)
    }
}

fn builder(pattern: &str) -> Result<globset::Glob, GlobError> {
    let translated = if pattern == "*" {
        "**".to_string()
    } else {
        pattern.replace(':', "/")
    };
    GlobBuilder::new(&translated)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| GlobError {
            pattern: pattern.to_string(),
            message: e.kind().to_string(),
        })
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    matcher: GlobMatcher,
    literal: bool,
    source: String,
}

impl Pattern {
    /// Compiles a pattern; errors name the pattern.
    pub fn new(pattern: &str) -> Result<Pattern, GlobError> {
        Ok(Pattern {
            matcher: builder(pattern)?.compile_matcher(),
            literal: !pattern.contains(['*', '?', '[', '{']),
            source: pattern.to_string(),
        })
    }

    /// Matches a value already passed through [`normalize`].
    pub fn matches_normalized(&self, value: &str) -> bool {
        self.matcher.is_match(value)
    }

    /// Matches a raw value.
    pub fn matches(&self, value: &str) -> bool {
        self.matcher.is_match(normalize(value).as_ref())
    }

    /// How specific the pattern is: literal characters count, wildcards do not, and an
    /// exact pattern outranks any wildcard one. Used to name the "most specific" rule.
    pub fn specificity(&self) -> usize {
        let literal_chars = self
            .source
            .chars()
            .filter(|c| !matches!(c, '*' | '?' | '[' | ']' | '{' | '}'))
            .count();
        if self.literal {
            literal_chars + 10_000
        } else {
            literal_chars
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// Many patterns compiled into one automaton, so that finding the rules whose action
/// matches costs one scan however many rules there are.
#[derive(Debug, Clone)]
pub struct PatternSet {
    set: GlobSet,
}

impl PatternSet {
    /// Compiles all patterns; the index of a match is the pattern's position.
    pub fn new<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Result<PatternSet, GlobError> {
        let mut b = GlobSetBuilder::new();
        for p in patterns {
            b.add(builder(p)?);
        }
        let set = b.build().map_err(|e| GlobError {
            pattern: String::new(),
            message: e.to_string(),
        })?;
        Ok(PatternSet { set })
    }

    /// Indices of the patterns that match a normalized value, appended to `out`.
    pub fn matches_into(&self, normalized: &str, out: &mut Vec<usize>) {
        self.set.matches_into(normalized, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_stays_within_a_segment() {
        let p = Pattern::new("read:*").unwrap();
        assert!(p.matches("read:orders"));
        assert!(!p.matches("read:orders:123"));
        assert!(!p.matches("write:orders"));
        let deep = Pattern::new("read:**").unwrap();
        assert!(deep.matches("read:orders:123"));
        let path = Pattern::new("/v1/email/*").unwrap();
        assert!(path.matches("/v1/email/send"));
        assert!(!path.matches("/v1/email/send/now"));
        assert!(Pattern::new("/v1/**").unwrap().matches("/v1/a/b/c"));
    }

    #[test]
    fn lone_star_matches_everything() {
        let p = Pattern::new("*").unwrap();
        assert!(p.matches("read:orders:1"));
        assert!(p.matches("x"));
    }

    #[test]
    fn specificity_prefers_literals() {
        let exact = Pattern::new("write:email").unwrap();
        let wild = Pattern::new("write:*").unwrap();
        assert!(exact.specificity() > wild.specificity());
        assert!(Pattern::new("write:em*").unwrap().specificity() > wild.specificity());
    }

    #[test]
    fn bad_glob_names_pattern() {
        let e = Pattern::new("read:[a").unwrap_err();
        assert_eq!(e.pattern, "read:[a");
        assert!(e.to_string().contains("read:[a"), "{e}");
    }

    #[test]
    fn set_reports_indices() {
        let s = PatternSet::new(["read:*", "write:email", "*"]).unwrap();
        let mut out = vec![];
        s.matches_into(&normalize("write:email"), &mut out);
        out.sort();
        assert_eq!(out, vec![1, 2]);
    }
}
