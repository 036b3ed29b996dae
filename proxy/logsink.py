"""A log sink that never blocks its caller: a bounded buffer of lines, written to a file
descriptor (stderr) by a daemon thread.

Writing to stderr on the event loop blocks the whole process when nobody reads the other
end (a stalled pipe, a slow collector: a pipe holds 64 KiB, a few hundred lines). Here the
caller only appends the line to a deque; a writer thread does the ``os.write`` calls. When
the consumer stalls, the buffer fills up to ``max_lines`` and further lines are dropped and
counted (``ingest_proxy_log_lines_dropped_total``): lines are lost, never requests.

Appending takes no lock: the writer is signalled only when it sleeps with an empty buffer,
and after each write it lingers ``LINGER`` seconds so that lines arriving meanwhile go out
in one write.
"""

from __future__ import annotations

import atexit
import collections
import errno
import os
import select
import threading
import time

MAX_LINES = 10_000  # lines buffered at most (about 3 MB of access-log lines), then dropped
CHUNK_CHARS = 64 * 1024  # characters handed to one os.write at most
LINGER = 0.05  # seconds the writer waits after a write for more lines to gather
IDLE_WAIT = 1.0  # seconds the writer sleeps at most before looking at the buffer again
EXIT_FLUSH = 2.0  # seconds the process waits at exit for buffered lines to be written
_GONE = (errno.EPIPE, errno.EBADF)  # the reader is gone for good: stop trying

_dropped_lock = threading.Lock()
_dropped_total = 0  # lines dropped by every sink of the process


class LineSink:
    """Lines for file descriptor ``fd``, buffered (``max_lines`` at most) and written by a
    daemon thread; :meth:`put` never blocks."""

    def __init__(self, fd: int, *, max_lines: int = MAX_LINES) -> None:
        if max_lines < 1:
            raise ValueError("max_lines must be at least 1")
        self.fd = fd
        self.max_lines = max_lines
        self.dropped = 0  # lines this sink dropped (buffer full, or the reader gone)
        self._buf: collections.deque[str] = collections.deque()
        self._gone = False
        self._start()

    def _start(self) -> None:
        self._closed = False
        self._asleep = False
        self._busy = False  # the writer holds lines taken from the buffer, not yet written
        self._wake = threading.Event()
        self._worker = threading.Thread(target=self._run, name=f"log-writer-fd{self.fd}")
        self._worker.daemon = True
        self._worker.start()

    def put(self, line: str) -> None:
        """Queue ``line`` (without its newline) to be written; drop it when the buffer is
        full. Safe from any thread; takes no lock unless it drops."""
        buf = self._buf
        if len(buf) < self.max_lines:
            buf.append(line)
            if self._asleep:
                self._wake.set()
        else:
            self._drop(1)

    def pending(self) -> int:
        """Lines waiting in the buffer."""
        return len(self._buf)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every line queued so far was written (or
        dropped); True if it was. Never waits longer, even on a stalled reader."""
        deadline = time.monotonic() + timeout
        while self._buf or self._busy:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._worker.is_alive():
                return False
            if self._asleep:
                self._wake.set()
            time.sleep(min(0.005, remaining))
        return True

    def close(self, timeout: float) -> bool:
        """:meth:`flush` (``timeout`` seconds at most), then stop the writer thread; lines
        put afterwards are not written. True if everything was written."""
        flushed = self.flush(timeout)
        self._closed = True
        self._wake.set()
        return flushed

    def _drop(self, count: int) -> None:
        global _dropped_total
        with _dropped_lock:
            self.dropped += count
            _dropped_total += count

    def _run(self) -> None:
        buf = self._buf
        while not self._closed:
            if not buf:
                # Say we sleep, then look again: a put() either sees the flag or its line
                # is seen here. The timeout bounds any wake-up lost all the same.
                self._asleep = True
                if not buf:
                    self._wake.wait(IDLE_WAIT)
                self._asleep = False
                self._wake.clear()
                continue
            self._busy = True
            lines: list[str] = []
            size = 0
            while buf and size < CHUNK_CHARS:
                line = buf.popleft()
                lines.append(line)
                size += len(line) + 1
            self._write(lines)
            self._busy = False
            if not buf:
                time.sleep(LINGER)

    def _write(self, lines: list[str]) -> None:
        """Write ``lines`` whole; count what could not be written as dropped."""
        if self._gone:
            self._drop(len(lines))
            return
        data = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            try:
                sent += os.write(self.fd, view[sent:])
            except BlockingIOError:  # a non-blocking descriptor that is full: wait, retry
                select.select([], [self.fd], [], IDLE_WAIT)
            except OSError as exc:
                self._gone = exc.errno in _GONE
                self._drop(len(lines) - data.count(b"\n", 0, sent))  # lines not out whole
                return


_sinks: dict[int, LineSink] = {}
_sinks_lock = threading.Lock()


def sink_for_fd(fd: int) -> LineSink:
    """The process's one sink for descriptor ``fd`` (made on first use), flushed at exit
    for at most ``EXIT_FLUSH`` seconds."""
    with _sinks_lock:
        sink = _sinks.get(fd)
        if sink is None:
            if not _sinks:
                atexit.register(flush_all, EXIT_FLUSH)
            sink = _sinks[fd] = LineSink(fd)
        return sink


def flush_all(timeout: float) -> bool:
    """Flush every sink made by :func:`sink_for_fd`, within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    done = True
    for sink in list(_sinks.values()):
        done = sink.flush(max(0.0, deadline - time.monotonic())) and done
    return done


def dropped_total() -> int:
    """Log lines dropped so far by every sink of the process (read at scrape time)."""
    return _dropped_total


def _after_fork_in_child() -> None:
    # The writer threads did not survive the fork, and the lines buffered are the parent's
    # to write.
    global _dropped_lock, _sinks_lock
    _dropped_lock, _sinks_lock = threading.Lock(), threading.Lock()
    for sink in _sinks.values():
        sink._buf.clear()
        sink._start()


os.register_at_fork(after_in_child=_after_fork_in_child)
