"""Rate limits (issue 10): ``rate_limits: [{name, agents, action, limit}]`` counted per
agent per limit across every worker VM of one Envoy (shared data with compare-and-swap),
so the limit holds under parallel load on two workers. Over the limit: 429 with an
integer ``Retry-After`` and the policy-denial body shape (``decision: rate_limited``),
audited as ``rate_limited``; in audit mode recorded but not enforced.

The bounds below follow from the algorithm the README documents ("Agent controls"):
GCRA, N requests back to back from a fresh budget, then one every P/N, so a fresh agent
is admitted at most ``N + N*T/P`` requests over any stretch T, and any window of length
P admits at most 2N. `ALGORITHM = "fixed-window"` switches to the bounds of a
fixed-window counter (N per window touched) should the implementation change.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from harness import expect, policies
from harness.client import MeshClient, Response

# Written against the README/issue-10 contract ahead of the filter's support.

LIMIT_NAME = "five-per-second"
N = 5
PERIOD_S = 1.0
PARALLEL = 50
ALGORITHM = "gcra"
# The most requests one window of PERIOD_S may admit.
WINDOW_MAX = {"gcra": 2 * N, "fixed-window": N}[ALGORITHM]

RULES = [
    {"name": "reads", "action": "read:*", "effect": "allow"},
    {"name": "lists", "action": "list:*", "effect": "allow"},
]
RATE_LIMITS = [{"name": LIMIT_NAME, "action": "read:*", "limit": f"{N}/s"}]


@pytest.fixture(scope="module")
def deployment(request, launch, keyring):
    enforce = policies.controls_config(keyring.jwks, RULES, rate_limits=RATE_LIMITS)
    audit = policies.controls_config(keyring.jwks, RULES, mode="audit", rate_limits=RATE_LIMITS)
    return launch(request, "rate-limits", {"enforce": policies.as_json(enforce), "audit": policies.as_json(audit)},
                  concurrency=2)


def agent() -> str:
    """A fresh agent per test: counters are per agent, so tests do not share budgets."""
    return f"rl-{uuid.uuid4().hex[:12]}"


@dataclass
class Timed:
    start: float
    end: float
    resp: Response


def fire(client: MeshClient, token: str, count: int, action: str = "read:orders") -> list[Timed]:
    """`count` requests released together from `count` threads (one connection each)."""
    barrier = threading.Barrier(count)

    def one(_: int) -> Timed:
        barrier.wait()
        start = time.monotonic()
        resp = client.call(token, action=action)
        return Timed(start, time.monotonic(), resp)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def allowed_bound(elapsed_s: float) -> int:
    """The most requests a conforming limiter admits to a fresh agent over `elapsed_s`
    (measured from the first request sent to the last answer, which spans every
    decision). Two workers each counting on their own would admit about twice this."""
    if ALGORITHM == "gcra":
        # a full budget of N, refilled at N per period; +1 for a refill landing exactly
        # on the measurement's edge
        return N + math.floor(N * elapsed_s / PERIOD_S) + 1
    # N in every window the stretch touches (it can straddle one more boundary)
    return N * (math.floor(elapsed_s / PERIOD_S) + 2)


def max_in_any_window(timed: list[Timed]) -> int:
    """The largest number of allowed requests that certainly were decided within one
    window of PERIOD_S (sent and answered inside it): a lower bound of the true count,
    so asserting on it cannot fail spuriously under load."""
    ok = sorted((t for t in timed if t.resp.status == 200), key=lambda t: t.start)
    return max((sum(1 for t in ok if w.start <= t.start and t.end < w.start + PERIOD_S) for w in ok), default=0)


def test_limit_holds_across_two_workers_under_parallel_load(deployment, tokens):
    client = deployment.clients["enforce"]
    before = deployment.envoy.connections_per_worker(client.port)
    assert len(before) == 2, f"expected two workers' listener stats, got {before}"
    timed = fire(client, tokens.token(agent(), "verified"), PARALLEL)
    after = deployment.envoy.connections_per_worker(client.port)
    assert all(a > b for a, b in zip(after, before)), f"both workers must take connections: {before} -> {after}"

    statuses = [t.resp.status for t in timed]
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    allowed = statuses.count(200)
    elapsed = max(t.end for t in timed) - min(t.start for t in timed)
    assert allowed >= 1, "a fresh agent's first request is within any limit"
    assert allowed <= allowed_bound(elapsed), f"{allowed} of {PARALLEL} allowed in {elapsed:.2f}s"
    assert max_in_any_window(timed) <= WINDOW_MAX
    limited = [t.resp for t in timed if t.resp.status == 429]
    assert len(limited) >= PARALLEL - allowed_bound(elapsed)
    for resp in limited:
        expect.rate_limited(resp, limit=LIMIT_NAME)


def test_sustained_load_is_held_to_the_rate(deployment, tokens):
    """Ten clients hammer for ~2.5 s: the total is bounded by the rate, and the limiter
    keeps admitting as time passes (it is a rate, not a quota)."""
    client = deployment.clients["enforce"]
    token = tokens.token(agent(), "verified")
    stop_at = time.monotonic() + 2.5
    lock = threading.Lock()
    timed: list[Timed] = []

    def hammer() -> None:
        while time.monotonic() < stop_at:
            start = time.monotonic()
            resp = client.call(token, action="read:orders")
            with lock:
                timed.append(Timed(start, time.monotonic(), resp))

    threads = [threading.Thread(target=hammer) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    allowed = sum(1 for t in timed if t.resp.status == 200)
    elapsed = max(t.end for t in timed) - min(t.start for t in timed)
    assert {t.resp.status for t in timed} <= {200, 429}
    assert allowed <= allowed_bound(elapsed), f"{allowed} of {len(timed)} allowed in {elapsed:.2f}s"
    assert max_in_any_window(timed) <= WINDOW_MAX
    assert allowed > N, f"only {allowed} allowed in {elapsed:.2f}s: the budget never refilled"
    assert len(timed) - allowed > 0, "the load exceeded the limit, so some requests were refused"


def test_burst_then_429_with_a_truthful_retry_after(deployment, tokens, upstream, collector):
    client = deployment.clients["enforce"]
    who = agent()
    token = tokens.token(who, "verified")
    first = [client.call(token, action="read:orders") for _ in range(N)]
    for resp in first:  # a fresh agent's first N requests are always within N/s
        expect.forwarded(resp, agent=who, tier="verified", action="read:orders")
    refused = None
    for _ in range(4 * N):  # keep asking until refused (the budget refills over time)
        resp = client.call(token, action="read:orders")
        if resp.status != 200:
            refused = resp
            break
    assert refused is not None, "never refused"
    body, retry_after = expect.rate_limited(refused, limit=LIMIT_NAME)
    assert retry_after <= math.ceil(PERIOD_S), f"Retry-After {retry_after}s for a {N}/s limit"
    assert not upstream.received(refused.request_id)
    attrs = collector.by_request_id(refused.request_id)["attributes"]
    assert attrs["meshguard.decision"] == "rate_limited"
    assert attrs["meshguard.enforced"] is True
    assert attrs["meshguard.rule"] == LIMIT_NAME
    assert attrs["http.response.status_code"] == 429
    # Retry-After tells the truth: waiting that long is enough.
    time.sleep(retry_after)
    expect.forwarded(client.call(token, action="read:orders"), agent=who, tier="verified", action="read:orders")


def test_counters_are_per_agent_and_per_action(deployment, tokens):
    client = deployment.clients["enforce"]
    busy = tokens.token(agent(), "verified")
    statuses = [t.resp.status for t in fire(client, busy, 3 * N)]
    assert 429 in statuses
    # another agent has its own budget, and an action outside the limit is not counted
    other = tokens.token(agent(), "verified")
    assert [client.call(other, action="read:orders").status for _ in range(N)] == [200] * N
    assert [client.call(busy, action="list:orders").status for _ in range(2 * N)] == [200] * (2 * N)


# Audit mode records the would-be refusal without enforcing it (README "Audit events":
# `meshguard.decision` is would_deny; the rule names the limit, the reason says why).
AUDIT_MODE = {"meshguard.decision": "would_deny", "meshguard.enforced": False, "meshguard.rule": LIMIT_NAME,
              "meshguard.mode": "audit"}
# `meshguard.effect`, the effect before the mode applied: a refusal by a limit is a deny.
AUDIT_MODE_EFFECTS = ("deny", "rate_limited")


def test_audit_mode_records_but_does_not_enforce(deployment, tokens, upstream, collector):
    client = deployment.clients["audit"]
    timed = fire(client, tokens.token(agent(), "verified"), 3 * N)
    assert [t.resp.status for t in timed] == [200] * (3 * N), "audit mode never refuses"
    decisions = [t.resp.upstream_headers.get("x-meshguard-decision") for t in timed]
    would = [t.resp for t, d in zip(timed, decisions) if d == "would_deny"]
    elapsed = max(t.end for t in timed) - min(t.start for t in timed)
    assert len(would) >= 3 * N - allowed_bound(elapsed), decisions
    assert set(decisions) <= {"allow", "would_deny"}, decisions
    for resp in would:
        assert upstream.received(resp.request_id)
        attrs = collector.by_request_id(resp.request_id)["attributes"]
        assert {k: attrs.get(k) for k in AUDIT_MODE} == AUDIT_MODE
        assert attrs["meshguard.effect"] in AUDIT_MODE_EFFECTS, attrs
        assert "rate limit" in attrs["meshguard.reason"], attrs
