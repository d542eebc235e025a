//! The condition language: parse arbitrary source, check names, evaluate against an
//! arbitrary context. Input: the condition, a NUL byte, then a JSON object whose dotted
//! paths are the names (`{"request": {"headers": {"x": "1"}}}` gives `request.headers.x`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshguard::condition::{Condition, Lookup, Value};
use meshguard_fuzz::split_nul;

struct Context(serde_json::Value);

fn convert(v: &serde_json::Value, depth: usize) -> Option<Value> {
    match v {
        serde_json::Value::String(s) => Some(Value::Str(s.clone())),
        serde_json::Value::Number(n) => n.as_f64().map(Value::Num),
        serde_json::Value::Bool(b) => Some(Value::Bool(*b)),
        serde_json::Value::Array(a) if depth < 8 => Some(Value::List(
            a.iter().filter_map(|x| convert(x, depth + 1)).collect(),
        )),
        _ => None,
    }
}

impl Lookup for Context {
    fn lookup(&self, name: &str) -> Option<Value> {
        let mut v = &self.0;
        for part in name.split('.') {
            v = v.get(part)?;
        }
        convert(v, 0)
    }
}

fuzz_target!(|data: &[u8]| {
    let (source, context) = split_nul(data);
    let Ok(source) = std::str::from_utf8(source) else {
        return;
    };
    let ctx = Context(serde_json::from_slice(context).unwrap_or(serde_json::Value::Null));
    match Condition::parse(source) {
        Err(e) => {
            let _ = e.to_string();
        }
        Ok(c) => {
            assert_eq!(c.source(), source);
            // Every name of a condition that parsed re-lexes (check_names relies on it).
            assert!(c.check_names(|_| true, String::new).is_ok());
            let _ = c.check_names(|n| n.starts_with("request."), || "request.*".into());
            let holds = c.eval(&ctx);
            // Three-valued logic: when the condition is true its negation is false
            // (unknown stays unknown, which `eval` reports as false for both).
            if let Ok(negated) = Condition::parse(&format!("NOT ({source})")) {
                assert!(
                    !(holds && negated.eval(&ctx)),
                    "both {source:?} and its negation hold"
                );
            }
        }
    }
});
