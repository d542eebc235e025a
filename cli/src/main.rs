//! `meshguard`: the operator's command line. It shares the filter's engine, so `check`
//! decides exactly as the filter does; `collector` and `audit` are the reference audit
//! collector and its query tools.

mod approvals_cmd;
mod audit_query;
mod bundle;
mod collector;
mod grants;
mod timestamp;

use clap::{Parser, Subcommand, ValueEnum};
use jwt_simple::prelude::*;
use meshguard::config::Effect;
use meshguard::engine::request::Request;
use meshguard::engine::Engine;
use meshguard::identity::Identity;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

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
}

#[derive(clap::Args)]
struct CheckArgs {
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
    /// Decide as of this time (seconds since the epoch) instead of now.
    #[arg(long, value_name = "UNIX_SECONDS")]
    at: Option<u64>,
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
struct Fail(String);

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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sets a header, replacing any value given with --header, so the flags made for it win.
fn set_header(req: &mut Request, name: &str, value: String) {
    req.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    req.headers.push((name.to_ascii_lowercase(), value));
}

/// The header a flag travels in, or an error when the configuration disables it.
fn flag_header<'a>(header: Option<&'a str>, flag: &str, field: &str) -> Result<&'a str, Fail> {
    header.ok_or_else(|| {
        Fail(format!(
            "{flag} travels in the {field} header, which this configuration disables; \
             give --method and --path for the route table instead"
        ))
    })
}

/// Runs one request through [`Engine::handle`], the filter's request path, and prints
/// the audit event's decision attributes (see README, "CLI").
fn check(a: CheckArgs) -> Result<ExitCode, Fail> {
    let text = read(&a.config)?;
    let engine = Engine::from_text(&text).map_err(|e| {
        Fail(format!(
            "{}: configuration rejected: {e}",
            a.config.display()
        ))
    })?;
    let now_nanos = a.at.unwrap_or_else(now_secs).saturating_mul(1_000_000_000);
    let mut req = Request {
        method: a.method.to_ascii_uppercase(),
        path: a.path.clone(),
        authority: a.authority.clone(),
        headers: Vec::new(),
    };
    for h in &a.headers {
        let (k, v) = split_pair(h, "--header")?;
        req.headers.push((k.to_ascii_lowercase(), v));
    }
    let mapper = engine.action_mapper();
    if let Some(action) = &a.action {
        let header = flag_header(mapper.action_header(), "--action", "actions.header")?;
        set_header(&mut req, header, action.clone());
    }
    if let Some(resource) = &a.resource {
        let header = flag_header(
            mapper.resource_header(),
            "--resource",
            "actions.resource_header",
        )?;
        set_header(&mut req, header, resource.clone());
    }
    if let Some(t) = &a.token {
        let header = engine.verifier().token_header().to_string();
        set_header(&mut req, &header, format!("Bearer {}", t.trim()));
    }
    let outcome = match &a.claims {
        None => engine.handle(&req, now_nanos, &mut engine.verifier().new_cache()),
        Some(c) => {
            let claims: Value =
                serde_json::from_str(c).map_err(|e| Fail(format!("--claims is not JSON: {e}")))?;
            let identity =
                Identity::from_claims(claims, engine.verifier().claim_names()).map(Rc::new);
            engine.handle_authenticated(&req, now_nanos, identity)
        }
    };
    let mut out = Map::new();
    for (name, value) in outcome.event.attributes() {
        // Measured by the filter around the whole callback; not part of the decision.
        if name != LATENCY_ATTRIBUTE {
            out.insert(name.to_string(), value.to_json());
        }
    }
    out.insert(
        TRACE_ID_FIELD.into(),
        Value::String(outcome.event.trace_id_hex()),
    );
    println!("{}", Value::Object(out));
    Ok(ExitCode::from(
        if outcome.decision.effect == Effect::Allow {
            0
        } else {
            1
        },
    ))
}

/// The audit attribute `check` leaves out: the filter measures it, `check` has nothing to
/// measure.
const LATENCY_ATTRIBUTE: &str = "meshguard.latency_us";

/// `check`'s name for the log record's trace id (an OTLP field, not an attribute).
const TRACE_ID_FIELD: &str = "trace_id";

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

#[cfg(not(unix))]
fn write_private(path: &Path, data: &[u8]) -> Result<(), Fail> {
    std::fs::write(path, data).map_err(|e| Fail(format!("cannot write {}: {e}", path.display())))
}
