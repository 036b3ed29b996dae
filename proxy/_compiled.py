"""Which modules the build compiles with mypyc (setup.py), and whether they were.

Kept free of imports from the package: setup.py reads :data:`COMPILED_MODULES` before the
package is installed. The list is the per-request path: the ingress listener's protocol,
the ingress pipeline, the SQLite writer. Not ``proxy.logs``: its handler subclasses
``logging.Handler``, and compiled, ``logging.shutdown`` crashed on it (a segfault).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os

COMPILED_MODULES: tuple[str, ...] = (
    "proxy.http.ingress_protocol",
    "proxy.http.request_target",
    "proxy.http.responses",
    "proxy.ingress.pipeline",
    "proxy.ingress.head",
    "proxy.ingress.headers",
    "proxy.ingress.routing",
    "proxy.ingress.target",
    "proxy.ingress.control",
    "proxy.ingress.forwarded",
    "proxy.engines.local.store.writer",
    "proxy.engines.local.store.header_codec",
)


def _origin(module: str) -> str | None:
    spec = importlib.util.find_spec(module)
    return spec.origin if spec is not None else None


def compiled_modules() -> list[str]:
    """The modules of :data:`COMPILED_MODULES` that import as C extensions here."""
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [m for m in COMPILED_MODULES if (_origin(m) or "").endswith(suffixes)]


def stale_modules() -> list[str]:
    """Compiled modules whose ``.py`` beside them is newer than the extension: an in-place
    (editable) build that was not redone after an edit, so the edit would not run."""
    stale = []
    for module in compiled_modules():
        extension = _origin(module) or ""
        source = os.path.join(os.path.dirname(extension), module.rsplit(".", 1)[1] + ".py")
        if os.path.exists(source) and os.path.getmtime(source) > os.path.getmtime(extension):
            stale.append(module)
    return stale
