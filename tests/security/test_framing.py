"""Message framing over raw sockets against the whole proxy, on both event loops.

Real uvicorn with the ingress's own HTTP/1.1 protocol (proxy/http/ingress_protocol.py), the embedded
engine on a real SQLite file, a real RecordingBackend as both queues' target. Each case
writes bytes on one connection and checks:

- what the client receives: the statuses in order, a JSON ``error`` code on every refusal,
  and whether the connection ends after them (a connection that stays open serves one
  more request, which also shows the framing ended where it should);
- what reaches the backend: exactly the requests the framing meant, with their exact
  bodies (no request hidden in a body, no body cut or extended), and nothing else;
- that every request delivered was answered 202 and every 202 was delivered (the 202's
  ``x-request-id`` against the delivered one).

The queues deliver one task at a time in order, so once a sentinel sent after a case has
been delivered, everything the case stored has been too. Memory under an endless trailer
is measured on a real ``python -m proxy serve`` process (its RSS from /proc).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from uvicorn.config import LOGGING_CONFIG

from proxy.app import create_admin_app, create_app
from proxy.config.loading import settings_from_dict
from proxy.http.ingress_protocol import MAX_PIPELINED
from proxy.server import HEAD_ALLOWANCE, admin_options, ingress_options
from tests.faults.common import proxy_process
from tests.support.backend import Received, RecordingBackend, run_backend
from tests.support.servers import serve_together, wait_for

MAX_BODY = 1024
MAX_HEADERS = 4096
HEAD_CAP = MAX_HEADERS + HEAD_ALLOWANCE  # the request head cap, and the framing cap
DEADLINE = 2.0  # header_timeout and body_timeout, seconds
TIMEOUT = 20.0  # any one wait: generous, the machine may be busy
ROUTED = "routed.example"  # the Host (or absolute-form authority) of the "hosted" queue


@dataclass
class Rig:
    url: str
    backend: RecordingBackend

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module", params=["asyncio", "uvloop"])
def rig(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One proxy per event loop: small limits, two queues delivering one task at a time
    (``hosted`` for Host routed.example, ``q`` for the rest)."""
    db: Path = tmp_path_factory.mktemp("framing") / "tasks.db"
    with run_backend() as backend:
        one_at_a_time = {"rate": 500, "concurrency": 1}
        settings = settings_from_dict(
            {
                "queues": [
                    {"name": "q", "target": backend.url + "/base", **one_at_a_time},
                    {"name": "hosted", "target": backend.url + "/hosted", **one_at_a_time},
                ],
                "routes": [{"prefix": "/", "queue": "hosted", "host": ROUTED}],
                "local": {"db": str(db)},
                "limits": {
                    "max_body_bytes": MAX_BODY,
                    "max_header_bytes": MAX_HEADERS,
                    "body_timeout": DEADLINE,
                },
                "server": {"header_timeout": DEADLINE},
            }
        )
        app = create_app(settings)
        quiet = {"log_config": LOGGING_CONFIG, "log_level": "warning"}
        apps = [
            (app, ingress_options(settings) | quiet),
            (create_admin_app(app), admin_options(settings) | quiet),
        ]
        with serve_together(apps, uvloop=request.param == "uvloop") as (url, _):
            yield Rig(url, backend)


# ---------------------------------------------------------------- reading answers


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def error(self) -> str | None:
        if self.status < 300:
            return None
        assert self.headers.get("content-type") == "application/json", self
        document = json.loads(self.body)
        assert isinstance(document.get("detail"), str), self
        assert document["detail"], self
        return str(document["error"])


@dataclass
class Reader:
    """Answers read one after another from a socket (1xx answers skipped)."""

    sock: socket.socket
    data: bytes = b""
    ended: bool = False  # EOF (or a reset) seen

    def _more(self) -> bool:
        if self.ended:
            return False
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.ended = True
            return False
        self.data += chunk
        return True

    def answer(self) -> Answer | None:
        """The next answer, or None when the connection ended first."""
        while True:
            end = self.data.find(b"\r\n\r\n")
            if end >= 0:
                lines = self.data[:end].decode("latin-1").split("\r\n")
                match = re.fullmatch(r"HTTP/1\.1 (\d{3}) .*", lines[0])
                assert match, f"not a status line: {lines[0]!r}"
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:])
                }
                status = int(match.group(1))
                length = 0 if status < 200 else int(headers.get("content-length", "0"))
                if len(self.data) >= end + 4 + length:
                    body = self.data[end + 4 : end + 4 + length]
                    self.data = self.data[end + 4 + length :]
                    if status < 200:
                        continue
                    return Answer(status, headers, body)
            if not self._more():
                return None

    def at_end(self) -> bool:
        """Whether the server closes the connection with nothing more to read."""
        while self._more():
            pass
        return self.data == b""


# ---------------------------------------------------------------- the cases


@dataclass(frozen=True)
class Case:
    """``parts`` are written one after another; ``{c}`` becomes the case's query marker.
    ``answers``: (status, error code or None) in order; ``delivered``: (method, path, body)
    as the backend receives them; ``closes``: the connection ends after the answers (else
    it serves a probe request next)."""

    name: str
    parts: tuple[bytes, ...]
    answers: tuple[tuple[int, str | None], ...]
    delivered: tuple[tuple[str, str, bytes], ...] = ()
    closes: bool | None = False  # None: either (the parser's 400 closes, the ingress's not)
    half_close: bool = False  # shutdown(SHUT_WR) after the parts


OK = (202, None)
BAD = (400, "bad_request")
H = b"Host: x\r\n"
CHUNKED = b"Transfer-Encoding: chunked\r\n"


def post(path: bytes, body: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return (
        b"POST " + path + b"?{c} HTTP/" + version + b"\r\n" + H + extra
        + b"Content-Length: %d\r\n\r\n" % len(body) + body
    )  # fmt: skip


def chunked(path: bytes, encoded: bytes, extra: bytes = b"") -> bytes:
    return b"POST " + path + b"?{c} HTTP/1.1\r\n" + H + extra + CHUNKED + b"\r\n" + encoded


def get(path: bytes, extra: bytes = b"", version: bytes = b"1.1") -> bytes:
    return b"GET " + path + b"?{c} HTTP/" + version + b"\r\n" + H + extra + b"\r\n"


def case(
    name: str, data: bytes | tuple[bytes, ...], *answers: tuple[int, str | None], **kw: object
) -> Case:
    parts = data if isinstance(data, tuple) else (data,)
    return Case(name, parts, answers, **kw)  # type: ignore[arg-type]  # the fields' types


SMUGGLED = b"GET /smuggled?c=hidden HTTP/1.1\r\nHost: x\r\n\r\n"

CASES: list[Case] = [
    # ------------------------------------------------ Content-Length
    case("cl", post(b"/a", b"hello"), OK, delivered=(("POST", "/base/a", b"hello"),)),
    case("cl-zero", post(b"/a", b""), OK, delivered=(("POST", "/base/a", b""),)),
    case(
        "cl-leading-zeros",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhello",
        OK,
        delivered=(("POST", "/base/a", b"hello"),),
    ),
    case(
        "cl-body-then-next-request",  # the body ends where Content-Length says
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" + get(b"/b"),
        OK,
        OK,
        delivered=(("POST", "/base/a", b"abc"), ("GET", "/base/b", b"")),
    ),
    case(
        "cl-body-in-parts",
        (b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nab", b"cd", b"ef"),
        OK,
        delivered=(("POST", "/base/a", b"abcdef"),),
    ),
    case(
        "cl-two-equal",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        BAD,
        closes=True,
    ),
    case(
        "cl-list",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
        BAD,
        closes=True,
    ),
    case(
        "cl-negative",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\nabc",
        BAD,
        closes=True,
    ),
    case(
        "cl-plus",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
        BAD,
        closes=True,
    ),
    case(
        "cl-hex",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\nabc",
        BAD,
        closes=True,
    ),
    case(
        "cl-space-inside",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 1 2\r\n\r\nabc",
        BAD,
        closes=True,
    ),
    case(
        "cl-over-limit",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"a" * 100,
        (413, "body_too_large"),
        closes=True,
    ),
    case(
        "cl-and-te",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
        + CHUNKED
        + b"\r\n3\r\nabc\r\n0\r\n\r\n",
        BAD,
        closes=True,
    ),
    case(
        "cl-on-get",
        get(b"/a", b"Content-Length: 2\r\n")[:-2] + b"\r\nhi",
        (400, "body_not_allowed"),
    ),
    # ------------------------------------------------ Transfer-Encoding
    case(
        "te-chunked",
        chunked(b"/a", b"5\r\nhello\r\n0\r\n\r\n"),
        OK,
        delivered=(("POST", "/base/a", b"hello"),),
    ),
    case(
        "te-upper-case",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: CHUNKED\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
    ),
    case(
        "te-trailing-space",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked \r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
    ),
    case(
        "te-gzip-chunked",
        chunked(b"/a", b"2\r\nhi\r\n0\r\n\r\n").replace(b"chunked", b"gzip, chunked", 1),
        (501, "transfer_coding_not_supported"),
        closes=True,
    ),
    case(
        "te-unknown-chunked",
        chunked(b"/a", b"2\r\nhi\r\n0\r\n\r\n").replace(b"chunked", b"x, chunked", 1),
        (501, "transfer_coding_not_supported"),
        closes=True,
    ),
    case(
        "te-identity-then-chunked-fields",
        chunked(b"/a", b"2\r\nhi\r\n0\r\n\r\n", b"Transfer-Encoding: identity\r\n"),
        (501, "transfer_coding_not_supported"),
        closes=True,
    ),
    case(
        "te-chunked-twice-fields",
        chunked(b"/a", b"2\r\nhi\r\n0\r\n\r\n", CHUNKED),
        (400, None),
        closes=True,
    ),
    case(
        "te-chunked-not-last",
        chunked(b"/a", b"2\r\nhi\r\n0\r\n\r\n").replace(b"chunked", b"chunked, gzip", 1),
        BAD,
        closes=True,
    ),
    case(
        "te-gzip-only",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhi",
        (400, None),
        closes=True,
    ),
    case(
        "te-empty",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \r\nContent-Length: 2\r\n\r\nhi",
        BAD,
        closes=True,
    ),
    case(
        "te-obs-fold",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
        BAD,
        closes=True,
    ),
    case(
        "te-space-before-colon",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
        BAD,
        closes=True,
    ),
    case(
        "te-in-http10",
        b"POST /a?{c} HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        (400, "transfer_encoding_in_http10"),
        closes=True,
    ),
    case(
        "te-underscore-is-not-framing",  # Transfer_Encoding is no framing header, nor delivered
        post(b"/a", b"2\r\nhi\r\n0\r\n\r\n", b"Transfer_Encoding: chunked\r\n"),
        OK,
        delivered=(("POST", "/base/a", b"2\r\nhi\r\n0\r\n\r\n"),),
    ),
    # ------------------------------------------------ chunk syntax
    case(
        "chunk-upper-hex",
        chunked(b"/a", b"A\r\n0123456789\r\n0\r\n\r\n"),
        OK,
        delivered=(("POST", "/base/a", b"0123456789"),),
    ),
    case(
        "chunk-leading-zeros",
        chunked(b"/a", b"0005\r\nhello\r\n000\r\n\r\n"),
        OK,
        delivered=(("POST", "/base/a", b"hello"),),
    ),
    case(
        "chunk-extension",
        chunked(b"/a", b"5;name=value\r\nhello\r\n0;last\r\n\r\n"),
        OK,
        delivered=(("POST", "/base/a", b"hello"),),
    ),
    case(
        "chunk-quoted-extension",
        chunked(b"/a", b'5;n="v;x"\r\nhello\r\n0\r\n\r\n'),
        OK,
        delivered=(("POST", "/base/a", b"hello"),),
    ),
    case(
        "chunk-many-small",
        chunked(b"/a", b"".join(b"1\r\n%c\r\n" % (97 + n % 26) for n in range(300)) + b"0\r\n\r\n"),
        OK,
        delivered=(("POST", "/base/a", bytes(97 + n % 26 for n in range(300))),),
    ),
    case(
        "chunk-in-parts",
        (chunked(b"/a", b"5\r\nhel"), b"lo\r\n3", b"\r\nabc\r\n0\r", b"\n\r\n"),
        OK,
        delivered=(("POST", "/base/a", b"helloabc"),),
    ),
    case("chunk-size-not-hex", chunked(b"/a", b"zz\r\nhello\r\n0\r\n\r\n"), BAD, closes=True),
    case("chunk-size-negative", chunked(b"/a", b"-5\r\nhello\r\n0\r\n\r\n"), BAD, closes=True),
    case("chunk-size-0x", chunked(b"/a", b"0x5\r\nhello\r\n0\r\n\r\n"), BAD, closes=True),
    case(
        "chunk-size-overflow",
        chunked(b"/a", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        (400, None),
        closes=True,
    ),
    case("chunk-size-space", chunked(b"/a", b"5 \r\nhello\r\n0\r\n\r\n"), BAD, closes=True),
    case("chunk-size-bare-lf", chunked(b"/a", b"5\nhello\r\n0\r\n\r\n"), BAD, closes=True),
    case("chunk-data-longer", chunked(b"/a", b"3\r\nabcd\r\n0\r\n\r\n"), BAD, closes=True),
    case("chunk-data-shorter", chunked(b"/a", b"5\r\nabc\r\n0\r\n\r\n"), BAD, closes=True),
    case("chunk-no-crlf-after-data", chunked(b"/a", b"3\r\nabc0\r\n\r\n"), BAD, closes=True),
    case(
        "chunk-over-limit",
        chunked(b"/a", b"%x\r\n%s\r\n" % (MAX_BODY + 1, b"a" * (MAX_BODY + 1))),
        (413, "body_too_large"),
        closes=True,
    ),
    case(
        "chunk-hides-a-request",  # the chunk's bytes are body, not a request
        chunked(b"/a", b"%x\r\n%s\r\n0\r\n\r\n" % (len(SMUGGLED), SMUGGLED)),
        OK,
        delivered=(("POST", "/base/a", SMUGGLED),),
    ),
    case(
        "chunk-zero-then-request",  # after the last chunk, the next request is a request
        chunked(b"/a", b"0\r\n\r\n") + get(b"/b"),
        OK,
        OK,
        delivered=(("POST", "/base/a", b""), ("GET", "/base/b", b"")),
    ),
    # ------------------------------------------------ trailers and framing bytes
    case(
        "trailer-fields",
        chunked(b"/a", b"2\r\nhi\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n"),
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
    ),
    case(
        "trailer-obs-fold",
        chunked(b"/a", b"2\r\nhi\r\n0\r\nX-T: 1\r\n 2\r\n\r\n"),
        BAD,
        closes=True,
    ),
    case("trailer-bare-lf", chunked(b"/a", b"2\r\nhi\r\n0\r\nX-T: 1\n\r\n"), BAD, closes=True),
    # ------------------------------------------------ pipelining and the end of a connection
    case(
        "pipelined-two",
        post(b"/a", b"one") + post(b"/b", b"two"),
        OK,
        OK,
        delivered=(("POST", "/base/a", b"one"), ("POST", "/base/b", b"two")),
    ),
    case(
        "pipelined-past-read-ahead",
        b"".join(get(b"/g%d" % n) for n in range(MAX_PIPELINED * 2 + 5)),
        *[OK] * (MAX_PIPELINED * 2 + 5),
        delivered=tuple(("GET", f"/base/g{n}", b"") for n in range(MAX_PIPELINED * 2 + 5)),
    ),
    case(
        "pipelined-refusal-between",
        get(b"/a") + b"TRACE /t?{c} HTTP/1.1\r\nHost: x\r\n\r\n" + get(b"/b"),
        OK,
        (405, "method_not_allowed"),
        OK,
        delivered=(("GET", "/base/a", b""), ("GET", "/base/b", b"")),
    ),
    case(
        "after-connection-close",
        post(b"/a", b"hi", b"Connection: close\r\n") + get(b"/hidden"),
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
        closes=True,
    ),
    case(
        "after-http10",
        b"POST /a?{c} HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi" + get(b"/hidden"),
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
        closes=True,
    ),
    case(
        "after-http10-keep-alive",  # HTTP/1.0 connections are not kept alive
        b"POST /a?{c} HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"
        + get(b"/hidden"),
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
        closes=True,
    ),
    case(
        "garbage-after-request",
        post(b"/a", b"hi") + b"\x01\x02 garbage\r\n\r\n",
        OK,
        BAD,
        delivered=(("POST", "/base/a", b"hi"),),
        closes=True,
    ),
    case(
        "garbage-after-two",
        get(b"/a") + get(b"/b") + b"GET /c?{c} HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        OK,
        OK,
        BAD,
        delivered=(("GET", "/base/a", b""), ("GET", "/base/b", b"")),
        closes=True,
    ),
    case(
        "garbage-in-a-later-write",
        (post(b"/a", b"hi"), b"\x00\x00\x00\r\n\r\n"),
        OK,
        BAD,
        delivered=(("POST", "/base/a", b"hi"),),
        closes=True,
    ),
    # ------------------------------------------------ half-close
    case(
        "half-close-after-request",
        post(b"/a", b"hi"),
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
        closes=True,
        half_close=True,
    ),
    case(
        "half-close-after-two",
        get(b"/a") + post(b"/b", b"yo"),
        OK,
        OK,
        delivered=(("GET", "/base/a", b""), ("POST", "/base/b", b"yo")),
        closes=True,
        half_close=True,
    ),
    case(
        "half-close-mid-head",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Le",
        (400, "incomplete_request"),
        closes=True,
        half_close=True,
    ),
    case(
        "half-close-mid-body",
        b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nabc",
        (400, "incomplete_request"),
        closes=True,
        half_close=True,
    ),
    case(
        "half-close-after-request-and-part",
        post(b"/a", b"hi") + b"GET /b?{c} HTTP/1.1\r\n",
        OK,
        (400, "incomplete_request"),
        delivered=(("POST", "/base/a", b"hi"),),
        closes=True,
        half_close=True,
    ),
    # ------------------------------------------------ versions
    case(
        "version-1.0",
        post(b"/a", b"hi", version=b"1.0"),
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
        closes=True,
    ),
    case("version-1.1", post(b"/a", b"hi"), OK, delivered=(("POST", "/base/a", b"hi"),)),
    case(
        "version-1.2-is-1.1",
        post(b"/a", b"hi", version=b"1.2"),
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
    ),
    case(
        "version-1.9-is-1.1", get(b"/a", version=b"1.9"), OK, delivered=(("GET", "/base/a", b""),)
    ),
    case(
        "version-2.0", get(b"/a", version=b"2.0"), (505, "http_version_not_supported"), closes=True
    ),
    case(
        "version-0.9", get(b"/a", version=b"0.9"), (505, "http_version_not_supported"), closes=True
    ),
    case(
        "version-3.0", get(b"/a", version=b"3.0"), (505, "http_version_not_supported"), closes=True
    ),
    case(
        "version-9.9-with-body",
        post(b"/a", b"hi", version=b"9.9"),
        (505, "http_version_not_supported"),
        closes=True,
    ),
    case("version-two-digits", get(b"/a", version=b"1.10"), BAD, closes=True),
    case("version-lower-case", b"GET /a?{c} http/1.1\r\nHost: x\r\n\r\n", BAD, closes=True),
    case("version-no-minor", b"GET /a?{c} HTTP/1\r\nHost: x\r\n\r\n", BAD, closes=True),
    case(  # a request line without a version is HTTP/0.9's
        "version-missing",
        b"GET /a?{c}\r\nHost: x\r\n\r\n",
        (505, "http_version_not_supported"),
        closes=True,
    ),
    # ------------------------------------------------ request-target forms
    case("origin-form", get(b"/a/b"), OK, delivered=(("GET", "/base/a/b", b""),)),
    case(
        "absolute-form-authority-routes",  # the target's authority wins over Host
        b"GET http://" + ROUTED.encode() + b"/x?{c} HTTP/1.1\r\nHost: other.example\r\n\r\n",
        OK,
        delivered=(("GET", "/hosted/x", b""),),
    ),
    case(
        "absolute-form-over-routed-host",
        b"GET http://other.example/x?{c} HTTP/1.1\r\nHost: " + ROUTED.encode() + b"\r\n\r\n",
        OK,
        delivered=(("GET", "/base/x", b""),),
    ),
    case(
        "absolute-form-empty-path",
        b"GET http://h.example?{c} HTTP/1.1\r\nHost: x\r\n\r\n",
        OK,
        delivered=(("GET", "/base/", b""),),
    ),
    case(
        "absolute-form-https",
        b"GET https://h.example:8443/s?{c} HTTP/1.1\r\nHost: x\r\n\r\n",
        OK,
        delivered=(("GET", "/base/s", b""),),
    ),
    case(
        "absolute-form-userinfo",
        b"GET http://user@h.example/x?{c} HTTP/1.1\r\nHost: x\r\n\r\n",
        (400, "invalid_target"),
    ),
    case(
        "absolute-form-userinfo-password",
        b"GET http://u:p@h.example/x?{c} HTTP/1.1\r\nHost: x\r\n\r\n",
        (400, "invalid_target"),
    ),
    case(
        "absolute-form-other-scheme",
        b"GET ftp://h.example/x?{c} HTTP/1.1\r\nHost: x\r\n\r\n",
        (400, "invalid_target"),
    ),
    case("absolute-form-empty-host", b"GET http:///x?{c} HTTP/1.1\r\nHost: x\r\n\r\n", (400, None)),
    case(
        "absolute-form-needs-host",
        b"GET http://h.example/x?{c} HTTP/1.1\r\n\r\n",
        (400, "invalid_host"),
    ),
    case("asterisk-form", b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", (400, None), closes=None),
    case(
        "authority-form",
        b"CONNECT h.example:443 HTTP/1.1\r\nHost: h.example:443\r\n\r\n",
        (400, None),
        closes=True,
    ),
    case("no-leading-slash", b"GET a/b?{c} HTTP/1.1\r\nHost: x\r\n\r\n", (400, None), closes=None),
    # ------------------------------------------------ header fields
    case(
        "header-count-at-limit",
        get(b"/a", b"".join(b"X-H%d: v\r\n" % n for n in range(99))),
        OK,
        delivered=(("GET", "/base/a", b""),),
    ),
    case(
        "header-count-over-limit",
        get(b"/a", b"".join(b"X-H%d: v\r\n" % n for n in range(100))),
        (431, "too_many_headers"),
    ),
    case(
        "header-count-over-limit-with-body",
        post(b"/a", b"hi", b"".join(b"X-H%d: v\r\n" % n for n in range(100))),
        (431, "too_many_headers"),
        closes=True,
    ),
    case(
        "expect-continue",
        (
            b"POST /a?{c} HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
            b"hi",
        ),
        OK,
        delivered=(("POST", "/base/a", b"hi"),),
    ),
]


def _marker(name: str) -> str:
    return "c=" + name


def _of_case(rig: Rig, name: str) -> list[Received]:
    marker = _marker(name)
    return [r for r in list(rig.backend.received) if marker in r.query.split("&")]


def _sentinels_delivered(rig: Rig, name: str) -> None:
    """Send one request per queue after the case; once both are delivered, so is every
    task the case stored (each queue delivers one at a time, in order)."""
    for host in ("x", ROUTED):
        with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
            sock.sendall(f"GET /sentinel?c={name}-s HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            answer = Reader(sock).answer()
            assert answer is not None
            assert answer.status == 202, answer
    wait_for(
        lambda: len(_of_case(rig, name + "-s")) == 2,
        TIMEOUT,
        message=f"the sentinels of {name} were not delivered",
    )


def run_case(rig: Rig, item: Case) -> None:
    marker = _marker(item.name).encode()
    answers: list[Answer] = []
    with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
        reader = Reader(sock)
        for n, part in enumerate(item.parts):
            if n:
                time.sleep(0.05)  # so the server is likely to read each part on its own
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(part.replace(b"{c}", marker))
        if item.half_close:
            sock.shutdown(socket.SHUT_WR)
        for _ in item.answers:
            answer = reader.answer()
            assert answer is not None, f"closed after {[a.status for a in answers]}"
            answers.append(answer)
        got = [(a.status, a.error) for a in answers]
        wanted = [
            (s, code if code is not None else got[i][1]) for i, (s, code) in enumerate(item.answers)
        ]
        assert got == wanted
        if item.closes:
            # An answer to a whole request sent before a half-close may go out before the
            # server reads the EOF (a race of kernel and loop): it cannot say close then.
            if not (item.half_close and answers[-1].status == 202):
                assert answers[-1].headers.get("connection") == "close"
            assert reader.at_end(), f"bytes after the last answer: {reader.data!r}"
        elif item.closes is False:
            sock.sendall(b"GET /probe?" + marker + b" HTTP/1.1\r\nHost: x\r\n\r\n")
            probe = reader.answer()
            assert probe is not None
            assert probe.status == 202, probe
            answers.append(probe)
    _sentinels_delivered(rig, item.name)
    received = _of_case(rig, item.name)
    expected = list(item.delivered)
    if item.closes is False:
        expected.append(("GET", "/base/probe", b""))
    assert [(r.method, r.path, r.body) for r in received] == expected
    answered = {a.headers["x-request-id"] for a in answers if a.status == 202}
    assert {r.header("x-request-id") for r in received} == answered
    assert all(r.header("transfer_encoding") is None for r in received)


@pytest.mark.parametrize("item", [pytest.param(c, id=c.name) for c in CASES])
def test_framing(rig: Rig, item: Case) -> None:
    """Each case's client gets exactly the answers listed; the backend gets exactly the
    requests the framing meant, each one answered 202 (see the module docstring)."""
    run_case(rig, item)


def test_the_suite_has_at_least_sixty_cases() -> None:
    """The battery covers CL/TE, chunk syntax, trailers, pipelining, half-close, versions
    and request-target forms with at least 60 cases."""
    assert len(CASES) >= 60
    assert len({c.name for c in CASES}) == len(CASES)


# ---------------------------------------------------------------- framing bytes without end


@pytest.mark.parametrize(
    ("name", "start", "piece"),
    [
        ("trailer", b"2\r\nhi\r\n0\r\nX-T: ", b"a" * 8192),
        ("trailer-fields", b"2\r\nhi\r\n0\r\n", b"X-T: 1\r\n" * 1024),
        ("chunk-extension", b"2;x=", b"e" * 8192),
    ],
)
def test_endless_framing_is_431_after_about_the_head_cap(
    rig: Rig, name: str, start: bytes, piece: bytes
) -> None:
    """Trailer fields or chunk extensions streamed without end: 431 ``framing_too_large``
    after about the head cap (plus what one read can hold), the connection closed, and
    nothing delivered."""
    marker = f"c=endless-{name}".encode()
    sent = 0
    with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
        sock.sendall(chunked(b"/a", start).replace(b"{c}", marker))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < 8 * 1024 * 1024:
                sock.sendall(piece)
                sent += len(piece)
        answer = Reader(sock).answer()
    assert sent < 8 * 1024 * 1024, "the proxy read 8 MiB of framing"
    assert answer is not None
    assert (answer.status, answer.error) == (431, "framing_too_large")
    assert answer.headers["connection"] == "close"
    _sentinels_delivered(rig, f"endless-{name}")
    assert _of_case(rig, f"endless-{name}") == []


# ---------------------------------------------------------------- pipelining a lot


def test_three_thousand_pipelined_gets_are_all_answered_in_order(rig: Rig) -> None:
    """3,000 GETs in one write, the client reading nothing for a while and then
    everything: every one is answered 202, in order, and delivered once."""
    name = "p3000"
    count = 3000
    stream = b"".join(
        b"GET /p%d?c=%s HTTP/1.1\r\nHost: x\r\n\r\n" % (n, name.encode()) for n in range(count)
    )
    with socket.create_connection(("127.0.0.1", rig.port), timeout=TIMEOUT) as sock:
        sock.sendall(stream)
        time.sleep(0.5)  # the client reads nothing meanwhile
        reader = Reader(sock)
        answers = [reader.answer() for _ in range(count)]
    assert all(a is not None and a.status == 202 for a in answers)
    _sentinels_delivered(rig, name)
    received = _of_case(rig, name)
    assert [r.path for r in received] == [f"/base/p{n}" for n in range(count)]
    assert [r.header("x-request-id") for r in received] == [
        a.headers["x-request-id"] for a in answers if a is not None
    ]


# ---------------------------------------------------------------- memory under a large trailer


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")  # pragma: no cover


def test_an_endless_trailer_is_431_and_memory_stays_bounded(tmp_path: Path) -> None:
    """A trailer field streamed without end after the last chunk is refused (431) after
    about the head cap; the real process's RSS grows by far less than what was sent,
    and a request on another connection meanwhile is answered 202."""
    with (
        run_backend() as backend,
        proxy_process("--target", backend.url, "--db", str(tmp_path / "t.db")) as (process, url, _),
    ):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as warm:
            warm.sendall(post(b"/warm", b"hi").replace(b"{c}", b"c=warm"))
            assert Reader(warm).answer() is not None
        before = _rss_kib(process.pid)
        sent = 0
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.sendall(chunked(b"/a", b"2\r\nhi\r\n0\r\nX-T: ").replace(b"{c}", b"c=big"))
            piece = b"a" * 65536
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < 64 * 1024 * 1024:
                    sock.sendall(piece)
                    sent += len(piece)
            grown = _rss_kib(process.pid) - before
            with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as other:
                other.sendall(post(b"/other", b"hi").replace(b"{c}", b"c=other"))
                answer = Reader(other).answer()
                assert answer is not None
                assert answer.status == 202
        assert sent < 64 * 1024 * 1024, "the proxy read a 64 MiB trailer"
        assert grown < 16 * 1024, f"RSS grew by {grown} KiB"
        assert not any("c=big" in r.query for r in backend.received)
