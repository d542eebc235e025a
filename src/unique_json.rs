//! Refuses JSON objects that name a member twice, in text from untrusted parties (token
//! headers and payloads, JSON-RPC bodies).
//!
//! RFC 8259 leaves duplicate names undefined: serde_json and Python keep the last
//! occurrence, other parsers keep the first or fail. When MeshGuard and the party after it
//! (the upstream, the token issuer) could read different values from the same bytes — a
//! `{"name":"read_orders","name":"delete_everything"}` tool call, a token with two `sub`s —
//! the only safe reading is none.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Checks `text` (already known or assumed to be JSON) for an object with a repeated
/// member name at any depth. The error names the member; invalid JSON is an error too.
pub fn check(text: &[u8]) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    Unique.deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())
}

/// A seed that walks one value, checking every object it contains.
#[derive(Clone, Copy)]
struct Unique;

impl<'de> DeserializeSeed<'de> for Unique {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Unique)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        // Keys are decoded (escapes resolved): "a" and "\u0061" are the same name.
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!(
                    "the member name {key:?} appears twice in one object"
                )));
            }
            map.next_value_seed(Unique)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn duplicates_at_any_depth_are_refused() {
        assert!(check(br#"{"a":1,"b":{"c":[{"d":1,"e":2}]}}"#).is_ok());
        assert!(check(br#"[1,"x",null,true,1.5,-3]"#).is_ok());
        let e = check(br#"{"name":"read","name":"delete"}"#).unwrap_err();
        assert!(e.contains("\"name\" appears twice"), "{e}");
        assert!(check(br#"{"p":{"x":1,"x":2}}"#).is_err());
        assert!(check(br#"[{"ok":1},{"x":1,"x":1}]"#).is_err());
        // an escaped spelling is the same name
        assert!(check(br#"{"sub":"a","\u0073ub":"b"}"#).is_err());
        // the same name in sibling objects is fine
        assert!(check(br#"[{"x":1},{"x":2}]"#).is_ok());
        assert!(check(b"{").is_err());
        assert!(check(b"{} x").is_err());
    }
}
