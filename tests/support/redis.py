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
    async with redis_server() as server:
        yield server.url


class RedisServer:
    """A `redis-server` on one loopback port that a test may stop and start again (the fault
    suite's Redis outage). With `persistent`, every write is in an fsynced append-only file in
    `workdir`, so what the sessions held survives a stop, even a SIGKILL."""

    def __init__(self, port: int, workdir: str, *, persistent: bool = False) -> None:
        self.port = port
        self.workdir = workdir
        self.persistent = persistent
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> bool:
        """Start on `self.port`; False if it did not answer PING (e.g. the port was taken)."""
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else [
            "--appendonly", "no"]
        self.process = await trio.lowlevel.open_process(
            [redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *durability, "--dir", self.workdir, "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        return await _wait_ready(self.process, self.port)

    async def stop(self, *, kill: bool = False) -> None:
        if self.process is None:
            return
        if kill:
            self.process.kill()
        with trio.CancelScope(shield=True):
            await stop_process(self.process)
        self.process = None


@asynccontextmanager
async def redis_server(*, persistent: bool = False) -> AsyncIterator[RedisServer]:
    """A started `RedisServer` on a free port (empty, in its own directory); stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="mcpgw-redis-") as workdir:
        for _attempt in range(3):  # the free port may be taken between probe and bind: retry
            server = RedisServer(free_port(), workdir, persistent=persistent)
            try:
                if await server.start():
                    yield server
                    return
            finally:
                await server.stop()
        raise RuntimeError("redis-server did not start")
