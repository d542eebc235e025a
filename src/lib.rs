//! MeshGuard for Envoy: identity, policy and audit for AI-agent traffic.
//!
//! The engine (every module but `filter`) is plain Rust over plain data and is unit-tested
//! natively; `filter` is the thin proxy-wasm glue, compiled only for wasm32.
#![warn(missing_docs)]

pub mod actions;
pub mod audit;
pub mod condition;
pub mod config;
pub mod engine;
pub mod glob;
pub mod health;
pub mod hex;
pub mod identity;
pub mod policy;
pub mod sources;
pub mod tier;
pub mod time;

#[cfg(target_arch = "wasm32")]
mod host;

pub use engine::{Engine, Outcome, Verdict};
