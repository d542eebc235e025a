//! `meshguard test`, `lint` and `explain` as an operator runs them: the built binary on
//! the repository's example configurations and fixtures.

// A test crate: its helpers fail the test by panicking (clippy.toml covers only #[test]
// functions and #[cfg(test)] modules, not an integration test's helpers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn meshguard(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshguard"))
        .current_dir(root())
        .args(args)
        .output()
        .expect("run meshguard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn example_policy_tests_pass_with_full_coverage() {
    let o = meshguard(&[
        "test",
        "--coverage",
        "envoy/policy-tests",
        "istio/envoyfilter/plugin-config.test.yaml",
    ]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains(" 0 failed (4 files)"), "{out}");
    assert!(
        out.contains("every rule decided at least one case"),
        "{out}"
    );
}

#[test]
fn a_failing_case_prints_expected_and_actual_and_exits_1() {
    let o = meshguard(&["test", "tests/fixtures/policy-ops/failing.test.yaml"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("PASS    reads are allowed"), "{out}");
    assert!(
        out.contains("FAIL    wrongly expects delete to be allowed"),
        "{out}"
    );
    assert!(
        out.contains("expected: decision=allow rule=rules[0]"),
        "{out}"
    );
    assert!(
        out.contains("actual:   decision=deny policy=verified-agent-policy rule=rules[2]"),
        "{out}"
    );
    assert!(out.contains("1 passed, 1 failed"), "{out}");

    let o = meshguard(&[
        "test",
        "--format",
        "json",
        "--coverage",
        "tests/fixtures/policy-ops/failing.test.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["failed"], 1);
    assert_eq!(v["passed"], 1);
    assert_eq!(v["cases"][1]["actual"]["rule"], "rules[2]");
    assert_eq!(v["cases"][1]["passed"], false);
    // Two cases decided by rules[0] and rules[2]: allow-email decided none.
    assert_eq!(
        v["uncovered_rules"],
        serde_json::json!(["verified-agent-policy/allow-email"])
    );
}

/// Every finding `lint` must report in the fixture, by code and field path.
#[test]
fn lint_reports_each_problem_with_its_path() {
    let o = meshguard(&[
        "lint",
        "--format",
        "json",
        "--at",
        "2026-11-30T00:00:00Z",
        "tests/fixtures/lint/problems.yaml",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "warnings alone exit 0 without --strict"
    );
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let mut got: Vec<(String, String)> = v["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            assert!(!f["hint"].as_str().unwrap_or("").is_empty(), "{f}");
            (
                f["code"].as_str().unwrap_or("").into(),
                f["path"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = [
        ("allow-shadowed-by-deny", "policies[0].rules[0]"),
        (
            "tier-floor-unreachable",
            "policies[0].rules[2].min_trust_tier",
        ),
        ("duplicate-rule-name", "policies[0].rules[4].name"),
        ("duplicate-rule", "policies[0].rules[4]"),
        ("constant-condition", "policies[0].rules[5].conditions[0]"),
        ("missing-reason", "policies[0].rules[6].reason"),
        ("missing-reason", "policies[0].rules[7].reason"),
        ("policy-applies-to-nobody", "policies[1].applies_to.agents"),
        ("policy-decides-nothing", "policies[2].rules"),
        ("overlapping-rate-limits", "rate_limits[1]"),
        ("grant-too-long", "grants.inline[0].expires_at"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(got, want);
    let strict = meshguard(&["lint", "--strict", "tests/fixtures/lint/problems.yaml"]);
    assert_eq!(strict.status.code(), Some(1));
}

#[test]
fn lint_is_clean_on_the_example_configurations() {
    let o = meshguard(&[
        "lint",
        "--strict",
        "envoy/envoy.yaml",
        "envoy/envoy-guardian.yaml",
        "envoy/envoy-compose.yaml",
        "istio/envoyfilter/plugin-config.json",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("0 finding(s) in 4 configuration(s)"), "{out}");
}

/// Compares `explain` output with `cli/tests/golden/<name>.txt` (`UPDATE_GOLDEN=1`
/// rewrites them).
fn golden(name: &str, args: &[&str], code: i32) {
    let mut all = vec![
        "explain",
        "--config",
        "tests/fixtures/policy-ops/explain.yaml",
        "--at",
        "2026-11-30T10:00:00Z",
    ];
    all.extend_from_slice(args);
    let o = meshguard(&all);
    assert_eq!(
        o.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let path = root().join("cli/tests/golden").join(format!("{name}.txt"));
    let out = stdout(&o);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &out).expect("write golden");
    }
    let want = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(out, want, "explain {name} differs from {}", path.display());
}

const AGENT: &str = r#"{"sub":"agent-s","trust_tier":"verified"}"#;

#[test]
fn explain_a_denied_request() {
    golden(
        "explain_denied",
        &["--claims", AGENT, "--action", "delete:tickets"],
        1,
    );
}

#[test]
fn explain_a_request_denied_by_a_false_condition() {
    golden(
        "explain_condition",
        &[
            "--claims",
            AGENT,
            "--action",
            "write:email",
            "--header",
            "x-recipient-domain=evil.example",
        ],
        1,
    );
}

#[test]
fn explain_a_request_allowed_by_a_grant() {
    golden(
        "explain_grant",
        &[
            "--claims",
            AGENT,
            "--action",
            "payments:refund",
            "--resource",
            "order-42",
        ],
        0,
    );
}

#[test]
fn explain_a_rate_limited_request() {
    golden(
        "explain_rate_limited",
        &[
            "--claims",
            AGENT,
            "--action",
            "read:search",
            "--repeat",
            "3",
        ],
        1,
    );
}

/// `meshguard.inputs` (what replay re-decides from): the names the conditions read, with
/// the values seen; `audit.redact` hides values; a long value is not recorded.
#[test]
fn audit_events_carry_the_condition_inputs_redacted_as_configured() {
    let dir = std::env::temp_dir().join(format!("mg-inputs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let base = std::fs::read_to_string(root().join("tests/fixtures/policy-ops/explain.yaml"))
        .expect("fixture");
    let plain = dir.join("plain.yaml");
    std::fs::write(&plain, &base).expect("write");
    let redacted = dir.join("redacted.yaml");
    std::fs::write(
        &redacted,
        format!("{base}\naudit:\n  redact: [\"request.headers.*\"]\n"),
    )
    .expect("write");
    let long = "x".repeat(300);
    let inputs = |config: &Path, domain: &str| -> Value {
        let o = meshguard(&[
            "check",
            "--config",
            config.to_str().expect("utf-8 path"),
            "--claims",
            AGENT,
            "--action",
            "write:email",
            "--header",
            &format!("x-recipient-domain={domain}"),
            "--at",
            "2026-11-30T10:00:00Z",
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).expect("check prints JSON");
        serde_json::from_str(v["meshguard.inputs"].as_str().expect("inputs recorded"))
            .expect("inputs are JSON")
    };
    assert_eq!(
        inputs(&plain, "customer.example"),
        serde_json::json!({"request.headers.x-recipient-domain": "customer.example", "time.hour": 10})
    );
    assert_eq!(
        inputs(&redacted, "customer.example"),
        serde_json::json!({"request.headers.x-recipient-domain": {"$redacted": true}, "time.hour": 10})
    );
    assert_eq!(
        inputs(&plain, &long)["request.headers.x-recipient-domain"],
        serde_json::json!({"$truncated": true})
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cases with `tool` and `context` go through the filter's body phase (JSON-RPC
/// `tools/call`), so argument conditions decide as in the filter.
#[test]
fn mcp_cases_decide_on_their_arguments() {
    let o = meshguard(&[
        "test",
        "--format",
        "json",
        "tests/fixtures/policy-ops/mcp.test.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["passed"], 3);
    assert_eq!(v["cases"][0]["actual"]["rule"], "customers-only");
    assert_eq!(v["cases"][1]["actual"]["decision"], "deny");
}
