"""The README stays true: its config examples load, its commands parse, its metrics exist."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest

from proxy.cli.main import _parser
from proxy.config.loading import settings_from_dict
from proxy.metrics import Metrics

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_toml_examples_load() -> None:
    """Every TOML block that holds a [[queues]] table is a valid configuration."""
    blocks = [b for b in re.findall(r"```toml\n(.*?)```", README, re.S) if "[[queues]]" in b]
    assert blocks
    for block in blocks:
        settings_from_dict(tomllib.loads(block))


def _commands() -> list[list[str]]:
    text = README.replace("\\\n", " ")  # join shell continuation lines
    found = []
    for line in re.findall(r"(?:^|&& )(?:\.venv/bin/)?ingest-proxy ([^\n`#&|]+)", text, re.M):
        words = shlex.split(line)
        found.append(["value" if w.startswith("$") else w for w in words])
    return found


def test_ingest_proxy_commands_parse() -> None:
    """Every `ingest-proxy ...` command line in the README parses with the real CLI."""
    commands = _commands()
    assert len(commands) >= 8
    parser = _parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as exc:  # argparse exits on unknown flags or verbs
            pytest.fail(f"README command does not parse: ingest-proxy {' '.join(argv)} ({exc})")


def test_metric_table_matches_the_code() -> None:
    """The README's metric table lists exactly the metrics the proxy defines (beside the
    standard process, platform and GC ones, which the README names in a sentence)."""
    documented = set(re.findall(r"^\| `(ingest_proxy_[a-z_]+)`", README, re.M))
    defined = set()
    for metric in Metrics().registry.collect():
        suffix = "_total" if metric.type == "counter" else ""
        if metric.name.startswith("ingest_proxy_"):
            defined.add(metric.name + suffix)
        else:
            assert metric.name.startswith(("process_", "python_")), metric.name
    assert documented == defined
    assert "`process_*`" in README


def test_the_map_of_the_code_matches_the_tree() -> None:
    """The README's map (under Development) names every package of proxy/, and every
    module it names exists."""
    block = README.split("## Development", 1)[1].split("```", 2)[1]
    package = Path(__file__).resolve().parents[1] / "proxy"
    packages = {p.parent.name for p in package.rglob("__init__.py") if p.parent != package}
    named = set(re.findall(r"([a-z_]+)/", block))
    assert packages <= named, f"packages missing from the map: {sorted(packages - named)}"
    modules = {p.name for p in package.rglob("*.py")}
    mentioned = set(re.findall(r"\b([a-z_0-9]+\.py)\b", block))
    assert mentioned <= modules, f"the map names modules that do not exist: {mentioned - modules}"
    assert len(mentioned) > 30
