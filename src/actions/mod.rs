//! Mapping a request to the action and resource that policy decides on.
//!
//! The route decides (README, "Actions and routes"): the first route whose method and
//! path glob match the normalised path (see [`path`]) names the action and resource. A
//! client-supplied action or resource header that disagrees with a matching route is
//! refused, never obeyed, so a caller cannot relabel `POST /v1/email/send` as
//! `read:orders`. The headers are only a fallback for requests no route maps, and there
//! the caller's word is all there is. A header sent twice (or as a comma-separated list)
//! is refused everywhere: which copy counts would otherwise depend on the reader.

pub mod path;

pub mod a2a;
pub mod jsonrpc;
pub mod mcp;
pub mod sse;

use crate::config::{ActionsConfig, ConfigError};
use crate::engine::request::Request;
use crate::glob::Pattern;
use std::fmt;

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

/// Which of the two caller-declared headers a [`MappingError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclaredField {
    /// `actions.header` (`x-meshguard-action`).
    Action,
    /// `actions.resource_header` (`x-meshguard-resource`).
    Resource,
}

/// A request whose caller-declared headers cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingError {
    /// The header appears more than once, or its value is a comma-separated list: a
    /// malformed request (400), whatever the route says.
    DuplicateHeader {
        /// The header name as configured.
        header: String,
        /// How many values it carried.
        count: usize,
    },
    /// A route maps the request and the header names a different action or resource: the
    /// caller tried to relabel the request (403).
    Disagrees {
        /// Action or resource.
        field: DeclaredField,
        /// The header name as configured.
        header: String,
        /// What the caller sent.
        declared: String,
        /// The route's match (`source` names the route): what the request really is,
        /// for the audit event and the reason.
        route_match: Box<ActionMatch>,
    },
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MappingError::DuplicateHeader { header, count } => write!(
                f,
                "header {header} was sent {count} times (or as a comma-separated list); send it once with one value"
            ),
            MappingError::Disagrees {
                field,
                header,
                declared,
                route_match,
            } => {
                let (what, route_value) = match field {
                    DeclaredField::Action => ("action", Some(&route_match.action)),
                    DeclaredField::Resource => ("resource", route_match.resource.as_ref()),
                };
                let route_value =
                    route_value.map_or_else(|| "no resource".to_string(), |v| format!("{v:?}"));
                write!(
                    f,
                    "{header} {declared:?} disagrees with the {what} of actions.routes {}: \
                     {route_value}; the route decides (drop the header or send the route's value)",
                    route_match.source
                )
            }
        }
    }
}

impl std::error::Error for MappingError {}

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

    /// The single non-empty value of a caller-declared header, refusing duplicates.
    fn declared(
        &self,
        req: &Request,
        header: Option<&str>,
    ) -> Result<Option<String>, MappingError> {
        let Some(name) = header else {
            return Ok(None);
        };
        let values: Vec<&str> = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
            .collect();
        match values.as_slice() {
            [] => Ok(None),
            [one] if !one.contains(',') => Ok(Some(one.to_string()).filter(|v| !v.is_empty())),
            many => Err(MappingError::DuplicateHeader {
                header: name.to_string(),
                count: many.iter().map(|v| v.split(',').count()).sum(),
            }),
        }
    }

    /// The first route matching the method and the (normalised) path. A path with `;`
    /// parameters also matches the routes its parameter-stripped form matches, because
    /// servlet-style upstreams serve `/v1/email;x/send` as `/v1/email/send`.
    pub fn route(&self, req: &Request) -> Option<ActionMatch> {
        let path = req.path_only();
        let stripped = path::without_parameters(path);
        let candidates = [Some(path), (stripped != path).then_some(stripped.as_ref())];
        let found = candidates.into_iter().flatten().find_map(|p| {
            self.routes.iter().enumerate().find_map(|(i, r)| {
                let method_ok = r
                    .method
                    .as_deref()
                    .is_none_or(|m| m.eq_ignore_ascii_case(&req.method));
                (method_ok && r.path.matches(p)).then(|| ActionMatch {
                    action: r.action.clone(),
                    resource: r.resource.clone(),
                    source: format!("route[{i}]"),
                })
            })
        });
        found
    }

    /// Maps a request; `Ok(None)` when no route maps it and it carries no action header.
    ///
    /// Order: routes, then the headers. Body-mapped requests (MCP and A2A JSON-RPC, on
    /// their configured paths) belong between the two: the body decides where it names
    /// an action, and the header fallback must never apply to them.
    pub fn map(&self, req: &Request) -> Result<Option<ActionMatch>, MappingError> {
        let action = self.declared(req, self.header.as_deref())?;
        let resource = self.declared(req, self.resource_header.as_deref())?;
        if let Some(routed) = self.route(req) {
            return check_agreement(
                routed,
                action.zip(self.header.clone()),
                resource.zip(self.resource_header.clone()),
            );
        }
        Ok(action.map(|action| ActionMatch {
            action,
            resource,
            source: "header".into(),
        }))
    }
}

/// A route's match, unless a caller-declared header (`(value, header name)`) disagrees.
fn check_agreement(
    routed: ActionMatch,
    action: Option<(String, String)>,
    resource: Option<(String, String)>,
) -> Result<Option<ActionMatch>, MappingError> {
    if let Some((declared, header)) = action {
        if declared != routed.action {
            return Err(MappingError::Disagrees {
                field: DeclaredField::Action,
                header,
                declared,
                route_match: Box::new(routed),
            });
        }
    }
    if let Some((declared, header)) = resource {
        if Some(declared.as_str()) != routed.resource.as_deref() {
            return Err(MappingError::Disagrees {
                field: DeclaredField::Resource,
                header,
                declared,
                route_match: Box::new(routed),
            });
        }
    }
    Ok(Some(routed))
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
            peer_uri_sans: Vec::new(),
        }
    }

    fn mapper() -> ActionMapper {
        let cfg: ActionsConfig = crate::config::from_text(
            r#"
routes:
  - { method: POST, path: "/v1/email/*", action: "write:email", resource: notifications }
  - { path: "/v1/orders/**", action: "read:orders" }
"#
            .as_bytes(),
        )
        .unwrap();
        ActionMapper::compile(&cfg).unwrap()
    }

    #[test]
    fn a_matching_route_decides_and_a_disagreeing_header_is_refused() {
        let m = mapper();
        let e = m
            .map(&req(
                "POST",
                "/v1/email/send",
                &[("x-meshguard-action", "read:orders")],
            ))
            .unwrap_err();
        let MappingError::Disagrees {
            field, route_match, ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(*field, DeclaredField::Action);
        assert_eq!(route_match.action, "write:email");
        let text = e.to_string();
        assert!(
            text.contains("\"read:orders\"")
                && text.contains("\"write:email\"")
                && text.contains("route[0]"),
            "{text}"
        );
        // a resource header that disagrees with the route's resource, or names one where
        // the route has none, is refused too
        let e = m
            .map(&req(
                "POST",
                "/v1/email/send",
                &[("x-meshguard-resource", "orders")],
            ))
            .unwrap_err();
        assert!(
            matches!(
                &e,
                MappingError::Disagrees {
                    field: DeclaredField::Resource,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("\"notifications\""), "{e}");
        let e = m
            .map(&req(
                "GET",
                "/v1/orders/1",
                &[("x-meshguard-resource", "r")],
            ))
            .unwrap_err();
        assert!(e.to_string().contains("no resource"), "{e}");
    }

    #[test]
    fn headers_that_agree_with_the_route_are_accepted() {
        let m = mapper();
        let a = m
            .map(&req(
                "POST",
                "/v1/email/send",
                &[
                    ("x-meshguard-action", " write:email "),
                    ("x-meshguard-resource", "notifications"),
                ],
            ))
            .unwrap()
            .unwrap();
        assert_eq!(
            (a.action.as_str(), a.resource.as_deref(), a.source.as_str()),
            ("write:email", Some("notifications"), "route[0]")
        );
    }

    #[test]
    fn headers_are_the_fallback_where_no_route_matches() {
        let m = mapper();
        let a = m
            .map(&req(
                "POST",
                "/v1/other",
                &[
                    ("x-meshguard-action", "read:x"),
                    ("x-meshguard-resource", "r"),
                ],
            ))
            .unwrap()
            .unwrap();
        assert_eq!(a.action, "read:x");
        assert_eq!(a.resource.as_deref(), Some("r"));
        assert_eq!(a.source, "header");
        assert_eq!(m.map(&req("POST", "/v1/other", &[])).unwrap(), None);
    }

    #[test]
    fn duplicate_or_listed_headers_are_refused() {
        let m = mapper();
        for headers in [
            vec![
                ("x-meshguard-action", "read:x"),
                ("x-meshguard-action", "read:x"),
            ],
            vec![("x-meshguard-action", "read:x"), ("X-MeshGuard-Action", "")],
            vec![("x-meshguard-action", "read:x, write:email")],
            vec![("x-meshguard-resource", "a"), ("x-meshguard-resource", "b")],
        ] {
            for path in ["/v1/other", "/v1/email/send"] {
                let e = m.map(&req("POST", path, &headers)).unwrap_err();
                assert!(
                    matches!(&e, MappingError::DuplicateHeader { count: 2, .. }),
                    "{headers:?} {path}: {e:?}"
                );
            }
        }
    }

    #[test]
    fn first_matching_route() {
        let m = mapper();
        let a = m
            .map(&req("post", "/v1/email/send?x=1", &[]))
            .unwrap()
            .unwrap();
        assert_eq!(a.action, "write:email");
        assert_eq!(a.resource.as_deref(), Some("notifications"));
        assert_eq!(a.source, "route[0]");
        assert!(m.map(&req("GET", "/v1/email/send", &[])).unwrap().is_none());
        let b = m
            .map(&req("GET", "/v1/orders/1/items", &[]))
            .unwrap()
            .unwrap();
        assert_eq!(b.action, "read:orders");
        assert_eq!(b.resource, None);
    }

    #[test]
    fn path_parameters_do_not_hide_a_route() {
        let m = mapper();
        let a = m
            .map(&req("POST", "/v1/email;v=1/send", &[]))
            .unwrap()
            .unwrap();
        assert_eq!(a.action, "write:email");
        let e = m
            .map(&req(
                "POST",
                "/v1/email;v=1/send",
                &[("x-meshguard-action", "read:orders")],
            ))
            .unwrap_err();
        assert!(matches!(e, MappingError::Disagrees { .. }), "{e:?}");
    }

    #[test]
    fn disabled_header_is_ignored() {
        let cfg: ActionsConfig = crate::config::from_text("header: ''".as_bytes()).unwrap();
        let m = ActionMapper::compile(&cfg).unwrap();
        assert!(m
            .map(&req("GET", "/", &[("x-meshguard-action", "read:x")]))
            .unwrap()
            .is_none());
    }

    #[test]
    fn bad_route_glob_names_field() {
        let cfg: ActionsConfig =
            crate::config::from_text("routes: [{path: '/a/[', action: 'x'}]".as_bytes()).unwrap();
        let e = ActionMapper::compile(&cfg).unwrap_err().to_string();
        assert!(e.contains("actions.routes[0].path"), "{e}");
    }
}
