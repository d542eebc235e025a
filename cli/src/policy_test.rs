//! `meshguard test`: policy test files (README, "Changing policy safely"). Each case is a
//! request decided by the filter's engine (`crate::offline`), compared with what the
//! file expects.

use crate::offline::{self, Spec};
use meshguard::engine::{Engine, Outcome};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct TestArgs {
    /// Test files (`*.test.yaml`), or directories searched for them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Also write the results as JUnit XML to this file (for CI).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
    /// List the rules that decided no case.
    #[arg(long)]
    coverage: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    Table,
    Json,
}

/// One test file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    /// The configuration under test, relative to the test file: a plugin configuration
    /// (JSON or YAML) or an Envoy bootstrap carrying one.
    config: PathBuf,
    /// Fields every case starts from (a case's own fields win).
    #[serde(default)]
    defaults: Option<Value>,
    cases: Vec<Value>,
}

/// One case, after `defaults` are merged in.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    /// Agent id (`sub`), with `tier`: shorthand for `claims`.
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    claims: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    token: Option<String>,
    /// Delegators, earliest first, as `agent[:tier]`; the case's agent acts now.
    #[serde(default)]
    chain: Vec<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    resource: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    authority: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// An MCP `tools/call` of this tool (sent as a JSON-RPC body to `path`).
    #[serde(default)]
    tool: Option<String>,
    /// The call's arguments (`context.*`).
    #[serde(default)]
    context: Option<Value>,
    #[serde(default)]
    at: Option<Value>,
    #[serde(default)]
    repeat: Option<u32>,
    expect: Expect,
}

/// What a case expects; only the fields given are compared.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct Expect {
    /// `meshguard.decision`: allow, deny, require_approval, rate_limited, would_deny.
    #[serde(default)]
    decision: Option<String>,
    /// `meshguard.effect`: allow, deny, require_approval.
    #[serde(default)]
    effect: Option<String>,
    #[serde(default)]
    policy: Option<String>,
    #[serde(default)]
    rule: Option<String>,
    /// A substring of the reason.
    #[serde(default)]
    reason: Option<String>,
}

/// A case's result.
struct Result1 {
    file: String,
    name: String,
    expect: Expect,
    actual: Option<Actual>,
    error: Option<String>,
}

struct Actual {
    decision: String,
    effect: String,
    policy: String,
    rule: String,
    reason: String,
}

impl Result1 {
    fn passed(&self) -> bool {
        self.error.is_none() && self.mismatches().is_empty()
    }

    fn mismatches(&self) -> Vec<String> {
        let Some(a) = &self.actual else {
            return Vec::new();
        };
        let e = &self.expect;
        let mut out = Vec::new();
        let mut cmp = |field: &str, want: &Option<String>, got: &str, substring: bool| {
            if let Some(w) = want {
                let ok = if substring {
                    got.contains(w.as_str())
                } else {
                    got == w
                };
                if !ok {
                    out.push(format!("{field}: expected {w:?}, got {got:?}"));
                }
            }
        };
        cmp("decision", &e.decision, &a.decision, false);
        cmp("effect", &e.effect, &a.effect, false);
        cmp("policy", &e.policy, &a.policy, false);
        cmp("rule", &e.rule, &a.rule, false);
        cmp("reason", &e.reason, &a.reason, true);
        out
    }

    fn expected_text(&self) -> String {
        let e = &self.expect;
        let mut parts = Vec::new();
        for (k, v) in [
            ("decision", &e.decision),
            ("effect", &e.effect),
            ("policy", &e.policy),
            ("rule", &e.rule),
            ("reason~", &e.reason),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={v}"));
            }
        }
        parts.join(" ")
    }

    fn actual_text(&self) -> String {
        match (&self.actual, &self.error) {
            (_, Some(e)) => format!("error: {e}"),
            (Some(a), None) => {
                let mut s = format!("decision={}", a.decision);
                if !a.policy.is_empty() {
                    let _ = write!(s, " policy={} rule={}", a.policy, a.rule);
                }
                s
            }
            (None, None) => String::new(),
        }
    }

    fn json(&self) -> Value {
        let e = &self.expect;
        json!({
            "file": self.file,
            "name": self.name,
            "passed": self.passed(),
            "expected": {
                "decision": e.decision, "effect": e.effect, "policy": e.policy,
                "rule": e.rule, "reason": e.reason,
            },
            "actual": self.actual.as_ref().map(|a| json!({
                "decision": a.decision, "effect": a.effect, "policy": a.policy,
                "rule": a.rule, "reason": a.reason,
            })),
            "mismatches": self.mismatches(),
            "error": self.error,
        })
    }
}

/// Finds the test files under `paths`.
fn collect(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            walk(p, &mut found)?;
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err("no test files (*.test.yaml) found".into());
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".test.yaml"))
        {
            out.push(path);
        }
    }
    Ok(())
}

fn merge(defaults: Option<&Value>, case: &Value) -> Value {
    match (defaults, case) {
        (Some(Value::Object(d)), Value::Object(c)) => {
            let mut m = d.clone();
            for (k, v) in c {
                m.insert(k.clone(), v.clone());
            }
            Value::Object(m)
        }
        _ => case.clone(),
    }
}

fn spec(case: &Case) -> Result<Spec, String> {
    let mut claims = case.claims.clone().unwrap_or_default();
    if let Some(a) = &case.agent {
        claims.insert("sub".into(), Value::String(a.clone()));
    }
    if let Some(t) = &case.tier {
        claims.insert("trust_tier".into(), Value::String(t.clone()));
    }
    if let Some(act) = offline::act_claim(&case.chain)? {
        // RFC 8693: `act` names the delegators; the outermost acts now, so the case's
        // agent is wrapped around them.
        let mut outer = serde_json::Map::new();
        outer.insert(
            "sub".into(),
            claims.get("sub").cloned().unwrap_or(Value::Null),
        );
        if let Some(t) = claims.get("trust_tier") {
            outer.insert("trust_tier".into(), t.clone());
        }
        outer.insert("act".into(), act);
        claims.insert("act".into(), Value::Object(outer));
    }
    let has_claims = !claims.is_empty();
    if has_claims && case.token.is_some() {
        return Err("give the agent as claims (agent/tier/claims) or as a token, not both".into());
    }
    let at = match &case.at {
        None => offline::now_secs(),
        Some(Value::Number(n)) => n.as_u64().ok_or("at: expected whole seconds")?,
        Some(Value::String(s)) => offline::parse_at(s)?,
        Some(_) => return Err("at: expected RFC 3339 or seconds since the epoch".into()),
    };
    let tool_call = match (&case.tool, &case.context) {
        (Some(t), c) => Some((t.clone(), c.clone().unwrap_or_else(|| json!({})))),
        (None, Some(_)) => {
            return Err("context (the MCP arguments) needs tool (the MCP tool called)".into())
        }
        (None, None) => None,
    };
    Ok(Spec {
        token: case.token.clone(),
        claims: has_claims.then_some(Value::Object(claims)),
        action: case.action.clone(),
        resource: case.resource.clone(),
        headers: case
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        method: case
            .method
            .clone()
            .unwrap_or_else(|| if tool_call.is_some() { "POST" } else { "GET" }.into()),
        path: case
            .path
            .clone()
            .unwrap_or_else(|| if tool_call.is_some() { "/mcp" } else { "/" }.into()),
        authority: case
            .authority
            .clone()
            .unwrap_or_else(|| "meshguard-test".into()),
        at,
        peer_uri_sans: Vec::new(),
        repeat: case.repeat.unwrap_or(1),
        tool_call,
    })
}

fn actual(o: &Outcome) -> Actual {
    let e = &o.event;
    Actual {
        decision: e.decision.clone(),
        effect: e.effect.clone(),
        policy: e.policy.clone(),
        rule: e.rule.clone(),
        reason: e.reason.clone(),
    }
}

/// Runs every case of one file; also records which rules decided a case.
fn run_file(
    path: &Path,
    results: &mut Vec<Result1>,
    rules: &mut BTreeMap<(String, String), usize>,
) -> Result<(), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let file: TestFile = meshguard::config::from_text(text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let config = path.parent().unwrap_or(Path::new(".")).join(&file.config);
    let engine: Engine = offline::engine(&config)?;
    for (p, r) in engine.policy_set().rule_names() {
        rules.entry((p.to_string(), r.to_string())).or_insert(0);
    }
    let shown = path.display().to_string();
    for (i, raw) in file.cases.iter().enumerate() {
        let merged = merge(file.defaults.as_ref(), raw);
        let case: Case = match serde_json::from_value(merged) {
            Ok(c) => c,
            Err(e) => {
                results.push(Result1 {
                    file: shown.clone(),
                    name: format!("cases[{i}]"),
                    expect: Expect::default(),
                    actual: None,
                    error: Some(format!("cases[{i}]: {e}")),
                });
                continue;
            }
        };
        let outcome = spec(&case).and_then(|s| offline::run(&engine, &s));
        let (actual, error) = match outcome {
            Ok(o) => {
                if !o.event.policy.is_empty() {
                    if let Some(n) = rules.get_mut(&(o.event.policy.clone(), o.event.rule.clone()))
                    {
                        *n += 1;
                    }
                }
                (Some(actual(&o)), None)
            }
            Err(e) => (None, Some(e)),
        };
        results.push(Result1 {
            file: shown.clone(),
            name: case.name,
            expect: case.expect,
            actual,
            error,
        });
    }
    Ok(())
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\n' | '\t' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `testsuite` per file, one `testcase` per case.
fn junit(results: &[Result1]) -> String {
    let mut by_file: BTreeMap<&str, Vec<&Result1>> = BTreeMap::new();
    for r in results {
        by_file.entry(r.file.as_str()).or_default().push(r);
    }
    let failures = results.iter().filter(|r| !r.passed()).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"meshguard test\" tests=\"{}\" failures=\"{failures}\" errors=\"0\">",
        results.len()
    );
    for (file, rs) in by_file {
        let f = rs.iter().filter(|r| !r.passed()).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"0\" skipped=\"0\">",
            xml_escape(file),
            rs.len()
        );
        for r in rs {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"0\"",
                xml_escape(file),
                xml_escape(&r.name)
            );
            if r.passed() {
                x.push_str("/>\n");
            } else {
                let msg = match &r.error {
                    Some(e) => e.clone(),
                    None => r.mismatches().join("; "),
                };
                let _ = writeln!(
                    x,
                    ">\n      <failure message=\"{}\" type=\"mismatch\">expected: {}\nactual: {}</failure>\n    </testcase>",
                    xml_escape(&msg),
                    xml_escape(&r.expected_text()),
                    xml_escape(&r.actual_text())
                );
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// `meshguard test`.
pub fn run(a: TestArgs) -> Result<ExitCode, String> {
    let files = collect(&a.paths)?;
    let mut results = Vec::new();
    let mut rules = BTreeMap::new();
    for f in &files {
        run_file(f, &mut results, &mut rules)?;
    }
    let failed = results.iter().filter(|r| !r.passed()).count();
    let uncovered: BTreeSet<String> = rules
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|((p, r), _)| format!("{p}/{r}"))
        .collect();
    match a.format {
        Format::Json => {
            let mut out = json!({
                "cases": results.iter().map(Result1::json).collect::<Vec<_>>(),
                "passed": results.len() - failed,
                "failed": failed,
            });
            if let (true, Some(m)) = (a.coverage, out.as_object_mut()) {
                m.insert("uncovered_rules".into(), json!(uncovered));
            }
            println!("{out}");
        }
        Format::Table => {
            let width = results
                .iter()
                .map(|r| r.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            println!("{:<6}  {:<width$}  RESULT", "STATUS", "CASE");
            for r in &results {
                let status = if r.passed() { "PASS" } else { "FAIL" };
                println!("{status:<6}  {:<width$}  {}", r.name, r.actual_text());
                if !r.passed() {
                    println!("        file:     {}", r.file);
                    println!("        expected: {}", r.expected_text());
                    println!("        actual:   {}", r.actual_text());
                    for m in r.mismatches() {
                        println!("        - {m}");
                    }
                }
            }
            println!(
                "{} passed, {failed} failed ({} files)",
                results.len() - failed,
                files.len()
            );
            if a.coverage {
                if uncovered.is_empty() {
                    println!("coverage: every rule decided at least one case");
                } else {
                    println!("coverage: {} rule(s) decided no case:", uncovered.len());
                    for u in &uncovered {
                        println!("  {u}");
                    }
                }
            }
        }
    }
    if let Some(path) = &a.junit {
        std::fs::write(path, junit(&results))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
