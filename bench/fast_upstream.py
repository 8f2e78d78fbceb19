"""A fast MCP upstream for measuring proxies: raw ASGI on uvicorn, JSON answers, no SDK.

It answers the Streamable HTTP (2025-11-25) subset a benchmark needs, correctly but with as
little work as possible, so that a proxy in front of it is the bottleneck, not the upstream:

  initialize                 → a session id (random, kept in a set), tools capability
  notifications/*            → 202
  tools/list                 → one tool, `echo`
  tools/call echo            → its `text` argument back as text content
  ping                       → {}
  an unknown session id      → 404 (as an SDK server does after a restart: the gateway replays)
  DELETE                     → ends the session
  GET                        → 405 (no server-initiated stream)

Its own cost is a few tens of microseconds per call with uvloop + httptools, an order of
magnitude below Envoy's and far below the gateway's, which is the point.

    .venv/bin/python bench/fast_upstream.py --port 9000
"""

from __future__ import annotations

import argparse
import json
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PROTOCOL = "2025-11-25"
_JSON = [(b"content-type", b"application/json")]
_TOOLS = {
    "tools": [
        {
            "name": "echo",
            "description": "Echoes its text argument.",
            "inputSchema": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        }
    ]
}


class FastUpstream:
    """The ASGI app. `sessions` is every live session id; `forget()` acts out a restart."""

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.calls = 0

    def forget(self) -> None:
        self.sessions.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method = scope["method"]
        session = _header(scope, b"mcp-session-id")
        if method == "DELETE":
            self.sessions.discard(session or "")
            await _answer(send, 200, b"")
            return
        if method != "POST":
            await _answer(send, 405, b"")
            return
        body = await _body(receive)
        try:
            message = json.loads(body)
        except ValueError:
            await _answer(send, 400, _error(None, -32700, "Parse error"))
            return
        rpc = message.get("method") if isinstance(message, dict) else None
        request_id = message.get("id") if isinstance(message, dict) else None
        if rpc == "initialize":
            new = secrets.token_hex(16)
            self.sessions.add(new)
            result = {
                "protocolVersion": PROTOCOL,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "fast", "version": "1"},
            }
            await _answer(send, 200, _result(request_id, result), [(b"mcp-session-id", new.encode())])
            return
        if session not in self.sessions:
            await _answer(send, 404, _error(request_id, -32600, "Session not found"))
            return
        if request_id is None:  # a notification or a response
            await _answer(send, 202, b"")
            return
        if rpc == "tools/call":
            self.calls += 1
            params = message.get("params") or {}
            if params.get("name") != "echo":
                await _answer(send, 200, _error(request_id, -32602, "Unknown tool"))
                return
            text = str((params.get("arguments") or {}).get("text", ""))
            result = {"content": [{"type": "text", "text": text}], "isError": False}
            await _answer(send, 200, _result(request_id, result))
        elif rpc == "tools/list":
            await _answer(send, 200, _result(request_id, _TOOLS))
        elif rpc == "ping":
            await _answer(send, 200, _result(request_id, {}))
        else:
            await _answer(send, 200, _error(request_id, -32601, "Method not found"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def _result(request_id: Any, result: Any) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode()


def _error(request_id: Any, code: int, message: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}).encode()


async def _answer(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    all_headers = [*(_JSON if body else []), *(headers or []), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def lifespan(receive: Receive, send: Send) -> None:
    """ASGI lifespan with nothing to start or stop (also the 100-endpoint upstream's)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    uvicorn.run(FastUpstream(), host=args.host, port=args.port, loop=loop, http=http,
                log_level="warning", access_log=False, lifespan="on")


if __name__ == "__main__":
    main()
