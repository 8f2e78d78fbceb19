"""Value checks the models share (hosts, URLs, prefixes) and the patterns behind them."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

# The tool-name alphabet of the MCP spec (names are 1-128 chars of A-Za-z0-9_.-); a prefix is the
# start of such a name, so it uses the same characters and leaves room for at least one more.
_PREFIX_RE = re.compile(r"[A-Za-z0-9_.\-]{0,127}")
# RFC 1123 host labels; an HTTPRoute hostname may also start with a `*.` wildcard label.
_LABEL_RE = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_SERVER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@-]{0,252}")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# RFC 9110 credentials: an auth-scheme token, one space, then the token68 or parameters.
_AUTH_SCHEME_RE = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+ +\S")

Transport = Literal["http", "stdio", "websocket"]
_SCHEMES_FOR_TRANSPORT: dict[str, tuple[str, ...]] = {
    "http": ("http", "https"),
    "websocket": ("ws", "wss"),
}


# --------------------------------------------------------------------------------------------
# value checks shared by the models


def _check_host_port(value: str) -> str:
    """`host:port` for a listening socket; IPv6 hosts in brackets (`[::1]:8080`)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("["):
        if not host.endswith("]") or len(host) < 3:
            raise ValueError(f"malformed IPv6 host in {value!r}")
    elif ":" in host:
        raise ValueError(f"an IPv6 host needs brackets: [{host}]:{port}")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"port must be a number 0-65535, got {port!r}")
    return value


def shown_url(value: str) -> str:
    """The URL as we may print it: any `user:password@` replaced, since messages get logged."""
    scheme, sep, rest = value.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return value


def _check_url(value: str, schemes: Iterable[str]) -> str:
    allowed = tuple(schemes)
    shown = shown_url(value)
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in allowed:
        scheme = parts.scheme or "none"
        raise ValueError(f"scheme must be {' or '.join(allowed)}, got {scheme} in {shown!r}")
    if not parts.hostname:
        raise ValueError(f"URL has no host: {shown!r}")
    if port == 0:
        raise ValueError(f"URL port 0 is not connectable: {shown!r}")
    if any(ch.isspace() for ch in value):
        raise ValueError("URL contains whitespace")
    return value


def _check_hostname(value: str) -> str:
    name = value[2:] if value.startswith("*.") else value
    if len(value) > 253 or not name:
        raise ValueError(f"not a valid hostname: {value!r}")
    if not all(_LABEL_RE.fullmatch(label) for label in name.rstrip(".").split(".")):
        raise ValueError(
            f"not a valid hostname: {value!r} (labels of A-Z a-z 0-9 -, no port, no scheme)"
        )
    return value


def is_valid_prefix(prefix: str) -> bool:
    return _PREFIX_RE.fullmatch(prefix) is not None


def yaml_kind(value: Any) -> str:
    """How a config value reads to its author (\"a list\", \"nothing (null)\")."""
    if value is None:
        return "nothing (null)"
    for types, name in (
        (bool, "a boolean"),
        (int, "a whole number"),
        (float, "a decimal number"),
        (str, "a string"),
        (list, "a list"),
        (Mapping, "a mapping"),
    ):
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"  # YAML dates and timestamps
