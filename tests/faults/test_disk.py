"""The disk fills up or the database may not grow, under a real ``python -m proxy serve``
process: 503 with Retry-After, no crash, never a false 202, and recovery when space
returns.

tests/engines/local/test_e2e.py covers this in process with SQLite's own limit
(``max_page_count``) and another process holding the write lock. Here the kernel says
no: a real tmpfs filled to the last page (ENOSPC; mounting needs root), and a file-size
limit put on the running process with prlimit (EFBIG, which SQLite reports as an I/O
error rather than "disk full"; any user).
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.common import TIMEOUT, proxy_process
from tests.support.backend import RecordingBackend
from tests.support.servers import wait_for

TMPFS_BYTES = 8 * 1024 * 1024


@contextlib.contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    """A tmpfs of 8 MiB mounted at ``path`` (root only), unmounted on exit."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; test_file_size_limit covers this path")
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES}", "tmpfs", str(path)],
        check=True,
        timeout=30,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False, timeout=30)


def fill(filler: Path) -> int:
    """Write ``filler`` until the filesystem is full (ENOSPC); the bytes written."""
    written = 0
    with filler.open("wb", buffering=0) as out:
        for size in (64 * 1024, 4096, 512):
            for _ in range(2 * TMPFS_BYTES // size):
                try:
                    written += out.write(b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
            else:
                raise AssertionError("the filesystem never filled up")
    return written


def refuse_then_recover(
    backend: RecordingBackend, db: Path, break_disk: Callable[[int], None], mend: Callable[[], None]
) -> None:
    """Run a proxy on ``db``; after ``break_disk(pid)`` requests get 503 (never a false
    202) and the process lives on; after ``mend()`` it accepts again; every 202 is
    delivered, no 503 ever is, and SIGTERM still ends it cleanly."""
    with proxy_process("--target", backend.url, "--db", str(db), "--rate", "100") as (
        process,
        url,
        admin,
    ):
        client = httpx.Client(timeout=TIMEOUT)
        post = lambda body: client.post(url + "/d", content=body)  # noqa: E731
        assert post(b"before").status_code == 202
        backend.wait_for_count(1, TIMEOUT)
        break_disk(process.pid)
        answers = {b"full-%02d-" % n + b"x" * 8192: b"" for n in range(20)}
        statuses = {}
        for body in answers:
            response = post(body)
            statuses[body] = response.status_code
            if response.status_code == 503:
                assert response.json()["error"] == "engine_unavailable"
                assert int(response.headers["retry-after"]) >= 1
        assert set(statuses.values()) <= {202, 503}, Counter(statuses.values())
        assert 503 in statuses.values()
        assert process.poll() is None, "the proxy died"
        assert client.get(admin + "/healthz").status_code == 200
        wait_for(lambda: client.get(admin + "/readyz").status_code == 503, TIMEOUT)
        mend()
        wait_for(lambda: post(b"after").status_code == 202, TIMEOUT, interval=0.2)
        wait_for(lambda: client.get(admin + "/readyz").status_code == 200, TIMEOUT)
        accepted = {b"before", b"after"} | {b for b, s in statuses.items() if s == 202}
        wait_for(
            lambda: accepted <= {r.body for r in backend.received},
            TIMEOUT,
            message="an accepted request was not delivered after space returned",
        )
        wait_for(lambda: backend.in_flight == 0, TIMEOUT)
        delivered = Counter(r.body for r in backend.received)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0
        client.close()
    refused = {b for b, s in statuses.items() if s == 503}
    assert not refused & set(delivered), "a request answered 503 was delivered"
    assert set(delivered) <= accepted | {b"after"}
    print(
        f"\n{len(refused)} refused with 503, {len(accepted)} accepted, "
        f"{sum(n - 1 for n in delivered.values())} duplicate deliveries"
    )


def test_full_filesystem_answers_503_and_recovers(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """The tmpfs holding the database fills up: 503s, no false 202, no crash; once the
    filler file is removed the same process accepts again and delivers every 202."""
    with tmpfs(tmp_path / "disk") as disk:
        filler = disk / "filler"
        refuse_then_recover(
            backend,
            disk / "tasks.db",
            break_disk=lambda pid: print(f"\nfilled {fill(filler)} bytes"),
            mend=filler.unlink,
        )


def test_file_size_limit_answers_503_and_recovers(
    tmp_path: Path, backend: RecordingBackend
) -> None:
    """The proxy may not grow its files (RLIMIT_FSIZE set on the running process, so
    writes fail with EFBIG): 503s, no false 202, no crash; once the limit is lifted the
    same process accepts again and delivers every 202."""
    db = tmp_path / "tasks.db"
    pids: list[int] = []

    def limit(pid: int) -> None:
        pids.append(pid)
        biggest = max(p.stat().st_size for p in tmp_path.glob("tasks.db*"))
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (biggest + 32 * 1024, resource.RLIM_INFINITY))

    def lift() -> None:
        unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        resource.prlimit(pids[0], resource.RLIMIT_FSIZE, unlimited)

    refuse_then_recover(backend, db, break_disk=limit, mend=lift)
