//! Mapping a request to the action and resource that policy decides on.
//!
//! Order: the explicit action header (if configured and present), then the first route
//! whose method and path glob match. The resource comes from the resource header, else
//! from the matching route.

pub mod a2a;
pub mod jsonrpc;
pub mod mcp;
pub mod sse;

use crate::config::{ActionsConfig, ConfigError};
use crate::engine::request::Request;
use crate::glob::Pattern;

/// The outcome of action mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionMatch {
    /// The action, e.g. `write:email`.
    pub action: String,
    /// The resource, when one is known.
    pub resource: Option<String>,
    /// Where the action came from (`header`, `route[2]`, `cli`), for audit and debugging.
    pub source: String,
}

#[derive(Debug, Clone)]
struct Route {
    method: Option<String>,
    path: Pattern,
    action: String,
    resource: Option<String>,
}

/// Compiled `actions:` section.
#[derive(Debug, Clone)]
pub struct ActionMapper {
    header: Option<String>,
    resource_header: Option<String>,
    routes: Vec<Route>,
}

impl ActionMapper {
    /// Compiles route globs; errors name `actions.routes[i].path`.
    pub fn compile(cfg: &ActionsConfig) -> Result<ActionMapper, ConfigError> {
        let mut routes = Vec::with_capacity(cfg.routes.len());
        for (i, r) in cfg.routes.iter().enumerate() {
            let path = Pattern::new(&r.path).map_err(|e| ConfigError::Glob {
                field: format!("actions.routes[{i}].path"),
                error: e,
            })?;
            if r.action.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("actions.routes[{i}].action"),
                    "must not be empty",
                ));
            }
            let method = r
                .method
                .as_deref()
                .filter(|m| *m != "*" && !m.is_empty())
                .map(|m| m.to_ascii_uppercase());
            routes.push(Route {
                method,
                path,
                action: r.action.clone(),
                resource: r.resource.clone(),
            });
        }
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.to_ascii_lowercase());
        Ok(ActionMapper {
            header: non_empty(&cfg.header),
            resource_header: non_empty(&cfg.resource_header),
            routes,
        })
    }

    /// The configured action header, if enabled (lowercase).
    pub fn action_header(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// The configured resource header, if enabled (lowercase).
    pub fn resource_header(&self) -> Option<&str> {
        self.resource_header.as_deref()
    }

    /// Maps a request; `None` when neither the header nor any route names an action.
    pub fn map(&self, req: &Request) -> Option<ActionMatch> {
        let header_resource = self
            .resource_header
            .as_deref()
            .and_then(|h| req.header(h))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        if let Some(action) = self
            .header
            .as_deref()
            .and_then(|h| req.header(h))
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            return Some(ActionMatch {
                action: action.to_string(),
                resource: header_resource,
                source: "header".into(),
            });
        }
        let path = req.path_only();
        self.routes
            .iter()
            .enumerate()
            .find(|(_, r)| {
                r.method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(&req.method))
                    && r.path.matches(path)
            })
            .map(|(i, r)| ActionMatch {
                action: r.action.clone(),
                resource: header_resource.or_else(|| r.resource.clone()),
                source: format!("route[{i}]"),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            authority: "svc".into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn mapper() -> ActionMapper {
        let cfg: ActionsConfig = serde_yaml::from_str(
            r#"
routes:
  - { method: POST, path: "/v1/email/*", action: "write:email", resource: notifications }
  - { path: "/v1/orders/**", action: "read:orders" }
"#,
        )
        .unwrap();
        ActionMapper::compile(&cfg).unwrap()
    }

    #[test]
    fn header_wins_over_routes() {
        let m = mapper();
        let a = m
            .map(&req(
                "POST",
                "/v1/email/send",
                &[
                    ("x-meshguard-action", "read:x"),
                    ("x-meshguard-resource", "r"),
                ],
            ))
            .unwrap();
        assert_eq!(a.action, "read:x");
        assert_eq!(a.resource.as_deref(), Some("r"));
        assert_eq!(a.source, "header");
    }

    #[test]
    fn first_matching_route() {
        let m = mapper();
        let a = m.map(&req("post", "/v1/email/send?x=1", &[])).unwrap();
        assert_eq!(a.action, "write:email");
        assert_eq!(a.resource.as_deref(), Some("notifications"));
        assert_eq!(a.source, "route[0]");
        assert!(m.map(&req("GET", "/v1/email/send", &[])).is_none());
        let b = m.map(&req("GET", "/v1/orders/1/items", &[])).unwrap();
        assert_eq!(b.action, "read:orders");
        assert_eq!(b.resource, None);
    }

    #[test]
    fn disabled_header_is_ignored() {
        let cfg: ActionsConfig = serde_yaml::from_str("header: ''").unwrap();
        let m = ActionMapper::compile(&cfg).unwrap();
        assert!(m
            .map(&req("GET", "/", &[("x-meshguard-action", "read:x")]))
            .is_none());
    }

    #[test]
    fn bad_route_glob_names_field() {
        let cfg: ActionsConfig =
            serde_yaml::from_str("routes: [{path: '/a/[', action: 'x'}]").unwrap();
        let e = ActionMapper::compile(&cfg).unwrap_err().to_string();
        assert!(e.contains("actions.routes[0].path"), "{e}");
    }
}
