"""Stopping a child process the tests started: one bounded, escalating sequence for all of them."""

from __future__ import annotations

import trio


async def stop_process(process: trio.Process, grace_seconds: float = 5.0) -> None:
    """SIGTERM, wait a bounded time, then SIGKILL; close our end of its stdout pipe."""
    if process.returncode is None:
        process.terminate()
        with trio.move_on_after(grace_seconds):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()
