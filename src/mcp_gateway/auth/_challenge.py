"""What a client is told: the 401/403 challenges (RFC 6750 §3, MCP authorization) with their
JSON-RPC error bodies, and the protected resource metadata document (RFC 9728). No I/O."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from mcp_gateway.protocol import ErrorCode, RequestId, error_response

WELL_KNOWN = "/.well-known/oauth-protected-resource"
JSON_CONTENT = ("content-type", "application/json")


@dataclass(frozen=True, slots=True)
class Refusal:
    """An HTTP answer that refuses a request: status, headers, JSON-RPC error body."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def metadata_path(resource: str) -> str:
    """RFC 9728 §3.1: the well-known path inserted between the resource's host and its path
    (`https://h/mcp` → `/.well-known/oauth-protected-resource/mcp`)."""
    path = urlsplit(resource).path.rstrip("/")
    return WELL_KNOWN + path


def metadata_url(resource: str) -> str:
    parts = urlsplit(resource)
    return urlunsplit((parts.scheme, parts.netloc, metadata_path(resource), "", ""))


def metadata_document(
    resource: str, authorization_servers: Iterable[str], scopes_supported: Iterable[str]
) -> bytes:
    document = {
        "resource": resource,
        "authorization_servers": list(authorization_servers),
        "scopes_supported": sorted(scopes_supported),
        "bearer_methods_supported": ["header"],
        "resource_name": "mcp-gateway",
    }
    return json.dumps(document).encode()


def _challenge(resource: str, **params: str) -> str:
    # Values are ours (fixed reasons, scope tokens, a URL): no quote or backslash to escape.
    parts = [f'{name}="{value}"' for name, value in params.items()]
    parts.append(f'resource_metadata="{metadata_url(resource)}"')
    return "Bearer " + ", ".join(parts)


def unauthorized(request_id: RequestId | None, resource: str, reason: str | None) -> Refusal:
    """401: no token (`reason` None: the bare challenge, RFC 6750 §3.1 says no error code then),
    or an invalid one (`invalid_token` and why)."""
    if reason is None:
        header = _challenge(resource)
        message = "Unauthorized: a bearer token is required"
    else:
        header = _challenge(resource, error="invalid_token", error_description=reason)
        message = f"Unauthorized: {reason}"
    body = error_response(request_id, ErrorCode.INVALID_REQUEST, message)
    return Refusal(401, (JSON_CONTENT, ("www-authenticate", header)), body)


def forbidden(
    request_id: RequestId | None, resource: str, what: str | None, scopes: Iterable[str]
) -> Refusal:
    """403 `insufficient_scope`, naming the scopes that would do (the client may step up)."""
    scope = " ".join(sorted(scopes))
    params = {"error": "insufficient_scope"}
    if scope:
        params["scope"] = scope
    header = _challenge(resource, **params)
    target = f" for {what[:200]!r}" if what else ""
    needs = f" (needs scope: {scope})" if scope else ""
    body = error_response(
        request_id, ErrorCode.INVALID_REQUEST, f"Forbidden: insufficient scope{target}{needs}"
    )
    return Refusal(403, (JSON_CONTENT, ("www-authenticate", header)), body)
