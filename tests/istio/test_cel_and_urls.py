"""Kubernetes' CEL environment: Go's URL rules behind isURL()/url() and the CEL
functions Istio's CRD rules use."""

from __future__ import annotations

import pytest

from meshguard_istio import cel, goneturl


@pytest.mark.parametrize("raw, ok", [
    ("http://test", True), ("oci://ghcr.io/meshguard/meshguard-filter:0.1.0", True),
    ("file:///opt/filters/openid.wasm", True), ("/absolute/path", True), ("*", True),
    ("test", False),                      # relative: not a request URI
    ("#%blah$#@", False), ("http://#%blah$#@", False),   # '#' is not allowed in userinfo
    ("http://host:port", False),          # non-numeric port
    ("http://[::1]:80/x", True), ("http://[not-ip]/", False),
    ("http://a b", False),                # space in host
    ("http://ex%41mple.com", False),      # %-escaped ASCII in a host
    ("", False), ("http://x/\x01", False),
])
def test_is_url_follows_go(raw, ok):
    assert goneturl.is_url(raw) is ok


def test_url_parts():
    url = goneturl.to_url("https://user@Example.com:8443/a%20b?q=1#frag")
    assert (url.scheme, url.host, url.hostname, url.port, url.path, url.raw_query, url.fragment) == (
        "https", "Example.com:8443", "Example.com", "8443", "/a%20b", "q=1", "frag")
    assert goneturl.to_url("mailto:someone@example.com").opaque == "someone@example.com"


def test_kubernetes_url_functions_in_cel():
    assert cel.evaluate('url(self).getScheme()', "oci://x/y:1") == "oci"
    assert cel.evaluate('url(self).getHostname()', "http://[::1]:80") == "::1"
    assert cel.evaluate('isURL(self)', "nope") is not None and not cel.evaluate('isURL(self)', "nope")
    with pytest.raises(ValueError, match="URL parse error"):
        cel.evaluate("url(self).getScheme()", "nope")


def test_rule_results():
    rule = {"rule": "self.all(key, !key.contains('*'))", "message": "no wildcards"}
    assert cel.check(rule, {"a": "b"}).ok
    assert cel.check(rule, {"a*": "b"}) == cel.RuleResult(False, "no wildcards")
    assert cel.check({"rule": "self.size() == 0"}, "x").message == "failed rule: self.size() == 0"
    assert cel.check({"rule": "self > 1", "messageExpression": "'got ' + string(self)"}, 0).message == "got 0"
    unknown = cel.check({"rule": "self.isSorted()"}, [1])
    assert not unknown.ok and "evaluation error" in unknown.message
    assert cel.check({"rule": "duration(self) >= duration('1ms')"}, "2ms").ok
    assert cel.is_transition_rule("self == oldSelf")
