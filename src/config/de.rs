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

/// Reads `T` from one document.
pub(super) fn from_node<T: de::DeserializeOwned>(node: &Node) -> Result<T, ConfigError> {
    T::deserialize(NodeDe {
        node,
        path: Path::Root,
    })
    .map_err(ConfigError::from)
}

struct NodeDe<'p, 'de> {
    node: &'de Node,
    path: Path<'p>,
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
            }),
            Kind::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                value: None,
                path: &self.path,
            }),
        };
        r.map_err(|e| self.place(e))
    }

    /// Any scalar reads as a string (`port: 8080` into a string field is "8080"), as in
    /// serde_yaml.
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.kind {
            Kind::Scalar { text, .. } => visitor
                .visit_borrowed_str(text)
                .map_err(|e| self.place(e)),
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
        seed.deserialize(NodeDe { node, path }).map(Some)
    }
}

struct Map<'p, 'de, I> {
    entries: I,
    value: Option<(&'de Node, &'de Node)>,
    path: &'p Path<'p>,
}

impl<'de, I: Iterator<Item = &'de (Node, Node)>> MapAccess<'de> for Map<'_, 'de, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some((k, v));
        // An unknown or malformed key is reported at the mapping that holds it.
        seed.deserialize(NodeDe {
            node: k,
            path: *self.path,
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
        })
    }
}

struct Variant<'p, 'de> {
    key: &'de Node,
    value: &'de Node,
    path: &'p Path<'p>,
}

impl<'p, 'de> de::EnumAccess<'de> for Variant<'p, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let v = seed.deserialize(NodeDe {
            node: self.key,
            path: *self.path,
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
        }
    }
}
