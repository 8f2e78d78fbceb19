"""POSTs to upstreams whose request body leaves nothing behind when the send is cut short.

httpx wraps `content=bytes` (and `json=`) in `ByteStream`, whose `__aiter__` is an async
generator. httpcore iterates it while it writes to the socket (`_send_request_body`), so a POST
cancelled or failed during that write (a deadline, the supervisor stopping an upstream, a peer
that went away) drops the generator suspended at its `yield`, and Trio's async generator hook
reports it as a ResourceWarning when it is collected. The body here is sent the same way (one
chunk, Content-Length set by httpx) but iterated by a plain object: nothing to finalize.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Self

import httpx


async def send_post(
    http: httpx.AsyncClient, url: str, body: bytes, headers: Mapping[str, str]
) -> httpx.Response:
    """`http.post(url, content=body, headers=headers)`, the answer read whole."""
    return await http.send(_post_request(http, url, body, headers))


@asynccontextmanager
async def stream_post(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    http_timeout: httpx.Timeout | None = None,
) -> AsyncIterator[httpx.Response]:
    """`http.stream("POST", url, content=body, headers=headers)`; `http_timeout` replaces the
    client's (a long-lived answer, e.g. a `subscriptions/listen` stream, has no read timeout)."""
    response = await http.send(_post_request(http, url, body, headers, http_timeout), stream=True)
    try:
        yield response
    finally:
        await response.aclose()


def _post_request(
    http: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    http_timeout: httpx.Timeout | None = None,
) -> httpx.Request:
    return one_chunk_request(http, "POST", url, body, headers, http_timeout)


def one_chunk_request(
    http: httpx.AsyncClient,
    method: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str] | Sequence[tuple[str, str]],
    http_timeout: httpx.Timeout | None = None,
) -> httpx.Request:
    """The request `http.request(method, url, content=body, headers=headers)` would send, its
    body a plain iterator: a send the peer cuts short (a 413 before the body is read) leaves no
    generator behind to be finalized."""
    # build_request sets Content-Length and keeps the bytes as `request.content` (what
    # MockTransport handlers read); only the stream httpcore iterates is swapped.
    if http_timeout is None:
        request = http.build_request(method, url, content=body, headers=headers)
    else:
        request = http.build_request(method, url, content=body, headers=headers, timeout=http_timeout)
    request.stream = _Body(body)
    return request


class _Body(httpx.AsyncByteStream):
    def __init__(self, data: bytes) -> None:
        self._data = data

    def __aiter__(self) -> AsyncIterator[bytes]:
        # A new iterator each time: httpcore's pool sends the request again when the
        # connection it picked turns out to be unavailable.
        return _OneChunk(self._data)


class _OneChunk:
    """An async iterator over one chunk that is not a generator: abandoning it is harmless."""

    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        if self._data is None:
            raise StopAsyncIteration
        data, self._data = self._data, None
        return data
