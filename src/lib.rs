//! MeshGuard for Envoy: identity, policy and audit for AI-agent traffic.
//!
//! The engine (every module but `host`) is plain Rust over plain data and is unit-tested
//! natively; `host` moves bytes between Envoy and the engine. Its logic is written
//! against a small host trait, bound to proxy-wasm on wasm32 and to an in-memory fake in
//! `cargo test`.
#![warn(missing_docs)]

pub mod actions;
pub mod audit;
pub mod condition;
pub mod config;
pub mod controls;
pub mod engine;
pub mod glob;
pub mod health;
pub mod hex;
pub mod identity;
pub mod policy;
pub mod probe;
pub mod shared;
pub mod sources;
pub mod tier;
pub mod time;
pub mod unique_json;
pub mod worker;

#[cfg(any(target_arch = "wasm32", test))]
mod host;

pub use engine::{Engine, Outcome, Verdict};
