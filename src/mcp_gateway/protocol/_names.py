"""Tool name rules and the server prefixes the gateway puts in front of upstream tool names.

A tool name is 1-128 characters of ``A-Za-z0-9_.-`` (MCP 2025-11-25). A prefix uses the same
alphabet and may be empty; it must leave room for at least one character of the tool's own
name, so it is at most 127 characters. Applying a prefix must give a valid tool name, which
is what makes ``strip_prefix(p, apply_prefix(p, n)) == n`` hold for every valid pair.
"""

from __future__ import annotations

import re

MAX_TOOL_NAME_LENGTH = 128
_TOOL_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]{0,127}")


def is_valid_tool_name(name: object) -> bool:
    return isinstance(name, str) and _TOOL_NAME.fullmatch(name) is not None


def is_valid_prefix(prefix: object) -> bool:
    return isinstance(prefix, str) and _PREFIX.fullmatch(prefix) is not None


def apply_prefix(prefix: str, name: str) -> str:
    """The gateway-facing name of an upstream tool. Raises ValueError if either part is
    invalid or the result would be longer than 128 characters."""
    if not is_valid_prefix(prefix):
        raise ValueError(f"invalid tool prefix: {prefix!r}")
    if not is_valid_tool_name(name):
        raise ValueError(f"invalid tool name: {name!r}")
    prefixed = prefix + name
    if len(prefixed) > MAX_TOOL_NAME_LENGTH:
        raise ValueError(f"prefixed tool name longer than {MAX_TOOL_NAME_LENGTH}: {prefixed!r}")
    return prefixed


def strip_prefix(prefix: str, name: str) -> str | None:
    """The upstream's own name for a gateway tool name, or None if ``name`` does not carry
    ``prefix`` followed by a valid tool name."""
    if not is_valid_prefix(prefix) or not is_valid_tool_name(name):
        return None
    if not name.startswith(prefix) or len(name) == len(prefix):
        return None
    return name[len(prefix) :]
