"""Build hook: the modules on the per-request path are compiled to C extensions with mypyc.

Everything else about the package is in pyproject.toml. The compiled modules are the same
source as the pure-Python ones (``mypy --strict`` clean); compiled, a request costs the
proxy about a quarter less CPU (bench/README.md, "Round 9"). The list is
``proxy/_compiled.py``'s, which the tests use to check that the build is current.

``INGEST_PROXY_PURE_PYTHON=1`` at install time skips compiling (no C compiler needed); the
proxy then runs the same code interpreted and says so in its start-up log line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).parent / "proxy"))
from _compiled import COMPILED_MODULES  # the list lives beside the package

if os.environ.get("INGEST_PROXY_PURE_PYTHON", "") not in ("", "0"):
    setup()
else:
    from mypyc.build import mypycify

    paths = [module.replace(".", "/") + ".py" for module in COMPILED_MODULES]
    setup(
        ext_modules=mypycify(paths, opt_level="3", separate=True),
        options={"build_ext": {"parallel": os.cpu_count() or 1}},
    )
