"""Dead letters on Cloud Tasks alone (relay mode): a task whose last attempt failed is
copied into the paused companion queue ``<queue>-dead-letters`` (made by ``queues apply``;
Cloud Tasks keeps a task at most 31 days), and listed, replayed or dropped from there.

A dead letter is an ordinary task of that queue: the original request (its URL is the
relay's, so a replay goes through the relay again) with what its last attempt saw in
headers of its own, ``x-ingest-proxy-dead-letter-*`` (status, error, a base64 snippet of
the answer, attempts, times). The queue is paused, so Cloud Tasks never dispatches it.
A replay creates the request again on the original queue, named ``<id>-r<n>`` (a task
name stays blocked for about an hour after its task ends, so the old name cannot be
reused; the fixed name makes a replay that is repeated, say after a failed delete, create
nothing twice), then deletes the dead letter.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from google.api_core import exceptions as core_exceptions
from google.cloud.tasks_v2 import (
    CloudTasksAsyncClient,
    CreateTaskRequest,
    DeleteTaskRequest,
    GetTaskRequest,
    HttpMethod,
    HttpRequest,
    ListTasksRequest,
    OidcToken,
    Task,
)

from proxy.config.settings import DEAD_LETTER_SUFFIX
from proxy.engines.admin import DeadLetterInfo, Page
from proxy.engines.cloudtasks.errors import admin_error
from proxy.engines.cloudtasks.request import QueueTarget

TIMEOUT = 30.0  # seconds per call
META = "x-ingest-proxy-dead-letter-"
SNIPPET_BYTES = 1024
COUNT_PAGES = 100  # the gauge counts at most this many pages of 1000 dead letters
_REPLAYED = re.compile(r"^(.*)-r(\d+)$")
_ERROR_TEXT = re.compile(r"[^\x20-\x7e]")


@dataclass(frozen=True, slots=True)
class LastAttempt:
    """What the last attempt of a task saw: its status (``None``: no answer), the error
    or a snippet of the answer, the attempt count, and times in Unix seconds."""

    task_id: str
    status: int | None
    error: str
    snippet: bytes
    attempts: int
    failed_at: float
    first_attempt_at: float


def dead_letter_queue(target: QueueTarget) -> str:
    """The full path of the companion queue of ``target``'s queue."""
    return target.path + DEAD_LETTER_SUFFIX


def replay_id(task_id: str) -> str:
    """The task id a replay of dead letter ``task_id`` gets: ``<id>-r1``, then ``-r2``..."""
    match = _REPLAYED.match(task_id)
    if match is None:
        return f"{task_id}-r1"
    return f"{match[1]}-r{int(match[2]) + 1}"


def dead_letter_task(
    target: QueueTarget,
    last: LastAttempt,
    *,
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
) -> Task:
    """The dead letter of the request ``method url headers body`` (as Cloud Tasks
    delivered it, less its own headers) after ``last``."""
    meta = {
        f"{META}attempts": str(last.attempts),
        f"{META}failed-at": f"{last.failed_at:.6f}",
        f"{META}first-attempt-at": f"{last.first_attempt_at:.6f}",
    }
    if last.status is not None:
        meta[f"{META}status"] = str(last.status)
    if last.error:
        meta[f"{META}error"] = _ERROR_TEXT.sub("?", last.error)[:SNIPPET_BYTES]
    if last.snippet:
        meta[f"{META}snippet"] = base64.b64encode(last.snippet[:SNIPPET_BYTES]).decode()
    http = HttpRequest(
        url=url, http_method=getattr(HttpMethod, method), headers={**headers, **meta}, body=body
    )
    return Task(name=f"{dead_letter_queue(target)}/tasks/{last.task_id}", http_request=http)


def replay_task(target: QueueTarget, letter: Task) -> Task:
    """The task that replays ``letter`` on ``target``'s queue: the original request, the
    queue's token and dispatch deadline, due now."""
    request = letter.http_request
    headers = {k: v for k, v in request.headers.items() if not k.lower().startswith(META)}
    http = HttpRequest(
        url=request.url, http_method=request.http_method, headers=headers, body=request.body
    )
    if target.service_account_email and target.scope is None:
        http.oidc_token = OidcToken(
            service_account_email=target.service_account_email, audience=target.audience or ""
        )
    letter_id = letter.name.rsplit("/", 1)[-1]
    return Task(
        name=target.task_name(replay_id(letter_id)),
        http_request=http,
        dispatch_deadline=datetime.timedelta(milliseconds=target.dispatch_deadline_ms),
    )


def dead_letter_info(target: QueueTarget, task: Task) -> DeadLetterInfo:
    """A dead letter as the admin API shows it."""
    request = task.http_request
    headers = {k.lower(): v for k, v in request.headers.items()}
    url = urlsplit(request.url)
    base = urlsplit(target.relay_base or target.settings.target).path.rstrip("/")
    path = url.path[len(base) :] if base and url.path.startswith(base) else url.path
    status = headers.get(f"{META}status")
    snippet = headers.get(f"{META}snippet")
    return DeadLetterInfo(
        id=task.name.rsplit("/", 1)[-1],
        queue=target.settings.name,
        method=request.http_method.name,
        path=path or "/",
        query=url.query,
        created_at=_number(headers.get(f"{META}first-attempt-at")),
        failed_at=_number(headers.get(f"{META}failed-at")),
        attempts=int(_number(headers.get(f"{META}attempts"))),
        last_status=int(status) if status and status.isdigit() else None,
        last_error=headers.get(f"{META}error"),
        response_snippet=(
            base64.b64decode(snippet).decode("utf-8", "replace") if snippet else None
        ),
        body_bytes=len(request.body),
    )


def _number(text: str | None) -> float:
    try:
        return float(text) if text else 0.0
    except ValueError:
        return 0.0


class DeadLetters:
    """The dead-letter calls on ``client``; errors become the admin API's."""

    def __init__(self, client: CloudTasksAsyncClient) -> None:
        self.client = client

    async def add(self, task: Task) -> None:
        """CreateTask in the dead-letter queue; a task of that name already there (this
        attempt's dead letter, made by an earlier try) is success. Raises the library's
        errors: the relay decides what a failure means."""
        parent = task.name.rsplit("/tasks/", 1)[0]
        with contextlib.suppress(core_exceptions.AlreadyExists):
            await self.client.create_task(
                request=CreateTaskRequest(parent=parent, task=task), timeout=TIMEOUT
            )

    async def list(
        self, target: QueueTarget, *, limit: int, cursor: str | None
    ) -> Page[DeadLetterInfo]:
        """One page of ``target``'s dead letters (FULL view: the last attempt's headers)."""
        request = ListTasksRequest(
            parent=dead_letter_queue(target),
            page_size=limit,
            page_token=cursor or "",
            response_view=Task.View.FULL,
        )
        try:
            pager = await self.client.list_tasks(request=request, timeout=TIMEOUT)
            async for page in pager.pages:
                letters = [dead_letter_info(target, task) for task in page.tasks]
                return Page(letters, page.next_page_token or None)
        except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError) as exc:
            raise admin_error(f"Dead letters of {target.settings.name}", exc) from exc
        return Page([])

    async def count(self, target: QueueTarget) -> int:
        """How many dead letters ``target``'s queue has (at most ``COUNT_PAGES`` pages of
        1000; BASIC view)."""
        request = ListTasksRequest(parent=dead_letter_queue(target), page_size=1000)
        pager = await self.client.list_tasks(request=request, timeout=TIMEOUT)
        total = pages = 0
        async for page in pager.pages:
            total += len(page.tasks)
            pages += 1
            if pages >= COUNT_PAGES:
                break
        return total

    async def replay(self, target: QueueTarget, task_id: str) -> None:
        """Create dead letter ``task_id`` again on its queue, then delete it."""
        name = f"{dead_letter_queue(target)}/tasks/{task_id}"
        what = f"Dead letter {task_id}"
        try:
            letter = await self.client.get_task(
                request=GetTaskRequest(name=name, response_view=Task.View.FULL), timeout=TIMEOUT
            )
            task = replay_task(target, letter)
            # ALREADY_EXISTS: an earlier replay created it but could not delete the letter
            with contextlib.suppress(core_exceptions.AlreadyExists):
                await self.client.create_task(
                    request=CreateTaskRequest(parent=target.path, task=task), timeout=TIMEOUT
                )
            await self.client.delete_task(request=DeleteTaskRequest(name=name), timeout=TIMEOUT)
        except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError) as exc:
            raise admin_error(what, exc) from exc

    async def replay_all(self, target: QueueTarget) -> int:
        """Replay every dead letter of ``target``'s queue; return how many. Each round
        lists the first page again: the dead letters replayed are gone from it."""
        count = 0
        while True:
            page = await self.list(target, limit=1000, cursor=None)
            for letter in page.items:
                await self.replay(target, letter.id)
                count += 1
            if not page.items or page.next_cursor is None:
                return count

    async def drop(self, target: QueueTarget, task_id: str) -> None:
        """DeleteTask in the dead-letter queue."""
        name = f"{dead_letter_queue(target)}/tasks/{task_id}"
        try:
            await self.client.delete_task(request=DeleteTaskRequest(name=name), timeout=TIMEOUT)
        except (core_exceptions.GoogleAPICallError, core_exceptions.RetryError) as exc:
            raise admin_error(f"Dead letter {task_id}", exc) from exc
