"""Property tests of request -> Envelope -> outgoing request (hypothesis).

The ingress runs in process as the ASGI app it is (no sockets, so thousands of requests
per second), with tests.support.engines.RecordingEngine catching the Envelope; the
outgoing request is built by proxy.engines.delivery and then by httpx exactly as the
embedded engine sends it, and as the CreateTask message the Cloud Tasks engine sends.
Inputs go beyond what a real HTTP parser lets through (any byte in names, values and the
raw path), since the ingress is an ASGI app any server may run.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.config.loading import settings_from_dict
from proxy.config.settings import Settings
from proxy.engines.cloudtasks.request import create_task_message, queue_targets
from proxy.engines.delivery import BODY_METHODS, build_request, cloud_tasks_headers, target_url
from proxy.envelope import Envelope
from proxy.errors import BadRequestError
from proxy.ingress.asgi import AsgiIngress
from proxy.ingress.headers import ALWAYS_DROPPED, HOP_BY_HOP, RESERVED_PREFIXES, filter_headers
from proxy.ingress.pipeline import ALLOWED_METHODS, Ingress
from proxy.metrics import Metrics
from tests.support.engines import RecordingEngine

TARGETS = (
    "http://127.0.0.1:9",
    "http://127.0.0.1:9/base",
    "https://backend.internal:8443/api/v1/",
)
ADDED = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
CREDENTIALS = {"authorization", "cookie", "proxy-authorization", "x-api-key"}
# What RFC 3986 allows in a path and a query, with "%" only as the start of an escape.
PATH_RE = re.compile(r"/(?:[A-Za-z0-9/:@!$&'()*+,;=._~-]|%[0-9A-F]{2}|%[0-9a-fA-F]{2})*")
QUERY_RE = re.compile(r"(?:[A-Za-z0-9/?:@!$&'()*+,;=._~-]|%[0-9a-fA-F]{2})*")
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- strategies

INTERESTING_NAMES = sorted(
    ALWAYS_DROPPED
    | CREDENTIALS
    | {"x-cloudtasks-taskname", "x-google-foo", "x-appengine-user", "content-type", "x-hop"}
)
token = st.text(alphabet="!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyz-", min_size=1)
header_name = st.one_of(
    st.sampled_from(INTERESTING_NAMES).map(str.encode),
    token.map(str.encode),
    st.binary(min_size=0, max_size=12),  # anything at all: CR, LF, NUL, ":" and non-ASCII
)
header_value = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
        str.encode
    ),
    st.binary(max_size=40),
    st.sampled_from([b"a\r\nInjected: 1", b"a\nb", b"a\rb", b"a\x00b", b"\xff\xfe", b"x-hop"]),
)
headers = st.lists(st.tuples(header_name, header_value), max_size=12)
segment = st.one_of(
    st.text(alphabet="abcXYZ019-._~!$&'()*+,;=:@%\\\"<>^`{|} #?", max_size=8),
    st.sampled_from([".", "..", "%2e%2E", "..%2f", "..\\", "%5c..", "..;x", ".%3B", "%", "%zz"]),
)
raw_path = st.lists(segment, max_size=6).map(lambda parts: "/" + "/".join(parts))
query = st.text(alphabet='abc=&%+/?:@\\"<>{}|^` 0123456789ABCDEFzz#', max_size=24)


def _settings(target: str) -> Settings:
    return settings_from_dict(
        {
            "queues": [
                {"name": "q", "target": target},
                {"name": "fwd", "target": "http://127.0.0.1:10/f"},
            ],
            "routes": [
                {
                    "prefix": "/fwd",
                    "queue": "fwd",
                    "forward_authorization": True,
                    "forward_cookies": True,
                }
            ],
            "limits": {"max_body_bytes": 4096, "max_header_bytes": 2048},
        }
    )


SETTINGS = {target: _settings(target) for target in TARGETS}
# The same queues on the Cloud Tasks engine: the CreateTask message each Envelope becomes.
CLOUD_TARGETS = {
    target: queue_targets(
        settings_from_dict(
            {
                "engine": "cloudtasks",
                "queues": [{"name": "q", "target": target}],
                "cloudtasks": {"project": "p", "location": "l"},
            }
        )
    )["q"]
    for target in TARGETS
}


def ingest(
    settings: Settings, method: str, path: bytes, query: bytes, raw: list[Any], body: bytes
) -> tuple[int, bytes, RecordingEngine]:
    """Run one request through the ingress; its status, body and the engine."""
    engine = RecordingEngine()
    app = AsgiIngress(Ingress(settings, engine, Metrics()))
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": query,
        "headers": [(b"host", b"proxy.example:8080"), *_lower(raw)],
        "client": ("203.0.113.7", 40000),
    }
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], sent[1]["body"], engine


def _lower(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(name.lower(), value) for name, value in raw]


def _connection_named(raw: list[tuple[bytes, bytes]]) -> set[str]:
    named: set[str] = set()
    for name, value in _lower(raw):
        if name == b"connection":
            named |= {t.strip().lower() for t in value.decode("latin-1").split(",")}
    return named


def _clean(text: str) -> bool:
    return all(" " <= c <= "~" or c == "\t" for c in text)


# ---------------------------------------------------------------- properties


@PROPERTY
@given(raw=headers)
def test_filter_headers_never_passes_hop_by_hop_credentials_or_control_bytes(
    raw: list[tuple[bytes, bytes]],
) -> None:
    """filter_headers keeps only deliverable end-to-end headers: never hop-by-hop, named in
    Connection, credentials, control or reserved ones, and never CR, LF, NUL or non-ASCII
    (such a header is refused instead)."""
    try:
        kept = filter_headers(raw)
    except BadRequestError as exc:
        refused = exc.code
    else:
        refused = None
    if refused is not None:
        assert refused == "invalid_header"
        return
    named = _connection_named(raw)
    for name, value in kept:
        assert name not in ALWAYS_DROPPED
        assert name not in HOP_BY_HOP
        assert name not in named
        assert name not in {"authorization", "cookie"}
        assert not name.startswith(RESERVED_PREFIXES)
        assert re.fullmatch(r"[!#$%&'*+.^_`|~0-9a-z-]+", name), name
        assert _clean(value), value
    expected = [
        (n.decode(), v.decode())
        for n, v in _lower(raw)
        if n.decode("latin-1") not in ALWAYS_DROPPED | named | {"authorization", "cookie"}
        and not n.decode("latin-1").startswith(RESERVED_PREFIXES)
    ]
    assert kept == expected  # everything else, in order, values unchanged


@PROPERTY
@given(
    target=st.sampled_from(TARGETS),
    method=st.sampled_from(sorted(ALLOWED_METHODS)),
    path=raw_path,
    query=query,
    raw=headers,
    body=st.binary(max_size=64),
)
def test_request_round_trips_to_the_configured_target_only(
    target: str, method: str, path: str, query: str, raw: list[Any], body: bytes
) -> None:
    """Any request is a 4xx or a 202 whose outgoing request keeps method, path, query,
    body and allowed headers, carries no hop-by-hop, credential, CR/LF/NUL or non-ASCII
    header, and goes to the configured target's scheme, host and port."""
    body = body if method in BODY_METHODS else b""
    settings = SETTINGS[target]
    status, answer, engine = ingest(
        settings, method, path.encode("latin-1"), query.encode("latin-1"), raw, body
    )
    assert 400 <= status < 500 or status == 202, (status, answer)
    if status != 202:
        assert engine.envelopes == []
        return
    [envelope] = engine.envelopes
    assert envelope.method == method
    assert envelope.body == body
    assert PATH_RE.fullmatch(envelope.path), envelope.path
    assert QUERY_RE.fullmatch(envelope.query), envelope.query
    # Same bytes once percent-decoded: characters were escaped, never changed or dropped.
    assert unquote_to_bytes(envelope.path) == unquote_to_bytes(path.encode("latin-1"))
    assert unquote_to_bytes(envelope.query) == unquote_to_bytes(query.encode("latin-1"))
    segments = unquote_to_bytes(envelope.path).replace(b"\\", b"/").split(b"/")
    dots = [segment.split(b";", 1)[0] for segment in segments]
    assert b".." not in dots
    assert b"." not in dots
    named = _connection_named(raw)
    delivered = [(n, v) for n, v in envelope.headers if n not in ADDED]
    assert delivered == [
        (n.decode(), v.decode())
        for n, v in _lower(raw)
        if n.decode("latin-1") not in ALWAYS_DROPPED | named | {"authorization", "cookie"}
        and not n.decode("latin-1").startswith(RESERVED_PREFIXES)
    ]
    check_outgoing(settings, envelope, target)


def check_outgoing(settings: Settings, envelope: Envelope, target: str) -> None:
    """The request httpx sends for ``envelope``: to the target's origin, path and query
    exactly as stored, headers free of CR/LF/NUL and credentials."""
    queue = settings.queue(envelope.queue)
    outgoing = build_request(queue, envelope)
    outgoing.headers.update(
        cloud_tasks_headers(
            queue=queue.name, task=envelope.id, retry_count=1, execution_count=0, eta=1.5
        )
    )
    request = httpx.Request(
        outgoing.method, outgoing.url, headers=outgoing.headers, content=outgoing.body
    )
    configured = httpx.URL(queue.target)
    assert (request.url.scheme, request.url.host, request.url.port) == (
        configured.scheme,
        configured.host,
        configured.port,
    )
    assert urlsplit(target_url(queue, envelope)).netloc == urlsplit(queue.target).netloc
    wire = urlsplit(queue.target.rstrip("/")).path + envelope.path
    if envelope.query:
        wire += "?" + envelope.query
    assert request.url.raw_path.decode("ascii") == wire  # httpx re-encodes nothing
    assert request.method == envelope.method
    assert request.content == envelope.body
    for name, value in request.headers.raw:
        assert not re.search(rb"[\r\n\x00]", name + value), (name, value)
        assert name.lower() not in {b"authorization", b"cookie", b"connection", b"te"}
    if envelope.queue == "q":  # the Cloud Tasks engine asks for the same request
        task = create_task_message(CLOUD_TARGETS[target], envelope).task.http_request
        assert task.url == outgoing.url
        assert dict(task.headers) == build_request(queue, envelope).headers
        assert task.body == (envelope.body if envelope.method in BODY_METHODS else b"")


@PROPERTY
@given(raw=headers, body=st.binary(max_size=32))
def test_forwarding_route_passes_credentials_but_nothing_hop_by_hop(
    raw: list[Any], body: bytes
) -> None:
    """On a route with forward_authorization/forward_cookies, Authorization and Cookie are
    delivered as sent; hop-by-hop and proxy credentials still never are."""
    settings = SETTINGS[TARGETS[0]]
    status, _, engine = ingest(settings, "POST", b"/fwd/x", b"", raw, body)
    assert 400 <= status < 500 or status == 202
    if status != 202:
        return
    [envelope] = engine.envelopes
    assert envelope.queue == "fwd"
    names = [n for n, _ in envelope.headers]
    sent = {n.lower().decode("latin-1") for n, _ in raw} - _connection_named(raw)
    for credential in ("authorization", "cookie"):
        assert (credential in names) == (credential in sent)
    assert not set(names) & (HOP_BY_HOP | {"proxy-authorization"})


@PROPERTY
@given(
    queue=st.from_regex(r"[A-Za-z0-9-]{1,100}", fullmatch=True),
    task=st.from_regex(r"[A-Za-z0-9_-]{1,500}", fullmatch=True),
    retry=st.integers(0, 10**6),
    executed=st.integers(0, 10**6),
    eta=st.floats(0, 4e9),
    previous=st.none() | st.integers(100, 599),
)
def test_cloud_tasks_headers_are_plain_ascii(
    queue: str, task: str, retry: int, executed: int, eta: float, previous: int | None
) -> None:
    """The X-CloudTasks-* headers of any attempt are printable ASCII that httpx accepts."""
    built = cloud_tasks_headers(
        queue=queue,
        task=task,
        retry_count=retry,
        execution_count=executed,
        eta=eta,
        previous_response=previous,
    )
    httpx.Headers(built)  # raises on what it could not send
    assert all(_clean(value) for value in built.values())
    assert built["user-agent"] == "Google-Cloud-Tasks"
    assert built["x-cloudtasks-taskretrycount"] == str(retry)
