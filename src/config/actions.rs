//! `actions:`: how requests map to actions (compiled by `crate::actions`).

use super::lenient::de_lenient;
use serde::{Deserialize, Serialize};

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
    /// MCP endpoints (JSON-RPC `tools/call` → `tool:<name>`).
    #[serde(default)]
    pub mcp: Option<McpConfig>,
}

impl Default for ActionsConfig {
    fn default() -> Self {
        ActionsConfig {
            header: default_action_header(),
            resource_header: default_resource_header(),
            routes: Vec::new(),
            mcp: None,
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

/// `actions.mcp`: which paths carry MCP JSON-RPC.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// Exact request paths of MCP endpoints.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Largest body read to find the JSON-RPC method, in bytes.
    #[serde(default = "default_mcp_body", deserialize_with = "de_lenient")]
    pub max_body_bytes: usize,
}

fn default_mcp_body() -> usize {
    64 * 1024
}
