"""The mypyc build (setup.py, proxy/_compiled.py): what it compiles and how the proxy
reports it. CI installs with the compiler, so there every listed module is compiled."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from proxy import _compiled
from proxy._compiled import COMPILED_MODULES, compiled_modules, stale_modules
from proxy.server import log_build

ROOT = Path(__file__).resolve().parents[1]
PURE = os.environ.get("INGEST_PROXY_PURE_PYTHON", "") not in ("", "0")


def test_every_listed_module_has_its_source() -> None:
    for module in COMPILED_MODULES:
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


@pytest.mark.skipif(PURE, reason="installed with INGEST_PROXY_PURE_PYTHON=1: nothing compiled")
def test_this_build_compiled_every_listed_module() -> None:
    assert compiled_modules() == list(COMPILED_MODULES)
    assert stale_modules() == []


def test_an_edited_source_makes_its_module_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``.py`` newer than the extension beside it is reported, so nobody tests (or runs)
    code that is not the source they edited."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    extension = package / f"mod{suffix}"
    source = package / "mod.py"
    extension.write_bytes(b"")
    source.write_text("x = 1\n")
    os.utime(extension, (1_000_000, 1_000_000))
    os.utime(source, (2_000_000, 2_000_000))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(_compiled, "COMPILED_MODULES", ("pkg.mod",))
    assert _compiled.compiled_modules() == ["pkg.mod"]
    assert _compiled.stale_modules() == ["pkg.mod"]
    os.utime(extension, (3_000_000, 3_000_000))
    assert _compiled.stale_modules() == []


def test_start_up_says_how_many_modules_are_compiled(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="ingest_proxy"):
        log_build()
    [line] = [r.getMessage() for r in caplog.records if "per-request modules" in r.getMessage()]
    count = len(compiled_modules())
    assert line.startswith(f"per-request modules compiled: {count} of {len(COMPILED_MODULES)}")


def test_a_pure_python_import_runs_the_same_code_interpreted(tmp_path: Path) -> None:
    """The sources alone (no extensions: a copy of the package) import and serve the
    pipeline's modules interpreted; the start-up line then says so."""
    copy = tmp_path / "proxy"
    subprocess.run(["cp", "-r", str(ROOT / "proxy"), str(copy)], check=True, timeout=60)
    for built in copy.rglob("*.so"):
        built.unlink()
    code = (
        "import logging, sys; logging.basicConfig(level='INFO', stream=sys.stdout)\n"
        "from proxy._compiled import compiled_modules\n"
        "import proxy.ingress.pipeline, proxy.http.ingress_protocol\n"
        "from proxy.server import log_build\n"
        "print(compiled_modules(), proxy.ingress.pipeline.__file__.endswith('.py'))\n"
        "log_build()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "[] True" in out
    assert (
        f"per-request modules compiled: 0 of {len(COMPILED_MODULES)}; the rest run interpreted"
        in out
    )
