"""Upstreams run as a subprocess and spoken to over stdin/stdout: newline-delimited JSON, as
the MCP stdio transport specifies. Everything above the link (requests and answers, routing of
server→client messages, reconnect with backoff and re-handshake) is `MessageStreamClient` in
`message_stream.py`; this module spawns the process, frames its pipes, relays its stderr into
our log, and stops it the MCP way (close stdin, wait, SIGTERM, SIGKILL).
"""

from __future__ import annotations

import os
import subprocess
from functools import partial

import trio

from mcp_gateway.logs import get_logger
from mcp_gateway.upstream.errors import UpstreamError
from mcp_gateway.upstream.message_stream import LinkUser, MessageStreamClient

# How long a stdio server gets to exit after its stdin closes, then after SIGTERM.
_EXIT_GRACE_SECONDS = 2.0

_log = get_logger(__name__)


class StdioUpstreamClient(MessageStreamClient):
    """An MCP server run as a subprocess (`server.command`), spoken to over stdin/stdout.

    The command inherits the gateway's environment (plus the server's `env`) and working
    directory; its stderr is the server's log and is relayed line by line into ours.
    """

    _process: trio.Process | None = None

    @property
    def process_id(self) -> int | None:
        """The pid of the running server process (None between restarts)."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _open_link(self, use: LinkUser) -> None:
        command = self.server.command
        if not command:
            raise UpstreamError(f"{self.server.name}: transport stdio needs a command")
        async with trio.open_nursery() as nursery:
            process: trio.Process = await nursery.start(
                partial(
                    trio.run_process,
                    command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env={**os.environ, **self.server.env} if self.server.env else None,
                    check=False,
                    deliver_cancel=_stop_gently,
                )
            )
            assert process.stdin is not None and process.stdout is not None
            assert process.stderr is not None
            nursery.start_soon(self._relay_stderr, process.stderr)
            self._process = process
            try:
                await use(_PipeLink(process.stdin, process.stdout, self.limits.max_body_bytes))
            finally:
                self._process = None
                # Also when the process exited on its own: run_process then returns at once.
                nursery.cancel_scope.cancel()
            if process.returncode is not None:
                _log.warning(
                    "stdio upstream exited", server=self.server.name, returncode=process.returncode
                )

    async def _relay_stderr(self, stderr: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async for chunk in stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    _log.info(
                        "stdio upstream log",
                        server=self.server.name,
                        line=line.decode(errors="replace")[:2000],
                    )
            buffer = buffer[-65536:]  # a line without end is cut, not accumulated forever


class _PipeLink:
    """Newline-delimited JSON over a child's stdin/stdout (MCP's stdio framing)."""

    def __init__(
        self, stdin: trio.abc.SendStream, stdout: trio.abc.ReceiveStream, max_line: int
    ) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self._max_line = max_line
        self._buffer = bytearray()

    async def send(self, data: bytes) -> None:
        # serialize() escapes newlines inside strings, so a message is always one line.
        await self._stdin.send_all(data + b"\n")

    async def receive(self) -> bytes | None:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end]).rstrip(b"\r")
                del self._buffer[: end + 1]
                if line.strip():
                    return line
                continue
            if len(self._buffer) > self._max_line:
                raise UpstreamError(
                    f"stdio upstream sent a line longer than {self._max_line} bytes"
                )
            chunk = await self._stdout.receive_some(65536)
            if not chunk:
                return None
            self._buffer += chunk


async def _stop_gently(process: trio.Process) -> None:
    """The MCP stdio shutdown: close the server's stdin, then SIGTERM, then SIGKILL."""
    if process.stdin is not None:
        with trio.CancelScope(shield=True):
            await process.stdin.aclose()
    with trio.move_on_after(_EXIT_GRACE_SECONDS):
        await process.wait()
        return
    process.terminate()
    with trio.move_on_after(_EXIT_GRACE_SECONDS):
        await process.wait()
        return
    process.kill()


__all__ = ["StdioUpstreamClient"]
