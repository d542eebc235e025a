//! `meshguard`: the operator's command line. It shares the filter's engine, so `check`
//! decides exactly as the filter does; `collector` and `audit` are the reference audit
//! collector and its query tools.

mod approvals_cmd;
mod audit_query;
mod bundle;
mod collector;
mod explain;
mod grants;
mod lint;
mod offline;
mod policy_test;
mod replay;
mod timestamp;

use clap::{Parser, Subcommand, ValueEnum};
use jwt_simple::prelude::*;
use meshguard::config::Effect;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "meshguard",
    version,
    about = "MeshGuard: governance for AI agents in the mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one request through the filter's request path offline; prints the audit event's
    /// decision attributes as JSON and exits 0 for allow, 1 for anything else (deny,
    /// require_approval, an identity failure; also when audit mode would only record it),
    /// 2 for errors (a rejected configuration included).
    Check(CheckArgs),
    /// Mint a development token signed with a key from `meshguard keygen`.
    Token(TokenArgs),
    /// Write a development key pair (private JWK) and its public JWKS.
    Keygen(KeygenArgs),
    /// Run the reference audit collector: OTLP/gRPC in, SQLite out, hash chains verified
    /// as events arrive; optional JSON API and denial alerts; the approval service and
    /// its signed grants document.
    Collector(collector::CollectorArgs),
    /// List, approve and deny the approvals the collector recorded.
    Approvals(approvals_cmd::ApprovalsArgs),
    /// Sign, verify and inspect grants documents (`meshguard-grants/v1`).
    Grants(grants::GrantsArgs),
    /// Query and verify the collector's audit database.
    Audit(audit_query::AuditArgs),
    /// Sign, verify, inspect and serve signed policy bundles.
    Bundle(bundle::BundleArgs),
    /// Run policy test files (README, "Changing policy safely"): each case is decided by
    /// the filter's engine and compared with its expectation; exit 1 on any failure.
    Test(policy_test::TestArgs),
    /// Find policy problems beyond configuration errors (rules that can never decide,
    /// constant conditions, unbounded grants, ...), each with its field path and a fix.
    Lint(lint::LintArgs),
    /// Decide one request (the same flags as `check`) and print the evaluation trace:
    /// every policy, rule and condition with the values it saw, controls and the winner.
    Explain(explain::ExplainArgs),
    /// Re-decide the collector's recorded decisions under a candidate configuration and
    /// report what would change.
    Replay(replay::ReplayArgs),
}

#[derive(clap::Args)]
pub(crate) struct CheckArgs {
    /// Plugin configuration (JSON or YAML), as given to the filter.
    #[arg(long)]
    config: PathBuf,
    /// A JWT, sent as `Bearer <JWT>` in the configured token header and verified exactly
    /// as the filter verifies it. Without --token or --claims the request carries no
    /// token (a 401 `missing_token`, or `would_deny` in audit mode).
    #[arg(long, conflicts_with = "claims")]
    token: Option<String>,
    /// Claims as JSON, trusted without a signature (for policy authoring).
    #[arg(long)]
    claims: Option<String>,
    /// The action, sent in the configured action header (`actions.header`); without it
    /// the route table maps --method and --path.
    #[arg(long)]
    action: Option<String>,
    /// The resource, sent in the configured resource header (`actions.resource_header`).
    #[arg(long)]
    resource: Option<String>,
    /// A request header `name=value` (repeatable), e.g. for `request.headers.*`
    /// conditions, `x-request-id` or `traceparent`.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// Request path (with any query string).
    #[arg(long, default_value = "/")]
    path: String,
    /// Request `:authority` (`server.address` in the audit event, `request.host`).
    #[arg(long, default_value = "meshguard-cli")]
    authority: String,
    /// Decide as of this time (RFC 3339, or seconds since the epoch) instead of now;
    /// grants are valid before their `expires_at`.
    #[arg(long, value_name = "RFC3339|UNIX_SECONDS")]
    at: Option<String>,
    /// A URI SAN (SPIFFE id) of the mTLS peer presenting the token, for
    /// `identity.workload_binding` (repeatable; none means plain text).
    #[arg(long = "peer-uri-san", value_name = "SPIFFE_ID")]
    peer_uri_sans: Vec<String>,
    /// Decide the Nth identical call in a row: rate limits and loop detection count the
    /// calls in memory, so `--repeat 11` against a 10/m limit shows the 429.
    #[arg(long, default_value_t = 1, value_name = "N")]
    repeat: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum Alg {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// Private key file written by `meshguard keygen` (a JWK).
    #[arg(long)]
    key: PathBuf,
    /// Agent id (`sub`).
    #[arg(long)]
    sub: String,
    /// Trust tier claim.
    #[arg(long)]
    tier: Option<String>,
    /// Lifetime, e.g. 90s, 10m, 2h.
    #[arg(long, default_value = "10m")]
    ttl: String,
    /// Issuer.
    #[arg(long, default_value = "https://issuer.example")]
    iss: String,
    /// Audience.
    #[arg(long, default_value = "agents")]
    aud: String,
    /// Extra claim `name=value`; the value is parsed as JSON when it parses, else a string.
    #[arg(long = "claim", value_name = "NAME=VALUE")]
    claims: Vec<String>,
    /// A delegation hop `agent[:tier]` for the RFC 8693 `act` claim (repeatable; the
    /// first is the earliest actor, the last is the one acting now).
    #[arg(long = "act", value_name = "AGENT[:TIER]")]
    act: Vec<String>,
}

#[derive(clap::Args)]
struct KeygenArgs {
    /// Key algorithm.
    #[arg(long, value_enum, default_value = "ES256")]
    alg: Alg,
    /// Key id.
    #[arg(long, default_value = "meshguard-dev")]
    kid: String,
    /// Directory for `<kid>.key.json` (private JWK) and `<kid>.jwks.json` (public JWKS).
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
}

/// An error for the user: printed to stderr, exit code 2.
pub(crate) struct Fail(pub(crate) String);

impl<E: std::fmt::Display> From<E> for Fail {
    fn from(e: E) -> Self {
        Fail(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(a) => check(a),
        Command::Token(a) => token(a),
        Command::Keygen(a) => keygen(a),
        Command::Collector(a) => collector::run(a)
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Fail(e.to_string())),
        Command::Audit(a) => audit_query::run(a).map_err(|e| Fail(e.to_string())),
        Command::Bundle(a) => bundle::run(a).map_err(|e| Fail(e.to_string())),
        Command::Approvals(a) => approvals_cmd::run(a).map_err(|e| Fail(e.to_string())),
        Command::Grants(a) => grants::run(a).map_err(|e| Fail(e.to_string())),
        Command::Test(a) => policy_test::run(a).map_err(Fail),
        Command::Lint(a) => lint::run(a).map_err(Fail),
        Command::Explain(a) => explain::run(a).map_err(Fail),
        Command::Replay(a) => replay::run(a).map_err(Fail),
    };
    match result {
        Ok(code) => code,
        Err(Fail(msg)) => {
            eprintln!("meshguard: {msg}");
            ExitCode::from(2)
        }
    }
}

fn split_pair(s: &str, what: &str) -> Result<(String, String), Fail> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| Fail(format!("{what} {s:?} must look like name=value")))
}

fn read(path: &Path) -> Result<Vec<u8>, Fail> {
    std::fs::read(path).map_err(|e| Fail(format!("cannot read {}: {e}", path.display())))
}

/// Runs one request through the filter's request path (`offline::run`) and prints the
/// audit event's decision attributes (see README, "CLI").
fn check(a: CheckArgs) -> Result<ExitCode, Fail> {
    let engine = offline::engine(&a.config).map_err(Fail)?;
    let spec = a.spec()?;
    let outcome = offline::run(&engine, &spec).map_err(Fail)?;
    println!("{}", Value::Object(offline::event_json(&outcome)));
    Ok(ExitCode::from(
        if outcome.decision.effect == Effect::Allow {
            0
        } else {
            1
        },
    ))
}

impl CheckArgs {
    /// The request these flags describe (`explain` takes the same flags).
    fn spec(&self) -> Result<offline::Spec, Fail> {
        let claims = match &self.claims {
            None => None,
            Some(c) => Some(
                serde_json::from_str(c).map_err(|e| Fail(format!("--claims is not JSON: {e}")))?,
            ),
        };
        let mut headers = Vec::new();
        for h in &self.headers {
            headers.push(split_pair(h, "--header")?);
        }
        let at = match &self.at {
            Some(t) => offline::parse_at(t).map_err(|e| Fail(format!("--{e}")))?,
            None => offline::now_secs(),
        };
        Ok(offline::Spec {
            token: self.token.clone(),
            claims,
            action: self.action.clone(),
            resource: self.resource.clone(),
            headers,
            method: self.method.clone(),
            path: self.path.clone(),
            authority: self.authority.clone(),
            at,
            peer_uri_sans: self.peer_uri_sans.clone(),
            repeat: self.repeat,
            tool_call: None,
        })
    }
}

fn parse_ttl(s: &str) -> Result<u64, Fail> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| Fail(format!("--ttl {s:?}: expected a number with s, m, h or d")))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(Fail(format!(
                "--ttl {s:?}: unknown unit {unit:?} (use s, m, h or d)"
            )))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| Fail(format!("--ttl {s:?} is too long")))
}

fn token(a: TokenArgs) -> Result<ExitCode, Fail> {
    let jwk = String::from_utf8(read(&a.key)?)?;
    let jwk_value: Value = serde_json::from_str(&jwk)
        .map_err(|e| Fail(format!("{}: not a JWK: {e}", a.key.display())))?;
    let mut custom = Map::new();
    if let Some(t) = &a.tier {
        custom.insert("trust_tier".into(), Value::String(t.clone()));
    }
    for c in &a.claims {
        let (k, v) = split_pair(c, "--claim")?;
        let value = serde_json::from_str(&v).unwrap_or(Value::String(v));
        custom.insert(k, value);
    }
    if let Some(act) = offline::act_claim(&a.act).map_err(|e| Fail(format!("--{e}")))? {
        custom.insert("act".into(), act);
    }
    let ttl = parse_ttl(&a.ttl)?;
    let claims = Claims::with_custom_claims(custom, Duration::from_secs(ttl))
        .with_issuer(&a.iss)
        .with_audience(&a.aud)
        .with_subject(&a.sub);
    let kid = jwk_value
        .get("kid")
        .and_then(Value::as_str)
        .unwrap_or("meshguard-dev");
    let bad_key = |e: jwt_simple::Error| {
        Fail(format!(
            "{}: not a usable private key: {e}",
            a.key.display()
        ))
    };
    let t = match (
        jwk_value.get("kty").and_then(Value::as_str),
        jwk_value.get("crv").and_then(Value::as_str),
    ) {
        (Some("EC"), Some("P-256")) => ES256KeyPair::from_jwk(&jwk)
            .map_err(bad_key)?
            .with_key_id(kid)
            .sign(claims)?,
        (Some("OKP"), Some("Ed25519")) => Ed25519KeyPair::from_jwk(&jwk)
            .map_err(bad_key)?
            .with_key_id(kid)
            .sign(claims)?,
        _ => {
            return Err(Fail(format!(
                "{}: only EC P-256 and Ed25519 keys can mint dev tokens",
                a.key.display()
            )))
        }
    };
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

fn keygen(a: KeygenArgs) -> Result<ExitCode, Fail> {
    let (private, public) = match a.alg {
        Alg::Es256 => {
            let k = ES256KeyPair::generate().with_key_id(&a.kid);
            (k.to_jwk(), k.public_key().to_jwk())
        }
        Alg::EdDsa => {
            let k = Ed25519KeyPair::generate().with_key_id(&a.kid);
            (k.to_jwk(), k.public_key().to_jwk())
        }
    };
    let public: Value = serde_json::from_str(&public)?;
    let jwks = json!({ "keys": [public] });
    std::fs::create_dir_all(&a.out_dir)
        .map_err(|e| Fail(format!("cannot create {}: {e}", a.out_dir.display())))?;
    let key_path = a.out_dir.join(format!("{}.key.json", a.kid));
    let jwks_path = a.out_dir.join(format!("{}.jwks.json", a.kid));
    write_private(&key_path, private.as_bytes())?;
    std::fs::write(&jwks_path, format!("{jwks}\n"))
        .map_err(|e| Fail(format!("cannot write {}: {e}", jwks_path.display())))?;
    eprintln!(
        "wrote {} (private, keep it secret) and {} (public, for identity.issuers[].jwks)",
        key_path.display(),
        jwks_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn write_private(path: &Path, data: &[u8]) -> Result<(), Fail> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Fail(format!("cannot write {}: {e}", path.display())))?;
    f.write_all(data)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn act_hops_nest_with_the_last_outermost() {
        let act = offline::act_claim(&["agent-a:verified".into(), "agent-b".into()])
            .ok()
            .flatten()
            .unwrap();
        assert_eq!(
            act,
            json!({"sub": "agent-b", "act": {"sub": "agent-a", "trust_tier": "verified"}})
        );
        assert!(offline::act_claim(&[]).ok().flatten().is_none());
        assert!(offline::act_claim(&[":verified".into()]).is_err());
        assert!(offline::act_claim(&["agent-a:".into()]).is_err());
    }

    #[test]
    fn at_takes_rfc3339_or_epoch_seconds() {
        assert_eq!(offline::parse_at("1800000000").ok(), Some(1_800_000_000));
        assert_eq!(
            offline::parse_at("2027-01-15T08:00:00Z").ok(),
            Some(1_800_000_000)
        );
        assert!(offline::parse_at("tomorrow").is_err());
    }
}

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> Result<(), Fail> {
    std::fs::write(path, data).map_err(|e| Fail(format!("cannot write {}: {e}", path.display())))
}
