//! The dotted names a condition may refer to: the one table that configuration validation
//! and the engine's request-time lookup both use, so a name the engine cannot answer is
//! rejected when the policy is loaded instead of silently evaluating to false (a typo such
//! as `time.hours` in a `deny` rule would otherwise fail open). See README, "Conditions".

/// A name a condition can refer to, resolved from its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fact<'a> {
    /// `time.hour`: UTC hour, 0–23.
    TimeHour,
    /// `time.minute`: UTC minute, 0–59.
    TimeMinute,
    /// `time.weekday`: ISO 8601 weekday, Monday = 1 … Sunday = 7.
    TimeWeekday,
    /// `time.unix`: seconds since the epoch (an extension).
    TimeUnix,
    /// `agent.id`: the calling agent.
    AgentId,
    /// `agent.trust_tier`: the tier decided with.
    AgentTrustTier,
    /// `agent.issuer`: the token's issuer (an extension).
    AgentIssuer,
    /// `agent.claims.<c>`: any claim of the token; dots reach into nested objects.
    AgentClaim(&'a str),
    /// `action`: the mapped action.
    Action,
    /// `resource`: the mapped resource.
    Resource,
    /// `request.method`.
    RequestMethod,
    /// `request.path`, without the query string.
    RequestPath,
    /// `request.host`: `:authority` (an extension).
    RequestHost,
    /// `request.headers.<h>`: a request header; names keep their hyphens.
    RequestHeader(&'a str),
    /// `context.<field>`: MCP tool arguments, A2A params or the `/enforce` context.
    Context(&'a str),
    /// `mcp.method`: the JSON-RPC method of an MCP request.
    McpMethod,
    /// `mcp.tool`: the tool of an MCP `tools/call`.
    McpTool,
    /// `a2a.method`: the JSON-RPC method of an A2A request.
    A2aMethod,
    /// `delegation.depth`: number of delegation hops (0 without `act`).
    DelegationDepth,
    /// `delegation.chain`: agent ids from the original delegator to the caller.
    DelegationChain,
}

/// The closed names, in the order the README lists them.
const FIXED: &[(&str, Fact<'static>)] = &[
    ("time.hour", Fact::TimeHour),
    ("time.minute", Fact::TimeMinute),
    ("time.weekday", Fact::TimeWeekday),
    ("agent.id", Fact::AgentId),
    ("agent.trust_tier", Fact::AgentTrustTier),
    ("action", Fact::Action),
    ("resource", Fact::Resource),
    ("request.method", Fact::RequestMethod),
    ("request.path", Fact::RequestPath),
    ("mcp.method", Fact::McpMethod),
    ("mcp.tool", Fact::McpTool),
    ("a2a.method", Fact::A2aMethod),
    ("delegation.depth", Fact::DelegationDepth),
    ("delegation.chain", Fact::DelegationChain),
    ("time.unix", Fact::TimeUnix),
    ("agent.issuer", Fact::AgentIssuer),
    ("request.host", Fact::RequestHost),
];

/// An open namespace: any non-empty suffix after the prefix is a valid name.
struct Open {
    prefix: &'static str,
    placeholder: &'static str,
    fact: for<'a> fn(&'a str) -> Fact<'a>,
}

const OPEN: &[Open] = &[
    Open {
        prefix: "agent.claims.",
        placeholder: "<claim>",
        fact: |c| Fact::AgentClaim(c),
    },
    Open {
        prefix: "request.headers.",
        placeholder: "<header>",
        fact: |h| Fact::RequestHeader(h),
    },
    Open {
        prefix: "context.",
        placeholder: "<field>",
        fact: |f| Fact::Context(f),
    },
];

impl<'a> Fact<'a> {
    /// Resolves a dotted name; `None` for a name outside the table (a configuration error).
    pub fn parse(name: &'a str) -> Option<Fact<'a>> {
        if let Some((_, fact)) = FIXED.iter().find(|(n, _)| *n == name) {
            return Some(*fact);
        }
        OPEN.iter().find_map(|o| {
            name.strip_prefix(o.prefix)
                .filter(|rest| !rest.is_empty())
                .map(o.fact)
        })
    }
}

/// Every valid name as an operator reads it (`agent.claims.<claim>` for the open ones), for
/// error messages and the README.
pub fn valid_names() -> String {
    let fixed = FIXED.iter().map(|(n, _)| (*n).to_string());
    let open = OPEN
        .iter()
        .map(|o| format!("{}{}", o.prefix, o.placeholder));
    fixed.chain(open).collect::<Vec<_>>().join(", ")
}

/// One concrete example of every name in the table (open namespaces with `suffix`), so
/// tests can check that the engine answers each of them.
#[cfg(test)]
pub(crate) fn examples(suffix: &str) -> Vec<String> {
    FIXED
        .iter()
        .map(|(n, _)| (*n).to_string())
        .chain(OPEN.iter().map(|o| format!("{}{suffix}", o.prefix)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_resolves_every_name_and_nothing_else() {
        for name in examples("x-y") {
            assert!(Fact::parse(&name).is_some(), "{name}");
        }
        assert_eq!(
            Fact::parse("request.headers.x-recipient-domain"),
            Some(Fact::RequestHeader("x-recipient-domain"))
        );
        assert_eq!(
            Fact::parse("agent.claims.org.team"),
            Some(Fact::AgentClaim("org.team"))
        );
        for typo in [
            "time.hours",
            "time",
            "agent",
            "agent.claims",
            "agent.claims.",
            "request.header.x",
            "context",
            "Time.hour",
            "mcp.tools",
            "delegation",
        ] {
            assert_eq!(Fact::parse(typo), None, "{typo}");
        }
    }

    #[test]
    fn valid_names_lists_the_placeholders() {
        let v = valid_names();
        assert!(
            v.starts_with("time.hour, time.minute, time.weekday,"),
            "{v}"
        );
        assert!(
            v.ends_with("request.headers.<header>, context.<field>"),
            "{v}"
        );
    }
}
