"""Imports point one way: config -> engines -> ingress/admin -> app -> cli, and the public
API of the package stays what it is."""

from __future__ import annotations

import ast
from pathlib import Path

import proxy

PACKAGE = Path(proxy.__file__).parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


def test_engines_know_nothing_of_the_web_layer() -> None:
    """No engine module imports Starlette, uvicorn or the ingress/admin/app/cli modules."""
    forbidden = ("starlette", "uvicorn", "proxy.ingress", "proxy.admin", "proxy.app", "proxy.cli")
    for path in _modules(PACKAGE / "engines"):
        for name in _imports(path):
            assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_ingress_knows_nothing_of_storage() -> None:
    """The ingress and the request-side modules never import sqlite3 or grpc."""
    for module in ("ingress.py", "headers.py", "problems.py", "auth.py"):
        for name in _imports(PACKAGE / module):
            assert not name.startswith(("sqlite3", "grpc", "google")), f"{module} imports {name}"


def test_config_depends_on_nothing_of_ours_but_errors() -> None:
    """config.py sits at the bottom: it imports only the error tree."""
    ours = {n for n in _imports(PACKAGE / "config.py") if n.startswith("proxy")}
    assert ours == {"proxy.errors"}


def test_public_api() -> None:
    """The package's public names are exactly these."""
    assert sorted(proxy.__all__) == [
        "Settings",
        "__version__",
        "create_admin_app",
        "create_app",
        "load_settings",
    ]
