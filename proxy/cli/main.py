"""The ``ingest-proxy`` command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from proxy._version import __version__
from proxy.auth import hash_key
from proxy.cli.admin import add_admin_commands, run_admin_command
from proxy.config.loading import FLAG_NAMES, load_settings
from proxy.config.settings import Settings
from proxy.errors import ConfigError
from proxy.logs import configure_logging

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ingest-proxy",
        description="Accept any HTTP request, persist it as a task, answer 202, "
        "deliver it to a slow backend at a steady rate.",
    )
    parser.add_argument("--version", action="version", version=f"ingest-proxy {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the proxy",
        description="Run the proxy. Every flag is also an INGEST_PROXY_<FLAG> env var; "
        "flags win over env vars, which win over the config file.",
    )
    add_settings_flags(serve)
    hash_key = commands.add_parser(
        "hash-key",
        help="print the config form (sha256:...) of an API key",
        description="Print the hash to put in api_keys. The key is read from standard input "
        "when not given, so it stays out of shell history.",
    )
    hash_key.add_argument("key", nargs="?", help="the API key (default: read from stdin)")
    add_admin_commands(commands)
    _add_cloudtasks_server(commands)
    demo = commands.add_parser(
        "demo",
        help="watch a spike being smoothed (embedded engine, slow demo backend)",
        description="Start a slow demo backend and the proxy on loopback, fire a spike, and "
        "show accepted vs delivered per second. Stops by itself.",
    )
    demo.add_argument("--requests", type=int, default=300, help="size of the spike (300)")
    demo.add_argument("--rate", type=float, default=20.0, help="delivery rate per second (20)")
    demo.add_argument("--concurrency", type=int, default=4, help="deliveries in flight (4)")
    demo.add_argument("--delay", type=float, default=0.1, help="backend seconds per request")
    return parser


def _add_cloudtasks_server(commands: argparse._SubParsersAction[Any]) -> None:
    server = commands.add_parser(
        "cloudtasks-server",
        help="serve the Cloud Tasks v2 gRPC API locally (development and tests)",
        description="Serve google.cloud.tasks.v2.CloudTasks (gRPC) on top of the embedded "
        "engine: queues with real rate limits and retry config, durable tasks, delivery to "
        "each task's own URL. A development tool with no authentication: keep it on "
        "127.0.0.1. OIDC tokens are signed by a local key (published on the REST port), not"
        " by Google.",
    )
    server.add_argument("--host", default="127.0.0.1", help="bind address (127.0.0.1)")
    server.add_argument("--port", type=int, default=8123, help="gRPC port (8123)")
    server.add_argument("--db", default="cloudtasks.db", help="SQLite file (cloudtasks.db)")
    server.add_argument(
        "--rest-port", type=int, default=None, help="also serve the REST (JSON) API on this port"
    )
    server.add_argument(
        "--max-task-bytes", type=int, default=100 * 1024, help="CreateTask size limit (102400)"
    )
    server.add_argument(
        "--signing-key",
        metavar="PATH",
        help="RSA key (PEM) that signs OIDC tokens (default: <db>.signing-key.pem, made on first"
        " start)",
    )
    server.add_argument(
        "--unsigned-tokens",
        action="store_true",
        help="send unsigned (alg: none) stand-ins instead of signed tokens",
    )
    server.add_argument("--log-level", default="info",
                        choices=["critical", "error", "warning", "info", "debug"])  # fmt: skip
    server.add_argument("--log-format", default="auto", choices=["auto", "json", "text"])


def _cloudtasks_server(args: argparse.Namespace) -> int:
    from proxy.cloudtasks_server.server import serve_cloudtasks

    ports = [args.port] if args.rest_port is None else [args.port, args.rest_port]
    if not all(0 <= port <= 65535 for port in ports) or args.max_task_bytes < 1:
        print("ingest-proxy: --port must be 0-65535, --max-task-bytes positive", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(args.log_level, args.log_format)
    return asyncio.run(
        serve_cloudtasks(
            args.db,
            args.host,
            args.port,
            args.max_task_bytes,
            rest_port=args.rest_port,
            signing_key=args.signing_key,
            unsigned_tokens=args.unsigned_tokens,
        )
    )


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that build Settings, shared by every command that runs an engine."""
    parser.add_argument("--config", metavar="PATH", help="TOML config file")
    parser.add_argument("--engine", choices=["local", "cloudtasks"], help="default: local")
    parser.add_argument("--target", metavar="URL", help="backend base URL of the default queue")
    parser.add_argument("--rate", metavar="N", help="dispatches per second (max 500)")
    parser.add_argument("--burst", metavar="N", help="token bucket size (default: from rate)")
    parser.add_argument("--concurrency", metavar="N", help="max dispatches in flight")
    parser.add_argument("--queue", metavar="NAME", help="default queue name (Cloud Tasks queue id)")
    parser.add_argument("--host", help="ingress bind address (default 127.0.0.1)")
    parser.add_argument("--port", metavar="N", help="ingress port (default 8080, or $PORT)")
    parser.add_argument("--admin-host", help="admin bind address (default 127.0.0.1)")
    parser.add_argument("--admin-port", metavar="N", help="admin port (default 9090)")
    parser.add_argument(
        "--trusted-proxies", metavar="IPS", help="proxies whose X-Forwarded-* count"
    )
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument(
        "--log-format", choices=["auto", "json", "text"], help="auto: JSON unless on a terminal"
    )
    parser.add_argument(
        "--shutdown-grace", metavar="SECONDS", help="drain time on SIGTERM (default 25s)"
    )
    parser.add_argument("--db", metavar="PATH", help="SQLite file of the local engine")
    parser.add_argument(
        "--delivery-processes",
        metavar="N",
        help="local engine: processes making the delivery requests (default 1; 0: the event loop)",
    )
    parser.add_argument("--project", help="Google Cloud project (cloudtasks engine)")
    parser.add_argument("--location", help="Cloud Tasks location, e.g. europe-west1")
    parser.add_argument("--service-account", metavar="EMAIL", help="OIDC token identity")
    parser.add_argument("--emulator-host", metavar="HOST:PORT", help="Cloud Tasks emulator")
    parser.add_argument("--spool", metavar="PATH", help="cloudtasks engine: local spool file")
    parser.add_argument("--max-body-bytes", metavar="N", help="body limit (default 102400)")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from parsed flags, the environment and the config file."""
    # Every settings flag is in FLAG_NAMES; a few names there are environment-only
    # (secrets such as admin_token and api_keys stay out of shell history and ps).
    flags = {name: getattr(args, name, None) for name in FLAG_NAMES}
    return load_settings(args.config, env=os.environ, flags=flags)


def _apply_queues(args: argparse.Namespace) -> int:
    from proxy.engines.cloudtasks.queues import apply_queues
    from proxy.errors import ProxyError

    flags = {
        "engine": "cloudtasks",
        "project": args.project,
        "location": args.location,
        "emulator_host": args.emulator_host,
    }
    try:
        settings = load_settings(args.config, env=os.environ, flags=flags)
    except ConfigError as exc:
        print(f"ingest-proxy: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        changes = asyncio.run(apply_queues(settings, dry_run=args.dry_run))
    except (ProxyError, ConfigError) as exc:
        print(f"ingest-proxy: {exc}", file=sys.stderr)
        return 1
    for change in changes:
        print(change.describe())
    if args.dry_run:
        print("dry run: nothing was changed")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 for a configuration error)."""
    args = _parser().parse_args(argv)
    if args.command == "hash-key":
        key = args.key if args.key is not None else sys.stdin.readline().rstrip("\r\n")
        if not key:
            print("ingest-proxy: hash-key needs a non-empty key", file=sys.stderr)
            return EXIT_CONFIG
        print(hash_key(key))
        return 0
    if args.command in ("queues", "tasks", "dlq") and args.verb != "apply":
        return run_admin_command(args)
    if args.command == "queues":
        return _apply_queues(args)
    if args.command == "cloudtasks-server":
        return _cloudtasks_server(args)
    if args.command == "demo":
        from proxy.cli import demo

        if not (1 <= args.requests <= 100_000 and 0 < args.rate <= 500 and args.concurrency >= 1):
            print("ingest-proxy: demo needs 1-100000 requests, a rate in (0, 500]", file=sys.stderr)
            return EXIT_CONFIG
        return demo.main(args.requests, args.rate, args.concurrency, args.delay)
    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        print(f"ingest-proxy: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.server.log_level, settings.server.log_format)
    if args.command == "serve":
        from proxy.server import serve

        # uvloop (part of uvicorn[standard]) as uvicorn.run would pick it: ~15 % more ingest.
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(serve(settings))
    return EXIT_CONFIG  # pragma: no cover - argparse rejects unknown commands


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed, else asyncio's default."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it on Linux/macOS
        return None
    return uvloop.new_event_loop
