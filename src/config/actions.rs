//! `actions:`: how requests map to actions (compiled by `crate::actions`).

use super::lenient::de_lenient;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `actions:` in the plugin configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActionsConfig {
    /// Header carrying an explicit action (`write:email`). Empty string disables it, which
    /// is the safer choice when routes describe every call: the header lets a caller name
    /// its own action.
    #[serde(default = "default_action_header")]
    pub header: String,
    /// Header carrying an explicit resource. Empty string disables it.
    #[serde(default = "default_resource_header")]
    pub resource_header: String,
    /// Method + path glob to action/resource, first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// MCP endpoints (JSON-RPC `tools/call` → `tool:<name>`). Absent: no path is parsed
    /// as MCP; `mcp: {}` governs `/mcp`.
    #[serde(default)]
    pub mcp: Option<McpConfig>,
    /// A2A JSON-RPC endpoints (`message/send` → `a2a:SendMessage`).
    #[serde(default)]
    pub a2a: Option<A2aConfig>,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            header: default_action_header(),
            resource_header: default_resource_header(),
            routes: Vec::new(),
            mcp: None,
            a2a: None,
        }
    }
}

fn default_action_header() -> String {
    "x-meshguard-action".into()
}
fn default_resource_header() -> String {
    "x-meshguard-resource".into()
}

/// One entry of `actions.routes`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// HTTP method (case-insensitive); omitted or `*` matches any.
    #[serde(default)]
    pub method: Option<String>,
    /// Path glob (`*` within a segment, `**` across); the query string is ignored.
    pub path: String,
    /// The action this call performs.
    pub action: String,
    /// The resource it touches, if the route implies one.
    #[serde(default)]
    pub resource: Option<String>,
}

/// `actions.mcp`: which paths carry MCP JSON-RPC and how its calls map to actions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Exact request paths of MCP endpoints (query string ignored).
    #[serde(default = "default_mcp_paths")]
    pub paths: Vec<String>,
    /// Largest request body buffered and parsed, in bytes; a longer one is answered 413
    /// with a JSON-RPC error.
    #[serde(default = "default_mcp_body", deserialize_with = "de_lenient")]
    pub max_body_bytes: usize,
    /// Tool name → action for `tools/call`; an unmapped tool is `tool:<name>`.
    #[serde(default)]
    pub tools: BTreeMap<String, String>,
    /// Tool name → resource. A value starting with `$` names an argument whose value is
    /// the resource (`$to`, nested `$recipient.domain`); any other value is the resource.
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    /// Record argument values in audit events (`meshguard.mcp.arguments`); argument keys
    /// are always recorded.
    #[serde(default)]
    pub record_arguments: bool,
    /// Largest `tools/list` response buffered for filtering, in bytes; a longer one is
    /// replaced by a JSON-RPC error, never passed unfiltered.
    #[serde(default = "default_mcp_body", deserialize_with = "de_lenient")]
    pub max_response_bytes: usize,
    /// RFC 9728 protected-resource metadata URL, sent as `resource_metadata=` in the
    /// `WWW-Authenticate` header of 401s on MCP paths.
    #[serde(default)]
    pub resource_metadata: Option<String>,
    /// The RFC 9728 document the filter answers itself at
    /// `/.well-known/oauth-protected-resource` (and that path followed by an MCP path).
    #[serde(default)]
    pub protected_resource: Option<serde_json::Value>,
    /// Methods besides `tools/call`, `resources/read` and `prompts/get` that need a rule,
    /// as action `mcp:<method>` (e.g. `tools/list`, `initialize`). Others are allowed for
    /// any authenticated agent.
    #[serde(default)]
    pub governed_methods: Vec<String>,
}

impl Default for McpConfig {
    fn default() -> Self {
        McpConfig {
            paths: default_mcp_paths(),
            max_body_bytes: default_mcp_body(),
            tools: BTreeMap::new(),
            resources: BTreeMap::new(),
            record_arguments: false,
            max_response_bytes: default_mcp_body(),
            resource_metadata: None,
            protected_resource: None,
            governed_methods: Vec::new(),
        }
    }
}

fn default_mcp_paths() -> Vec<String> {
    vec!["/mcp".into()]
}

fn default_mcp_body() -> usize {
    1024 * 1024
}

/// `actions.a2a`: which paths carry A2A JSON-RPC.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct A2aConfig {
    /// Exact request paths of A2A endpoints (query string ignored).
    #[serde(default = "default_a2a_paths")]
    pub paths: Vec<String>,
    /// The target agent's name, used as the resource; default: the `:authority`.
    #[serde(default)]
    pub agent: Option<String>,
    /// Largest request body buffered and parsed, in bytes.
    #[serde(default = "default_mcp_body", deserialize_with = "de_lenient")]
    pub max_body_bytes: usize,
}

fn default_a2a_paths() -> Vec<String> {
    vec!["/a2a".into()]
}

/// `decision_api:`: the Guardian-compatible decision endpoints answered by the filter.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionApiConfig {
    /// Exact paths answered. A path ending in `/batch` is the batch endpoint, one ending
    /// in `/health` the health endpoint, any other the single `/enforce` endpoint.
    #[serde(default = "default_decision_paths")]
    pub paths: Vec<String>,
    /// Largest request body read, in bytes.
    #[serde(default = "default_decision_body", deserialize_with = "de_lenient")]
    pub max_body_bytes: usize,
    /// Most actions in one `/enforce/batch` request.
    #[serde(default = "default_batch_actions", deserialize_with = "de_lenient")]
    pub max_batch_actions: usize,
}

fn default_decision_paths() -> Vec<String> {
    vec!["/enforce".into(), "/enforce/batch".into(), "/health".into()]
}
fn default_decision_body() -> usize {
    64 * 1024
}
fn default_batch_actions() -> usize {
    100
}
