"""Rate limits as Envoy enforces them: `gateway.rate_limits` rendered into the route
configuration (RDS) for Envoy's `local_ratelimit` filter. No I/O.

Where the limits act (docs/router.md, "Rate limits"): the filter sits after the Lua fast path and
the ext_proc in the HTTP filter chain, so by the time it runs both paths have said, in internal
headers, which session a request belongs to (`x-mcp-session`: the client's gateway token, which
both swap for the backend's in `mcp-session-id`), which tool it calls, as the client named it
(`x-mcp-name`, with `x-mcp-method`), and its JSON-RPC id (`x-mcp-request-id`, raw JSON text).
Client copies of every x-mcp-* header are gone before routing (Envoy's early header mutation),
and the routes remove these three before any upstream or the broker sees the request.

One `LocalRateLimit` for the whole virtual host, in RDS: every route of the host shares its
token buckets (a per-route config would give each route its own, and a session's calls take
several routes: the broker's, each upstream's slow and fast ones), and a reload changes limits
without restarting Envoy (the buckets start full again). Buckets are Envoy's "dynamic
descriptors": one per distinct session or tool, least recently used dropped past `max_buckets`,
shared by all of Envoy's workers (`local_rate_limit_per_downstream_connection: false`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from mcp_gateway.router.decision import (
    METHOD_HEADER,
    NAME_HEADER,
    RATE_LIMITED_HEADER,
    SESSION_KEY_HEADER,
)

if TYPE_CHECKING:
    from mcp_gateway.config import RateLimit, RateLimitSettings

LOCAL_RATELIMIT_FILTER: Final = "envoy.filters.http.local_ratelimit"
LOCAL_RATELIMIT_TYPE: Final = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
# Stats: http_local_rate_limit.<prefix>.{enabled,enforced,rate_limited,ok}.
STAT_PREFIX: Final = "mcp_rate_limits"
SESSION_KEY: Final = "session"
TOOL_RULE_KEY: Final = "tool_rule"
TOOL_KEY: Final = "tool"
# The bucket for requests no limit names (GET, DELETE, initialize): it must exist in a route-level
# config, and never refuses anything (always_consume_default_token_bucket: false besides).
_UNLIMITED: Final = {"max_tokens": 4_294_967_295, "tokens_per_fill": 4_294_967_295, "fill_interval": "1s"}
_ALL: Final = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}


def fnmatch_regex(pattern: str) -> str:
    """A tool pattern (`*` any run, `?` one character, everything else literal: fnmatch without
    classes, config.ToolRateLimit) as an RE2 regex, which Envoy matches against the whole value."""
    return "".join(".*" if c == "*" else "." if c == "?" else _literal(c) for c in pattern)


def _literal(c: str) -> str:
    # RE2 reads a backslash before any punctuation as that character; tool patterns are
    # printable ASCII (config.ToolRateLimit).
    if c.isalnum() or c == "_":
        return c
    return r"\x20" if c == " " else "\\" + c


def _bucket(limit: RateLimit) -> dict[str, Any]:
    return {"max_tokens": limit.requests, "tokens_per_fill": limit.requests, "fill_interval": f"{limit.per_seconds}s"}


def retry_after_seconds(settings: RateLimitSettings) -> int:
    """What a refused request is told to wait. Envoy's buckets refill evenly (measured: a bucket
    of 4 tokens a 4 s gets one back each second), so a bucket has a token again after
    `per_seconds / requests`; the reply cannot say which limit refused, so the longest of them."""
    limits = ([settings.per_session] if settings.per_session is not None else []) + list(settings.per_tool)
    return max(math.ceil(limit.per_seconds / limit.requests) for limit in limits)


def virtual_host_rate_limits(settings: RateLimitSettings) -> dict[str, Any] | None:
    """The `typed_per_filter_config` entry for the MCP virtual host; None when no limit is set."""
    if not settings.enabled:
        return None
    actions: list[dict[str, Any]] = []
    descriptors: list[dict[str, Any]] = []
    if settings.per_session is not None:
        # Set by the fast path and the router on every POST of a verified session (absent: no
        # descriptor, so not limited: initialize, GET, DELETE, an unknown session).
        actions.append({"actions": [{"request_headers": {"header_name": SESSION_KEY_HEADER, "descriptor_key": SESSION_KEY}}]})
        descriptors.append({"entries": [{"key": SESSION_KEY, "value": ""}], "token_bucket": _bucket(settings.per_session)})
    for index, rule in enumerate(settings.per_tool):
        matches = [
            {"name": METHOD_HEADER, "string_match": {"exact": "tools/call"}},
            {"name": NAME_HEADER, "string_match": {"safe_regex": {"regex": fnmatch_regex(rule.tool)}}},
        ]
        actions.append(
            {
                "actions": [
                    {"header_value_match": {"descriptor_key": TOOL_RULE_KEY, "descriptor_value": str(index), "headers": matches}},
                    {"request_headers": {"header_name": NAME_HEADER, "descriptor_key": TOOL_KEY}},
                ]
            }
        )
        # An empty value: a bucket of its own for each tool name the rule matches.
        descriptors.append(
            {
                "entries": [{"key": TOOL_RULE_KEY, "value": str(index)}, {"key": TOOL_KEY, "value": ""}],
                "token_bucket": _bucket(rule),
            }
        )
    return {
        LOCAL_RATELIMIT_FILTER: {
            "@type": LOCAL_RATELIMIT_TYPE,
            "stat_prefix": STAT_PREFIX,
            "token_bucket": _UNLIMITED,
            "filter_enabled": _ALL,
            "filter_enforced": _ALL,
            "always_consume_default_token_bucket": False,
            "local_rate_limit_per_downstream_connection": False,
            "max_dynamic_descriptors": settings.max_buckets,
            "rate_limits": actions,
            "descriptors": descriptors,
            # The local reply's JSON-RPC body is the connection manager's (envoy/bootstrap.yaml.tmpl,
            # local_reply_config). The header tells the Lua filter and the router that this 429 is
            # Envoy's refusal, theirs to pass on; like every x-mcp-* it never reaches the client.
            "response_headers_to_add": [
                {"header": {"key": "retry-after", "value": str(retry_after_seconds(settings))}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                {"header": {"key": RATE_LIMITED_HEADER, "value": "1"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"},
                # The gateway's session id on the refusal, as on every answer of a session (the
                # broker's carry it; nobody else answers a refused request to the broker).
                {
                    "header": {"key": "mcp-session-id", "value": f"%REQ({SESSION_KEY_HEADER})%"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                },
            ],
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
        }
    }
