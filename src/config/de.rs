//! The one serde `Deserializer` for configuration: typed structs from a [`Node`] tree,
//! tracking the field path itself so an error names `identity.issuers[0].audiences` and the
//! line and column of the value.

use super::error::ConfigError;
use super::tree::{Kind, Node};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;
use std::fmt;

/// Where a value sits, as a chain of borrowed steps; turned into text only for an error.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, k) => f.write_str(k),
            Path::Key(p, k) => write!(f, "{p}.{k}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
        }
    }
}

/// A deserialization error; the innermost node it passes through fixes its place.
#[derive(Debug)]
pub(super) struct Error {
    message: String,
    at: Option<(String, usize, usize)>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Error {
        Error {
            message: msg.to_string(),
            at: None,
        }
    }
}

impl From<Error> for ConfigError {
    fn from(e: Error) -> ConfigError {
        let (field, line, column) = e.at.unwrap_or_default();
        ConfigError::Parse {
            field: if field.is_empty() { ".".into() } else { field },
            line: Some(line).filter(|l| *l > 0),
            column: Some(column).filter(|c| *c > 0),
            message: e.message,
        }
    }
}

/// Reads `T` from one document. `json`: the tree came from JSON (text or a
/// `serde_json::Value`), whose numbers and booleans do not read as strings.
pub(super) fn from_node<T: de::DeserializeOwned>(
    node: &Node,
    json: bool,
) -> Result<T, ConfigError> {
    T::deserialize(NodeDe {
        node,
        path: Path::Root,
        json,
    })
    .map_err(ConfigError::from)
}

struct NodeDe<'p, 'de> {
    node: &'de Node,
    path: Path<'p>,
    json: bool,
}

impl NodeDe<'_, '_> {
    fn place(&self, mut e: Error) -> Error {
        if e.at.is_none() {
            e.at = Some((self.path.to_string(), self.node.line, self.node.column));
        }
        e
    }
}

/// YAML 1.2 core-schema typing of a plain scalar, as serde_yaml 0.9 did it.
enum Plain {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str,
}

fn radix(s: &str) -> (&str, u32) {
    if let Some(r) = s.strip_prefix("0x") {
        (r, 16)
    } else if let Some(r) = s.strip_prefix("0o") {
        (r, 8)
    } else if let Some(r) = s.strip_prefix("0b") {
        (r, 2)
    } else {
        (s, 10)
    }
}

fn typed(text: &str) -> Plain {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Plain::Null,
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Plain::F64(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Plain::F64(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::F64(f64::NAN),
        _ => {}
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    // Leading zeros followed by digits are a string in YAML 1.2 (`007`), and a second sign
    // is no number.
    let leading_zero = unsigned.len() > 1
        && unsigned.starts_with('0')
        && unsigned.bytes().all(|b| b.is_ascii_digit());
    if leading_zero || unsigned.starts_with(['+', '-']) {
        return Plain::Str;
    }
    let (digits, base) = radix(unsigned);
    if !digits.starts_with(['+', '-']) {
        if let Ok(n) = u64::from_str_radix(digits, base) {
            if !negative {
                return Plain::U64(n);
            }
            if let Some(i) = 0i64.checked_sub_unsigned(n) {
                return Plain::I64(i);
            }
        }
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Plain::F64(f),
        _ => Plain::Str,
    }
}

impl<'de> de::Deserializer<'de> for NodeDe<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match &self.node.kind {
            Kind::Scalar { text, plain: false } => visitor.visit_borrowed_str(text),
            Kind::Scalar { text, plain: true } => match typed(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::U64(n) => visitor.visit_u64(n),
                Plain::I64(n) => visitor.visit_i64(n),
                Plain::F64(n) => visitor.visit_f64(n),
                Plain::Str => visitor.visit_borrowed_str(text),
            },
            Kind::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter(),
                index: 0,
                path: &self.path,
                json: self.json,
            }),
            Kind::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                value: None,
                path: &self.path,
                json: self.json,
            }),
        };
        r.map_err(|e| self.place(e))
    }

    /// Any YAML scalar reads as a string (`port: 8080` into a string field is "8080"), as
    /// in serde_yaml; a JSON number or `true` does not, as in serde_json.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Scalar { text, plain } if !(self.json && *plain) => {
                visitor.visit_borrowed_str(text).map_err(|e| self.place(e))
            }
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Scalar { text, plain: true } if matches!(typed(text), Plain::Null) => {
                visitor.visit_none().map_err(|e| self.place(e))
            }
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let r = match &self.node.kind {
            Kind::Scalar { text, .. } => {
                visitor.visit_enum(IntoDeserializer::<Error>::into_deserializer(text.as_str()))
            }
            Kind::Map(entries) if entries.len() == 1 => match entries.first() {
                Some((k, v)) => visitor.visit_enum(Variant {
                    key: k,
                    value: v,
                    path: &self.path,
                    json: self.json,
                }),
                None => Err(de::Error::custom("an enum needs one variant")),
            },
            _ => Err(de::Error::custom(
                "expected a variant name, or a mapping with one entry",
            )),
        };
        r.map_err(|e| self.place(e))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct seq tuple tuple_struct map struct
    }
}

fn key_text(key: &Node) -> &str {
    match &key.kind {
        Kind::Scalar { text, .. } => text,
        _ => "?",
    }
}

struct Seq<'p, I> {
    items: I,
    index: usize,
    path: &'p Path<'p>,
    json: bool,
}

impl<'de, I: Iterator<Item = &'de Node>> SeqAccess<'de> for Seq<'_, I> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = Path::Index(self.path, self.index);
        self.index += 1;
        seed.deserialize(NodeDe {
            node,
            path,
            json: self.json,
        })
        .map(Some)
    }
}

struct Map<'p, 'de, I> {
    entries: I,
    value: Option<(&'de Node, &'de Node)>,
    path: &'p Path<'p>,
    json: bool,
}

impl<'de, I: Iterator<Item = &'de (Node, Node)>> MapAccess<'de> for Map<'_, 'de, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((k, v));
        // An unknown or malformed key is reported at the mapping that holds it.
        seed.deserialize(NodeDe {
            node: k,
            path: *self.path,
            json: self.json,
        })
        .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let Some((k, v)) = self.value.take() else {
            return Err(de::Error::custom("a value without a key"));
        };
        let path = Path::Key(self.path, key_text(k));
        seed.deserialize(NodeDe {
            node: v,
            path,
            json: self.json,
        })
    }
}

struct Variant<'p, 'de> {
    key: &'de Node,
    value: &'de Node,
    path: &'p Path<'p>,
    json: bool,
}

impl<'p, 'de> de::EnumAccess<'de> for Variant<'p, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let v = seed.deserialize(NodeDe {
            node: self.key,
            path: *self.path,
            json: self.json,
        })?;
        Ok((v, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        de::Deserialize::deserialize(self.de())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self.de())
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(self.de(), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_any(self.de(), visitor)
    }
}

impl<'p, 'de> Variant<'p, 'de> {
    fn de(self) -> NodeDe<'p, 'de> {
        NodeDe {
            node: self.value,
            path: *self.path,
            json: self.json,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::text::from_text;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct S {
        #[serde(default)]
        s: Option<String>,
        #[serde(default)]
        n: Option<i64>,
        #[serde(default)]
        b: Option<bool>,
        #[serde(default)]
        list: Vec<String>,
        #[serde(default)]
        e: Option<E>,
        #[serde(default)]
        v: Option<serde_json::Value>,
        #[serde(default)]
        m: BTreeMap<String, u16>,
    }

    #[derive(Deserialize, Debug, PartialEq)]
    #[serde(rename_all = "snake_case")]
    enum E {
        Unit,
        Wrapped(u8),
    }

    fn s(text: &str) -> S {
        from_text(text.as_bytes()).unwrap()
    }

    #[test]
    fn scalars_read_as_serde_yaml_read_them() {
        // Plain scalars go into string fields as written.
        assert_eq!(s("s: 8080").s.as_deref(), Some("8080"));
        assert_eq!(s("s: true").s.as_deref(), Some("true"));
        assert_eq!(s("s: 'x: y'").s.as_deref(), Some("x: y"));
        assert_eq!(s("s: \"a\\tb\"").s.as_deref(), Some("a\tb"));
        assert_eq!(
            s("s: |\n  two\n  lines\n").s.as_deref(),
            Some("two\nlines\n")
        );
        // `~`, `null` and nothing are null.
        for t in ["s: ~", "s: null", "s:", "n: NULL"] {
            assert_eq!(s(t), s("{}"), "{t}");
        }
        assert_eq!(s("n: -12").n, Some(-12));
        assert_eq!(s("n: 0x10").n, Some(16));
        assert_eq!(s("b: True").b, Some(true));
        assert!(from_text::<S>(b"n: '12'").is_err());
        assert!(from_text::<S>(b"b: yes").is_err());
        assert_eq!(s("list: [a, 'b', \"c\"]").list, ["a", "b", "c"]);
        assert_eq!(s("e: unit").e, Some(E::Unit));
        assert_eq!(s("e: {wrapped: 7}").e, Some(E::Wrapped(7)));
        assert_eq!(s("m: {a: 1, b: 2}").m.len(), 2);
        let v = s("v: {a: [1, -2, 1.5, '007', 007, null, true, x]}")
            .v
            .unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"a":[1,-2,1.5,"007","007",null,true,"x"]}"#
        );
        // Aliases copy the anchored value.
        assert_eq!(s("list: &l [a]\nv: *l").v.unwrap().to_string(), r#"["a"]"#);
    }

    #[test]
    fn json_text_reads_the_same() {
        let j = s(
            r#"{"s":"x","n":60,"list":["a"],"v":{"k":[1e+06,"\u00e9\ud83d\ude00"]},"m":{"p":8}}"#,
        );
        let y = s("s: x\nn: 60\nlist: [a]\nv: {k: [1e+06, \"é😀\"]}\nm: {p: 8}\n");
        assert_eq!(j, y);
    }

    #[test]
    fn errors_carry_path_line_and_column() {
        let e = from_text::<S>(b"list:\n  - a\n  - [b]\n").unwrap_err();
        assert_eq!(e.field(), "list[1]");
        assert!(e.to_string().ends_with("(line 3, column 5)"), "{e}");
        let e = from_text::<S>(b"m:\n  a: 70000\n").unwrap_err();
        assert_eq!(e.field(), "m.a");
        assert!(e.to_string().contains("line 2, column 6"), "{e}");
        let e = from_text::<S>(b"bogus: 1").unwrap_err();
        assert_eq!(e.field(), ".");
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        // JSON numbers stay numbers, as serde_json read them.
        let e = from_text::<S>(br#"{"s": 7}"#).unwrap_err();
        assert_eq!(e.field(), "s");
        assert!(from_text::<S>(br#"{"s": "7"}"#).is_ok());
        let e = from_text::<S>(b"e: other").unwrap_err();
        assert_eq!(e.field(), "e");
        let e = from_text::<S>(b"a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.to_string().contains("more than one"), "{e}");
        assert!(from_text::<S>(b"s: \xff").is_err());
    }
}
