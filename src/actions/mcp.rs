//! MCP JSON-RPC calls → action, resource and arguments (README, "MCP and A2A").
//!
//! `tools/call` → `actions.mcp.tools[name]`, else `tool:<name>`; `resources/read` →
//! `resource:read` on the URI; `prompts/get` → `prompt:<name>`; methods listed in
//! `governed_methods` → `mcp:<method>`; any other method needs no rule.

use super::ActionMatch;
use crate::config::{ConfigError, McpConfig};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// Where a tool's resource comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ResourceSource {
    /// A fixed resource.
    Literal(String),
    /// The value of this argument (dotted path into the arguments).
    Argument(String),
}

/// Compiled `actions.mcp`.
#[derive(Debug, Clone)]
pub struct McpMapper {
    paths: Vec<String>,
    max_body_bytes: usize,
    tools: BTreeMap<String, String>,
    resources: BTreeMap<String, ResourceSource>,
    record_arguments: bool,
    max_response_bytes: usize,
    resource_metadata: Option<String>,
    protected_resource: Option<String>,
    governed: HashSet<String>,
}

/// What one MCP call is, for policy and audit.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCall {
    /// The action and resource; `None` for a method that needs no rule.
    pub action: Option<ActionMatch>,
    /// The tool (`tools/call`) or prompt (`prompts/get`) name.
    pub name: Option<String>,
    /// The resource URI (`resources/*`).
    pub uri: Option<String>,
    /// The arguments (`context.*` in conditions).
    pub arguments: Option<Value>,
    /// Why the call is malformed (e.g. `tools/call` without a name): answered `-32602`.
    pub invalid: Option<String>,
}

/// Checks that endpoint paths are absolute; errors name `field[i]`.
pub fn check_paths(paths: &[String], field: &str) -> Result<(), ConfigError> {
    for (i, p) in paths.iter().enumerate() {
        if !p.starts_with('/') {
            return Err(ConfigError::invalid(
                format!("{field}[{i}]"),
                format!("{p:?} must start with /"),
            ));
        }
    }
    Ok(())
}

/// A string or number argument as text (resources are strings).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The value at a dotted path inside a JSON object.
pub fn dig<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    root.get(path)
        .or_else(|| path.split('.').try_fold(root, |v, seg| v.get(seg)))
}

impl McpMapper {
    /// Validates the section; errors name `actions.mcp.*`.
    pub fn compile(cfg: &McpConfig) -> Result<McpMapper, ConfigError> {
        check_paths(&cfg.paths, "actions.mcp.paths")?;
        for (field, v) in [
            ("actions.mcp.max_body_bytes", cfg.max_body_bytes),
            ("actions.mcp.max_response_bytes", cfg.max_response_bytes),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(field, "must be greater than 0"));
            }
        }
        for (tool, action) in &cfg.tools {
            if action.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("actions.mcp.tools.{tool}"),
                    "the action must not be empty",
                ));
            }
        }
        let mut resources = BTreeMap::new();
        for (tool, r) in &cfg.resources {
            let src = match r.strip_prefix('$') {
                Some(arg) if arg.is_empty() || arg.split('.').any(str::is_empty) => {
                    return Err(ConfigError::invalid(
                        format!("actions.mcp.resources.{tool}"),
                        format!("{r:?} must name an argument after $ (e.g. \"$to\")"),
                    ))
                }
                Some(arg) => ResourceSource::Argument(arg.to_string()),
                None if r.trim().is_empty() => {
                    return Err(ConfigError::invalid(
                        format!("actions.mcp.resources.{tool}"),
                        "must not be empty",
                    ))
                }
                None => ResourceSource::Literal(r.clone()),
            };
            resources.insert(tool.clone(), src);
        }
        if let Some(url) = &cfg.resource_metadata {
            if !(url.starts_with("https://") || url.starts_with("http://"))
                || url.contains(['"', '\\'])
            {
                return Err(ConfigError::invalid(
                    "actions.mcp.resource_metadata",
                    format!("{url:?} must be an http(s) URL without quotes or backslashes"),
                ));
            }
        }
        let protected_resource = match &cfg.protected_resource {
            None => None,
            Some(v @ Value::Object(_)) => Some(serde_json::to_string(v).unwrap_or_default()),
            Some(_) => {
                return Err(ConfigError::invalid(
                    "actions.mcp.protected_resource",
                    "must be a JSON object (the RFC 9728 metadata document)",
                ))
            }
        };
        Ok(McpMapper {
            paths: cfg.paths.clone(),
            max_body_bytes: cfg.max_body_bytes,
            tools: cfg.tools.clone(),
            resources,
            record_arguments: cfg.record_arguments,
            max_response_bytes: cfg.max_response_bytes,
            resource_metadata: cfg.resource_metadata.clone(),
            protected_resource,
            governed: cfg.governed_methods.iter().cloned().collect(),
        })
    }

    /// Whether a path (without query) is an MCP endpoint.
    pub fn is_mcp_path(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }

    /// The RFC 9728 document, when this path is where clients look for it:
    /// `/.well-known/oauth-protected-resource`, optionally followed by an MCP path.
    pub fn protected_resource_for(&self, path: &str) -> Option<&str> {
        let suffix = path.strip_prefix("/.well-known/oauth-protected-resource")?;
        (suffix.is_empty() || self.is_mcp_path(suffix))
            .then_some(self.protected_resource.as_deref())
            .flatten()
    }

    /// Largest request body read.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Largest `tools/list` response buffered.
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// Whether argument values go into audit events.
    pub fn record_arguments(&self) -> bool {
        self.record_arguments
    }

    /// The RFC 9728 metadata URL for 401s.
    pub fn resource_metadata(&self) -> Option<&str> {
        self.resource_metadata.as_deref()
    }

    /// The action of `tools/call` for a tool.
    pub fn tool_action(&self, tool: &str) -> String {
        let mut action = String::new();
        self.write_tool_action(tool, &mut action);
        action
    }

    /// [`McpMapper::tool_action`] into `out` (cleared first), so that deciding the tools of a
    /// `tools/list` answer reuses one buffer instead of allocating per tool.
    pub fn write_tool_action(&self, tool: &str, out: &mut String) {
        out.clear();
        match self.tools.get(tool) {
            Some(mapped) => out.push_str(mapped),
            None => {
                out.push_str("tool:");
                out.push_str(tool);
            }
        }
    }

    fn tool_resource(&self, tool: &str, args: Option<&Value>) -> Option<String> {
        match self.resources.get(tool)? {
            ResourceSource::Literal(r) => Some(r.clone()),
            ResourceSource::Argument(path) => args.and_then(|a| dig(a, path)).and_then(scalar_text),
        }
    }

    /// A tool's resource as `tools/list` filtering sees it (no arguments yet): a fixed
    /// resource, and whether the real one comes from an argument.
    pub fn listing_resource(&self, tool: &str) -> (Option<String>, bool) {
        match self.resources.get(tool) {
            Some(ResourceSource::Literal(r)) => (Some(r.clone()), false),
            Some(ResourceSource::Argument(_)) => (None, true),
            None => (None, false),
        }
    }

    /// Maps one call.
    pub fn map(&self, method: &str, params: Option<&Value>) -> McpCall {
        // A name becomes part of the action, which travels in a request header: one with
        // a control character is treated as no name (invalid params), never forwarded.
        let name = params
            .and_then(|p| p.get("name"))
            .and_then(Value::as_str)
            .filter(|n| !n.chars().any(char::is_control))
            .map(str::to_string);
        let uri = params
            .and_then(|p| p.get("uri"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let arguments = params.and_then(|p| p.get("arguments")).cloned();
        let mut call = McpCall {
            action: None,
            name: name.clone(),
            uri: uri.clone(),
            arguments,
            invalid: None,
        };
        let source = || format!("mcp:{method}");
        match method {
            "tools/call" => match &name {
                Some(tool) => {
                    call.action = Some(ActionMatch {
                        action: self.tool_action(tool),
                        resource: self.tool_resource(tool, call.arguments.as_ref()),
                        source: source(),
                    })
                }
                None => {
                    call.invalid = Some(
                        "tools/call needs params.name (a string without control characters)".into(),
                    )
                }
            },
            "resources/read" => match &uri {
                Some(u) => {
                    call.action = Some(ActionMatch {
                        action: "resource:read".into(),
                        resource: Some(u.clone()),
                        source: source(),
                    })
                }
                None => call.invalid = Some("resources/read needs params.uri (a string)".into()),
            },
            "prompts/get" => match &name {
                Some(p) => {
                    call.action = Some(ActionMatch {
                        action: format!("prompt:{p}"),
                        resource: None,
                        source: source(),
                    })
                }
                None => {
                    call.invalid = Some(
                        "prompts/get needs params.name (a string without control characters)"
                            .into(),
                    )
                }
            },
            m if self.governed.contains(m) => {
                call.action = Some(ActionMatch {
                    action: format!("mcp:{m}"),
                    resource: uri,
                    source: source(),
                })
            }
            _ => {}
        }
        call
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapper(yaml: &str) -> McpMapper {
        McpMapper::compile(&crate::config::from_text(yaml.as_bytes()).unwrap()).unwrap()
    }

    #[test]
    fn defaults() {
        let m = mapper("{}");
        assert!(m.is_mcp_path("/mcp"));
        assert!(!m.is_mcp_path("/mcp/x"));
        assert_eq!(m.max_body_bytes(), 1024 * 1024);
        assert!(!m.record_arguments());
        assert_eq!(
            m.protected_resource_for("/.well-known/oauth-protected-resource"),
            None
        );
    }

    #[test]
    fn tools_call_maps_action_resource_and_arguments() {
        let m = mapper(
            "tools: {send_email: 'write:email'}\nresources: {send_email: '$to', pay: ledger, deep: '$a.b'}",
        );
        let c = m.map(
            "tools/call",
            Some(&json!({"name": "send_email", "arguments": {"to": "bob@x", "n": 1}})),
        );
        let a = c.action.unwrap();
        assert_eq!(a.action, "write:email");
        assert_eq!(a.resource.as_deref(), Some("bob@x"));
        assert_eq!(c.name.as_deref(), Some("send_email"));
        assert_eq!(c.arguments.unwrap()["n"], 1);
        let c = m.map("tools/call", Some(&json!({"name": "pay"})));
        let a = c.action.unwrap();
        assert_eq!(
            (a.action.as_str(), a.resource.as_deref()),
            ("tool:pay", Some("ledger"))
        );
        let c = m.map(
            "tools/call",
            Some(&json!({"name": "deep", "arguments": {"a": {"b": 7}}})),
        );
        assert_eq!(c.action.unwrap().resource.as_deref(), Some("7"));
        // names with control characters cannot travel in the action header
        for bad in ["send_email\r\nx-evil: 1", "a\u{0}b"] {
            let c = m.map("tools/call", Some(&json!({"name": bad})));
            assert!(c.action.is_none() && c.invalid.is_some(), "{bad:?}");
            let c = m.map("prompts/get", Some(&json!({"name": bad})));
            assert!(c.action.is_none() && c.invalid.is_some(), "{bad:?}");
        }
        // the argument is missing: no resource
        let c = m.map("tools/call", Some(&json!({"name": "send_email"})));
        assert_eq!(c.action.unwrap().resource, None);
        assert!(m.map("tools/call", Some(&json!({}))).invalid.is_some());
        assert!(m.map("tools/call", None).invalid.is_some());
    }

    #[test]
    fn resources_prompts_and_ungoverned_methods() {
        let m = mapper("governed_methods: [tools/list]");
        let c = m.map("resources/read", Some(&json!({"uri": "file:///a"})));
        let a = c.action.unwrap();
        assert_eq!(
            (a.action.as_str(), a.resource.as_deref()),
            ("resource:read", Some("file:///a"))
        );
        assert!(m.map("resources/read", None).invalid.is_some());
        let c = m.map(
            "prompts/get",
            Some(&json!({"name": "greet", "arguments": {"x": "y"}})),
        );
        assert_eq!(c.action.unwrap().action, "prompt:greet");
        assert_eq!(c.arguments.unwrap()["x"], "y");
        assert_eq!(
            m.map("tools/list", None).action.unwrap().action,
            "mcp:tools/list"
        );
        for ungoverned in [
            "initialize",
            "ping",
            "notifications/initialized",
            "prompts/list",
        ] {
            let c = m.map(ungoverned, None);
            assert!(c.action.is_none() && c.invalid.is_none(), "{ungoverned}");
        }
    }

    #[test]
    fn bad_configuration_names_the_field() {
        let e = |y: &str| {
            McpMapper::compile(&crate::config::from_text(y.as_bytes()).unwrap())
                .unwrap_err()
                .field()
                .to_string()
        };
        assert_eq!(e("paths: [mcp]"), "actions.mcp.paths[0]");
        assert_eq!(e("max_body_bytes: 0"), "actions.mcp.max_body_bytes");
        assert_eq!(e("tools: {x: ''}"), "actions.mcp.tools.x");
        assert_eq!(e("resources: {x: '$'}"), "actions.mcp.resources.x");
        assert_eq!(
            e("resource_metadata: 'ftp://x'"),
            "actions.mcp.resource_metadata"
        );
        assert_eq!(e("protected_resource: 3"), "actions.mcp.protected_resource");
        assert!(crate::config::from_text::<McpConfig>("bogus: 1".as_bytes()).is_err());
    }

    #[test]
    fn protected_resource_document_paths() {
        let m = mapper("protected_resource: {resource: 'https://api/mcp', authorization_servers: ['https://as']}");
        let doc = m
            .protected_resource_for("/.well-known/oauth-protected-resource")
            .unwrap();
        assert!(doc.contains("authorization_servers"));
        assert!(m
            .protected_resource_for("/.well-known/oauth-protected-resource/mcp")
            .is_some());
        assert!(m
            .protected_resource_for("/.well-known/oauth-protected-resource/other")
            .is_none());
    }

    #[test]
    fn dotted_arguments_and_listing_resources() {
        let args = json!({"a.b": 1, "a": {"b": 2}});
        assert_eq!(dig(&args, "a.b"), Some(&json!(1)), "a literal key wins");
        assert_eq!(dig(&json!({"a": {"b": 2}}), "a.b"), Some(&json!(2)));
        assert_eq!(dig(&args, "a.c"), None);
        let m = mapper("resources: {send_email: '$to', pay: ledger}\ntools: {pay: 'pay:money'}");
        assert_eq!(m.listing_resource("send_email"), (None, true));
        assert_eq!(m.listing_resource("pay"), (Some("ledger".into()), false));
        assert_eq!(m.listing_resource("other"), (None, false));
        assert_eq!(m.tool_action("pay"), "pay:money");
        assert_eq!(m.tool_action("other"), "tool:other");
    }
}
