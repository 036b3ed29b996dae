"""Imports point one way: config -> engines -> ingress/admin -> app -> cli, and the public
API of the package stays what it is."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _load_time_imports(path: Path, modules: set[str]) -> set[str]:
    """The modules of ours that importing ``path`` runs: its module-level imports, not
    those inside functions (lazy on purpose) or under ``if TYPE_CHECKING``."""
    name = _module_name(path)
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If):
                if "TYPE_CHECKING" not in ast.unparse(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                visit(node.orelse)
                visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = name.split(".")
                    if path.name != "__init__.py":
                        package = package[:-1]
                    package = package[: len(package) - node.level + 1]
                    base = ".".join([*package, base] if base else package)
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(ast.parse(path.read_text()).body)
    return found & modules - {name}


def test_there_are_no_import_cycles() -> None:
    """Importing any module of the package never comes back to a module being imported.
    Loading a module loads its packages first, so a package's ``__init__`` that imports
    its own modules is part of every cycle through them; the graph counts that edge for
    every module that imports anything of ours (a leaf such as ``_version`` cannot close
    a cycle)."""
    paths = {_module_name(path): path for path in _modules(PACKAGE)}
    modules = set(paths)
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = _load_time_imports(path, modules)
        if edges:
            parts = name.split(".")
            edges |= {".".join(parts[:i]) for i in range(1, len(parts))} - {name}
        graph[name] = edges
    done: set[str] = set()

    def walk(name: str, trail: list[str]) -> None:
        if name in trail:
            cycle = [*trail[trail.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            walk(target, [*trail, name])
        done.add(name)

    for name in sorted(graph):
        walk(name, [])
    assert len(graph) > 60  # every module of the package was read


_SQL = re.compile(r"\b(SELECT\b.*\bFROM|INSERT\b.*\bINTO|UPDATE\b.*\bSET|DELETE\s+FROM)\b", re.S)


def test_the_store_owns_every_statement() -> None:
    """No module outside ``engines/local/store/`` holds an SQL statement, runs one
    (``execute``) or submits work to the store's writer: the store's named methods are
    the only way to its tables, so the counters change in one place."""
    store = PACKAGE / "engines" / "local" / "store"
    found = []
    for path in _modules(PACKAGE):
        if store in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            text = node.value if isinstance(node, ast.Constant) else None
            attribute = node.attr if isinstance(node, ast.Attribute) else ""
            owner = getattr(getattr(node, "value", None), "attr", "")
            if (
                (isinstance(text, str) and _SQL.search(text))
                or attribute in ("execute", "executemany")
                or (attribute in ("writer", "read") and owner == "store")
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{getattr(node, 'lineno', 0)}")
    assert not found


def test_engines_know_nothing_of_the_web_layer() -> None:
    """No engine module imports Starlette, uvicorn or the wire, ingress, admin, app or
    command packages."""
    forbidden = ("starlette", "uvicorn", "proxy.http", "proxy.ingress", "proxy.admin")
    forbidden += ("proxy.app", "proxy.server", "proxy.cli")
    for path in _modules(PACKAGE / "engines"):
        for name in _imports(path):
            assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_ingress_knows_nothing_of_storage() -> None:
    """The wire and ingress packages and the request-side modules never import sqlite3,
    grpc or Google's libraries."""
    paths = [*_modules(PACKAGE / "ingress"), *_modules(PACKAGE / "http"), PACKAGE / "auth.py"]
    for path in paths:
        for name in _imports(path):
            assert not name.startswith(("sqlite3", "grpc", "google")), f"{path.name} imports {name}"


def test_config_depends_on_nothing_of_ours_but_errors_and_limits() -> None:
    """The config package sits at the bottom: besides its own modules it imports only the
    error tree, Cloud Tasks' limits and the trusted-network parser (leaves themselves)."""
    ours = {
        name
        for path in _modules(PACKAGE / "config")
        for name in _imports(path)
        if name.startswith("proxy") and not name.startswith("proxy.config")
    }
    assert ours == {"proxy.errors", "proxy.limits", "proxy.networks"}
    for leaf in ("errors.py", "limits.py", "networks.py"):
        assert not {n for n in _imports(PACKAGE / leaf) if n.startswith("proxy")}


def test_public_api() -> None:
    """The package's public names are exactly these."""
    assert sorted(proxy.__all__) == [
        "Settings",
        "__version__",
        "create_admin_app",
        "create_app",
        "load_settings",
    ]


_WEB = ("starlette", "uvicorn", "httpx", "aiohttp", "prometheus_client", "grpc")


def _loaded_after(statement: str) -> list[str]:
    """The web and client libraries a fresh interpreter has loaded after ``statement``."""
    code = f"import sys\n{statement}\nprint(' '.join(sorted(sys.modules)))"
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    return sorted({name.split(".")[0] for name in loaded if name.startswith(_WEB)})


@pytest.mark.parametrize(
    "statement",
    ["import proxy.config", "import proxy", "from proxy.cli.main import main"],
)
def test_the_bottom_layer_and_the_command_load_no_web_framework(statement: str) -> None:
    """``import proxy.config`` (the bottom layer), the package itself and the command's
    module (what ``ingest-proxy hash-key`` runs) load no web framework, HTTP client,
    metrics or gRPC library: the package's public names are imported on first use."""
    assert _loaded_after(statement) == []


def test_the_public_names_load_when_used() -> None:
    """The lazily imported public names are the real objects."""
    from proxy.app import create_app
    from proxy.config.settings import Settings

    assert proxy.create_app is create_app
    assert proxy.Settings is Settings
    with pytest.raises(AttributeError):
        _ = proxy.no_such_name  # type: ignore[attr-defined]


# The import names of pyproject.toml's runtime dependencies (and of what they install:
# uvicorn[standard] brings uvloop, google-cloud-tasks the rest of the google namespace).
_RUNTIME = {"starlette", "uvicorn", "uvloop", "httptools", "google", "grpc", "tenacity"}
_RUNTIME |= {"prometheus_client", "rich", "cryptography", "mypy_extensions", "proxy"}


def test_the_package_imports_only_its_runtime_dependencies() -> None:
    """Every import in proxy/ is the standard library or a runtime dependency: a library
    the tests install (aiohttp, httpx) is not there when a user runs `pip install .`."""
    outside = {
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in _modules(PACKAGE)
        for name in _imports(path)
        if name.split(".")[0] not in _RUNTIME | set(sys.stdlib_module_names)
    }
    assert not outside
