"""Inbound OAuth 2.1: the gateway as an MCP resource server (docs/auth.md).

Shared by the broker (every request it serves, GET and DELETE included, which skip the router)
and the router (calls it sends straight to upstreams). The parts without I/O — the bearer
token's verification against keys already held, the per-tool policy, the challenges and the
RFC 9728 metadata document — are separate from the one part with I/O: the issuer's key set,
fetched over HTTP (httpx on Trio) and cached.
"""

from mcp_gateway.auth._challenge import Refusal as Refusal
from mcp_gateway.auth._challenge import forbidden as forbidden
from mcp_gateway.auth._challenge import metadata_document as metadata_document
from mcp_gateway.auth._challenge import metadata_path as metadata_path
from mcp_gateway.auth._challenge import metadata_url as metadata_url
from mcp_gateway.auth._challenge import unauthorized as unauthorized
from mcp_gateway.auth._gate import AuthGate as AuthGate
from mcp_gateway.auth._gate import NeedsKeys as NeedsKeys
from mcp_gateway.auth._jwks import JwksCache as JwksCache
from mcp_gateway.auth._policy import Policy as Policy
from mcp_gateway.auth._policy import Principal as Principal
from mcp_gateway.auth._policy import Rule as Rule
from mcp_gateway.auth._policy import requested_name as requested_name
from mcp_gateway.auth._verify import InvalidToken as InvalidToken
from mcp_gateway.auth._verify import bearer_token as bearer_token
from mcp_gateway.auth._verify import verify_token as verify_token
