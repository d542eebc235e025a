"""A2A governance end to end (README "A2A"): JSON-RPC on ``actions.a2a.paths`` becomes
``a2a:<Method>`` in the v1.0 spelling, the v0.3 names map to the same actions, params are
``context.*``, delegation chains decide, denials are JSON-RPC errors with the request's
id. The upstream is a JSON-RPC echo (tests/harness/mcp.py), which records what arrived.
Policies: tests/harness/mcp_policies.py (``a2a-agents``)."""

from __future__ import annotations

import pytest

from harness import keys, mcp
from harness.mcp_policies import A2A_PATH, TIER


AGENT = "a2a-agent"
CANCEL_REASON = "Agents may not cancel tasks"


def _message(text: str) -> dict:
    return {"message": {"role": "user", "messageId": "m-1", "parts": [{"kind": "text", "text": text}]}}


def _post(mcp_stack, token, message):
    raw = mcp.RawMcp(mcp_stack.port("rpc"), token, path=A2A_PATH)
    raw.extra_headers = {"a2a-version": "1.0"}
    return raw.post(message)


def _answer(resp) -> dict:
    assert resp.status == 200, resp
    (answer,) = mcp.parse_messages(resp)
    assert answer["jsonrpc"] == "2.0"
    return answer


@pytest.mark.parametrize("method", ["SendMessage", "message/send"])
def test_send_message_allowed_in_either_spelling(mcp_stack, tokens, collector, method):
    resp = _post(mcp_stack, tokens.token(AGENT, TIER), mcp.request("s-1", method, _message("hello")))
    answer = _answer(resp)
    assert answer["id"] == "s-1" and answer["result"]["echo"]["method"] == method, answer
    assert mcp_stack.echo.methods(resp.request_id) == [(method, "s-1")]
    assert answer["result"]["headers"]["x-meshguard-action"] == "a2a:SendMessage"
    event = collector.by_request_id(resp.request_id)["attributes"]
    assert event["meshguard.action"] == "a2a:SendMessage" and event["meshguard.decision"] == "allow", event


@pytest.mark.parametrize("method", ["CancelTask", "tasks/cancel"])
def test_cancel_task_denied_in_either_spelling(mcp_stack, tokens, collector, method):
    resp = _post(mcp_stack, tokens.token(AGENT, TIER), mcp.request(77, method, {"id": "task-1"}))
    answer = _answer(resp)
    assert answer["id"] == 77 and "result" not in answer, answer
    assert CANCEL_REASON in answer["error"]["message"], answer
    data = answer["error"]["data"]
    assert (data["decision"], data["policy"], data["rule"]) == ("deny", "a2a-agents", "no-cancel"), data
    assert "traceId" in data
    assert mcp_stack.echo.received(resp.request_id) == []
    event = collector.by_request_id(resp.request_id)["attributes"]
    assert event["meshguard.action"] == "a2a:CancelTask" and event["meshguard.decision"] == "deny", event


def test_unruled_method_is_denied_by_default(mcp_stack, tokens):
    resp = _post(mcp_stack, tokens.token(AGENT, TIER), mcp.request(5, "SendStreamingMessage", _message("x")))
    answer = _answer(resp)
    assert answer["id"] == 5 and "error" in answer and answer["error"]["data"]["decision"] == "deny", answer
    assert mcp_stack.echo.received(resp.request_id) == []


@pytest.mark.parametrize("chain,allowed", [
    # Every agent of the chain is a verified agent: the ceiling holds.
    ([("planner", "verified")], True),
    # An untrusted agent along the chain lowers the effective tier below the policy's.
    ([("scraper", "untrusted")], False),
    ([("scraper", "untrusted"), ("planner", "verified")], False),
])
def test_delegation_chain_decides(mcp_stack, tokens, chain, allowed):
    token = tokens.token("orchestrator", TIER, act=keys.delegation(*chain))
    resp = _post(mcp_stack, token, mcp.request("d-1", "message/send", _message("delegated")))
    answer = _answer(resp)
    assert answer["id"] == "d-1"
    if allowed:
        assert answer["result"]["echo"]["method"] == "message/send", answer
        assert mcp_stack.echo.methods(resp.request_id) == [("message/send", "d-1")]
    else:
        assert answer["error"]["data"]["decision"] == "deny", answer
        assert mcp_stack.echo.received(resp.request_id) == []


def test_unauthenticated_a2a_never_reaches_upstream(mcp_stack):
    resp = _post(mcp_stack, None, mcp.request(1, "SendMessage", _message("anon")))
    assert resp.status == 401, resp
    assert mcp_stack.echo.received(resp.request_id) == []
