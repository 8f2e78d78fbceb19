"""A real `redis-server` (Debian's binary) on a free loopback port, owned by the test."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from tests.support.processes import stop_process


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_binary() -> str:
    path = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not shutil.which(path):
        raise RuntimeError("redis-server is not installed: run `make redis`")
    return path


async def _ping(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return False
    async with stream:
        await stream.send_all(b"PING\r\n")
        with trio.move_on_after(1):
            return (await stream.receive_some(64)).startswith(b"+PONG")
    return False


async def _wait_ready(process: trio.Process, port: int) -> bool:
    # Redis has no readiness signal on stdout we can rely on across versions: poll PING.
    with trio.move_on_after(10):
        while process.poll() is None:
            if await _ping(port):
                return True
            await trio.sleep(0.02)
    return False


@asynccontextmanager
async def running_redis() -> AsyncIterator[str]:
    """Yield the `redis://` URL of a fresh, empty, non-persistent Redis; stop it afterwards."""
    binary = redis_binary()
    with tempfile.TemporaryDirectory(prefix="mcpgw-redis-") as workdir:
        for _attempt in range(3):  # the free port may be taken between probe and bind: retry
            port = free_port()
            process = await trio.lowlevel.open_process(
                [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                if await _wait_ready(process, port):
                    yield f"redis://127.0.0.1:{port}/0"
                    return
            finally:
                with trio.CancelScope(shield=True):
                    await stop_process(process)
        raise RuntimeError("redis-server did not start")
