"""The seed policy (``verified-agent-policy``, committed in envoy/envoy.yaml) decided
through the real Envoy: each rule, the tiers it does not cover, and conditions on the
current UTC hour."""

from __future__ import annotations

import pytest

from harness import expect, keys
from harness.clock import at_stable_hour

POLICY = "verified-agent-policy"


def test_verified_agent_reads_orders(seed, tokens):
    resp = seed.clients["enforce"].call(tokens.token("orders-agent", "verified"), action="read:orders",
                                        resource="orders")
    expect.forwarded(resp, agent="orders-agent", tier="verified", action="read:orders")


def test_verified_agent_cannot_delete(seed, tokens, upstream):
    resp = seed.clients["enforce"].call(tokens.token("orders-agent", "verified"), action="delete:orders",
                                        resource="orders")
    expect.denied(resp, policy=POLICY, rule="rules[2]", reason="Verified agents cannot delete resources",
                  agent="orders-agent", action="delete:orders")
    assert not upstream.received(resp.request_id), "a denied request reached the upstream"


def test_verified_agent_email_only_in_office_hours(seed, tokens, collector):
    """rule allow-email: ``time.hour >= 9 AND time.hour <= 17`` (UTC); otherwise nothing
    allows write:email and the default deny applies."""

    def check(hour: int) -> None:
        resp = seed.clients["enforce"].call(tokens.token("mailer", "verified"), method="POST",
                                            path="/v1/email/send")
        if 9 <= hour <= 17:
            expect.forwarded(resp, agent="mailer", tier="verified", action="write:email")
            assert collector.by_request_id(resp.request_id)["attributes"]["meshguard.rule"] == "allow-email"
        else:
            expect.denied(resp, policy=None, rule=None, action="write:email")

    at_stable_hour(check)


@pytest.mark.parametrize("tier", ["untrusted", "trusted", "privileged", keys.OMIT],
                         ids=["untrusted", "trusted", "privileged", "no-tier-claim"])
def test_tiers_without_a_policy_get_default_deny(seed, tokens, tier):
    """The seed has a policy for verified agents only: every other tier (and a token
    without a tier claim, which is untrusted) falls through to the default deny."""
    resp = seed.clients["enforce"].call(tokens.token("other-agent", tier), action="read:orders")
    body = expect.denied(resp, policy=None, rule=None, agent="other-agent", action="read:orders")
    assert body["reason"], body


def test_unknown_tier_value_is_an_identity_failure(seed, tokens):
    resp = seed.clients["enforce"].call(tokens.token("odd-agent", "godlike"), action="read:orders")
    expect.identity_failure(resp, "unknown_tier")


class TestClockConditions:
    """Deterministic time conditions: the rich configuration's ``clock`` policy allows
    ``clock:eq-H`` iff ``time.hour == H`` and ``clock:ne-H`` iff ``time.hour != H``."""

    @staticmethod
    def _decide(rich, tokens, action):
        return rich.client.call(tokens.token("clock-watcher", "untrusted"), action=action)

    def test_current_hour_matches_equal_and_not_unequal(self, rich, tokens, collector):
        def check(hour: int) -> None:
            resp = self._decide(rich, tokens, f"clock:eq-{hour}")
            expect.forwarded(resp, agent="clock-watcher", tier="untrusted", action=f"clock:eq-{hour}")
            a = collector.by_request_id(resp.request_id)["attributes"]
            assert (a["meshguard.policy"], a["meshguard.rule"]) == ("clock", f"hour-eq-{hour}")
            expect.denied(self._decide(rich, tokens, f"clock:ne-{hour}"), policy=None, rule=None)

        at_stable_hour(check)

    def test_other_hour_matches_unequal_and_not_equal(self, rich, tokens):
        def check(hour: int) -> None:
            other = (hour + 1) % 24
            expect.denied(self._decide(rich, tokens, f"clock:eq-{other}"), policy=None, rule=None)
            resp = self._decide(rich, tokens, f"clock:ne-{other}")
            expect.forwarded(resp, agent="clock-watcher", tier="untrusted", action=f"clock:ne-{other}")

        at_stable_hour(check)
