//! A2A JSON-RPC: method → `a2a:<Method>` in the v1.0 spelling, v0.3 names mapped to the
//! same actions (README, "MCP and A2A").

use crate::config::{A2aConfig, ConfigError};

/// v0.3 method names and their v1.0 equivalents.
const V03: [(&str, &str); 11] = [
    ("message/send", "SendMessage"),
    ("message/stream", "SendStreamingMessage"),
    ("tasks/get", "GetTask"),
    ("tasks/list", "ListTasks"),
    ("tasks/cancel", "CancelTask"),
    ("tasks/resubscribe", "SubscribeToTask"),
    (
        "tasks/pushNotificationConfig/set",
        "CreateTaskPushNotificationConfig",
    ),
    (
        "tasks/pushNotificationConfig/get",
        "GetTaskPushNotificationConfig",
    ),
    (
        "tasks/pushNotificationConfig/list",
        "ListTaskPushNotificationConfigs",
    ),
    (
        "tasks/pushNotificationConfig/delete",
        "DeleteTaskPushNotificationConfig",
    ),
    ("agent/getAuthenticatedExtendedCard", "GetExtendedAgentCard"),
];

/// The action for an A2A method: `a2a:` + the v1.0 name; an unknown method keeps its
/// spelling (`a2a:<method as given>`), so only a rule naming it can allow it.
pub fn action(method: &str) -> String {
    let name = V03
        .iter()
        .find(|(old, _)| *old == method)
        .map_or(method, |(_, new)| new);
    format!("a2a:{name}")
}

/// Compiled `actions.a2a`.
#[derive(Debug, Clone)]
pub struct A2aMapper {
    paths: Vec<String>,
    agent: Option<String>,
    max_body_bytes: usize,
}

impl A2aMapper {
    /// Validates paths and limits; errors name `actions.a2a.*`.
    pub fn compile(cfg: &A2aConfig) -> Result<A2aMapper, ConfigError> {
        super::mcp::check_paths(&cfg.paths, "actions.a2a.paths")?;
        if cfg.max_body_bytes == 0 {
            return Err(ConfigError::invalid(
                "actions.a2a.max_body_bytes",
                "must be greater than 0",
            ));
        }
        Ok(A2aMapper {
            paths: cfg.paths.clone(),
            agent: cfg.agent.clone().filter(|a| !a.trim().is_empty()),
            max_body_bytes: cfg.max_body_bytes,
        })
    }

    /// Whether a path (without query) is an A2A endpoint.
    pub fn is_a2a_path(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }

    /// Largest body read.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// The resource of every call: the configured target agent, else the authority.
    pub fn resource(&self, authority: &str) -> String {
        self.agent.clone().unwrap_or_else(|| authority.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v03_and_v1_names_map_to_the_same_action() {
        assert_eq!(action("message/send"), "a2a:SendMessage");
        assert_eq!(action("SendMessage"), "a2a:SendMessage");
        assert_eq!(action("message/stream"), "a2a:SendStreamingMessage");
        assert_eq!(action("tasks/get"), action("GetTask"));
        assert_eq!(action("tasks/cancel"), "a2a:CancelTask");
        assert_eq!(action("tasks/resubscribe"), "a2a:SubscribeToTask");
        assert_eq!(
            action("tasks/pushNotificationConfig/list"),
            "a2a:ListTaskPushNotificationConfigs"
        );
        assert_eq!(
            action("agent/getAuthenticatedExtendedCard"),
            "a2a:GetExtendedAgentCard"
        );
        assert_eq!(action("tasks/frobnicate"), "a2a:tasks/frobnicate");
    }

    #[test]
    fn resource_and_paths() {
        let cfg: A2aConfig = crate::config::from_text("agent: billing".as_bytes()).unwrap();
        let m = A2aMapper::compile(&cfg).unwrap();
        assert!(m.is_a2a_path("/a2a"));
        assert_eq!(m.resource("host:1"), "billing");
        let cfg: A2aConfig = crate::config::from_text("paths: [/x]".as_bytes()).unwrap();
        let m = A2aMapper::compile(&cfg).unwrap();
        assert_eq!(m.resource("host:1"), "host:1");
        assert!(!m.is_a2a_path("/a2a"));
        let cfg: A2aConfig = crate::config::from_text("paths: [x]".as_bytes()).unwrap();
        let e = A2aMapper::compile(&cfg).unwrap_err();
        assert_eq!(e.field(), "actions.a2a.paths[0]");
        assert!(crate::config::from_text::<A2aConfig>("bogus: 1".as_bytes()).is_err());
    }
}
