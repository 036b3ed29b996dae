"""CLI verbs that talk to a running proxy's admin API: queues, tasks, dead letters."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

DEFAULT_ADMIN_URL = "http://127.0.0.1:9090"


def add_admin_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``queues``, ``tasks`` and ``dlq`` with their verbs."""
    queues = commands.add_parser("queues", help="list, pause, resume, purge queues; apply config")
    queue_verbs = queues.add_subparsers(dest="verb", required=True, metavar="VERB")
    _client_flags(queue_verbs.add_parser("list", help="queues with depth, rate, state"))
    for verb, text in (
        ("pause", "stop dispatching (tasks are still accepted)"),
        ("resume", "dispatch again"),
        ("purge", "delete every task of the queue"),
    ):
        parser = queue_verbs.add_parser(verb, help=text)
        parser.add_argument("queue")
        _client_flags(parser)
    apply = queue_verbs.add_parser(
        "apply", help="make Cloud Tasks queues match the config (rate limits, retry config)"
    )
    apply.add_argument("--config", required=True, metavar="PATH")
    apply.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    apply.add_argument("--project", help="overrides cloudtasks.project")
    apply.add_argument("--location", help="overrides cloudtasks.location")
    apply.add_argument("--emulator-host", metavar="HOST:PORT", help="talk to an emulator")

    tasks = commands.add_parser("tasks", help="list, show, delete tasks of a queue")
    task_verbs = tasks.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = task_verbs.add_parser("list", help="tasks in schedule order")
    listing.add_argument("queue")
    listing.add_argument("--limit", type=int, default=100)
    _client_flags(listing)
    for verb in ("get", "delete"):
        parser = task_verbs.add_parser(verb, help=f"{verb} one task")
        parser.add_argument("queue")
        parser.add_argument("task")
        _client_flags(parser)

    dlq = commands.add_parser("dlq", help="list, replay, drop dead letters")
    dlq_verbs = dlq.add_subparsers(dest="verb", required=True, metavar="VERB")
    listing = dlq_verbs.add_parser("list", help="dead letters, newest first")
    listing.add_argument("queue")
    listing.add_argument("--limit", type=int, default=100)
    _client_flags(listing)
    replay = dlq_verbs.add_parser("replay", help="put dead letters back on their queue")
    replay.add_argument("queue")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("task", nargs="?")
    which.add_argument("--all", action="store_true")
    _client_flags(replay)
    drop = dlq_verbs.add_parser("drop", help="delete a dead letter for good")
    drop.add_argument("queue")
    drop.add_argument("task")
    _client_flags(drop)


def _client_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("INGEST_PROXY_ADMIN_URL", DEFAULT_ADMIN_URL),
        help=f"admin listener (default $INGEST_PROXY_ADMIN_URL or {DEFAULT_ADMIN_URL})",
    )
    parser.add_argument("--json", action="store_true", help="print the API's JSON")


class AdminCallError(Exception):
    """The admin API refused a call or could not be reached."""


def call(args: argparse.Namespace, method: str, path: str) -> Any:
    """Call the admin API with the token from ``INGEST_PROXY_ADMIN_TOKEN``."""
    url = args.admin_url.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        raise AdminCallError(f"--admin-url must be an http:// or https:// URL, not {url!r}")
    request = urllib.request.Request(url, method=method)  # noqa: S310 (scheme checked above)
    token = os.environ.get("INGEST_PROXY_ADMIN_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:  # a 4xx/5xx answer: its JSON says why
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminCallError(f"cannot reach the admin API at {args.admin_url}: {reason}") from exc
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if status >= 400:
        text = raw.decode("utf-8", "replace")[:200]
        detail = data.get("detail") if isinstance(data, dict) else text
        raise AdminCallError(f"{status}: {detail}")
    return data


def run_admin_command(args: argparse.Namespace) -> int:
    """Run a ``queues``/``tasks``/``dlq`` verb; print its result; return the exit status."""
    try:
        data = _dispatch(args)
    except AdminCallError as exc:
        print(f"ingest-proxy: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        _print_human(args, data)
    return 0


def _dispatch(args: argparse.Namespace) -> Any:
    q = "/queues/" + quote(getattr(args, "queue", "") or "", safe="")
    task = quote(getattr(args, "task", "") or "", safe="")
    match (args.command, args.verb):
        case ("queues", "list"):
            return call(args, "GET", "/queues")
        case ("queues", verb):
            return call(args, "POST", f"{q}/{verb}")
        case ("tasks", "list"):
            return call(args, "GET", f"{q}/tasks?limit={args.limit}")
        case ("tasks", "get"):
            return call(args, "GET", f"{q}/tasks/{task}")
        case ("tasks", "delete"):
            return call(args, "DELETE", f"{q}/tasks/{task}")
        case ("dlq", "list"):
            return call(args, "GET", f"{q}/dead-letters?limit={args.limit}")
        case ("dlq", "replay") if args.all:
            return call(args, "POST", f"{q}/dead-letters/replay")
        case ("dlq", "replay"):
            return call(args, "POST", f"{q}/dead-letters/{task}/replay")
        case ("dlq", "drop"):
            return call(args, "DELETE", f"{q}/dead-letters/{task}")
    raise AdminCallError(f"unknown command {args.command} {args.verb}")


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def _print_human(args: argparse.Namespace, data: Any) -> None:
    if args.command == "queues" and args.verb == "list":
        _table(
            data["queues"],
            ["name", "state", "tasks", "in_flight", "oldest_age", "rate", "current_rate",
             "dead_letters"],
        )  # fmt: skip
    elif args.command == "tasks" and args.verb == "list":
        _table(data["tasks"], ["id", "method", "path", "schedule_time", "dispatch_count"])
    elif args.command == "dlq" and args.verb == "list":
        _table(data["dead_letters"], ["id", "method", "path", "attempts", "last_status"])
    else:
        print(json.dumps(data, indent=2))
