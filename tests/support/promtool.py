"""Prometheus' own ``promtool``, for the tests of monitoring/ (check rules, test rules,
check metrics).

Found on ``PATH`` (Debian's ``prometheus`` package puts it in /usr/bin) or in
``<repo>/.venv/bin``. When it is in neither, :func:`ensure_installed` (and ``python -m
tests.support.promtool install``, which ``.ci/run`` calls) takes it from Debian's
``prometheus`` package: ``apt-get download`` and ``dpkg-deb -x`` into ``.venv/bin``, so no
Prometheus server is installed, enabled or started (the package's own install would do all
three). promtool needs only libc. Without root the package lists must be there already
(``apt-get update`` is tried only as root).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INSTALLED = REPO_ROOT / ".venv" / "bin" / "promtool"
PACKAGE = "prometheus"
INSTALL_TIMEOUT = 600.0


class PromtoolMissingError(RuntimeError):
    """promtool is not here and could not be installed."""


def find() -> Path | None:
    """promtool on ``PATH`` or in ``.venv/bin``; ``None`` when neither has it."""
    found = shutil.which("promtool")
    if found is not None:
        return Path(found)
    return INSTALLED if os.access(INSTALLED, os.X_OK) else None


def ensure_installed() -> Path:
    """promtool's path, extracted from Debian's package first if it is not found.

    Raises :class:`PromtoolMissingError` (with apt's own words) when that fails.
    """
    found = find()
    if found is not None:
        return found
    lock_path = Path(tempfile.gettempdir()) / "ingest-proxy-promtool.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = find()
        if found is not None:
            return found
        with tempfile.TemporaryDirectory(prefix="promtool-") as work:
            deb = _download(Path(work))
            tree = Path(work) / "tree"
            _run(["dpkg-deb", "-x", str(deb), str(tree)], Path(work))
            INSTALLED.parent.mkdir(parents=True, exist_ok=True)
            partial = INSTALLED.with_suffix(".partial")
            shutil.copyfile(tree / "usr" / "bin" / "promtool", partial)
            partial.chmod(0o755)
            partial.replace(INSTALLED)  # whole or not at all
    return INSTALLED


def _download(work: Path) -> Path:
    """Debian's ``prometheus`` .deb in ``work`` (the package lists updated first if
    they lack it and we are root)."""
    try:
        _run(["apt-get", "download", PACKAGE], work)
    except PromtoolMissingError:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update"], work)
        _run(["apt-get", "download", PACKAGE], work)
    (deb,) = work.glob(f"{PACKAGE}_*.deb")
    return deb


def _run(command: list[str], cwd: Path) -> None:
    try:
        done = subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PromtoolMissingError(f"{' '.join(command)} failed: {exc}") from exc
    if done.returncode != 0:
        raise PromtoolMissingError(
            f"{' '.join(command)} exited with {done.returncode}: {done.stderr.strip()[-2000:]}"
        )


def main(argv: list[str]) -> int:
    """``install``: make sure promtool is here (print its path)."""
    if argv != ["install"]:
        print("usage: python -m tests.support.promtool install", file=sys.stderr)
        return 2
    try:
        print(ensure_installed())
    except PromtoolMissingError as exc:
        print(f"cannot install promtool: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
