"""The plugin configuration as istiod renders it (compact, sorted-key JSON with Go-style
numbers and ``jwks`` as an object) works byte for byte in a real Envoy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import expect, keys
from harness.policies import canonical_json

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONFIG_TEXT = (FIXTURES / "istiod-plugin-config.json").read_text()
CONFIG = json.loads(CONFIG_TEXT)
ISSUER = CONFIG["identity"]["issuers"][0]


def test_fixture_is_in_istiod_canonical_form():
    assert CONFIG_TEXT == canonical_json(CONFIG)
    # Go float64 prints integral numbers without a decimal point
    assert '"clock_skew_seconds":60,' in CONFIG_TEXT and '"flush_interval_ms":200,' in CONFIG_TEXT
    assert isinstance(ISSUER["jwks"], dict) and isinstance(CONFIG["policies"], list)
    # Go's encoder escapes < > & in strings: the condition's ">=" arrives as "\u003e="
    assert "\\u003e=" in CONFIG_TEXT and ">=" not in CONFIG_TEXT


@pytest.fixture(scope="module")
def istiod(request, launch):
    return launch(request, "istiod", {"enforce": CONFIG_TEXT})


@pytest.fixture(scope="module")
def fixture_tokens() -> keys.TokenFactory:
    kid = ISSUER["jwks"]["keys"][0]["kid"]
    key = keys.load_pem(str(FIXTURES / "istiod-test-key.pem"), "ES256", kid)
    assert key.jwk == ISSUER["jwks"]["keys"][0], "the committed key does not match the fixture's JWKS"
    return keys.TokenFactory(key, issuer=ISSUER["issuer"], audience=ISSUER["audiences"][0])


def test_istiod_config_allows(istiod, fixture_tokens, collector):
    resp = istiod.client.call(fixture_tokens.token("mesh-agent", "verified"), path="/v1/orders/1")
    expect.forwarded(resp, agent="mesh-agent", tier="verified", action="read:orders")
    assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.rule"] == "rules[0]"


def test_istiod_config_denies(istiod, fixture_tokens):
    resp = istiod.client.call(fixture_tokens.token("mesh-agent", "verified"), method="DELETE",
                              path="/v1/orders/1")
    expect.denied(resp, policy="verified-agent-policy", rule="rules[2]",
                  reason="Verified agents cannot delete resources")


def test_istiod_config_rejects_tokens_of_other_keys(istiod, tokens):
    resp = istiod.client.call(tokens.token("mesh-agent", "verified"), path="/v1/orders/1")
    expect.identity_failure(resp, "unknown_issuer")
