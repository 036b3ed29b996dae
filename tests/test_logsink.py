"""The log sink never blocks its caller: lines go out through a writer thread, a reader
that stalls costs dropped lines (counted), never a blocked producer."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator

import pytest

from proxy.logsink import CHUNK_CHARS, LineSink, dropped_total

TIMEOUT = 10.0  # seconds for any one wait


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe (read end, write end), both closed after the test."""
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # the test may have closed it already
            os.close(fd)


@pytest.fixture
def make_sink() -> Iterator[Callable[..., LineSink]]:
    """LineSink(...) for the test; each one closed (its writer thread stopped) after it."""
    made: list[LineSink] = []

    def make(fd: int, **options: int) -> LineSink:
        made.append(LineSink(fd, **options))
        return made[-1]

    yield make
    for sink in made:
        sink.close(0.1)


def _read_lines(fd: int, count: int) -> list[str]:
    """``count`` lines from ``fd`` (blocks until they came; the callers bound the wait)."""
    data = b""
    while data.count(b"\n") < count:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data.decode().splitlines()


def _fill(fd: int) -> int:
    """Fill the pipe ``fd`` writes to with short lines until it takes no more; their count."""
    os.set_blocking(fd, False)
    lines = 0
    try:
        while True:
            os.write(fd, b"filler\n")
            lines += 1
    except BlockingIOError:
        return lines
    finally:
        os.set_blocking(fd, True)


def _in_thread(work: Callable[[], None]) -> bool:
    """Run ``work`` in a thread; True if it finished within TIMEOUT (did not block)."""
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    return not thread.is_alive()


def test_lines_are_written_in_order(
    pipe: tuple[int, int], make_sink: Callable[..., LineSink]
) -> None:
    """Each line comes out once, whole, in order, newline-terminated; flush waits for it."""
    read_fd, write_fd = pipe
    sink = make_sink(write_fd)
    lines = [f'{{"n": {i}, "s": "héllo"}}' for i in range(500)]
    for line in lines:
        sink.put(line)
    assert sink.flush(TIMEOUT)
    assert _read_lines(read_fd, len(lines)) == lines
    sink.put("one more, after the writer went to sleep")
    assert sink.flush(TIMEOUT)
    assert _read_lines(read_fd, 1) == ["one more, after the writer went to sleep"]
    assert sink.dropped == 0


def test_a_stalled_reader_costs_lines_not_a_blocked_caller(
    pipe: tuple[int, int], make_sink: Callable[..., LineSink]
) -> None:
    """Nobody reads the pipe, which is full: put() keeps returning at once; past the
    buffer's bound, lines are dropped and counted; flush gives up within its timeout. Once
    the reader comes back, every line not dropped arrives, whole."""
    read_fd, write_fd = pipe
    filler = _fill(write_fd)
    sink = make_sink(write_fd, max_lines=100)
    before = dropped_total()
    line = "x" * 200
    total = 20_000

    def produce() -> None:
        for _ in range(total):
            sink.put(line)

    assert _in_thread(produce), "put() blocked on a pipe nobody reads"
    assert sink.dropped >= total - sink.max_lines - CHUNK_CHARS // len(line)
    assert dropped_total() - before >= sink.dropped
    assert sink.pending() <= sink.max_lines
    assert _in_thread(lambda: sink.flush(0.2)), "flush() is bounded even on a stalled reader"
    assert not sink.flush(0.05)

    received: list[str] = []
    expected = total - sink.dropped
    reader = threading.Thread(
        target=lambda: received.extend(_read_lines(read_fd, filler + expected)), daemon=True
    )
    reader.start()
    assert sink.flush(TIMEOUT)
    reader.join(TIMEOUT)
    assert received[filler:] == [line] * expected  # whole lines: nothing torn or lost


def test_a_reader_gone_drops_and_counts(
    pipe: tuple[int, int], make_sink: Callable[..., LineSink]
) -> None:
    """The read end closed (EPIPE): no exception anywhere, every line counted as dropped."""
    read_fd, write_fd = pipe
    os.close(read_fd)
    sink = make_sink(write_fd)
    for i in range(50):
        sink.put(f"line {i}")
    assert sink.flush(TIMEOUT)
    assert sink.dropped == 50
    sink.put("later")
    assert sink.flush(TIMEOUT)
    assert sink.dropped == 51


def test_a_non_blocking_descriptor_is_waited_on(
    pipe: tuple[int, int], make_sink: Callable[..., LineSink]
) -> None:
    """A descriptor in O_NONBLOCK mode (EAGAIN when full) loses nothing but what the
    buffer's bound drops; the writer waits for room and goes on."""
    read_fd, write_fd = pipe
    flags = fcntl.fcntl(write_fd, fcntl.F_GETFL)
    fcntl.fcntl(write_fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    sink = make_sink(write_fd, max_lines=100_000)
    total = 5_000
    line = "y" * 100  # 500 KB: the pipe fills several times over
    for _ in range(total):
        sink.put(line)
    assert not sink.flush(0.1)  # stuck on a full pipe, not spinning on an error
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(_read_lines(read_fd, total)))
    reader.daemon = True
    reader.start()
    assert sink.flush(TIMEOUT)
    reader.join(TIMEOUT)
    assert sink.dropped == 0
    assert received == [line] * total


def test_many_threads_lose_nothing_uncounted(
    pipe: tuple[int, int], make_sink: Callable[..., LineSink]
) -> None:
    """Lines put from several threads at once: written plus dropped is what was put."""
    read_fd, write_fd = pipe
    sink = make_sink(write_fd, max_lines=50)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.extend(_read_lines(read_fd, 1 << 30)))
    reader.daemon = True
    reader.start()
    threads, per_thread = 4, 5_000

    def produce(name: int) -> None:
        for i in range(per_thread):
            sink.put(f"{name} {i}")

    producers = [threading.Thread(target=produce, args=(n,), daemon=True) for n in range(threads)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join(TIMEOUT)
    assert not any(thread.is_alive() for thread in producers), "put() blocked"
    assert sink.flush(TIMEOUT)
    os.close(write_fd)  # the reader sees the end
    reader.join(TIMEOUT)
    assert len(received) + sink.dropped == threads * per_thread
    for n in range(threads):  # each thread's lines in its order
        mine = [int(line.split()[1]) for line in received if line.split()[0] == str(n)]
        assert mine == sorted(mine)


def test_max_lines_must_be_positive() -> None:
    """A sink that can hold no line is a mistake."""
    with pytest.raises(ValueError, match="max_lines"):
        LineSink(2, max_lines=0)
