"""Which HTTP client should deliveries go out on? Candidates side by side, in one run.

    python -m bench.delivery_clients [--quick] [--seconds 3] [--in-flight 1,10,100]
                                     [--clients httpx,aiohttp,...] [--loops asyncio,uvloop]

Every candidate POSTs the same 1 KiB body with the headers a delivery carries (Cloud Tasks
headers, X-Forwarded-*, X-Request-Id) to the same backend, bench/fast_backend.py, in its own
process on CPU 1 (``taskset``); each client runs in a fresh process of its own on CPU 0, at
1, 10 and 100 requests in flight (one keep-alive connection each), on the asyncio loop and on
uvloop (the proxy runs under uvicorn[standard], which uses uvloop). Per run: requests/s and
CPU microseconds per request of the client process (all its threads, user + system, from
/proc/self/task/*/stat), and the backend's CPU per request and share of its core (to show it
was not the limit). Each run is 0.5 s of warm-up, then ``--seconds`` measured (at most
2,000,000 requests); traffic goes to 127.0.0.1 only.

Each client is set up the way a delivery client has to be: redirects not followed, a total
deadline per request (10 s), the response body read with a bound (1 MiB, then the connection
is dropped), no cookie jar where the library has one, pool size = requests in flight.

Clients that are not installed are reported as such. The optional candidates are not
dependencies of the project; to measure them all, use a throwaway venv:

    python3 -m venv /tmp/bench-clients-venv
    /tmp/bench-clients-venv/bin/pip install aiohttp==3.14.5 httpx==0.28.1 uvloop httptools \\
        aiosonic niquests curl_cffi pyreqwest
    /tmp/bench-clients-venv/bin/python -m bench.delivery_clients
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from bench import harness

ROOT = Path(__file__).resolve().parents[1]
BODY = b'{"event": "click", "pad": "' + b"x" * 996 + b'"}'  # 1024 bytes
HEADERS = {
    "content-type": "application/json",
    "x-forwarded-for": "127.0.0.1",
    "x-forwarded-proto": "http",
    "x-forwarded-host": "127.0.0.1:8080",
    "x-request-id": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "user-agent": "Google-Cloud-Tasks",
    "x-cloudtasks-queuename": "default",
    "x-cloudtasks-taskname": "5d8f1c2e9b0a4f6e8d7c6b5a49382716",
    "x-cloudtasks-taskretrycount": "0",
    "x-cloudtasks-taskexecutioncount": "0",
    "x-cloudtasks-tasketa": "1764633600.123456",
}
PATH = "/deliver/events"
DEADLINE = 10.0  # total, per request
MAX_BODY = 1024 * 1024  # read at most this much of a response body
SHARD = 8  # connections per httpx client in the proxy's sharded pool (proxy/engines/local)
WARMUP = 0.5
MAX_REQUESTS = 2_000_000
MAX_ERRORS = 1000
CLIENTS = (
    "raw-httptools",
    "proxy",
    "aiohttp",
    "httpx",
    "httpx-sharded",
    "httpx+sniffio",
    "httpx-sharded+sniffio",
    "aiosonic",
    "niquests",
    "curl_cffi",
    "pyreqwest",
)
DISTRIBUTIONS = {
    "raw-httptools": "httptools",
    "proxy": "httptools",
    "aiohttp": "aiohttp",
    "httpx": "httpx",
    "httpx-sharded": "httpx",
    "httpx+sniffio": "httpx",
    "httpx-sharded+sniffio": "httpx",
    "aiosonic": "aiosonic",
    "niquests": "niquests",
    "curl_cffi": "curl_cffi",
    "pyreqwest": "pyreqwest",
}

Send = Callable[[int], Awaitable[int]]  # slot -> status
Close = Callable[[], Awaitable[None]]


# ------------------------------------------------------------------ the candidates


async def make_raw(url: str, n: int) -> tuple[Send, Close]:
    """The floor: asyncio Protocol + httptools response parser, a LIFO pool of keep-alive
    connections, the request head built per request."""
    import httptools

    loop = asyncio.get_running_loop()
    host, port = "127.0.0.1", int(url.split(":")[2].split("/")[0])
    authority = f"{host}:{port}"

    class Connection(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.transport: asyncio.Transport | None = None
            self.waiter: asyncio.Future[int] | None = None
            self.read = 0
            self.reusable = False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def connection_lost(self, exc: Exception | None) -> None:
            self.transport = None
            self.reusable = False
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ConnectionError("connection lost"))

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                self.fail(exc)

        def fail(self, exc: Exception) -> None:
            self.reusable = False
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

        def on_body(self, body: bytes) -> None:
            self.read += len(body)
            if self.read > MAX_BODY:
                self.fail(ValueError("response body over the bound"))

        def on_message_complete(self) -> None:
            self.reusable = self.parser.should_keep_alive()
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(self.parser.get_status_code())

        def request(self, data: bytes) -> asyncio.Future[int]:
            assert self.transport is not None
            self.read = 0
            self.reusable = False
            self.waiter = loop.create_future()
            self.transport.write(data)
            return self.waiter

    idle: list[Connection] = []

    async def send(slot: int) -> int:
        headers = dict(HEADERS)
        head = f"POST {PATH} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {len(BODY)}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = (head + "\r\n").encode("latin-1") + BODY
        async with asyncio.timeout(DEADLINE):
            connection = idle.pop() if idle else None
            if connection is None or connection.transport is None:
                _, connection = await loop.create_connection(Connection, host, port)
            try:
                status = await connection.request(data)
            except BaseException:
                if connection.transport is not None:
                    connection.transport.close()
                raise
        if connection.reusable and connection.transport is not None:
            idle.append(connection)
        elif connection.transport is not None:
            connection.transport.close()
        return status

    async def close() -> None:
        for connection in idle:
            if connection.transport is not None:
                connection.transport.close()

    return send, close


async def make_proxy(url: str, n: int) -> tuple[Send, Close]:
    """The proxy's own delivery path: proxy.engines.local.attempt.send on a
    proxy.engines.http_client pool of ``n`` connections, with its deadline timer and
    bounded read, as the delivery process runs it."""
    from proxy.engines.delivery import OutgoingRequest
    from proxy.engines.http_client import ConnectionPool
    from proxy.engines.local.attempt import PoolSender

    sender = PoolSender(ConnectionPool(n))
    request = OutgoingRequest("POST", url, dict(HEADERS), BODY)

    async def send(slot: int) -> int:
        outcome = await sender.send(request, deadline=DEADLINE, now=0.0)
        if outcome.status is None:
            raise OSError(outcome.error)
        return outcome.status

    return send, sender.pool.close


async def make_aiohttp(url: str, n: int) -> tuple[Send, Close]:
    """aiohttp ClientSession on a TCPConnector of ``n`` keep-alive connections, no cookie
    jar, no environment proxies, nothing decoded; total timeout and no redirects per request."""
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=n, limit_per_host=0, keepalive_timeout=4.0),
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        skip_auto_headers=("Accept", "Accept-Encoding", "Content-Type", "User-Agent"),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
    )
    timeout = aiohttp.ClientTimeout(total=DEADLINE)

    async def send(slot: int) -> int:
        async with session.request(
            "POST", url, data=BODY, headers=dict(HEADERS), allow_redirects=False, timeout=timeout
        ) as response:
            read = 0
            async for chunk in response.content.iter_any():
                read += len(chunk)
                if read > MAX_BODY:
                    response.close()
                    break
            return response.status

    return send, session.close


async def _httpx_clients(count: int, size: int) -> list[Any]:
    import httpx

    return [
        httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            timeout=httpx.Timeout(DEADLINE),
        )
        for _ in range(count)
    ]


async def _httpx_send(client: Any, url: str) -> int:
    """As proxy/engines/local/attempt.py sends with httpx: a streamed response read with a
    bound, inside one asyncio.timeout for the whole attempt."""
    import httpx

    async with asyncio.timeout(DEADLINE):
        request = httpx.Request("POST", url, headers=dict(HEADERS), content=BODY)
        response = await client.send(request, stream=True)
        try:
            read = 0
            async for chunk in response.aiter_bytes():
                read += len(chunk)
                if read > MAX_BODY:
                    break
        finally:
            await response.aclose()
        assert isinstance(response, httpx.Response)
        return response.status_code


async def make_httpx(url: str, n: int) -> tuple[Send, Close]:
    """One httpx AsyncClient with a pool of ``n`` connections."""
    (client,) = await _httpx_clients(1, n)

    async def send(slot: int) -> int:
        return await _httpx_send(client, url)

    return send, client.aclose


async def make_httpx_sharded(url: str, n: int) -> tuple[Send, Close]:
    """httpx as the proxy uses it today: one AsyncClient per 8 connections, each attempt on
    the client of its slot (httpx's pool slows down with many connections)."""
    clients = await _httpx_clients(math.ceil(n / SHARD), SHARD)

    async def send(slot: int) -> int:
        return await _httpx_send(clients[slot * len(clients) // n], url)

    async def close() -> None:
        for client in clients:
            await client.aclose()

    return send, close


async def make_aiosonic(url: str, n: int) -> tuple[Send, Close]:
    """aiosonic HTTPClient, a pool of ``n`` connections never recycled by count."""
    import aiosonic
    from aiosonic.pools import PoolConfig
    from aiosonic.timeout import Timeouts

    connector = aiosonic.TCPConnector(
        pool_configs={":default": PoolConfig(size=n, max_conn_requests=None)}
    )
    client = aiosonic.HTTPClient(connector=connector, handle_cookies=False, follow=False)
    timeouts = Timeouts(request_timeout=DEADLINE)

    async def send(slot: int) -> int:
        response = await client.request(
            url,
            "POST",
            data=BODY,
            headers=dict(HEADERS),
            timeouts=timeouts,
            follow=False,
            stream=True,
        )
        try:
            read = 0
            async for chunk in response.read_chunks():
                read += len(chunk)
                if read > MAX_BODY:
                    break
        finally:
            await response.aclose()
        return int(response.status_code)

    async def close() -> None:
        await connector.cleanup()

    return send, close


async def make_niquests(url: str, n: int) -> tuple[Send, Close]:
    """niquests AsyncSession, HTTP/1.1 only, no retries, ``n`` pooled connections; its
    timeout is per operation, so the attempt runs inside an asyncio.timeout."""
    import niquests

    session = niquests.AsyncSession(
        pool_connections=1,
        pool_maxsize=n,
        disable_http2=True,
        disable_http3=True,
        retries=0,
        allow_incoming_cookies=False,
    )
    session.trust_env = False

    async def send(slot: int) -> int:
        async with asyncio.timeout(DEADLINE):
            response = await session.post(
                url,
                data=BODY,
                headers=dict(HEADERS),
                allow_redirects=False,
                timeout=DEADLINE,
                stream=True,
            )
            try:
                read = 0
                async for chunk in await response.iter_content(65536):
                    read += len(chunk)
                    if read > MAX_BODY:
                        break
            finally:
                await response.close()
            return int(response.status_code or 0)

    return send, session.close


async def make_curl_cffi(url: str, n: int) -> tuple[Send, Close]:
    """curl_cffi (libcurl) AsyncSession, HTTP/1.1, ``n`` handles; libcurl's timeout is total."""
    from curl_cffi import CurlHttpVersion
    from curl_cffi.requests import AsyncSession

    session: Any = AsyncSession(
        max_clients=n,
        allow_redirects=False,
        timeout=DEADLINE,
        http_version=CurlHttpVersion.V1_1,
        trust_env=False,
    )

    async def send(slot: int) -> int:
        response = await session.post(
            url,
            data=BODY,
            headers=dict(HEADERS),
            allow_redirects=False,
            timeout=DEADLINE,
            default_headers=False,
            accept_encoding=None,
            discard_cookies=True,
            stream=True,
        )
        try:
            read = 0
            async for chunk in response.aiter_content():
                read += len(chunk)
                if read > MAX_BODY:
                    break
        finally:
            await response.aclose()
        return int(response.status_code)

    return send, session.close


async def make_pyreqwest(url: str, n: int) -> tuple[Send, Close]:
    """pyreqwest (Rust reqwest/hyper on a tokio runtime thread), HTTP/1.1 only, ``n``
    connections, a total timeout, no redirects, no cookie store, streamed body."""
    from datetime import timedelta

    from pyreqwest.client import ClientBuilder

    client = (
        ClientBuilder()
        .max_connections(n)
        .pool_max_idle_per_host(n)
        .follow_redirects(False)
        .default_cookie_store(False)
        .timeout(timedelta(seconds=DEADLINE))
        .http1_only()
        .gzip(False)
        .build()
    )

    async def send(slot: int) -> int:
        request = client.post(url).headers(dict(HEADERS)).body_bytes(BODY).build_streamed()
        async with request as response:
            read = 0
            while (chunk := await response.body_reader.read_chunk()) is not None:
                read += len(chunk)
                if read > MAX_BODY:
                    break
            return int(response.status)

    return send, client.close


FACTORIES: dict[str, Callable[[str, int], Awaitable[tuple[Send, Close]]]] = {
    "raw-httptools": make_raw,
    "proxy": make_proxy,
    "aiohttp": make_aiohttp,
    "httpx": make_httpx,
    "httpx-sharded": make_httpx_sharded,
    "httpx+sniffio": make_httpx,
    "httpx-sharded+sniffio": make_httpx_sharded,
    "aiosonic": make_aiosonic,
    "niquests": make_niquests,
    "curl_cffi": make_curl_cffi,
    "pyreqwest": make_pyreqwest,
}


# ------------------------------------------------------------------ one client process


def main_and_other_ticks(pid: int) -> tuple[int, int]:
    """(main thread, other threads) user + system clock ticks of ``pid``."""
    ticks = harness.thread_ticks(pid)
    main = ticks.get(pid, 0)
    return main, sum(ticks.values()) - main


async def child_main(
    client: str, n: int, seconds: float, port: int, backend_pid: int
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}{PATH}"
    if client.endswith("+sniffio"):
        import sniffio  # noqa: F401  (ImportError: reported as not installed)
    send, close = await FACTORIES[client](url, n)
    done = 0
    errors: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    stop = False

    async def worker(slot: int) -> None:
        nonlocal done
        while not stop and done < MAX_REQUESTS:
            try:
                status = await send(slot)
            except Exception as exc:
                errors[type(exc).__name__] += 1
                if sum(errors.values()) > MAX_ERRORS:
                    return
                continue
            statuses[status] += 1
            done += 1

    workers = [asyncio.ensure_future(worker(slot)) for slot in range(n)]
    try:
        await asyncio.sleep(WARMUP)
        pid = os.getpid()
        start_count, start = done, time.perf_counter()
        start_ticks = main_and_other_ticks(pid)
        start_backend = harness.process_ticks(backend_pid)
        await asyncio.wait(workers, timeout=seconds)  # early only when every worker stopped
        end_count, end = done, time.perf_counter()
        end_ticks = main_and_other_ticks(pid)
        end_backend = harness.process_ticks(backend_pid)
    finally:
        stop = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DEADLINE + 5):
                await asyncio.gather(*workers, return_exceptions=True)
        for w in workers:
            w.cancel()
        with contextlib.suppress(Exception):
            await close()
    requests = end_count - start_count
    elapsed = end - start
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    per = tick_us / requests if requests else 0.0
    main_t = end_ticks[0] - start_ticks[0]
    other_t = end_ticks[1] - start_ticks[1]
    backend_t = end_backend - start_backend
    return {
        "client": client,
        "in_flight": n,
        "requests": requests,
        "seconds": round(elapsed, 3),
        "rps": round(requests / elapsed, 1) if elapsed else 0.0,
        "client_us": round((main_t + other_t) * per, 1),
        "client_loop_thread_us": round(main_t * per, 1),
        "client_other_threads_us": round(other_t * per, 1),
        "client_core_pct": round((main_t + other_t) * tick_us / 1e6 / elapsed * 100, 1),
        "backend_us": round(backend_t * per, 1),
        "backend_core_pct": round(backend_t * tick_us / 1e6 / elapsed * 100, 1),
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": dict(errors),
    }


def child(args: argparse.Namespace) -> None:
    """Run one client in this process and print its result as one JSON line."""
    if args.loop == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    else:
        factory = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            result = runner.run(
                child_main(args.child, args.in_flight, args.seconds, args.port, args.backend_pid)
            )
    except ImportError as exc:
        result = {"error": f"not installed: {exc.name}"}
    result["loop"] = args.loop
    print(json.dumps(result), flush=True)


def run_child(
    client: str,
    in_flight: int,
    seconds: float,
    backend: Any,
    *,
    loop: str = "asyncio",
    python: str = sys.executable,
    cpus: str | None = "0",
    sniffio_dir: str = "/tmp/bench-sniffio",
) -> dict[str, Any]:
    """Run ``client`` in a fresh process (pinned to ``cpus``) against ``backend`` (a
    bench.fast_backend.Backend); its result, or ``{"error": ...}``."""
    command = [
        python, "-m", "bench.delivery_clients", "--child", client,
        "--in-flight", str(in_flight), "--seconds", str(seconds), "--loop", loop,
        "--port", str(backend.port), "--backend-pid", str(backend.pid),
    ]  # fmt: skip
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    env = dict(os.environ)
    if client.endswith("+sniffio"):
        env["PYTHONPATH"] = sniffio_dir
    else:
        env.pop("PYTHONPATH", None)
    try:
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + WARMUP + DEADLINE + 60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail[:200]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def versions(python: str) -> dict[str, str]:
    names = sorted(set(DISTRIBUTIONS.values()) | {"uvloop", "httpcore", "anyio", "sniffio"})
    code = (
        "import importlib.metadata as m, json\n"
        "out = {}\n"
        f"for n in {names!r}:\n"
        "    try: out[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: out[n] = None\n"
        "print(json.dumps(out))"
    )
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


# ------------------------------------------------------------------ the comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--in-flight", default="1,10,100")
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="1 s runs, 10 and 100 in flight")
    parser.add_argument("--python", default=sys.executable, help="interpreter of the clients")
    parser.add_argument(
        "--sniffio-dir",
        default="/tmp/bench-sniffio",
        help="a directory with sniffio (pip install --target DIR sniffio) for the +sniffio runs",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="asyncio", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.in_flight = int(args.in_flight)
        child(args)
        return
    from bench.fast_backend import running

    if args.quick:
        args.seconds, args.in_flight = 1.0, "10,100"
    clients = [c for c in args.clients.split(",") if c]
    unknown = set(clients) - set(FACTORIES)
    if unknown:
        parser.error(f"unknown clients: {', '.join(sorted(unknown))}")
    in_flights = [int(x) for x in args.in_flight.split(",")]
    loops = [x for x in args.loops.split(",") if x]
    installed = versions(args.python)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "versions": installed,
        "seconds": args.seconds,
        "load_average_before": os.getloadavg(),
        "runs": [],
    }
    if installed.get("uvloop") is None and "uvloop" in loops:
        loops.remove("uvloop")
    started = time.monotonic()
    with running("1") as backend:
        for round_ in range(args.rounds):
            for n in in_flights:
                for loop in loops:
                    for client in clients:
                        if installed.get(DISTRIBUTIONS[client]) is None:
                            result: dict[str, Any] = {"error": "not installed"}
                        else:
                            result = run_child(
                                client,
                                n,
                                args.seconds,
                                backend,
                                loop=loop,
                                python=args.python,
                                sniffio_dir=args.sniffio_dir,
                            )
                        result |= {"client": client, "in_flight": n, "loop": loop}
                        result["round"] = round_ + 1
                        report["runs"].append(result)
                        print(_line(result), flush=True)
    report["load_average_after"] = os.getloadavg()
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    print()
    print(table(report["runs"], in_flights, loops, clients))
    print(json.dumps(report))


def _line(r: dict[str, Any]) -> str:
    head = f"{r['client']:<14} {r['loop']:<8} {r['in_flight']:>4} in flight: "
    if "error" in r:
        return head + f"error: {r['error']}"
    bad = sum(v for k, v in r["statuses"].items() if k != "200") + sum(r["errors"].values())
    return head + (
        f"{r['rps']:>8.0f} req/s, client {r['client_us']:>6.1f} µs/req"
        f" ({r['client_core_pct']:.0f} % of a core), backend {r['backend_us']:.1f} µs/req"
        f" ({r['backend_core_pct']:.0f} %)" + (f", NOT 200: {bad}" if bad else "")
    )


def table(
    runs: list[dict[str, Any]], in_flights: list[int], loops: list[str], clients: list[str]
) -> str:
    """Markdown: one row per client and loop; req/s and client µs/request per in-flight
    (medians over rounds)."""
    header = (
        "| client | loop | "
        + " | ".join(f"{n} in flight: req/s | µs/req" for n in in_flights)
        + " |"
    )
    lines = [header, "|---|---|" + "---:|---:|" * len(in_flights)]
    for client in clients:
        for loop in loops:
            cells = []
            for n in in_flights:
                ok = [
                    r
                    for r in runs
                    if r["client"] == client
                    and r["loop"] == loop
                    and r["in_flight"] == n
                    and "error" not in r
                ]
                if not ok:
                    cells += ["—", "—"]
                    continue
                cells.append(f"{statistics.median(r['rps'] for r in ok):,.0f}")
                cells.append(f"{statistics.median(r['client_us'] for r in ok):.1f}")
            lines.append(f"| {client} | {loop} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
