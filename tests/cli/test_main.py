"""The ingest-proxy command: config mistakes exit 2 with one line naming the key."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli.main import add_settings_flags, main, settings_from_args
from proxy.config.loading import FLAG_NAMES


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["serve"], "queues: no queue is configured"),
        (["serve", "--target", "ftp://x"], "queues[0].target"),
        (["serve", "--target", "http://127.0.0.1:9", "--rate", "0"], "queues[0].rate"),
        (["serve", "--target", "http://127.0.0.1:9", "--rate", "lots"], "queues[0].rate"),
        (["serve", "--target", "http://127.0.0.1:9", "--port", "x"], "server.port"),
        (["serve", "--target", "http://127.0.0.1:9", "--queue", "a_b"], "queues[0].name"),
        (
            ["serve", "--target", "http://127.0.0.1:9", "--engine", "cloudtasks"],
            "cloudtasks.project",
        ),
        (["serve", "--config", "/nonexistent/proxy.toml"], "--config"),
    ],
)
def test_config_mistakes_exit_2_with_one_line(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad setting exits with status 2 and a single stderr line naming the key."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("ingest-proxy: config error: ")
    assert needle in err


def test_bad_env_var_is_reported_like_a_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """INGEST_PROXY_* env vars are validated like flags."""
    monkeypatch.setenv("INGEST_PROXY_CONCURRENCY", "-3")
    assert main(["serve", "--target", "http://127.0.0.1:9"]) == 2
    assert "queues[0].concurrency" in capsys.readouterr().err


def test_bad_toml_from_a_real_process_has_no_traceback(tmp_path: Path) -> None:
    """Run as a real process, a broken config file gives exit 2 and no traceback."""
    config = tmp_path / "proxy.toml"
    config.write_text('[[queues]]\nname = "q"\ntarget = "http://127.0.0.1:9"\nrate = 9000\n')
    done = subprocess.run(
        [sys.executable, "-m", "proxy", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        "ingest-proxy: config error: queues[0].rate: must be more than 0 and at most 500 per second"
    ]


def test_every_settings_flag_is_a_known_setting_and_reaches_the_settings() -> None:
    """The flag table of the config (FLAG_NAMES) is the one list: every flag the parser
    offers for settings is in it, and each given flag ends up in the Settings."""
    parser = argparse.ArgumentParser()
    add_settings_flags(parser)
    offered = {action.dest for action in parser._actions if action.dest not in ("help", "config")}
    assert offered <= set(FLAG_NAMES)
    args = parser.parse_args(["--target", "http://127.0.0.1:9", "--rate", "7", "--port", "8099"])
    settings = settings_from_args(args)
    assert (settings.queues[0].rate, settings.server.port) == (7.0, 8099)
