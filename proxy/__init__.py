"""ingest-proxy: accept any HTTP request, persist it as a task, answer 202, deliver it later.

Public API: :func:`create_app` builds the ingress application for a :class:`Settings`.
The names are loaded when first used, so ``import proxy.config`` (or the ``hash-key``
command) does not load the web framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from proxy._version import __version__

if TYPE_CHECKING:
    from proxy.app import create_admin_app, create_app
    from proxy.config.loading import load_settings
    from proxy.config.settings import Settings

__all__ = ["Settings", "__version__", "create_admin_app", "create_app", "load_settings"]

_WHERE = {
    "Settings": "proxy.config.settings",
    "load_settings": "proxy.config.loading",
    "create_app": "proxy.app",
    "create_admin_app": "proxy.app",
}


def __getattr__(name: str) -> Any:
    """The public names, imported on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'proxy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
