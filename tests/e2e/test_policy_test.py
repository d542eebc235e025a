"""`meshguard test --junit`: the JUnit XML a CI system reads, checked with a JUnit parser
(PyPI junitparser), for a passing run over the example policy tests and a failing one."""

from __future__ import annotations

import subprocess

from junitparser import Failure, JUnitXml

from harness.cli import REPO, require


def run_junit(tmp_path, *paths):
    out = tmp_path / "junit.xml"
    proc = subprocess.run([require(), "test", "--junit", out, *paths], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    return proc, JUnitXml.fromfile(str(out))


def cases(xml):
    return [(suite.name, case) for suite in xml for case in suite]


def test_example_policy_tests_as_junit(tmp_path):
    proc, xml = run_junit(tmp_path, "envoy/policy-tests", "istio/envoyfilter/plugin-config.test.yaml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    all_cases = cases(xml)
    assert len({s for s, _ in all_cases}) == 4
    assert len(all_cases) == xml.tests == 22
    assert xml.failures == 0
    assert all(case.is_passed for _, case in all_cases)


def test_a_failing_case_is_a_junit_failure_with_expected_and_actual(tmp_path):
    proc, xml = run_junit(tmp_path, "tests/fixtures/policy-ops/failing.test.yaml")
    assert proc.returncode == 1
    assert xml.tests == 2 and xml.failures == 1
    by_name = {case.name: case for _, case in cases(xml)}
    assert by_name["reads are allowed"].is_passed
    failed = by_name["wrongly expects delete to be allowed"]
    assert not failed.is_passed
    (failure,) = [r for r in failed.result if isinstance(r, Failure)]
    assert 'decision: expected "allow", got "deny"' in failure.message
    assert "expected: decision=allow rule=rules[0]" in failure.text
    assert "actual: decision=deny policy=verified-agent-policy rule=rules[2]" in failure.text
