"""CEL `x-kubernetes-validations` rules, evaluated as the Kubernetes API server does.

cel-python (pure Python) provides the CEL language and its standard functions (has(),
size(), all(), contains(), duration(), ...). Kubernetes adds libraries of its own; the
ones Istio's CRDs use are provided here: the URL library (isURL, url, getScheme,
getHost, getHostname, getPort, getEscapedPath) on top of Go's URL rules (`goneturl`). A
rule calling anything else fails evaluation, which is reported (never silently passed).

Transition rules (those mentioning `oldSelf`) only apply to updates; this checker
validates objects as if they were being created, so it skips them, as the API server
does on create.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes

from . import goneturl


class URLValue:
    """The value url() returns: an opaque object with getter functions."""

    def __init__(self, url: goneturl.URL):
        self.url = url


def _string_arg(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return str(value)


def _url_getter(attribute: str):
    def getter(value: Any) -> celtypes.StringType:
        if not isinstance(value, URLValue):
            raise TypeError("expected a URL (from url())")
        return celtypes.StringType(getattr(value.url, attribute))
    return getter


def _is_url(value: Any) -> celtypes.BoolType:
    return celtypes.BoolType(goneturl.is_url(_string_arg(value)))


def _url(value: Any) -> URLValue | celpy.CELEvalError:
    try:
        return URLValue(goneturl.to_url(_string_arg(value)))
    except goneturl.URLError as e:
        # Returned, not raised: cel-python reports a raised ValueError as "overflow".
        return celpy.CELEvalError(f"URL parse error during conversion from string: {e}")


KUBERNETES_FUNCTIONS = {
    "isURL": _is_url,
    "url": _url,
    "getScheme": _url_getter("scheme"),
    "getHost": _url_getter("host"),
    "getHostname": _url_getter("hostname"),
    "getPort": _url_getter("port"),
    "getEscapedPath": _url_getter("path"),
}

_ENV = celpy.Environment()


@dataclass(frozen=True)
class RuleResult:
    """`ok` when the rule held; otherwise `message` says why (rule message or error)."""

    ok: bool
    message: str = ""


def is_transition_rule(rule: str) -> bool:
    return "oldSelf" in rule


@functools.lru_cache(maxsize=None)
def _program(expression: str):
    return _ENV.program(_ENV.compile(expression), functions=KUBERNETES_FUNCTIONS)


def _short(error: Any) -> str:
    text = str(error.args[0]) if getattr(error, "args", None) else str(error)
    return text if len(text) <= 200 else text[:200] + "..."


def evaluate(expression: str, value: Any) -> Any:
    """The CEL value of `expression` with `self` bound to `value` (JSON-like Python data).
    Raises ValueError when the expression does not compile or evaluate."""
    try:
        result = _program(expression).evaluate({"self": celpy.json_to_cel(value)})
    except celpy.CELParseError as e:
        raise ValueError(f"compilation error: {_short(e)}") from e
    except celpy.CELEvalError as e:
        raise ValueError(f"rule evaluation error: {_short(e)}") from e
    if isinstance(result, celpy.CELEvalError):
        raise ValueError(f"rule evaluation error: {_short(result)}")
    return result


def check(validation: dict, value: Any) -> RuleResult:
    """One x-kubernetes-validations entry against `value` (the node it is declared on)."""
    rule = validation["rule"]
    try:
        result = evaluate(rule, value)
    except ValueError as e:
        return RuleResult(False, str(e))
    if not isinstance(result, celtypes.BoolType):
        return RuleResult(False, f"rule evaluation error: rule {rule!r} did not return a bool")
    if result:
        return RuleResult(True)
    return RuleResult(False, _message(validation, value))


def _message(validation: dict, value: Any) -> str:
    expression = validation.get("messageExpression")
    if expression:
        try:
            text = evaluate(expression, value)
            if isinstance(text, str) and text.strip():
                return str(text)
        except ValueError:
            pass  # Kubernetes falls back to `message` (or the rule) as well
    return validation.get("message") or f"failed rule: {validation['rule']}"
