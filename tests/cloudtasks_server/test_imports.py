"""Imports point one way: the server may import the engines, never the web app; the
engines never import the server."""

from __future__ import annotations

import ast
from pathlib import Path

PROXY = Path(__file__).resolve().parents[2] / "proxy"


def imported(package: Path) -> set[str]:
    names: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
    return names


def test_server_does_not_import_the_web_app() -> None:
    """proxy/cloudtasks_server imports neither Starlette nor the proxy's app (its REST
    surface is a plain ASGI app under uvicorn)."""
    names = imported(PROXY / "cloudtasks_server")
    banned = ("starlette", "proxy.app", "proxy.ingress", "proxy.admin", "proxy.server")
    assert sorted(n for n in names if n.startswith(banned)) == []


def test_engines_do_not_import_the_server() -> None:
    """proxy/engines never imports proxy.cloudtasks_server."""
    names = imported(PROXY / "engines")
    assert sorted(n for n in names if n.startswith("proxy.cloudtasks_server")) == []
