//! Refuses JSON objects that name a member twice, in text from untrusted parties (token
//! headers and payloads, JSON-RPC messages and their params).
//!
//! RFC 8259 leaves duplicate names undefined: serde_json and Python keep the last
//! occurrence, other parsers keep the first or fail. When MeshGuard and the party after it
//! (the upstream, the token issuer) could read different values from the same bytes — a
//! `{"name":"read_orders","name":"delete_everything"}` tool call, a token with two `sub`s —
//! the only safe reading is none.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

/// Parses `text` into a [`Value`], refusing a repeated member name at any depth (one pass,
/// as cheap as `serde_json::from_slice`).
pub fn from_slice(text: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let v = UniqueValue
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

/// For `#[serde(deserialize_with)]`: an optional [`Value`] whose objects name every
/// member once.
pub fn optional_value<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    UniqueValue.deserialize(d).map(Some)
}

/// A seed that builds a [`Value`], refusing repeated member names.
#[derive(Clone, Copy)]
struct UniqueValue;

impl<'de> DeserializeSeed<'de> for UniqueValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(UniqueValue)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(Key)? {
            if out.contains_key(key.as_ref()) {
                return Err(de::Error::custom(format!(
                    "the member name {key:?} appears twice in one object"
                )));
            }
            let value = map.next_value_seed(UniqueValue)?;
            out.insert(key.into_owned(), value);
        }
        Ok(Value::Object(out))
    }
}

/// A member name, borrowed from the input unless it holds escapes (the common case
/// allocates nothing).
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Cow<'de, str>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::from_slice;
    use serde_json::json;

    #[test]
    fn duplicates_at_any_depth_are_refused() {
        assert!(from_slice(br#"{"a":1,"b":{"c":[{"d":1,"e":2}]}}"#).is_ok());
        assert!(from_slice(br#"[1,"x",null,true,1.5,-3]"#).is_ok());
        let e = from_slice(br#"{"name":"read","name":"delete"}"#).unwrap_err();
        assert!(e.contains("\"name\" appears twice"), "{e}");
        assert!(from_slice(br#"{"p":{"x":1,"x":2}}"#).is_err());
        assert!(from_slice(br#"[{"ok":1},{"x":1,"x":1}]"#).is_err());
        // an escaped spelling is the same name
        assert!(from_slice(br#"{"sub":"a","\u0073ub":"b"}"#).is_err());
        // the same name in sibling objects is fine
        assert!(from_slice(br#"[{"x":1},{"x":2}]"#).is_ok());
        assert!(from_slice(b"{").is_err());
        assert!(from_slice(b"{} x").is_err());
    }

    #[test]
    fn values_parse_like_serde_json_without_duplicates() {
        for text in [
            r#"{"a":[1,-2,3.5,true,null,"s\"\u00e9"],"b":{"c":{}},"big":18446744073709551615}"#,
            r#"[]"#,
            r#""x""#,
            r#"-0.0"#,
        ] {
            let want: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(from_slice(text.as_bytes()).unwrap(), want, "{text}");
        }
        assert_eq!(from_slice(br#"{"k":1}"#).unwrap(), json!({"k": 1}));
        let e = from_slice(br#"{"a":{"b":1,"\u0062":2}}"#).unwrap_err();
        assert!(e.contains("\"b\" appears twice"), "{e}");
        assert!(from_slice(b"[1,").is_err());
    }
}
