//! Configuration text as a tree of nodes that know their line and column.
//!
//! Every configuration text (JSON is YAML's flow syntax) goes through one YAML event parser
//! (saphyr-parser, pure Rust) into this tree, and [`super::de`] reads typed structs from it.
//! Two steps instead of a streaming deserializer per format, so each configuration type is
//! monomorphised once. Measured 2026-11-30 (bench/README.md, "Configuration reader"):
//! replacing serde_yaml + unsafe-libyaml (322 KB) and serde_path_to_error's per-type ×
//! per-format wrappers (168 KB) took the shipped module from 1,912,355 to 1,648,440 bytes
//! (−14 %) and Envoy's CPU to ready from 2.30 to 2.01 s; saphyr-parser was 5 KB smaller
//! than yaml-rust2 in wasm.

use super::error::ConfigError;
use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use std::collections::BTreeMap;

/// Deepest nesting accepted. serde_yaml stopped at 128 too; the tree is read recursively,
/// so the bound is what keeps a hostile `[[[[…` from overflowing the stack.
const MAX_DEPTH: usize = 128;

/// Most nodes that aliases (`*name`) may copy in one text, so a "billion laughs" document
/// cannot make the tree exponentially larger than the text.
const MAX_ALIAS_NODES: usize = 100_000;

/// One value of the text and where it starts.
#[derive(Debug, Clone)]
pub(super) struct Node {
    pub(super) kind: Kind,
    /// 1-based line.
    pub(super) line: usize,
    /// 1-based column.
    pub(super) column: usize,
}

/// What a node holds.
#[derive(Debug, Clone)]
pub(super) enum Kind {
    /// A scalar's text. `plain` scalars are typed by their text (`~`, `true`, `60`, `1e+06`)
    /// when the reader asks for "anything"; quoted and block scalars are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in text order; a key appears at most once.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// An empty plain scalar: null.
    pub(super) fn null(line: usize, column: usize) -> Node {
        Node {
            kind: Kind::Scalar {
                text: String::new(),
                plain: true,
            },
            line,
            column,
        }
    }

    /// The tree of a parsed JSON value (serde_json bounds its depth at 128); lines are
    /// unknown (0).
    pub(super) fn from_json(v: &serde_json::Value) -> Node {
        use serde_json::Value;
        let scalar = |text: String, plain| Kind::Scalar { text, plain };
        let kind = match v {
            Value::Null => scalar(String::new(), true),
            Value::Bool(b) => scalar(b.to_string(), true),
            Value::Number(n) => scalar(n.to_string(), true),
            Value::String(s) => scalar(s.clone(), false),
            Value::Array(items) => Kind::Seq(items.iter().map(Node::from_json).collect()),
            Value::Object(m) => Kind::Map(
                m.iter()
                    .map(|(k, v)| (Node::at_zero(scalar(k.clone(), false)), Node::from_json(v)))
                    .collect(),
            ),
        };
        Node::at_zero(kind)
    }

    fn at_zero(kind: Kind) -> Node {
        Node {
            kind,
            line: 0,
            column: 0,
        }
    }

    fn size(&self) -> usize {
        match &self.kind {
            Kind::Scalar { .. } => 1,
            Kind::Seq(items) => 1 + items.iter().map(Node::size).sum::<usize>(),
            Kind::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.size() + v.size())
                    .sum::<usize>()
            }
        }
    }
}

/// A collection being read.
struct Open {
    node: Node,
    anchor: usize,
    /// For a map: the key read, waiting for its value.
    key: Option<Node>,
}

fn error(line: usize, column: usize, message: impl Into<String>) -> ConfigError {
    ConfigError::Parse {
        field: ".".into(),
        line: Some(line),
        column: Some(column),
        message: message.into(),
    }
}

fn position(span: &Span) -> (usize, usize) {
    (span.start.line(), span.start.col() + 1)
}

/// The scanner reports an error at the end of the text one line past the last; point at
/// the end of the last line instead, where the user looks.
fn clamp(text: &str, line: usize, column: usize) -> (usize, usize) {
    let lines = text.lines().count().max(1);
    if line <= lines {
        return (line, column);
    }
    let last = text.lines().last().map_or(0, |l| l.chars().count());
    (lines, last + 1)
}

/// Parses every document of `text` (`---` separates them).
pub(super) fn documents(text: &str) -> Result<Vec<Node>, ConfigError> {
    let mut docs = Vec::new();
    let mut open: Vec<Open> = Vec::new();
    let mut anchors: BTreeMap<usize, Node> = BTreeMap::new();
    let mut copied = 0usize;
    let mut in_document = None;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let (line, column) = clamp(text, e.marker().line(), e.marker().col() + 1);
            error(line, column, e.info().to_string())
        })?;
        let (line, column) = position(&span);
        let done = match event {
            Event::DocumentStart(_) => {
                in_document = Some((line, column));
                None
            }
            Event::DocumentEnd => {
                // A document with nothing in it (`---` alone) is null, as in serde_yaml.
                if let Some((l, c)) = in_document.take() {
                    docs.push(Node::null(l, c));
                }
                None
            }
            Event::Scalar(text, style, anchor, _tag) => Some((
                Node {
                    kind: Kind::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                    line,
                    column,
                },
                anchor,
            )),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(error(
                        line,
                        column,
                        format!("nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                let kind = if matches!(event, Event::SequenceStart(..)) {
                    Kind::Seq(Vec::new())
                } else {
                    Kind::Map(Vec::new())
                };
                open.push(Open {
                    node: Node { kind, line, column },
                    anchor,
                    key: None,
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => open.pop().map(|o| (o.node, o.anchor)),
            Event::Alias(id) => {
                let node = anchors
                    .get(&id)
                    .ok_or_else(|| error(line, column, "unknown alias"))?;
                copied = copied.saturating_add(node.size());
                if copied > MAX_ALIAS_NODES {
                    return Err(error(
                        line,
                        column,
                        format!("aliases expand to more than {MAX_ALIAS_NODES} values"),
                    ));
                }
                Some((node.clone(), 0))
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
        };
        let Some((node, anchor)) = done else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match open.last_mut() {
            None => {
                in_document = None;
                docs.push(node);
            }
            Some(Open {
                node:
                    Node {
                        kind: Kind::Seq(items),
                        ..
                    },
                ..
            }) => items.push(node),
            Some(Open {
                node:
                    Node {
                        kind: Kind::Map(entries),
                        ..
                    },
                key,
                ..
            }) => match key.take() {
                None => {
                    if let Kind::Scalar { text, .. } = &node.kind {
                        let repeated = entries.iter().any(
                            |(k, _)| matches!(&k.kind, Kind::Scalar { text: t, .. } if t == text),
                        );
                        if repeated {
                            return Err(error(
                                node.line,
                                node.column,
                                format!("duplicate key `{text}`"),
                            ));
                        }
                    }
                    *key = Some(node);
                }
                Some(k) => entries.push((k, node)),
            },
            // A scalar never stays open.
            Some(_) => {}
        }
    }
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_make_the_same_tree() {
        let j = documents(r#"{"a":1,"b":["x",{"c":null}]}"#).unwrap();
        let y = documents("a: 1\nb:\n  - x\n  - c: null\n").unwrap();
        assert_eq!(format!("{:?}", strip(&j[0])), format!("{:?}", strip(&y[0])));
    }

    fn strip(n: &Node) -> String {
        match &n.kind {
            Kind::Scalar { text, .. } => text.clone(),
            Kind::Seq(items) => format!(
                "[{}]",
                items.iter().map(strip).collect::<Vec<_>>().join(",")
            ),
            Kind::Map(e) => format!(
                "{{{}}}",
                e.iter()
                    .map(|(k, v)| format!("{}:{}", strip(k), strip(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let d = documents("a:\n  b: 7\n").unwrap();
        let Kind::Map(e) = &d[0].kind else { panic!() };
        let Kind::Map(inner) = &e[0].1.kind else {
            panic!()
        };
        assert_eq!((inner[0].1.line, inner[0].1.column), (2, 6));
    }

    #[test]
    fn limits_depth_aliases_and_duplicates() {
        let deep = "[".repeat(100_000);
        // saphyr-parser's own flow-level bound trips first here; the block form below
        // reaches ours.
        let e = documents(&deep).unwrap_err();
        assert!(e.to_string().contains("recursion limit"), "{e}");
        let deep_block: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
        assert!(documents(&deep_block)
            .unwrap_err()
            .to_string()
            .contains("deeper"));
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 0..8 {
            let prev = (b'a' + i) as char;
            let next = (b'a' + i + 1) as char;
            laughs += &format!("{next}: &{next} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n");
        }
        let e = documents(&laughs).unwrap_err();
        assert!(e.to_string().contains("aliases expand"), "{e}");
        let e = documents("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            ". : duplicate key `a` (line 3, column 1)".replace(". : ", ".: ")
        );
        assert!(documents(r#"{"a":1,"a":2}"#).is_err());
    }

    #[test]
    fn documents_are_split() {
        assert_eq!(documents("a: 1\n---\nb: 2\n").unwrap().len(), 2);
        assert_eq!(documents("").unwrap().len(), 0);
        assert_eq!(documents("---\n").unwrap().len(), 1);
    }
}
