"""Gateway sessions: sealed session tokens and the store of backend sessions behind them."""

from mcp_gateway.sessions.tokens import SessionClaims as SessionClaims
from mcp_gateway.sessions.tokens import SessionTokens as SessionTokens
from mcp_gateway.sessions.tokens import derive_key as derive_key
