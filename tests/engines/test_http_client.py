"""The delivery client's HTTP/1.1 (proxy/engines/http_client.py), against real sockets.

The servers here are raw asyncio servers on 127.0.0.1 that write the exact bytes each
test needs (answers no real framework would send: a close mid-answer, a 1xx, garbage).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.engines import http_client
from proxy.engines.http_client import ConnectionPool, Response, ResponseError
from tests.support.certs import private_pem, self_signed

pytestmark = pytest.mark.anyio
LIMIT = 1024 * 1024
Connection = Callable[["Raw", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class Raw:
    """A server whose ``handle(server, reader, writer, n)`` runs per connection (``n`` counts them
    from 0); ``heads`` are the request heads it read with :func:`read_request`."""

    def __init__(self, handle: Connection) -> None:
        self.handle = handle
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.heads: list[bytes] = []
        self.bodies: list[bytes] = []
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        n = self.connections
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handle(self, reader, writer, n)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        """Read one request (Content-Length framing); False at EOF."""
        head = await reader.readuntil(b"\r\n\r\n") if not reader.at_eof() else b""
        if not head:
            return False
        self.heads.append(head)
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        self.bodies.append(await reader.readexactly(length))
        return True


@contextlib.asynccontextmanager
async def raw(handle: Connection, tls: ssl.SSLContext | None = None) -> AsyncIterator[Raw]:
    server = Raw(handle)
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    try:
        yield server
    finally:
        listener.close()
        await asyncio.wait_for(listener.wait_closed(), 5)


def keep_alive(answer: bytes, requests: int = 100) -> Connection:
    """Answer up to ``requests`` requests per connection with ``answer``."""

    async def handle(
        server: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        for _ in range(requests):
            if not await server.read_request(reader):
                return
            writer.write(answer)
            await writer.drain()

    return handle


def answering(answer: bytes) -> contextlib.AbstractAsyncContextManager[Raw]:
    """A server answering every request with ``answer``, keeping connections open."""
    return raw(keep_alive(answer))


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


async def post(pool: ConnectionPool, url: str, body: bytes = b"hi", **headers: str) -> Response:
    return await asyncio.wait_for(pool.request("POST", url, headers, body, limit=LIMIT), 10)


async def post_twice(url: str) -> list[tuple[int, bytes]]:
    """Two POSTs in turn on a pool of one connection: (status, snippet) of each answer."""
    pool = ConnectionPool(1)
    try:
        answers = [await post(pool, url) for _ in range(2)]
    finally:
        await pool.close()
    return [(answer.status, answer.snippet) for answer in answers]


async def test_the_request_carries_the_given_headers_and_its_own_framing() -> None:
    """Host comes from the URL, Content-Length from the body; a stored Content-Length,
    Transfer-Encoding or Connection cannot re-frame it; the other headers go as given."""
    async with answering(OK) as server:
        pool = ConnectionPool(1)
        await post(
            pool,
            f"{server.url}/a/b?c=1",
            b"12345",
            **{
                "x-one": "1",
                "content-length": "1",
                "transfer-encoding": "chunked",
                "connection": "close",
            },
        )
        await pool.close()
    head = server.heads[0].decode()
    assert head.startswith("POST /a/b?c=1 HTTP/1.1\r\n")
    lines = head.lower().split("\r\n")
    assert f"host: {server.url.removeprefix('http://')}" in lines
    assert "x-one: 1" in lines
    assert [line for line in lines if line.startswith("content-length")] == ["content-length: 5"]
    assert not [line for line in lines if line.startswith(("transfer-encoding", "connection"))]
    assert server.bodies == [b"12345"]


@pytest.mark.parametrize("name", ["host", "Host", "HOST"])
async def test_a_given_host_header_is_kept(name: str) -> None:
    """A Host in the request's headers, in any case, is sent instead of the URL's."""
    async with answering(OK) as server:
        pool = ConnectionPool(1)
        await post(pool, f"{server.url}/", **{name: "backend.example"})
        await pool.close()
    lines = server.heads[0].decode().lower().split("\r\n")
    assert [line for line in lines if line.startswith("host")] == ["host: backend.example"]


async def test_no_body_sends_no_content_length() -> None:
    """A GET without a body has no Content-Length."""
    async with answering(OK) as server:
        pool = ConnectionPool(1)
        response = await pool.request("GET", f"{server.url}/g", {}, None, limit=LIMIT)
        await pool.close()
    assert response.status == 200
    assert b"content-length" not in server.heads[0].lower()


async def test_a_stale_reused_connection_is_retried_on_a_new_one() -> None:
    """The server closes a kept-alive connection as the next request arrives, without
    answering: the request goes out again on a new connection and gets its answer."""

    async def handle(
        server: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await writer.drain()
        if n == 0:
            await server.read_request(reader)  # the second request: closed unanswered

    async with raw(handle) as server:
        pool = ConnectionPool(2)
        first = await post(pool, f"{server.url}/1")
        second = await post(pool, f"{server.url}/2")
        await pool.close()
    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2
    assert len(server.heads) == 3  # the second request, twice


async def test_a_new_connection_closed_unanswered_is_an_error_not_a_retry() -> None:
    """On a new connection, a close before any answer is the attempt's error."""

    async def handle(
        server: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await server.read_request(reader)

    async with raw(handle) as server:
        pool = ConnectionPool(2)
        with pytest.raises(ResponseError, match="closed the connection before answering"):
            await post(pool, f"{server.url}/")
        await pool.close()
    assert server.connections == 1


async def test_a_half_sent_answer_is_an_error_and_not_retried() -> None:
    """An answer cut off in its head is an error; the request is not sent again."""

    async def handle(
        server: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await server.read_request(reader)
        writer.write(OK)
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()

    async with raw(handle) as server:
        pool = ConnectionPool(2)
        await post(pool, f"{server.url}/")
        with pytest.raises(ResponseError):
            await post(pool, f"{server.url}/")
        await pool.close()
    assert len(server.heads) == 2


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n" + OK
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(OK, id="content-length"),
        pytest.param(CHUNKED, id="chunked"),
        pytest.param(CONTINUE, id="interim-100"),
        pytest.param(EARLY_HINTS, id="interim-103"),
    ],
)
async def test_framings_of_an_answer(answer: bytes) -> None:
    """An answer with a Content-Length, a chunked one, and interim (1xx) answers before
    the real one are each read as one answer, and the one connection is reused after them."""
    async with answering(answer) as server:
        assert await post_twice(f"{server.url}/") == [(200, b"ok")] * 2
    assert server.connections == 1


async def test_a_body_that_ends_with_the_connection() -> None:
    """An HTTP/1.0-style answer without a length ends at the close: it is read whole and
    the connection is not reused."""

    async def handle(
        server: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.0 500 Oops\r\n\r\nbroken ")
        await writer.drain()
        writer.write(b"backend")

    async with raw(handle) as server:
        assert await post_twice(f"{server.url}/") == [(500, b"broken backend")] * 2
    assert server.connections == 2


async def test_an_answer_to_head_has_no_body() -> None:
    """A HEAD answer's Content-Length does not make the client wait for a body."""
    async with answering(b"HTTP/1.1 204 No Content\r\n\r\n") as server:
        pool = ConnectionPool(1)
        response = await asyncio.wait_for(
            pool.request("HEAD", f"{server.url}/", {}, None, limit=LIMIT), 10
        )
        assert response.status == 204
    async with answering(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n") as server:
        response = await asyncio.wait_for(
            pool.request("HEAD", f"{server.url}/", {}, None, limit=LIMIT), 10
        )
        await pool.close()
    assert (response.status, response.body_bytes) == (200, 0)


async def test_reading_stops_at_the_limit() -> None:
    """A body longer than the limit is read only to the limit (the snippet is its first
    KiB), and the connection is dropped rather than drained."""
    size = 8 * 1024 * 1024

    async def handle(
        server: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await server.read_request(reader)
        writer.write(b"HTTP/1.1 500 Big\r\nContent-Length: %d\r\n\r\n" % size)
        with contextlib.suppress(ConnectionError):
            for _ in range(size // 65536):
                writer.write(b"y" * 65536)
                await writer.drain()

    async with raw(handle) as server:
        pool = ConnectionPool(1)
        response = await asyncio.wait_for(
            pool.request("POST", f"{server.url}/", {}, b"", limit=100_000), 10
        )
        await pool.close()
    assert response.status == 500
    assert response.snippet == b"y" * http_client.SNIPPET_BYTES
    assert 100_000 < response.body_bytes < size


async def test_garbage_is_an_error() -> None:
    """Bytes that are not an HTTP/1.1 answer are an error, not an exception of another kind."""
    async with answering(b"SSH-2.0-OpenSSH_9.2\r\n") as server:
        pool = ConnectionPool(1)
        with pytest.raises(ResponseError, match=r"not HTTP/1\.1"):
            await post(pool, f"{server.url}/")
        await pool.close()


async def test_no_more_connections_than_the_limit() -> None:
    """Six requests at once on a pool of two: at most two connections, all answered."""

    async def handle(
        server: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        while await server.read_request(reader):
            await asyncio.sleep(0.05)
            writer.write(OK)
            await writer.drain()

    async with raw(handle) as server:
        pool = ConnectionPool(2)
        answers = await asyncio.gather(*(post(pool, f"{server.url}/") for _ in range(6)))
        await pool.close()
    assert [a.status for a in answers] == [200] * 6
    assert server.most_open <= 2


async def test_idle_connections_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection idle for KEEPALIVE_SECONDS is closed by the client."""
    monkeypatch.setattr(http_client, "KEEPALIVE_SECONDS", 0.05)
    async with answering(OK) as server:
        pool = ConnectionPool(1)
        await post(pool, f"{server.url}/")
        for _ in range(200):  # at most 10 s
            if server.open == 0:
                break
            await asyncio.sleep(0.05)
        assert server.open == 0
        await post(pool, f"{server.url}/")  # and a new one is made for the next request
        await pool.close()
    assert server.connections == 2


async def test_cancelling_a_request_closes_its_connection() -> None:
    """A request cancelled while waiting (the dispatch deadline) takes its connection
    with it: a late answer cannot be read as the next request's."""

    async def handle(
        server: Raw, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> None:
        await server.read_request(reader)
        if n == 0:
            await asyncio.sleep(0.3)
        writer.write(OK)
        await writer.drain()
        await reader.read()

    async with raw(handle) as server:
        pool = ConnectionPool(1)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.request("POST", f"{server.url}/", {}, b"", limit=1), 0.05)
        response = await post(pool, f"{server.url}/")
        await pool.close()
    assert response.status == 200
    assert server.connections == 2


async def test_urls_it_cannot_send_to() -> None:
    """Only absolute http and https URLs."""
    pool = ConnectionPool(1)
    for url in ("ftp://h/x", "http:///x", "http://h:99999/"):
        with pytest.raises(ValueError, match=r"URL|[Pp]ort"):
            await pool.request("GET", url, {}, None, limit=LIMIT)
    await pool.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(self_signed(key, "127.0.0.1", ip="127.0.0.1"))
    key_path.write_bytes(private_pem(key))
    return cert_path, key_path


async def test_https_checks_the_certificate(tmp_path: Path) -> None:
    """An https target is reached over TLS with the pool's context: a certificate the
    context trusts is accepted (and the connection reused), one it does not is an error."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with raw(keep_alive(OK), tls=server_tls) as server:
        trusting = ssl.create_default_context(cafile=str(cert))
        pool = ConnectionPool(1, trusting)
        for _ in range(2):
            assert (await post(pool, f"{server.url}/")).status == 200
        await pool.close()
        assert server.connections == 1
        pool = ConnectionPool(1)  # the system's CA bundle: not ours
        with pytest.raises(ssl.SSLCertVerificationError):
            await post(pool, f"{server.url}/")
        await pool.close()
