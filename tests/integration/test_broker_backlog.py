"""A burst of new connections waits in the broker's accept queue; it is not dropped.

Envoy reaches the broker over HTTP/1.1, one connection per concurrent request or open GET
stream. With hypercorn's default listen backlog (100), a burst of new connections while the
broker's event loop was busy overflowed the queue: the kernel dropped the SYNs and Envoy
answered 503 after its connect timeout (bench/bench_scale.py: 1307 of 5000 GET streams).
"""

from __future__ import annotations

import select
import socket
import time

import pytest

from tests.support.servers import gateway_config, running_broker

pytestmark = pytest.mark.integration

BURST = 400  # well over hypercorn's default backlog, well under any fd limit


async def test_a_burst_of_connections_is_queued_while_the_broker_is_busy() -> None:
    async with running_broker(gateway_config([])) as broker:
        sockets: list[socket.socket] = []
        try:
            # Connect without yielding to Trio: the broker cannot accept meanwhile, as when its
            # event loop is busy; what it has not accepted yet waits in the kernel's queue.
            for _ in range(BURST):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", broker.port))
                sockets.append(sock)
            time.sleep(0.5)  # noqa: ASYNC251 - blocking on purpose: the broker must not run
            poller = select.poll()
            for sock in sockets:
                poller.register(sock, select.POLLOUT)
            connected = [fd for fd, event in poller.poll(0) if event & select.POLLOUT]
            # A dropped SYN leaves its socket connecting (the retry comes after 1 s).
            assert len(connected) == BURST
        finally:
            for sock in sockets:
                sock.close()
