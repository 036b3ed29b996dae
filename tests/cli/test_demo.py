"""`ingest-proxy demo` runs to completion and shows the spike and the smoothed delivery."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_to_completion() -> None:
    """A small demo accepts the whole spike, delivers all of it and reports both rates."""
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "demo", "--requests", "60", "--rate", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.search(
        r"accepted (\d+) of 60 requests in [\d.]+ s \(\d+/s\); delivered (\d+)\s+over [\d.]+ s",
        done.stdout,
    )
    assert summary, done.stdout
    assert summary.group(1) == summary.group(2) == "60"
    assert "configured 30/s" in done.stdout
