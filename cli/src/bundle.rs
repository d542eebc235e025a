//! `meshguard bundle`: produce, check and serve signed policy bundles
//! (format `meshguard-bundle/v1`, see the README and `meshguard::sources::bundle`).

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ct_codecs::{Base64, Base64UrlSafeNoPadding, Decoder, Encoder};
use meshguard::config::parse_policy_yaml;
use meshguard::policy::PolicySet;
use meshguard::sources::bundle::{self as mgbundle, BundleKeys, FORMAT};
use meshguard::time;
use serde_json::{json, Value};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// `meshguard bundle ...`
#[derive(clap::Args)]
pub struct BundleArgs {
    #[command(subcommand)]
    command: BundleCommand,
}

#[derive(clap::Subcommand)]
enum BundleCommand {
    /// Build and sign a bundle from policy YAML files (each may hold several documents).
    Sign(SignArgs),
    /// Check a bundle's signature against public keys; exit 0 when it verifies, 1 when not.
    Verify(VerifyArgs),
    /// Show what a bundle holds (no key needed).
    Inspect(InspectArgs),
    /// Serve the bundle files of a directory (e.g. a mounted ConfigMap) over HTTP with
    /// ETags at /bundles/<file>; file changes (including symlink swaps) are picked up.
    Serve(ServeArgs),
}

#[derive(clap::Args)]
struct SignArgs {
    /// Ed25519 private key: the `.key.json` JWK written by `meshguard keygen --alg EdDSA`.
    #[arg(long)]
    key: PathBuf,
    /// Policy YAML files.
    #[arg(required = true)]
    policies: Vec<PathBuf>,
    /// Output file.
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// Bundle version; must grow with every bundle (default: the current Unix time).
    #[arg(long)]
    version: Option<u64>,
    /// JSON or YAML list of agent records to carry (optional).
    #[arg(long)]
    agents: Option<PathBuf>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Public key(s): base64 of the 32 raw bytes, or a JWK / JWKS file (repeatable).
    #[arg(long = "pubkey", required = true)]
    pubkeys: Vec<String>,
    /// The bundle file.
    bundle: PathBuf,
    /// Largest bundle accepted, as the filter's bundle.max_bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    max_bytes: usize,
}

#[derive(clap::Args)]
struct InspectArgs {
    /// The bundle file.
    bundle: PathBuf,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Directory whose files are served.
    #[arg(long)]
    dir: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
}

/// Errors of the bundle commands.
#[derive(Debug)]
pub enum BundleCmdError {
    /// A file could not be read or written.
    Io(String),
    /// A key, policy or bundle is not acceptable.
    Invalid(String),
}

impl fmt::Display for BundleCmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleCmdError::Io(m) | BundleCmdError::Invalid(m) => f.write_str(m),
        }
    }
}

type Result<T> = std::result::Result<T, BundleCmdError>;

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path)
        .map_err(|e| BundleCmdError::Io(format!("cannot read {}: {e}", path.display())))
}

/// Runs a bundle subcommand.
pub fn run(args: BundleArgs) -> Result<ExitCode> {
    match args.command {
        BundleCommand::Sign(a) => sign(a),
        BundleCommand::Verify(a) => verify(a),
        BundleCommand::Inspect(a) => inspect(a),
        BundleCommand::Serve(a) => serve(a),
    }
}

fn secret_key(path: &Path) -> Result<(ed25519_compact::SecretKey, Option<String>)> {
    let jwk: Value = serde_json::from_slice(&read(path)?)
        .map_err(|e| BundleCmdError::Invalid(format!("{}: not a JWK: {e}", path.display())))?;
    let okp = jwk.get("kty").and_then(Value::as_str) == Some("OKP")
        && jwk.get("crv").and_then(Value::as_str) == Some("Ed25519");
    let d = jwk
        .get("d")
        .and_then(Value::as_str)
        .filter(|_| okp)
        .ok_or_else(|| {
            BundleCmdError::Invalid(format!(
                "{}: bundles are signed with an Ed25519 private JWK (meshguard keygen --alg EdDSA)",
                path.display()
            ))
        })?;
    let seed = Base64UrlSafeNoPadding::decode_to_vec(d, None)
        .ok()
        .and_then(|s| ed25519_compact::Seed::from_slice(&s).ok())
        .ok_or_else(|| {
            BundleCmdError::Invalid(format!("{}: \"d\" is not a 32-byte seed", path.display()))
        })?;
    let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
    Ok((ed25519_compact::KeyPair::from_seed(seed).sk, kid))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sign(a: SignArgs) -> Result<ExitCode> {
    let (sk, kid) = secret_key(&a.key)?;
    let mut policies = Vec::new();
    for p in &a.policies {
        let text = String::from_utf8(read(p)?)
            .map_err(|_| BundleCmdError::Invalid(format!("{}: not UTF-8", p.display())))?;
        let mut ps = parse_policy_yaml(&text)
            .map_err(|e| BundleCmdError::Invalid(format!("{}: {e}", p.display())))?;
        policies.append(&mut ps);
    }
    PolicySet::compile(&policies, "policies")
        .map_err(|e| BundleCmdError::Invalid(e.to_string()))?;
    let agents: Value = match &a.agents {
        Some(p) => meshguard::config::from_text(&read(p)?)
            .map_err(|e| BundleCmdError::Invalid(format!("{}: {e}", p.display())))?,
        None => json!([]),
    };
    if !agents.is_array() {
        return Err(BundleCmdError::Invalid("--agents must hold a list".into()));
    }
    let now = now_secs();
    let mut doc = json!({
        "format": FORMAT,
        "version": a.version.unwrap_or(now),
        "created_at": time::format(now),
        "policies": policies,
        "trust_tiers": {},
        "agents": agents,
        "grants": [],
        "revocations": [],
    });
    mgbundle::sign(&mut doc, &sk, kid.as_deref())
        .map_err(|e| BundleCmdError::Invalid(e.to_string()))?;
    let text =
        serde_json::to_string_pretty(&doc).map_err(|e| BundleCmdError::Invalid(e.to_string()))?;
    std::fs::write(&a.output, format!("{text}\n"))
        .map_err(|e| BundleCmdError::Io(format!("cannot write {}: {e}", a.output.display())))?;
    let pk = Base64::encode_to_string(sk.public_key().as_ref()).unwrap_or_default();
    eprintln!(
        "wrote {} (version {}, {} policies); public key for bundle.public_keys: {pk}",
        a.output.display(),
        doc.get("version").unwrap_or(&Value::Null),
        doc.get("policies")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    );
    Ok(ExitCode::SUCCESS)
}

/// A public key argument: base64 text, or a file holding a JWK or a JWKS.
fn public_keys(args: &[String]) -> Result<BundleKeys> {
    let mut values = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if path.is_file() {
            let doc: Value = serde_json::from_slice(&read(path)?)
                .map_err(|e| BundleCmdError::Invalid(format!("{arg}: not JSON: {e}")))?;
            match doc.get("keys").and_then(Value::as_array) {
                Some(keys) => values.extend(keys.iter().cloned()),
                None => values.push(doc),
            }
        } else {
            values.push(Value::String(arg.clone()));
        }
    }
    // A private JWK also carries the public half; drop the secret before parsing.
    for v in &mut values {
        if let Value::Object(m) = v {
            m.remove("d");
        }
    }
    BundleKeys::parse(&values).map_err(BundleCmdError::Invalid)
}

fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let keys = public_keys(&a.pubkeys)?;
    let bytes = read(&a.bundle)?;
    match mgbundle::verify(&bytes, &keys, a.max_bytes) {
        Ok(b) => {
            println!(
                "{}: ok: {FORMAT} version {}, created {}, {} policies",
                a.bundle.display(),
                b.version,
                b.created_at,
                b.policies.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            println!("{}: rejected: {e}", a.bundle.display());
            Ok(ExitCode::from(1))
        }
    }
}

fn inspect(a: InspectArgs) -> Result<ExitCode> {
    let bytes = read(&a.bundle)?;
    let doc: Value = serde_json::from_slice(&bytes)
        .map_err(|e| BundleCmdError::Invalid(format!("{}: not JSON: {e}", a.bundle.display())))?;
    let signing =
        mgbundle::signing_input(&doc).map_err(|e| BundleCmdError::Invalid(e.to_string()))?;
    let created = doc
        .get("created_at")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let age = time::parse(created).map(|c| time::age(now_secs().saturating_sub(c)));
    let list = |k: &str| {
        doc.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let policies: Vec<Value> = list("policies")
        .iter()
        .map(|p| {
            json!({
                "name": p.get("name"),
                "rules": p.get("rules").and_then(Value::as_array).map_or(0, Vec::len),
            })
        })
        .collect();
    let out = json!({
        "file": a.bundle.display().to_string(),
        "bytes": bytes.len(),
        "format": doc.get("format"),
        "version": doc.get("version"),
        "created_at": created,
        "age": age,
        "policies": policies,
        "agents": list("agents").len(),
        "grants": list("grants").len(),
        "revocations": list("revocations").len(),
        "signatures": list("signatures").iter().map(|s| json!({"alg": s.get("alg"), "kid": s.get("kid")})).collect::<Vec<_>>(),
        "signed_sha256": meshguard::audit::chain_hash(&signing),
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&out).map_err(|e| BundleCmdError::Invalid(e.to_string()))?
    );
    Ok(ExitCode::SUCCESS)
}

/// File names that may be served: plain names in the directory, no hidden files (the
/// `..data` links Kubernetes manages), no separators.
fn servable(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

async fn serve_file(
    State(dir): State<Arc<PathBuf>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    if !servable(&name) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    // Read per request: a mounted ConfigMap changes by swapping a symlink, and a cached
    // handle would keep serving the old file.
    let bytes = match tokio::fs::read(dir.join(&name)).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::NOT_FOUND, "not found\n").into_response(),
    };
    let etag = format!("\"{}\"", meshguard::audit::chain_hash(&bytes));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut builder = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "no-cache");
    if matches {
        builder = builder.status(StatusCode::NOT_MODIFIED);
        return builder.body(Body::empty()).unwrap_or_default();
    }
    builder
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap_or_default()
}

fn serve(a: ServeArgs) -> Result<ExitCode> {
    if !a.dir.is_dir() {
        return Err(BundleCmdError::Io(format!(
            "{} is not a directory",
            a.dir.display()
        )));
    }
    let addr: SocketAddr = a
        .listen
        .parse()
        .map_err(|e| BundleCmdError::Invalid(format!("--listen {:?}: {e}", a.listen)))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BundleCmdError::Io(e.to_string()))?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| BundleCmdError::Io(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr().map_err(|e| BundleCmdError::Io(e.to_string()))?;
        eprintln!("meshguard bundle serve: {} on http://{bound}/bundles/<file>", a.dir.display());
        let app = Router::new()
            .route("/bundles/{name}", get(serve_file))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(Arc::new(a.dir.clone()));
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                () = shutdown => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        };
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| BundleCmdError::Io(e.to_string()))
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_are_served() {
        assert!(servable("current.json"));
        assert!(servable("v2-bundle_1.json"));
        for bad in [
            "",
            "..data",
            ".hidden",
            "../etc/passwd",
            "a/b",
            "a\\b",
            "é.json",
        ] {
            assert!(!servable(bad), "{bad}");
        }
    }
}
