"""Go's net/url parsing, as far as Kubernetes' CEL `isURL()` and `url()` need it.

The WasmPlugin CRD checks `spec.url` with `isURL(self) ? url(self).getScheme() in [...]`.
Kubernetes implements isURL as "url.ParseRequestURI succeeds" and url() as ParseRequestURI
followed by url.Parse. Python's urllib accepts far more (and splits differently), so the
calibration examples (`"#%blah$#@"` must be rejected, `"test"` accepted via the
`"http://" + self` branch) only come out right with Go's rules, ported here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

_HOST_EXTRA = set("!$&'()*+,;=:[]<>\"")
_USERINFO_EXTRA = set("-._:~!$&'()*+,;=%@")
_SCHEME_TAIL = set("0123456789+-.")


class URLError(ValueError):
    """What Go's parser would return as an error."""


@dataclass
class URL:
    """The parts of Go's url.URL that CEL exposes."""

    scheme: str = ""
    opaque: str = ""
    host: str = ""
    path: str = ""
    raw_query: str = ""
    fragment: str = ""

    @property
    def hostname(self) -> str:
        host = self.host
        if host.startswith("["):
            end = host.find("]")
            return host[1:end] if end >= 0 else host[1:]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def port(self) -> str:
        host = self.host
        colon = host.rfind(":")
        if colon < 0 or (host.startswith("[") and colon < host.find("]")):
            return ""
        return host[colon + 1:]


def _is_alpha(c: str) -> bool:
    return ("a" <= c <= "z") or ("A" <= c <= "Z")


def _is_hex(c: str) -> bool:
    return c in "0123456789abcdefABCDEF"


def _has_ctl(s: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in s)


def _get_scheme(raw: str) -> tuple[str, str]:
    for i, c in enumerate(raw):
        if _is_alpha(c):
            continue
        if c in _SCHEME_TAIL:
            if i == 0:
                return "", raw
            continue
        if c == ":":
            if i == 0:
                raise URLError("missing protocol scheme")
            return raw[:i], raw[i + 1:]
        return "", raw  # an invalid character: no scheme at all
    return "", raw


def _should_escape_in_host(c: str) -> bool:
    if _is_alpha(c) or c.isdigit() or c in "-_.~" or c in _HOST_EXTRA:
        return False
    return True


def _unescape(s: str, *, host: bool = False) -> str:
    """Validates %-escapes (and, in a host, the characters) like Go's unescape; returns s."""
    i = 0
    while i < len(s):
        c = s[i]
        if c == "%":
            if i + 2 >= len(s) or not _is_hex(s[i + 1]) or not _is_hex(s[i + 2]):
                raise URLError(f"invalid URL escape {s[i:i + 3]!r}")
            if host and int(s[i + 1], 16) < 8 and s[i:i + 3] != "%25":
                raise URLError(f"invalid URL escape {s[i:i + 3]!r}")
            i += 3
            continue
        if host and ord(c) < 0x80 and _should_escape_in_host(c):
            raise URLError(f"invalid character {c!r} in host name")
        i += 1
    return s


def _valid_optional_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all("0" <= c <= "9" for c in port[1:]))


def _parse_host(host: str) -> str:
    if host.startswith("["):
        end = host.rfind("]")
        if end < 0:
            raise URLError("missing ']' in host")
        if not _valid_optional_port(host[end + 1:]):
            raise URLError(f"invalid port {host[end + 1:]!r} after host")
        literal = host[1:end]
        zone = literal.find("%25")
        address = literal if zone < 0 else literal[:zone]
        try:
            ipaddress.IPv6Address(address)
        except ValueError as e:
            raise URLError(f"invalid IPv6 host {literal!r}") from e
    else:
        colon = host.rfind(":")
        if colon >= 0 and not _valid_optional_port(host[colon:]):
            raise URLError(f"invalid port {host[colon:]!r} after host")
    return _unescape(host, host=True)


def _parse_authority(authority: str) -> str:
    at = authority.rfind("@")
    host = _parse_host(authority[at + 1:] if at >= 0 else authority)
    if at >= 0:
        userinfo = authority[:at]
        if not all(_is_alpha(c) or c.isdigit() or c in _USERINFO_EXTRA for c in userinfo):
            raise URLError("net/url: invalid userinfo")
        _unescape(userinfo)
    return host


def _parse(raw: str, via_request: bool) -> URL:
    if _has_ctl(raw):
        raise URLError("net/url: invalid control character in URL")
    if raw == "" and via_request:
        raise URLError("empty url")
    url = URL()
    if raw == "*":
        url.path = "*"
        return url
    scheme, rest = _get_scheme(raw)
    url.scheme = scheme.lower()
    if rest.endswith("?") and rest.count("?") == 1:
        rest = rest[:-1]
    elif "?" in rest:
        rest, url.raw_query = rest.split("?", 1)
    if not rest.startswith("/"):
        if url.scheme:
            url.opaque = rest
            return url
        if via_request:
            raise URLError("invalid URI for request")
        if ":" in rest.split("/", 1)[0]:
            raise URLError("first path segment in URL cannot contain colon")
    if (url.scheme or (not via_request and not rest.startswith("///"))) and rest.startswith("//"):
        authority, rest = rest[2:], ""
        slash = authority.find("/")
        if slash >= 0:
            authority, rest = authority[:slash], authority[slash:]
        url.host = _parse_authority(authority)
    url.path = _unescape(rest)
    return url


def parse_request_uri(raw: str) -> URL:
    """Go's url.ParseRequestURI: an absolute URI or an absolute path, no fragment."""
    return _parse(raw, via_request=True)


def parse(raw: str) -> URL:
    """Go's url.Parse: any URI reference, fragment split off first."""
    base, _, fragment = raw.partition("#")
    url = _parse(base, via_request=False)
    url.fragment = _unescape(fragment)
    return url


def is_url(raw: str) -> bool:
    """Kubernetes CEL isURL(): ParseRequestURI succeeds."""
    try:
        parse_request_uri(raw)
        return True
    except URLError:
        return False


def to_url(raw: str) -> URL:
    """Kubernetes CEL url(): ParseRequestURI must succeed, the value is url.Parse's."""
    parse_request_uri(raw)
    return parse(raw)
