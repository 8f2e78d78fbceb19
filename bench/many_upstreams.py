"""Many lightweight MCP servers in one process: N Streamable HTTP endpoints on one port.

A raw ASGI app (no SDK) served by uvicorn, for scale benchmarks where N SDK server processes
would need more CPU than the machine has. Endpoint i is at `/u{i}/mcp`; each is its own MCP
server (serverInfo `up{i}`, its own sessions) with two tools:

    echo {text}      -> text content `text`
    add  {a, b}      -> text content `a + b` (and structuredContent {"sum": a + b})

It speaks the 2025-11-25 Streamable HTTP transport (accepting the earlier versions the
gateway may negotiate) with JSON answers:

- POST one JSON-RPC message. `initialize` opens a session (`Mcp-Session-Id` header) and answers
  with the negotiated version; every other request needs that header (400 without it, 404 for
  an unknown or deleted session). Requests get 200 + one JSON response; notifications and
  responses get 202 with no body. Methods: initialize, ping, tools/list, tools/call (anything
  else: -32601; unknown tool: -32602). A batch (array) is refused (400, -32600).
- GET with `Accept: text/event-stream` opens the session's standalone SSE stream (a comment
  first, then nothing: these tool sets never change), held until the client leaves.
- DELETE ends the session (200; 404 if unknown).
- 406 for a POST that accepts neither JSON nor SSE, 415 for a body that is not JSON,
  400 for an unsupported `MCP-Protocol-Version`, 403 for a non-loopback `Origin`.

    .venv/bin/python bench/many_upstreams.py --endpoints 100 [--port 0]

prints `many-upstreams listening on http://127.0.0.1:PORT` once bound; endpoint i is then
`http://127.0.0.1:PORT/u{i}/mcp` (`endpoint_url(base, i)`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fast_upstream import lifespan  # the same no-op ASGI lifespan (this directory is on the path)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

READY_LINE_PREFIX = "many-upstreams listening on "
VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST = "2025-11-25"
MAX_BODY = 1 << 20
LOOPBACK_ORIGINS = ("http://127.0.0.1", "http://localhost", "http://[::1]")

TOOLS = [
    {
        "name": "echo",
        "description": "Echo the text back.",
        "inputSchema": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {
        "name": "add",
        "description": "Add two integers.",
        "inputSchema": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
        "outputSchema": {
            "type": "object",
            "properties": {"sum": {"type": "integer"}},
            "required": ["sum"],
        },
    },
]


def endpoint_url(base: str, index: int) -> str:
    return f"{base.rstrip('/')}/u{index}/mcp"


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ManyUpstreams:
    """The ASGI app. `sessions` maps each live session id to its endpoint and version."""

    def __init__(self, endpoints: int) -> None:
        self.endpoints = endpoints
        self.sessions: dict[str, tuple[int, str]] = {}
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        index = self._endpoint(scope["path"])
        if index is None:
            await _plain(send, 404, b"not found")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin is not None and not origin.startswith(LOOPBACK_ORIGINS):
            await _error(send, 403, None, -32600, "Forbidden: Origin not allowed")
            return
        version = headers.get("mcp-protocol-version")
        if version is not None and version not in VERSIONS:
            await _error(send, 400, None, -32600, f"Unsupported MCP-Protocol-Version {version!r}")
            return
        method = scope["method"]
        self.requests += 1
        if method == "POST":
            await self._post(index, headers, receive, send)
        elif method == "GET":
            await self._get(index, headers, receive, send)
        elif method == "DELETE":
            session = headers.get("mcp-session-id")
            if session is None or self.sessions.get(session, (None,))[0] != index:
                await _error(send, 404, None, -32600, "Session not found")
                return
            del self.sessions[session]
            await _plain(send, 200, b"")
        else:
            await _plain(send, 405, b"", [(b"allow", b"GET, POST, DELETE")])

    def _endpoint(self, path: str) -> int | None:
        parts = path.strip("/").split("/")
        if len(parts) != 2 or parts[1] != "mcp" or not parts[0].startswith("u"):
            return None
        digits = parts[0][1:]
        if not digits.isdigit() or int(digits) >= self.endpoints:
            return None
        return int(digits)

    def _session(self, index: int, headers: dict[str, str]) -> tuple[str, str]:
        session = headers.get("mcp-session-id")
        if session is None:
            raise _HttpRefusal(400, "Bad Request: Mcp-Session-Id header is required")
        found = self.sessions.get(session)
        if found is None or found[0] != index:
            raise _HttpRefusal(404, "Session not found")
        return session, found[1]

    async def _post(self, index: int, headers: dict[str, str], receive: Receive, send: Send) -> None:
        accept = headers.get("accept", "*/*")
        if not any(t in accept for t in ("application/json", "text/event-stream", "*/*")):
            await _error(send, 406, None, -32600, "Not Acceptable")
            return
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            await _error(send, 415, None, -32600, "Unsupported Media Type")
            return
        body = await _read_body(receive)
        if body is None:
            await _error(send, 413, None, -32600, "Request body too large")
            return
        try:
            message = json.loads(body)
        except ValueError:
            await _error(send, 400, None, -32700, "Parse error")
            return
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            await _error(send, 400, None, -32600, "Invalid Request")
            return
        rpc_method = message.get("method")
        is_request = "id" in message and isinstance(rpc_method, str)
        if rpc_method == "initialize" and is_request:
            await self._initialize(index, message, send)
            return
        try:
            self._session(index, headers)
        except _HttpRefusal as refusal:
            await _error(send, refusal.status, message.get("id"), -32600, refusal.message)
            return
        if not is_request:
            await _plain(send, 202, b"")  # a notification or a response: accepted
            return
        try:
            result = self._answer(index, rpc_method, message.get("params"))
        except RpcError as error:
            reply: dict[str, Any] = {
                "jsonrpc": "2.0",
                "id": message["id"],
                "error": {"code": error.code, "message": error.message},
            }
        else:
            reply = {"jsonrpc": "2.0", "id": message["id"], "result": result}
        await _json(send, 200, reply)

    async def _initialize(self, index: int, message: dict[str, Any], send: Send) -> None:
        params = message.get("params")
        requested = params.get("protocolVersion") if isinstance(params, dict) else None
        if not isinstance(requested, str):
            await _json(send, 200, {"jsonrpc": "2.0", "id": message["id"], "error": {
                "code": -32602, "message": "initialize needs params.protocolVersion"}})
            return
        version = requested if requested in VERSIONS else LATEST
        session = secrets.token_hex(16)
        self.sessions[session] = (index, version)
        result = {
            "protocolVersion": version,
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": f"up{index}", "version": "1.0.0"},
        }
        await _json(send, 200, {"jsonrpc": "2.0", "id": message["id"], "result": result},
                    [(b"mcp-session-id", session.encode())])

    def _answer(self, index: int, method: str, params: Any) -> dict[str, Any]:
        if params is not None and not isinstance(params, dict):
            raise RpcError(-32602, "params must be an object")
        params = params or {}
        if method == "ping":
            return {}
        if method == "tools/list":
            return {"tools": TOOLS}
        if method == "tools/call":
            name = params.get("name")
            arguments = params.get("arguments") or {}
            if not isinstance(arguments, dict):
                raise RpcError(-32602, "arguments must be an object")
            if name == "echo":
                return {"content": [{"type": "text", "text": str(arguments.get("text", ""))}],
                        "isError": False}
            if name == "add":
                a, b = arguments.get("a"), arguments.get("b")
                if not isinstance(a, int) or not isinstance(b, int):
                    return {"content": [{"type": "text", "text": "a and b must be integers"}],
                            "isError": True}
                return {"content": [{"type": "text", "text": str(a + b)}],
                        "structuredContent": {"sum": a + b}, "isError": False}
            raise RpcError(-32602, f"Unknown tool: {name}")
        raise RpcError(-32601, f"Method not found: {method}")

    async def _get(self, index: int, headers: dict[str, str], receive: Receive, send: Send) -> None:
        if "text/event-stream" not in headers.get("accept", ""):
            await _error(send, 406, None, -32600, "Not Acceptable: GET streams text/event-stream")
            return
        try:
            session, _version = self._session(index, headers)
        except _HttpRefusal as refusal:
            await _error(send, refusal.status, None, -32600, refusal.message)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b": stream open\n\n", "more_body": True})
        # Nothing to send on it (the tool sets never change): hold it until the client leaves
        # or the session is deleted.
        while session in self.sessions:
            try:
                event = await asyncio.wait_for(receive(), timeout=5.0)
            except TimeoutError:
                continue
            if event["type"] == "http.disconnect":
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _HttpRefusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return b""
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        if not event.get("more_body"):
            return b"".join(chunks)


async def _plain(send: Send, status: int, body: bytes,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def _json(send: Send, status: int, document: Any,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(document, separators=(",", ":")).encode()
    await _plain(send, status, body, [(b"content-type", b"application/json"), *(headers or [])])


async def _error(send: Send, status: int, request_id: Any, code: int, message: str) -> None:
    await _json(send, status, {"jsonrpc": "2.0", "id": request_id,
                               "error": {"code": code, "message": message}})


def serve(endpoints: int, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until SIGINT/SIGTERM; print READY_LINE_PREFIX + base URL once bound."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    config = uvicorn.Config(
        ManyUpstreams(endpoints),
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Longer than any proxy's idle timeout for its upstream connections (Envoy's default:
        # 1 h), so the proxy never sends a request into a connection we are closing.
        timeout_keep_alive=3660,
        backlog=4096,
    )
    server = uvicorn.Server(config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, lambda: setattr(server, "should_exit", True))
        serving = asyncio.ensure_future(server.serve(sockets=[sock]))
        while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
            await asyncio.sleep(0.01)
        print(f"{READY_LINE_PREFIX}http://{host}:{bound}", flush=True)
        await serving

    try:
        import uvloop

        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    except ImportError:
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(args.endpoints, args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
